"""The REST API and the dashboard answer from the same command definitions as the CLI."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from linelab.api import create_app
from linelab.commands import call


def test_rest_matches_python_api_and_reports_errors(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    csv = tmp_path / "steps.csv"
    csv.write_text(
        "unit_id,station,machine,t_in,result,defect_code\n"
        "SN1,AOI,A1,2026-01-05 06:00:00,fail,BRIDGE\nSN2,AOI,A1,2026-01-05 06:01:00,pass,\n"
    )
    call("ingest", workspace=ws, paths=[csv])
    client = TestClient(create_app(ws))
    body = client.post("/api/pareto", json={}).json()
    assert body == call("pareto", workspace=ws).model_dump(mode="json")
    assert body["rows"][0]["defect_code"] == "BRIDGE"
    bad = client.post("/api/yield", json={"by": "colour"})
    assert bad.status_code == 400 and "choose one of" in bad.json()["error"]
    assert client.post("/api/trace", json={"serial": "SN404"}).status_code == 404
    names = {c["name"] for c in client.get("/api/commands").json()}
    assert {"ingest", "yield", "pareto", "trace"} <= names


def test_dashboard_is_served_with_its_plotting_library(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path / "ws"))
    page = client.get("/")
    assert page.status_code == 200 and "/api/yield" in page.text and "/static/plotly.js" in page.text
    assert client.get("/static/plotly.js").text.startswith("/**")


def test_the_schema_documents_the_records_the_stages_share(tmp_path: Path) -> None:
    schemas = TestClient(create_app(tmp_path / "ws")).get("/openapi.json").json()["components"]["schemas"]
    assert {"Problem", "Signal", "Evidence", "Cause", "Entity", "Action", "Watch"} <= set(schemas)
    assert schemas["Cause"]["properties"]["entity"]["anyOf"][0] == {"$ref": "#/components/schemas/Entity"}
    assert {"kind", "name", "station"} <= set(schemas["Entity"]["properties"])
    assert schemas["ActionResult"]["properties"]["action"] == {"$ref": "#/components/schemas/Action"}
    assert schemas["ProblemShowResult"]["properties"]["problem"]["$ref"] == "#/components/schemas/Problem"
