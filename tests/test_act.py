"""Actions: proposed, approved, applied through the control interface, recorded, checked against expectation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from linelab import act
from linelab.cli import build_app
from linelab.errors import UserError
from linelab.profile import PROFILE_FILE, save_profile
from linelab.store import Workspace
from linelab.twin.simulator import TwinLine as Line
from linelab.twin.simulator import twin_profile

runner = CliRunner()
app = build_app()


def _twin_workspace(tmp_path: Path) -> Workspace:
    """A workspace that knows its line (the twin) through the line's profile, as any line's would."""
    save_profile(twin_profile(), tmp_path / "ws" / PROFILE_FILE)
    return Workspace.open(tmp_path / "ws")


def test_fix_applied_to_the_twin_is_recorded_and_its_effect_checked(tmp_path: Path) -> None:
    line = Line("stencil_clog", seed=0)
    with _twin_workspace(tmp_path) as ws:
        source = "twin:stencil_clog:seed=0"
        while line.units_produced < 16_000:  # the clog starts at 10,000 units
            ws.ingest_tables(line.produce(4000).tables, source=source)
        a = act.propose(ws, "clean_stencil", problem_id="PRB-0001", expected_delta=0.05, source="diagnosis",
                        reason="paste volume falling at SPI")
        assert a["status"] == "proposed" and a["expected_effect"]["delta"] == 0.05
        with pytest.raises(UserError, match="approve it first"):
            act.apply(ws, a["id"], act.LineControl(line))
        act.approve(ws, a["id"], by="shift lead")
        a = act.apply(ws, a["id"], act.LineControl(line))
        assert a["status"] == "applied" and a["applied"]["fixed"] == ["stencil-1"]
        ws.ingest_tables(line.produce(3000).tables, source=source)
        effect = act.check_effect(ws, a["id"])
        assert effect.verdict == "improved" and effect.meets_expectation
        assert effect.interval[0] > 0.05 and effect.before_units == effect.after_units == 2000
        stored = act.get_action(ws, a["id"])
        assert stored["observed_effect"]["verdict"] == "improved"
        assert [h["status"] for h in stored["history"]] == ["proposed", "approved", "applied"]
        # proposal and approval carry the wall clock; "applied" the line's own clock (the twin's)
        events = ws.query("SELECT t, detail FROM events WHERE kind = 'action'").to_pylist()
        details = [json.loads(r["detail"]) for r in events]
        assert sorted(d["status"] for d in details) == ["applied", "approved", "proposed"]
        applied_at = next(r["t"] for r, d in zip(events, details, strict=True) if d["status"] == "applied")
        assert applied_at.isoformat() == a["applied"]["t"]
        assert all(d["problem_id"] == "PRB-0001" for d in details)


def test_real_line_gets_actions_through_the_outbox(tmp_path: Path) -> None:
    line = Line("clean", seed=1)
    line.produce(100)
    with _twin_workspace(tmp_path) as ws:
        a = act.propose(ws, "set_param", {"name": "print_speed", "value": 45})
        act.approve(ws, a["id"])
        a = act.apply(ws, a["id"], act.Outbox(ws))
        assert a["status"] == "sent" and len(act.pending(ws)) == 1
        assert line.recipe["print_speed"] != 45.0  # nothing reaches the line before it is published
        done = act.publish(ws, act.LineControl(line))
        assert done[0]["status"] == "applied" and line.recipe["print_speed"] == 45.0
        assert act.pending(ws) == []
        assert [x["id"] for x in act.list_actions(ws, status="applied")] == [a["id"]]


def test_proposals_are_checked_against_the_control_interface(tmp_path: Path) -> None:
    with _twin_workspace(tmp_path) as ws:
        with pytest.raises(UserError, match="outside its safe bounds"):
            act.propose(ws, "set_param", {"name": "print_speed", "value": 500})
        with pytest.raises(UserError, match="does not accept an action 'reboot_line'"):
            act.propose(ws, "reboot_line")
        with pytest.raises(UserError, match="must be one of"):
            act.propose(ws, "replace_nozzle", {"machine": "P9", "nozzle": "N1"})
        a = act.propose(ws, "recalibrate_tester", {"tester": "T2"})
        act.reject(ws, a["id"], note="tester just calibrated")
        with pytest.raises(UserError, match="only a proposed action"):
            act.approve(ws, a["id"])


def test_effect_interval_covers_the_true_change() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        before = rng.random(3000) < 0.95
        after = rng.random(3000) < 0.96
        e = act.effect_of_outcomes(before, after, expected_delta=0.01)
        covered += e.interval[0] <= 0.01 <= e.interval[1]
    assert covered / 200 >= 0.92
    flat = act.compare_yields((3000, 2850), (3000, 2853), expected_delta=0.02)
    assert flat.verdict == "no clear change" and flat.meets_expectation is False
    assert act.compare_yields((50, 45), (3000, 2850)).verdict == "not enough data"


def test_a_line_without_a_profile_accepts_no_action_until_it_has_one(tmp_path: Path) -> None:
    with Workspace.open(tmp_path / "ws") as ws, pytest.raises(UserError, match="no line profile"):
        act.propose(ws, "set_param", {"name": "print_speed", "value": 45})


def test_act_commands_json(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    _twin_workspace(tmp_path).close()

    def cli(*args: str) -> tuple[int, dict]:
        r = runner.invoke(app, [*args, "--json", "-w", ws])
        return r.exit_code, json.loads(r.stdout)

    code, out = cli("act", "propose", "replace_nozzle", "--params", "machine=P2,nozzle=N3", "--problem-id", "PRB-2",
                    "--expected-delta", "0.01")
    assert code == 0 and out["action"]["params"] == {"machine": "P2", "nozzle": "N3"}
    action_id = out["action"]["id"]
    code, out = cli("act", "approve", action_id)
    assert out["action"]["status"] == "approved"
    code, out = cli("act", "apply", action_id)  # no simulated line in this workspace: the outbox
    assert out["action"]["status"] == "sent" and out["action"]["applied"]["via"] == "outbox"
    code, out = cli("act", "list", "--problem-id", "PRB-2")
    assert [a["id"] for a in out["actions"]] == [action_id]
    code, out = cli("act", "propose", "set_param", "--params", '{"name": "print_speed", "value": 500}')
    assert code == 2 and "outside its safe bounds" in out["error"]
    code, out = cli("act", "check", action_id)
    assert code == 2 and "once applied" in out["error"]
