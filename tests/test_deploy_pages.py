"""The model pages: every version with its stage; per version its live metrics per stage over time,
its stage changes and the units it scored (server-rendered, then in Debian's chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from served_app import serving

from linelab.act.simulation import open_workspace_line, record_simulation
from linelab.api.app import create_app
from linelab.commands import call
from linelab.line import open_simulator
from linelab.store import Workspace

SCENARIO = "assembly:bad_lot_fails"  # a seal lot fails a quarter of its units at the leak test
STATION = "LEAK"
CHROMIUM = os.environ.get("LINELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """M-0001 (good) full; M-0002 (trained on shuffled labels) canary, rolled back by the review;
    then the line runs on under M-0001."""
    root = tmp_path_factory.mktemp("pages") / "ws"
    line = open_simulator("zoo", SCENARIO, 0)
    with Workspace.open(root) as ws:
        while line.units_produced < 7600:
            ws.ingest_tables(line.produce(1900), source=line.source)
        record_simulation(ws, line, "zoo", SCENARIO, 0)
    call("model train", root, station=STATION)
    call("model train", root, station=STATION, shuffle_labels=True, fill_capacity=True)
    call("model promote", root, version="M-0001", to="full", force=True)
    call("model promote", root, version="M-0002", to="canary", share=0.2)
    for units in (500, 500, 500, 300):
        with Workspace.open(root) as ws:
            held = open_workspace_line(ws)
            ws.ingest_tables(held.line.produce(units), source=held.source)
        call("model score", root, station=STATION)
    return root


@pytest.fixture(scope="module")
def client(deployed: Path) -> TestClient:
    return TestClient(create_app(deployed), base_url="http://localhost")


def _figure(html: str, plot_id: str) -> dict[str, Any]:
    found = re.search(f'<script type="application/json" id="{plot_id}-data">(.*?)</script>', html, re.S)
    assert found, f"no figure {plot_id}"
    return dict(json.loads(found.group(1).replace("<\\/", "</")))


def test_metrics_per_stage_are_the_units_own_results(deployed: Path) -> None:
    met = call("model metrics", deployed, version="M-0002", by="units")
    canary = [r for r in met.periods if r["stage"] == "canary"]
    assert met.stage == "retired" and len(canary) >= 4
    with Workspace.open(deployed) as ws:
        rows = ws.query("SELECT p.unit_id, p.decision, arg_min(s.result, s.t_in) <> 'pass' AS bad "
                        "FROM deploy_predictions p JOIN steps s ON s.unit_id = p.unit_id AND s.station = p.station "
                        "WHERE p.version = 'M-0002' GROUP BY ALL").to_pylist()
    # by hand: the units it sent to inspection, and how many of them failed the leak test
    inspected = [r["bad"] for r in rows if r["decision"] == "inspect"]
    assert sum(r["units"] for r in canary) == len(rows)
    assert sum(r["inspected"] for r in canary) == len(inspected)
    assert sum(r["inspected_bad"] for r in canary) == sum(inspected)
    assert sum(r["bad"] for r in canary) == sum(r["bad"] for r in rows)
    first = canary[0]
    assert first["precision"] == pytest.approx(first["inspected_bad"] / first["inspected"])
    assert [(e["event"], e["to"]) for e in met.events] == [("promote", "canary"), ("rollback", "retired")]
    assert met.units and met.units[0]["stage"] == "canary"


def test_models_page_lists_versions_with_their_stage(client: TestClient) -> None:
    html = client.get("/models").text
    assert re.search(r'<a href="/model/M-0001">M-0001</a>.*?status-full', html, re.S)
    assert re.search(r'<a href="/model/M-0002">M-0002</a>.*?status-retired', html, re.S)
    assert 'href="/models"' in client.get("/overview").text  # in the navigation


def test_model_page_shows_live_metrics_events_and_units(client: TestClient) -> None:
    html = client.get("/model/M-0002").text
    routing = _figure(html, "metrics-routing")
    names = {t["name"] for t in routing["data"]}
    assert names == {"precision (canary)", "recall (canary)"}
    assert max(max(y for y in t["y"] if y is not None) for t in routing["data"]) <= 1
    assert [a["text"] for a in routing["layout"]["annotations"]] == ["promote → canary", "rollback → retired"]
    events = html[html.index('id="stage-events"'):]
    problem = re.search(r'<a href="/problem/(PRB-\d+)">', events)
    assert problem and "rolled back" in client.get(f"/problem/{problem.group(1)}").text
    serial = re.search(r'<a class="unit" href="/unit/([^"]+)">', html[html.index('id="scored-units"'):])
    assert serial and client.get(f"/unit/{serial.group(1)}").status_code == 200
    full = client.get("/model/M-0001?by=units").text
    assert {t["name"] for t in _figure(full, "metrics-saving")["data"]} == {"saving per unit (full)"}
    assert client.get("/model/M-0001?by=fortnight").status_code == 400
    assert client.get("/model/M-0404").status_code == 404


@pytest.fixture(scope="module")
def served(deployed: Path) -> Iterator[str]:
    with serving(deployed) as url:
        yield url


def test_model_pages_draw_in_a_browser(served: str) -> None:
    if not CHROMIUM:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")
        pytest.skip("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(served + "/overview")
        page.locator("nav a", has_text="Models").click()
        page.wait_for_url(re.compile("/models$"))
        page.locator("#models a", has_text="M-0002").click()
        page.wait_for_url(re.compile("/model/M-0002$"))
        plots = page.locator(".plot")
        assert plots.count() >= 2
        for i in range(plots.count()):
            plots.nth(i).and_(page.locator("[data-rendered='1']")).wait_for(timeout=20_000)
            assert plots.nth(i).locator(".main-svg").count() > 0
        shots = Path(__file__).resolve().parents[1] / "reports" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "model.png"), full_page=True)
        browser.close()
    assert not errors, errors


def test_score_and_label_speak_as_a_person_at_80_columns(deployed: Path) -> None:
    """What `model score` decided and `model label` recorded, in sentences, not a JSON dump."""
    from typer.testing import CliRunner

    from linelab.cli import build_app

    def cli(*args: str) -> str:
        out = CliRunner().invoke(build_app(list(args)), [*args, "-w", str(deployed)],
                                 env={"COLUMNS": "80", "TERM": "dumb"})
        assert out.exit_code == 0, out.output
        return str(out.stdout)

    with Workspace.open(deployed) as ws:
        unit = ws.scalar(f"SELECT max(unit_id) FROM steps WHERE station = '{STATION}'")
    scored: Any = call("model score", deployed, station=STATION, unit=unit)
    one = scored.result
    text = cli("model", "score", "--station", STATION, "--unit", unit)
    assert "{" not in text and '"' not in text and max(map(len, text.splitlines())) <= 80
    assert f"{unit} at {STATION}: {one['decision']}" in text and "M-0001" in text
    assert f"{one['score']:.3f}" in text
    text = cli("model", "label", unit, "--verdict", "escape", "--note", "found at the customer")
    assert "{" not in text and '"' not in text
    said = " ".join(text.split())
    assert f"{unit}: escape" in said and "counted as bad" in said and "found at the customer" in said
