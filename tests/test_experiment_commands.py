"""Experiments end to end on the twin: CLI --json, REST, adoption through the control interface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from linelab.act.simulation import open_workspace_line as open_twin
from linelab.api import create_app
from linelab.cli import build_app
from linelab.commands import call
from linelab.errors import UserError
from linelab.experiment import experiments as ex
from linelab.profile import PROFILE_FILE, save_profile
from linelab.store import Workspace
from linelab.twin.simulator import twin_profile

runner = CliRunner()
app = build_app()
BETTER = "squeegee_pressure=7.5,print_speed=50,conveyor_speed=78"  # about +2.5 points on the clean twin


def cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(autouse=True)
def _twin_profile(tmp_path: Path) -> None:
    """The workspace's line is the twin, known through its profile as any line is."""
    save_profile(twin_profile(), tmp_path / "ws" / PROFILE_FILE)


def test_split_run_adopts_a_better_recipe_and_records_it(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    code, out = cli("experiment", "design", "split", "--change", BETTER, "--problem-id", "PRB-0007", "-w", ws)
    assert code == 0 and out["experiment"]["status"] == "designed"
    exp_id = out["experiment"]["id"]
    code, out = cli("experiment", "run", exp_id, "-w", ws)
    e = out["experiment"]
    assert code == 0 and e["status"] == "decided"
    v = e["verdict"]
    assert v["decision"] == "adopt" and v["interval"][0] > 0 and v["units"] < 80_000
    assert Path(e["plots"]["arms"]).exists()
    code, out = cli("experiment", "verdict", exp_id, "--adopt", "-w", ws)
    assert code == 0 and out["decision"] == "adopt"
    action_id = out["adoption"]["action_id"]
    assert out["adoption"]["status"] == "applied" and out["adoption"]["via"] == "simulator"
    code, out = cli("act", "list", "-w", ws)
    action = next(a for a in out["actions"] if a["id"] == action_id)
    assert action["source"] == "experiment" and action["problem_id"] == "PRB-0007"
    assert action["expected_effect"]["delta"] == pytest.approx(v["difference"])
    with Workspace.open(ws) as w:
        # the line now runs the adopted recipe, and the store shows what happened and why
        assert open_twin(w).line.recipe["print_speed"] == 50.0
        kinds = {r["kind"] for r in w.query("SELECT DISTINCT kind FROM events").to_pylist()}
        assert {"action", "experiment", "recipe_change"} <= kinds
        line = e["line"]
        assert w.count("units") == line["last_unit"] - line["first_unit"] >= v["units"]
    code, out = cli("experiment", "status", "-w", ws)
    assert out["experiments"][0]["status"] == "adopted"


def test_rejected_change_cannot_be_adopted_and_the_line_keeps_its_recipe(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    try:
        e = ex.design_split(ws, {"peak_temp_setpoint": 236.0})  # a cold profile: cold joints
        e = ex.run_experiment(ws, e["id"], adopt=True)
        assert e["verdict"]["decision"] == "reject" and e["adoption"] is None
        with pytest.raises(UserError, match="only an adopted change"):
            ex.adopt_change(ws, e["id"])
        assert open_twin(ws).line.recipe["peak_temp_setpoint"] == 247.0
    finally:
        ws.close()


def test_designed_experiment_and_optimisation_from_the_cli(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    code, out = cli("experiment", "design", "ccd", "--factors", "squeegee_pressure=5:9,print_speed=30:60",
                    "--units-per-run", "400", "--no-confirm", "-w", ws)
    assert code == 0 and len(out["experiment"]["plan"]["runs"]) == 12
    code, out = cli("experiment", "run", out["experiment"]["id"], "-w", ws)
    e = out["experiment"]
    analysis = e["results"]["analysis"]
    assert analysis["effects"][0]["term"] == "squeegee_pressure"
    assert 5 <= analysis["optimum"]["squeegee_pressure"] <= 9 and 30 <= analysis["optimum"]["print_speed"] <= 60
    assert e["verdict"]["method"] == "doe" and any("surface" in k for k in e["plots"])
    code, out = cli("experiment", "design", "optimise", "--factors", "squeegee_pressure,print_speed",
                    "--budget", "6000", "--units-per-trial", "2000", "--no-confirm", "-w", ws)
    code, out = cli("experiment", "run", out["experiment"]["id"], "-w", ws)
    steps = out["experiment"]["results"]["steps"]
    assert code == 0 and len(steps) == 3
    assert all(4 <= s["recipe"]["squeegee_pressure"] <= 12 for s in steps)
    assert out["experiment"]["verdict"]["decision"] == "inconclusive"  # nothing adopts without confirmation


def test_user_mistakes_are_one_clear_line(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    code, out = cli("experiment", "design", "split", "--change", "print_speed=500", "-w", ws)
    assert code == 2 and "outside its safe bounds" in out["error"]
    code, out = cli("experiment", "design", "ccd", "--factors", "colour=1:2", "-w", ws)
    assert code == 2 and "unknown recipe parameter" in out["error"]
    code, out = cli("experiment", "verdict", "EXP-9999", "-w", ws)
    assert code == 2 and "no experiment" in out["error"]


def test_rest_and_python_api_share_the_definition(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    designed = call("experiment design", workspace=ws, kind="split", change="peak_temp_setpoint=249")
    client = TestClient(create_app(ws), base_url="http://localhost")
    body = client.post("/api/experiment/status", json={}).json()
    assert body["experiments"][0]["id"] == designed.experiment["id"]
    bad = client.post("/api/experiment/design", json={"kind": "split", "change": "print_speed=abc"})
    assert bad.status_code == 400 and "name=number" in bad.json()["error"]["message"]


def test_a_designed_experiments_page_draws_its_response_surface_and_effects(tmp_path: Path) -> None:
    """The Experiments page of a design: the fitted yield over its two factors with the runs and the
    optimum on it, and each term's effect with its interval, as the analysis found them."""
    import re

    ws = str(tmp_path / "ws")
    code, out = cli("experiment", "design", "ccd", "--factors", "squeegee_pressure=5:9,print_speed=30:60",
                    "--units-per-run", "200", "--no-confirm", "-w", ws)
    assert code == 0
    exp_id = out["experiment"]["id"]
    code, out = cli("experiment", "run", exp_id, "-w", ws)
    assert code == 0
    analysis = out["experiment"]["results"]["analysis"]
    html = TestClient(create_app(ws), base_url="http://localhost").get(f"/experiment/{exp_id}").text
    figures = [json.loads(m.replace("<\\/", "</")) for m in
               re.findall(r'<script type="application/json" id="[^"]+-data">(.*?)</script>', html, re.S)]
    contour = next(f for f in figures if any(t.get("type") == "contour" for t in f["data"]))
    layout = contour["layout"]
    assert {layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]} == set(analysis["factors"])
    star = next(t for t in contour["data"] if t.get("name") == "fitted optimum")
    assert star["x"][0] == pytest.approx(analysis["optimum"][layout["xaxis"]["title"]["text"]])
    runs = next(t for t in contour["data"] if t.get("name") == "design runs")
    assert len(runs["x"]) == len(out["experiment"]["plan"]["runs"])
    effects = html[html.index('id="effects"'):]
    effects = effects[:effects.index("</table>")]
    for e in analysis["effects"]:
        assert f">{e['term']}<" in effects and f"{100 * e['effect']:+.2f}" in effects
    # The plan and the fitted optimum read as a person writes them: no Python dict, no optimiser's digits.
    assert "{&#39;" not in html and "{'" not in html
    optimum = html[html.index('id="optimum"'):]
    optimum = optimum[:optimum.index("</p>")]
    assert all(name in optimum for name in analysis["factors"]) and not re.search(r"\d\.\d{5,}", optimum)
    shown = runner.invoke(app, ["experiment", "status", exp_id, "-w", ws], env={"COLUMNS": "80"}).stdout
    assert "fitted optimum" in shown and "{'" not in shown and not re.search(r"\d\.\d{5,}", shown)
