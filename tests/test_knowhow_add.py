"""A person writes know-how (`knowhow add`, `problem resolve --cause --fix`); recall offers it like any other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from linelab.cli import build_app
from linelab.commands import call
from linelab.errors import NotFound, UserError
from linelab.monitor.problems import Alarm, Evidence, ProblemBook
from linelab.profile import PROFILE_FILE, parse_profile, save_profile
from linelab.store import Workspace

runner = CliRunner()
app = build_app()


def file_problem(ws: Path, t: str, machine: str = "M2", shift: float = -2.4) -> str:
    """A problem as the monitor files it: the glue weight at DISP drifting down on one machine."""
    with Workspace.open(ws) as w:
        return ProblemBook(w).add(Alarm(
            detector="measurement_cusum", kind="measurement_shift", entity=f"DISP/{machine}",
            scope={"station": "DISP", "measurement": "glue_weight", "machine": machine},
            onset=Evidence("SN1", t), first=Evidence("SN2", t), latest=Evidence("SN3", t),
            units_affected=400, yield_lost_units=12.0, effect={"shift_sigma": shift, "shape": "drift"},
            description=f"glue weight at DISP on machine {machine} is {abs(shift)} sigma low"))


def cli(ws: Path, *args: str) -> tuple[int, dict[str, Any]]:
    r = runner.invoke(app, [*args, "--json", "-w", str(ws)])
    return r.exit_code, json.loads(r.stdout)


def test_a_persons_entry_from_a_problem_is_recalled_when_the_symptom_returns(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first = file_problem(ws, "2025-03-03T10:00:00")
    code, out = cli(ws, "knowhow", "add", "--problem", first, "--cause", "machine=M2", "--fix", "service_machine",
                    "--params", "machine=M2", "--note", "dispenser needle clogged with cured glue; cleaned",
                    "--tag", "glue", "--by", "ana")
    assert code == 0, out
    entry = out["entry"]
    assert entry["problem_id"] == first and entry["signature"]["measurement"] == "glue_weight"
    assert entry["root_cause"] == {"factor": "machine", "level": "M2", "description": "machine=M2",
                                   "entity": {"kind": "machine", "name": "M2", "station": None, "material": None}}
    assert entry["fix"] == {"action": "service_machine", "params": {"machine": "M2"}, "target_factor": "machine",
                            "description": "service_machine (written by ana; done by hand, not an action of the line)"}
    assert entry["evidence"] == {"problem": first, "written_by": "ana"} and entry["tags"] == ["glue"]
    assert entry["effect"] is None  # no action carried it out through LineLab: nothing measured
    # The machine's entity and its measurements: the entry sets a watch, as the loop's entries do.
    assert [w.id for w in call("knowhow watches", ws).watches] == [entry["id"]]

    call("problem status", ws, id=first, status="resolved")
    again = file_problem(ws, "2025-04-14T08:00:00", shift=-2.9)
    assert again != first
    matches = call("knowhow search", ws, problem=again).matches
    assert matches[0].entry_id == entry["id"] and matches[0].fix == "service_machine"
    assert matches[0].structural > 0.9
    assert call("knowhow search", ws, text="needle clogged").matches[0].entry_id == entry["id"]


def test_a_symptom_without_a_problem_is_recalled_by_the_problem_that_shows_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    entry = call("knowhow add", ws, station="DISP", measurement="glue_weight", direction="down",
                 cause="glue lot too viscous after a warm transport", fix="hold_lot",
                 note="seen by quality before LineLab watched the line").entry
    assert entry["problem_id"] is None and entry["signature"]["kind"] == "measurement_shift"
    assert entry["signature"]["direction"] == "down"
    assert entry["root_cause"]["factor"] == entry["root_cause"]["description"] and entry["root_cause"]["level"] is None
    pid = file_problem(ws, "2025-03-03T10:00:00", machine="M1")
    assert call("knowhow search", ws, problem=pid).matches[0].entry_id == entry["id"]

    failures = call("knowhow add", ws, station="REFLOW", defect_code="VOIDS", cause="nitrogen", fix="set_param",
                    params='{"name": "n2_flow", "value": 30}').entry
    assert failures["signature"]["kind"] == "defect_rate" and failures["signature"]["direction"] == "up"
    assert failures["root_cause"] == {"factor": "nitrogen", "level": None, "entity": None, "description": "nitrogen"}
    assert failures["fix"]["params"] == {"name": "n2_flow", "value": 30}
    assert [e["id"] for e in call("knowhow list", ws).entries] == [entry["id"], failures["id"]]


def test_knowhow_add_says_what_is_missing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    pid = file_problem(ws, "2025-03-03T10:00:00")
    with pytest.raises(UserError, match="describe the symptom"):
        call("knowhow add", ws, cause="machine=M2", fix="service_machine")
    with pytest.raises(UserError, match="not both"):
        call("knowhow add", ws, problem=pid, station="DISP", cause="machine=M2", fix="service_machine")
    with pytest.raises(NotFound):
        call("knowhow add", ws, problem="PRB-0404", cause="machine=M2", fix="service_machine")
    with pytest.raises(UserError, match="give the cause"):
        call("knowhow add", ws, problem=pid, cause="  ", fix="service_machine")
    with pytest.raises(UserError, match="give the fix"):
        call("knowhow add", ws, problem=pid, cause="machine=M2", fix=" ")
    with pytest.raises(NotFound):
        call("knowhow add", ws, problem=pid, cause="machine=M2", fix="service_machine", action="ACT-0404")
    assert call("knowhow list", ws).entries == []


def test_resolving_a_problem_with_cause_and_fix_writes_its_entry(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    pid = file_problem(ws, "2025-03-03T10:00:00")
    code, out = cli(ws, "problem", "resolve", pid, "--cause", "machine=M2")
    assert code == 2 and "both --cause and --fix" in out["error"]
    code, out = cli(ws, "problem", "resolve", pid, "--cause", "machine@DISP=M2", "--fix", "service_machine",
                    "--params", "machine=M2", "--note", "needle cleaned")
    assert code == 0, out
    entry, problem = out["entry"], out["problem"]
    assert problem["status"] == "resolved" and problem["history"][-1]["note"] == "needle cleaned"
    assert problem["resolution"] == {"cause": "machine@DISP=M2", "fix": "service_machine", "knowhow": entry["id"],
                                     "by": "person"}
    assert entry["root_cause"]["factor"] == "machine@DISP" and entry["fix"]["target_factor"] == "machine"
    assert entry["root_cause"]["entity"] == {"kind": "machine", "name": "M2", "station": "DISP", "material": None}
    assert call("knowhow show", ws, id=entry["id"]).entry["notes"] == "needle cleaned"
    assert call("problems", ws, status="resolved").problems[0]["id"] == pid

    # A false alarm cannot be resolved: nothing is written.
    other = file_problem(ws, "2025-05-01T10:00:00", machine="M1")
    call("problem status", ws, id=other, status="false_alarm")
    with pytest.raises(UserError, match="is false_alarm"):
        call("problem resolve", ws, id=other, cause="machine=M1", fix="service_machine")
    assert [e["id"] for e in call("knowhow list", ws).entries] == [entry["id"]]
    # Without a cause and a fix it only closes the problem.
    third = file_problem(ws, "2025-06-01T10:00:00", machine="M3")
    done = call("problem resolve", ws, id=third)
    assert done.problem["status"] == "resolved" and done.entry is None


def test_a_persons_fix_that_the_line_accepts_is_checked_against_its_profile(tmp_path: Path) -> None:
    """A fix the loop may send again through the control channel must be one the line accepts."""
    ws = tmp_path / "ws"
    save_profile(parse_profile({"actions": [{"name": "service_machine", "params": [
        {"name": "machine", "choices": ["M1", "M2"], "from_cause": "name"}], "remedies": [{"entity": ["machine"]}]}]}),
        ws / PROFILE_FILE)
    pid = file_problem(ws, "2025-03-03T10:00:00")
    code, out = cli(ws, "knowhow", "add", "--problem", pid, "--cause", "machine=M2", "--fix", "service_machine",
                    "--params", "machine=M9")
    assert code == 2 and "must be one of M1, M2" in out["error"]
    code, out = cli(ws, "knowhow", "add", "--problem", pid, "--cause", "machine=M2", "--fix", "service_machine",
                    "--params", "machine=M2")
    assert code == 0 and out["entry"]["fix"]["description"] == "service_machine (written by person)"
