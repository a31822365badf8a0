"""The REST API and the dashboard answer from the same command definitions as the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from postgres_service import fresh_schema

from linelab.api import create_app
from linelab.commands import call
from linelab.store import Workspace

STEPS = (
    "unit_id,station,machine,t_in,result,defect_code\n"
    "SN1,AOI,A1,2026-01-05 06:00:00,fail,BRIDGE\nSN2,AOI,A1,2026-01-05 06:01:00,pass,\n"
)


def _client(ws: Path) -> TestClient:
    return TestClient(create_app(ws), base_url="http://localhost")


def test_rest_matches_python_api_and_reports_errors(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with _client(ws) as client:
        stored = client.post("/api/ingest", files=[("paths", ("steps.csv", STEPS.encode(), "text/csv"))])
        assert stored.status_code == 200, stored.text
        assert stored.json()["stored"] == 2
        body = client.post("/api/pareto", json={}).json()
        assert body == call("pareto", workspace=ws).model_dump(mode="json")
        assert body["rows"][0]["defect_code"] == "BRIDGE"
        bad = client.post("/api/yield", json={"by": "colour"})
        assert bad.status_code == 400 and "choose one of" in bad.json()["error"]["message"]
        missing = client.post("/api/trace", json={"serial": "SN404"})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        names = {c["name"] for c in client.get("/api/commands").json()}
        assert {"ingest", "yield", "pareto", "trace"} <= names


def test_an_upload_is_ingested_once_and_leaves_no_copy_behind(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with _client(ws) as client:
        files = [("paths", ("steps.csv", STEPS.encode(), "text/csv"))]
        first = client.post("/api/ingest", files=files).json()
        again = client.post("/api/ingest", files=files).json()
    assert first["stored"] == 2 and again["stored"] == 0
    assert not any((ws / ".uploads").iterdir())
    assert [r["defects"] for r in call("pareto", workspace=ws).rows] == [1]


def test_a_kept_answer_is_never_stale(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    app = create_app(ws)
    app.state.pool.idle_s = 0.2
    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/api/pareto", json={}).json()["rows"] == []
        assert client.post("/api/pareto", json={}).json()["rows"] == []  # kept
        client.post("/api/ingest", files=[("paths", ("steps.csv", STEPS.encode(), "text/csv"))])
        assert [r["defects"] for r in client.post("/api/pareto", json={}).json()["rows"]] == [1]
        # A command that writes by the workspace's path, not through the server's handle.
        assert client.post("/api/yield", json={}).json()["overall"]["units"] == 0
        assert client.post("/api/twin/run", json={"units": 200}).status_code == 200
        assert client.post("/api/yield", json={}).json()["overall"]["units"] == 200
        before = sum(r["defects"] for r in client.post("/api/pareto", json={}).json()["rows"])
        # Another process writes while the server is idle (it lets go of the file after idle_s).
        deadline = time.monotonic() + 30
        while app.state.pool._shared is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        more = tmp_path / "more_steps.csv"
        more.write_text(STEPS.replace("SN1", "SN3").replace("SN2", "SN4"))
        call("ingest", workspace=ws, paths=[more])
        assert sum(r["defects"] for r in client.post("/api/pareto", json={}).json()["rows"]) == before + 1


def test_the_dashboard_is_served_with_its_plotting_library(tmp_path: Path) -> None:
    with _client(tmp_path / "ws") as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/plotly.js").text.startswith("/**")


def test_the_api_docs_load_their_assets_from_the_package(tmp_path: Path) -> None:
    with _client(tmp_path / "ws") as client:
        page = client.get("/docs")
        assert page.status_code == 200
        sources = [line for line in page.text.splitlines() if "src=" in line or "href=" in line]
        assert sources and not any("//" in line.split("=", 1)[1] for line in sources), sources
        js = client.get("/static/docs/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 500_000
        assert client.get("/static/docs/swagger-ui.css").status_code == 200


def test_the_schema_documents_the_records_the_stages_share(tmp_path: Path) -> None:
    with _client(tmp_path / "ws") as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"Problem", "Signal", "Evidence", "Cause", "Entity", "Action", "Watch"} <= set(schemas)
    assert schemas["Cause"]["properties"]["entity"]["anyOf"][0] == {"$ref": "#/components/schemas/Entity"}
    assert {"kind", "name", "station"} <= set(schemas["Entity"]["properties"])
    assert schemas["ActionResult"]["properties"]["action"] == {"$ref": "#/components/schemas/Action"}
    assert schemas["ProblemShowResult"]["properties"]["problem"]["$ref"] == "#/components/schemas/Problem"


def test_every_error_has_one_shape_declared_in_the_schema(tmp_path: Path) -> None:
    with _client(tmp_path / "ws") as client:
        spec = client.get("/openapi.json").json()
        for path, ops in spec["paths"].items():
            if "post" in ops:
                for status in ("400", "401", "403", "404", "422", "503"):
                    ref = ops["post"]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorResponse", (path, status)
            for method, op in ops.items():  # every error any operation declares, GET routes included
                for status, response in op["responses"].items():
                    if status[0] in "45":
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        assert ref == "#/components/schemas/ErrorResponse", (method, path, status)
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        answers = [
            client.post("/api/quarantine", json={"limit": -1}),
            client.post("/api/pareto", json={"top": -1}),
            client.post("/api/quarantine", json={"limit": 2**63}),  # past the database's integers
            client.post("/api/yield", json={"by": 3}),
            client.post("/api/yield", content=b"{not json", headers={"content-type": "application/json"}),
            client.post("/api/no/such/command", json={}),
            client.get("/api/yield"),
        ]
        statuses = [a.status_code for a in answers]
        assert statuses == [422, 422, 422, 422, 422, 404, 405]
        for answer in answers:
            error = answer.json()["error"]
            assert set(error) <= {"type", "message", "field"} and error["message"]
        assert answers[0].json()["error"]["field"] == "limit"
        assert answers[1].json()["error"]["field"] == "top"


def test_a_seed_no_random_generator_takes_is_a_bad_parameter_not_a_server_error(tmp_path: Path) -> None:
    with _client(tmp_path / "ws") as client:
        for path, body in [("/api/twin/run", {"seed": -1, "units": 10}),
                           ("/api/model/train", {"station": "S", "seed": -1}),
                           ("/api/model/train", {"station": "S", "seed": 2**32}),
                           ("/api/experiment/design", {"kind": "split", "seed": -1}),
                           ("/api/experiment/run", {"id": "EXP-0001", "seed": -1})]:
            answer = client.post(path, json=body)
            assert answer.status_code == 422, (path, body, answer.text)
            assert answer.json()["error"]["field"] == "seed", (path, answer.text)
    with pytest.raises(ValueError, match="seed"):
        call("twin run", workspace=tmp_path / "ws", units=10, seed=-1)


def test_even_a_server_fault_answers_in_the_one_shape(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws")

    @app.post("/api/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        answer = client.post("/api/fails")
    assert answer.status_code == 500
    assert answer.json() == {"error": {"type": "internal_error",
                                       "message": "the server failed on this request (RuntimeError)"}}


def _hold_workspace(ws: Path) -> subprocess.Popen[str]:
    """Another process writing the workspace: it holds DuckDB's lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from linelab.store.workspace import Workspace
        ws = Workspace.open({str(ws)!r})
        print("holding", flush=True)
        sys.stdin.read()
        ws.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def _linelab(*args: str, wait: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINELAB_BUSY_WAIT": str(wait)}
    linelab = Path(sys.executable).parent / "linelab"
    return subprocess.run([str(linelab), *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_reader_waits_for_a_busy_workspace_then_answers(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    call("init", workspace=ws)
    holder = _hold_workspace(ws)
    linelab = Path(sys.executable).parent / "linelab"
    reader = subprocess.Popen([str(linelab), "quarantine", "--json", "-w", str(ws)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "LINELAB_BUSY_WAIT": "120"})
    try:
        assert reader.stderr is not None
        told = reader.stderr.readline()
        assert "workspace busy (held by PID" in told and "retrying" in told
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the writer finishes: the reader gets its turn
        holder.wait(timeout=30)
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0
    assert json.loads(out)["total"] == 0


def test_a_workspace_busy_for_too_long_is_a_clear_error_in_the_cli_and_over_rest(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    call("init", workspace=ws)
    holder = _hold_workspace(ws)
    try:
        done = _linelab("problems", "--json", "-w", str(ws), wait=0.5)
        app = create_app(ws)
        app.state.pool.busy_wait_s = 0.5
        with TestClient(app, base_url="http://localhost") as client:
            busy = client.post("/api/yield", json={})
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"].startswith(f"workspace {ws} is busy (held by PID {holder.pid}")
    assert "Traceback" not in done.stderr and "IO Error" not in done.stderr
    assert busy.status_code == 503 and busy.json()["error"]["type"] == "busy"
    said = busy.json()["error"]["message"]  # neither the server's folders nor its processes
    assert str(tmp_path) not in said and str(holder.pid) not in said and "busy" in said


def test_a_reader_brings_a_workspace_of_an_older_version_up_to_date(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    call("init", workspace=ws)
    import duckdb

    from linelab.store.migrations import LATEST

    with duckdb.connect(str(ws / "linelab.duckdb")) as con:  # as an older LineLab left it
        con.execute("DELETE FROM schema_version WHERE version > 1")
        con.execute('ALTER TABLE quarantine DROP COLUMN "resolved_batch"')
        con.execute('ALTER TABLE quarantine DROP COLUMN "key"')
    done = _linelab("quarantine", "--json", "-w", str(ws), wait=0)  # a reader: it opens the file read-only
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 0
    with duckdb.connect(str(ws / "linelab.duckdb"), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] == LATEST


def test_readers_share_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    call("init", workspace=ws)
    code = textwrap.dedent(f"""
        import time
        from linelab.commands import open_workspace
        ws = open_workspace({str(ws)!r}, read_only=True, wait_s=0)
        print("reading", flush=True)
        time.sleep(30)
    """)
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        done = _linelab("yield", "--json", "-w", str(ws), wait=0)
        # listings only read: they open the workspace beside other readers instead of waiting for it
        listings = [_linelab(*cmd, "--json", "-w", str(ws), wait=0) for cmd in (
            ("act", "list"), ("knowhow", "list"), ("knowhow", "search", "nozzle"), ("knowhow", "watches"),
            ("experiment", "status"))]
    finally:
        reader.kill()
        reader.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["overall"]["units"] == 0
    assert [r.returncode for r in listings] == [0] * 5, [r.stdout for r in listings]


def _listing_row(p: dict[str, Any]) -> dict[str, Any]:
    """A problem's line in `linelab problems`, read from its full record."""
    return {"id": p["id"], "status": p["status"], "about": p["entity"],
            "since": (p["onset"].get("t") or "")[:16].replace("T", " "),
            "units": p["severity"]["units_affected"], "lost_units": p["severity"]["yield_lost_units"],
            "description": p["description"]}


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_the_problem_listing_over_rest_and_the_cli_says_what_the_full_problems_say(
        backend: str, tmp_path: Path) -> None:
    """The listing reads only the fields it shows (the store extracts them): the same answer as from full records."""
    with contextlib.ExitStack() as stack:
        where = str(tmp_path / "ws") if backend == "duckdb" else stack.enter_context(fresh_schema(tmp_path / "ws"))[0]
        chart = {"t": [f"2026-01-05T06:{i % 60:02d}:00" for i in range(400)], "value": [i / 7 for i in range(400)]}
        with Workspace.open(where) as ws:
            for n, status in [(1, "open"), (2, "resolved"), (3, "diagnosed")]:
                ws.put_artifact("problem", f"PRB-{n:04d}", {
                    "id": f"PRB-{n:04d}", "status": status, "entity": f"machine:M{n}", "kind": "shift",
                    "onset": {"t": f"2026-01-0{n}T06:30:00" if n != 3 else None},
                    "severity": {"units_affected": 40 * n, "yield_lost_units": round(1 / 3 * n, 2), "signals": 1},
                    "description": f"height on M{n} moved up by 1.2σ (\"shift\")", "chart": chart,
                    "signals": [{"key": "k", "chart": chart, "units": [f"SN{i}" for i in range(2000)]}]})
            full = ws.list_artifacts("problem")
        with TestClient(create_app(where), base_url="http://localhost") as client:
            for body in ({}, {"status": "open"}, {"status": "resolved"}):
                expected = [_listing_row(p) for p in full if body.get("status") in (None, p["status"])]
                answer = client.post("/api/problems", json=body)
                assert answer.status_code == 200, answer.text
                assert answer.json()["problems"] == expected
                assert call("problems", workspace=where, **body).model_dump(mode="json")["problems"] == expected
        since = [r["since"] for r in call("problems", workspace=where).problems]
        assert since == ["2026-01-01 06:30", "2026-01-02 06:30", ""]
