"""Reports a morning meeting can use: the loop report lists every problem seen with what happened
to it (also one nobody acted on), says what to do next, shows the recipe before and after within
its bounds at readable precision; the 8D export says each thing once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from linelab.commands import call
from linelab.knowhow.report import join
from linelab.loop.report import write_report
from linelab.store import Workspace

PROFILE = """
line: {stations: [{name: PRESS}, {name: TEST}]}
recipe:
  - {name: press_force_kn, station: PRESS, low: 10, high: 14, default: 12, step: 0.2, unit: kN}
  - {name: dwell_s, station: PRESS, low: 1, high: 3, default: 2, step: 0.05, unit: s}
"""


def _problem(pid: str, status: str, entity: str, lost: float) -> dict[str, Any]:
    return {"id": pid, "status": status, "kind": "defect_rate", "entity": entity, "scope": {"station": "TEST"},
            "onset": {"t": "2026-01-05T08:00:00", "unit": "U1"}, "first_evidence": {"t": "2026-01-05T09:00:00"},
            "latest_evidence": {"t": "2026-01-05T10:00:00"}, "signals": [], "history": [],
            "description": f"the fail rate at {entity} rose (more detail)",
            "severity": {"units_affected": 900, "yield_lost_units": lost, "signals": 1}}


def _result(ws: Path) -> dict[str, Any]:
    curve = {"units": [1000, 2000, 3000], "yield": [0.95, 0.955, 0.96], "copq": [0.05, 0.045, 0.04]}
    return {
        "scenario": "press_line", "seed": 3, "units": 3000, "workspace": str(ws),
        "first_pass_yield": {"none": 0.93, "loop": 0.955, "oracle": 0.97},
        "copq_per_unit": {"none": 0.07, "loop": 0.045, "oracle": 0.03}, "yield_gap_closed": 0.625,
        "learning_rate": {"none": 0.0, "loop": 0.1, "oracle": 0.12}, "recurrence_ratio": None,
        "recall_accuracy": None, "actions_that_did_not_help": 1, "false_problems_acted_on": 0,
        "incidents": [{"problem_id": "PRB-0001", "description": "fail rate at TEST/T2", "onset_unit": 1200,
                       "detected_unit": 1500, "fixed_unit": 1800, "resolved_unit": 2600, "cause": "machine=T2",
                       "action": "service_tester {'tester': 'T2'}", "failed_actions": 1, "knowhow_reused": None,
                       "knowhow_written": "KH-0001", "truth_ids": ["t1"]}],
        "knowhow": [{"id": "KH-0001", "title": "fail rate at TEST (T2) → service_tester", "reused": 0}],
        "recipe": {"start": {"press_force_kn": 12.0, "dwell_s": 2.0},
                   "adopted": {"press_force_kn": 12.600000000000001, "dwell_s": 1.9500000000000002},
                   "adopted_at_unit": 2500,
                   "trials": [{"unit": 2000, "recipe": {"press_force_kn": 12.600000000000001, "dwell_s": 2.0},
                               "units": 500, "first_pass_yield": 0.9612345678}]},
        "truth": [{"id": "t1", "type": "tester_drift", "onset_unit": 1100, "fixed_by": "action:service_tester",
                   "end_unit": 1800, "time_to_fix_units": 700}],
        "curves": {"none": curve, "loop": curve, "oracle": curve},
    }


@pytest.fixture()
def loop_workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    with Workspace.open(root) as ws:
        ws.put_artifact("problem", "PRB-0001", _problem("PRB-0001", "resolved", "TEST/T2", 40.0), "resolved")
        # Seen by the monitor, never acted on by the loop: it must still be in the report.
        ws.put_artifact("problem", "PRB-0002", _problem("PRB-0002", "open", "PRESS/P1", 75.5), "open")
    (root / "profile.yaml").write_text(PROFILE)
    return root


def test_loop_report_lists_every_problem_and_says_what_to_do_next(loop_workspace: Path, tmp_path: Path) -> None:
    page = write_report(_result(loop_workspace), tmp_path / "out").read_text()
    shown = re.sub(r"<script.*?</script>", " ", page, flags=re.S)  # the text a reader sees, not the plot's data
    text = re.sub(r"<[^>]+>", " ", shown.split("<h2>What to do next</h2>", 1)[1])
    # Every problem seen, with what happened to it.
    assert "PRB-0002" in text and "seen, never acted on (open)" in text
    assert "fixed at unit 1,800 by service_tester tester=T2" in text and "verified at unit 2,600" in text
    # What to do next: the open problem first, with its cost and the command to run.
    steps = re.findall(r"<li>(.*?)</li>", page)
    assert steps[0].startswith("PRB-0002 at PRESS/P1 is open (76 units lost so far)")
    assert "linelab diagnose PRB-0002" in steps[0]
    assert any("did not help" in s for s in steps) and any("split run" in s for s in steps)
    # The recipe as before / after with bounds, at the precision of each setting's step.
    assert re.search(r"press_force_kn\s+PRESS\s+12\.0\s+12\.6\s+\+0\.6\s+10\.0 … 14\.0 kN", text)
    assert re.search(r"dwell_s\s+PRESS\s+2\.00\s+1\.95\s+-0\.05\s+1\.00 … 3\.00 s", text)
    assert "96.12%" in text
    assert not re.search(r"\d\.\d{7,}", text), "no raw floats in the report"


def test_loop_report_without_its_workspace_still_lists_the_incidents(tmp_path: Path) -> None:
    page = write_report(_result(tmp_path / "gone"), tmp_path / "out").read_text()
    assert "PRB-0001" in page and "PRB-0002" not in page


def test_join_says_each_thing_once() -> None:
    assert join("fixture@PLACE=P2-N3", "diagnosed cause fixture@PLACE=P2-N3") == "diagnosed cause fixture@PLACE=P2-N3."
    assert join("a b", "", "c") == "a b. c."


def test_8d_export_repeats_no_line_and_draws_a_problem_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for cause in ("machine=M2", "machine=M2"):
        call("knowhow add", workspace=ws, cause=cause, fix="service_machine", params="machine=M2", station="PRESS",
             measurement="force_kn", note="worn ram seal")
    res = call("knowhow export", workspace=ws, out=tmp_path / "8d")
    md = Path(res.files["markdown"]).read_text()  # type: ignore[attr-defined]
    for entry in md.split("\n## ")[1:]:
        lines = [x for x in entry.splitlines() if x.strip() and not x.startswith("#")]
        sentences = [s.strip() for x in lines for s in x.split(". ") if s.strip()]
        assert len(sentences) == len(set(sentences)), entry
        assert "service_machine (machine=M2)" in entry
    assert md.count("| KH-000") == 2  # the opening table: one line per entry
    shutil.rmtree(tmp_path / "8d")
