"""The server is safe to expose: the Host header is checked, a token guards it off loopback, no
request names a path on the server, and nothing destructive is offered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from linelab.api import create_app
from linelab.cli import build_app

TOKEN = "s3cret-token-for-the-line-0123"
STEPS = b"unit_id,station,machine,t_in,result,defect_code\nSN1,AOI,A1,2026-01-05 06:00:00,fail,BRIDGE\n"


@pytest.fixture
def client(tmp_path: Path) -> Any:
    with TestClient(create_app(tmp_path / "ws"), base_url="http://localhost") as c:
        yield c


def test_only_the_servers_own_names_are_answered(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws", host="10.1.2.3", allowed_hosts=["line7.example"])
    with TestClient(app, base_url="http://localhost") as client:
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3:8000", "line7.example"):
            assert client.get("/api/commands", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "line7.example.evil.example", ""):
            refused = client.get("/api/commands", headers={"host": host})
            assert refused.status_code == 400, host
            assert refused.json()["error"]["type"] == "bad_host"


def test_a_web_page_elsewhere_cannot_make_the_browser_change_the_workspace(tmp_path: Path) -> None:
    """A page on another site may send a form or a body-less POST to a loopback server (no preflight);
    the browser names that page in Origin, and a request that would change the workspace is refused."""
    with TestClient(create_app(tmp_path / "ws"), base_url="http://localhost:8000") as client:
        upload = {"files": [("paths", ("steps.csv", STEPS, "text/csv"))]}
        for origin in ("http://evil.example", "null", "http://localhost:3000", "http://localhost.evil.example:8000"):
            refused = client.post("/api/ingest", headers={"origin": origin}, **upload)
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "cross_origin", origin
            assert client.post("/api/monitor/run", headers={"origin": origin}).status_code == 403
        assert client.post("/api/pareto", json={}).json()["rows"] == []  # nothing was stored
        # The dashboard's own requests, and clients that are not browsers (no Origin), are served.
        assert client.post("/api/ingest", headers={"origin": "http://localhost:8000"}, **upload).status_code == 200
        assert client.post("/api/ingest", **upload).json()["stored"] == 0  # the same file, once
        assert client.get("/api/commands", headers={"origin": "http://evil.example"}).status_code == 200


def test_a_token_guards_every_route(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path / "ws", token=TOKEN), base_url="http://localhost") as client:
        for path in ("/", "/docs", "/openapi.json", "/api/commands"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized", path
        assert client.post("/api/yield", json={}).status_code == 401
        wrong = {"authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert client.post("/api/yield", json={}, headers=wrong).status_code == 401
        right = {"authorization": f"Bearer {TOKEN}"}
        assert client.post("/api/yield", json={}, headers=right).status_code == 200
        # A browser opens the dashboard once with ?token=; the cookie it gets carries its requests.
        opened = client.get(f"/?token={TOKEN}")
        assert opened.status_code == 200 and "HttpOnly" in opened.headers["set-cookie"]
        assert client.post("/api/yield", json={}).status_code == 200
        client.cookies.clear()
        assert client.post("/api/yield", json={}).status_code == 401


def test_serving_off_loopback_needs_a_token() -> None:
    runner = CliRunner()
    refused = runner.invoke(build_app(["serve"]), ["serve", "--host", "0.0.0.0", "--port", "1"], env={})
    assert refused.exit_code == 2 and "needs a token" in refused.output
    short = runner.invoke(build_app(["serve"]), ["serve", "--host", "0.0.0.0", "--token", "abc"])
    assert short.exit_code == 2 and "too short" in short.output


def _request_fields(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return dict(schema.get("properties", {}))


def test_no_request_body_takes_a_server_path(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        body = ops.get("post", {}).get("requestBody", {}).get("content", {})
        for content in body.values():
            for name, field in _request_fields(spec, content["schema"]).items():
                assert "path" not in json.dumps(field.get("format", "")), (path, name)
                assert field.get("format") != "binary" or content is body.get("multipart/form-data"), (path, name)


def test_a_command_with_a_path_parameter_that_says_nothing_is_not_offered(tmp_path: Path) -> None:
    from pydantic import BaseModel

    from linelab.commands import REGISTRY, Result, command

    class ExportParams(BaseModel):
        target: Path

    class Nothing(Result):
        pass

    @command("unmarked export", ExportParams)
    def unmarked_export(p: ExportParams, ctx: Any) -> Nothing:
        raise AssertionError("never called over REST")

    try:
        with pytest.warns(UserWarning, match="unmarked export"):
            app = create_app(tmp_path / "ws")
        with TestClient(app, base_url="http://localhost") as client:
            assert client.post("/api/unmarked/export", json={"target": "/etc"}).status_code == 404
            assert "unmarked export" not in {c["name"] for c in client.get("/api/commands").json()}
    finally:
        del REGISTRY["unmarked export"]


@pytest.mark.parametrize("path, body", [
    ("/api/twin/run", {"fresh": True}),
    ("/api/twin/run", {"scenario": "/etc/passwd"}),
    ("/api/twin/run", {"scenario": "../../elsewhere/line.yaml"}),
    ("/api/experiment/run", {"id": "EXP-0001", "scenario": "/tmp/x.yaml"}),
    ("/api/monitor/run", {"reset": True}),
    ("/api/profile/schema", {"out": "/tmp/schema.json"}),
    ("/api/profile/schema", {"out": "../schema.json"}),
    ("/api/diagnose", {"plot": "/tmp/evidence.png"}),
    ("/api/knowhow/export", {"out": "/tmp/reports"}),
    ("/api/problem/show", {"id": "PRB-0001", "out": "/tmp"}),
])
def test_paths_and_destructive_switches_are_refused(client: TestClient, path: str, body: dict[str, Any]) -> None:
    refused = client.post(path, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == next(iter(k for k in body if k != "id"))


def test_a_command_that_needs_files_takes_them_as_uploads_only(client: TestClient) -> None:
    as_json = client.post("/api/ingest", json={"table": "steps"})
    assert as_json.status_code == 422 and as_json.json()["error"]["field"] == "paths"
    as_text = client.post("/api/profile/init", content=b"force=1", headers={"content-type": "text/plain"})
    assert as_text.status_code == 415 and "multipart/form-data" in as_text.json()["error"]["message"]
    assert client.post("/api/profile/init", json={"force": True}).json()["error"]["field"] == "force"
    forced = client.post("/api/profile/init", data={"params": json.dumps({"force": True})},
                         files=[("paths", ("steps.csv", STEPS, "text/csv"))])
    assert forced.status_code == 422 and forced.json()["error"]["field"] == "params.force"


def test_an_ingest_request_cannot_name_a_server_file(client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_bytes(STEPS)
    assert client.post("/api/ingest", json={"paths": [str(secret)]}).status_code == 422
    named = client.post("/api/ingest", data={"params": json.dumps({"paths": [str(secret)]})},
                        files=[("paths", ("steps.csv", STEPS, "text/csv"))])
    assert named.status_code == 422 and named.json()["error"]["field"] == "params.paths"
    assert client.post("/api/pareto", json={}).json()["rows"] == []


def test_an_uploaded_file_name_cannot_leave_the_workspace(client: TestClient, tmp_path: Path) -> None:
    stored = client.post("/api/ingest", files=[("paths", ("../../../steps.csv", STEPS, "text/csv"))])
    assert stored.status_code == 200 and stored.json()["stored"] == 1
    assert not list(tmp_path.parent.glob("steps.csv")) and not list(tmp_path.glob("steps.csv"))


def test_an_upload_is_named_by_its_own_name_never_by_a_server_path(client: TestClient, tmp_path: Path) -> None:
    """Answers, errors and the quarantine name an uploaded file as it was sent, not the folder it was kept in."""
    ragged = b"unit_id,station,machine,t_in,result\nSN1,AOI,A1,2026-01-05 06:00:00,pass\nSN2,AOI\n"
    stored = client.post("/api/ingest", files=[("paths", ("steps_monday.csv", ragged, "text/csv"))])
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["files"][0]["path"] == "steps_monday.csv" and body["quarantine"][0]["file"] == "steps_monday.csv"
    listed = client.post("/api/quarantine", json={}).json()["rows"]
    assert [r["source"] for r in listed] == ["upload:steps_monday.csv"]
    utf16 = "\ufeff".encode("utf-16-le") + ragged.decode().encode("utf-16-le")
    refused = client.post("/api/ingest", files=[("paths", ("steps_tuesday.csv", utf16, "text/csv"))])
    assert refused.status_code == 400 and "steps_tuesday.csv: looks like UTF-16" in refused.text
    for answer in (stored, refused, client.post("/api/quarantine", json={})):
        assert str(tmp_path) not in answer.text and ".uploads" not in answer.text, answer.text


def test_what_deletes_or_runs_a_whole_simulation_is_not_offered(client: TestClient) -> None:
    offered = {c["name"] for c in client.get("/api/commands").json()}
    assert "loop" not in offered and "monitor tep" not in offered
    assert client.post("/api/loop", json={}).status_code == 404
    assert client.post("/api/monitor/tep", json={"data": "/"}).status_code == 404


def test_outputs_are_written_inside_the_workspace_and_linked(client: TestClient, tmp_path: Path) -> None:
    made = client.post("/api/profile/schema", json={"out": "profile-schema.json"})
    assert made.status_code == 200, made.text
    link = made.json()["path"]
    assert link.startswith("/outputs/profile-schema-") and link.endswith("/profile-schema.json")
    written = list((tmp_path / "ws" / "outputs").glob("*/profile-schema.json"))
    assert len(written) == 1
    fetched = client.get(link)
    assert fetched.status_code == 200 and fetched.json() == json.loads(written[0].read_text())
    for escape in ("/outputs/../linelab.duckdb", "/outputs/%2e%2e/linelab.duckdb", "/outputs//etc/passwd"):
        assert client.get(escape).status_code == 404, escape
