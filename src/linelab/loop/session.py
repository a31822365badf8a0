"""One `linelab loop` session: the three runs, the figures that judge them, the report.

Figures (also what `bench/loop.py` aggregates):
- yield_gap_closed = (loop - none) / (oracle - none), on unit-weighted first-pass yield;
- recurrence_ratio = time-to-fix of a returning problem / time-to-fix of its first occurrence
  (time-to-fix: units from the problem's onset until the action that fixed it);
- recall_accuracy = share of returning problems whose top recalled know-how entry had the right fix
  (whether or not its score was high enough to apply it without a diagnosis);
- mistakes: actions that did not help, and problems acted on that no injected problem explains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linelab.act.simulation import prepare_simulation_workspace, record_simulation
from linelab.errors import UserError
from linelab.knowhow import ledger
from linelab.line import open_simulator
from linelab.loop.curve import Curve, gap_closed, learning_rate
from linelab.loop.runner import ClosedLoop, LoopPolicy, open_loop, run_baseline

RUN_KIND = "loop_run"


def _time_to_fix(truth: dict[str, Any], units: int) -> int:
    end = truth.get("end_unit") if str(truth.get("fixed_by", "")).startswith("action:") else None
    return int((end if end is not None else units) - truth["onset_unit"])


def score(loop: ClosedLoop, units: int) -> dict[str, Any]:
    """Recurrence, recall and mistakes, judged against the simulated line's ground truth."""
    # A bad lot has no onset until a machine loads it: problems not started yet are not judged.
    truth = [t for t in loop.line.truth if t["onset_unit"] is not None and t["onset_unit"] < units]
    by_truth = {tid: inc for inc in loop.state.incidents.values() for tid in inc.truth_ids}
    first_seen: dict[str, dict[str, Any]] = {}
    ratios, recalls = [], []
    for t in sorted(truth, key=lambda t: t["onset_unit"]):
        if t["type"] not in first_seen:
            first_seen[t["type"]] = t
            continue
        first = first_seen[t["type"]]
        ratios.append(_time_to_fix(t, units) / max(_time_to_fix(first, units), 1))
        inc = by_truth.get(t["id"])
        right_fix = {a["kind"] for a in t.get("fix_actions", [])}
        top = (inc.knowhow_reused or inc.recalled) if inc else None
        recalls.append(bool(top and ledger.get(loop.ws, top).fix.action in right_fix))
    acted = [i for i in loop.state.incidents.values() if i.actions_tried]
    return {
        "problems_injected": len(truth),
        "problems_fixed_by_loop": sum(str(t.get("fixed_by", "")).startswith("action:") for t in truth),
        "recurrences": len(ratios),
        "recurrence_ratio": round(sum(ratios) / len(ratios), 3) if ratios else None,
        "recall_accuracy": round(sum(recalls) / len(recalls), 3) if recalls else None,
        "actions_applied": sum(len(i.actions_tried) for i in acted),
        "actions_that_did_not_help": sum(i.failed_actions for i in acted),
        "false_problems_acted_on": sum(1 for i in acted if not i.truth_ids),
        "truth": [{"id": t["id"], "type": t["type"], "onset_unit": t["onset_unit"], "fixed_by": t.get("fixed_by"),
                   "end_unit": t.get("end_unit"), "time_to_fix_units": _time_to_fix(t, units)} for t in truth],
    }


def run_session(workspace: str | Path | None, scenario: str | None, seed: int, units: int | None,
                policy: LoopPolicy, advance: Callable[[int], None] | None = None,
                log: Callable[[str], None] | None = None, fresh: bool = True,
                simulator: str = "twin") -> dict[str, Any]:
    """The loop, no loop and the oracle on `simulator`'s `scenario`, scored against its truth."""
    line = open_simulator(simulator, scenario, seed)
    total = units or line.planned_units
    if not total:
        raise UserError(f"scenario {line.scenario_name} has no length of its own: give --units")
    root = prepare_simulation_workspace(workspace, fresh)
    start = time.perf_counter()
    loop = open_loop(root, line, seed, policy, log=log)
    record_simulation(loop.ws, line, simulator, line.scenario_name, seed)
    loop.planned_units = total
    try:
        while loop.produced < total:
            n = min(loop.look_units, total - loop.produced)
            loop.step(n)
            if advance:
                advance(n)
        seconds = time.perf_counter() - start
        look = loop.look_units  # the baselines' curves at the loop's own resolution
        none = run_baseline(open_simulator(simulator, scenario, seed), total, look, oracle=False, on_chunk=advance)
        oracle = run_baseline(open_simulator(simulator, scenario, seed), total, look, oracle=True, on_chunk=advance)
        curves: dict[str, Curve] = {"none": none, "loop": loop.state.curve, "oracle": oracle}
        yields = {k: c.mean_yield() for k, c in curves.items()}
        result = {
            "simulator": simulator, "scenario": line.scenario_name, "seed": seed, "units": total, "chunk": look,
            "seconds_loop": round(seconds, 1),
            "first_pass_yield": {k: round(v, 5) for k, v in yields.items()},
            "copq_per_unit": {k: round(c.mean_copq(), 5) for k, c in curves.items()},
            "yield_gap_closed": round(gap_closed(yields["loop"], yields["none"], yields["oracle"]), 3),
            "learning_rate": {k: round(learning_rate(c)["learning_rate"], 4) for k, c in curves.items()},
            **score(loop, total),
            "incidents": loop.incidents(),
            "knowhow": [{"id": e.id, "title": e.title, "reused": e.reused} for e in ledger.all_entries(loop.ws)],
            "recipe": {"start": loop.start_recipe, "adopted": loop.state.adopted_recipe,
                       "adopted_at_unit": loop.state.adopted_at_unit, "trials": loop.state.trials},
            "curves": {k: c.to_dict() for k, c in curves.items()},
            "workspace": str(root),
        }
        loop.ws.put_artifact(RUN_KIND, "latest", result)
        return result
    finally:
        loop.ws.close()
