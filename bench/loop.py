"""The closed loop against no loop and an oracle, over several seeds and scenarios.

    python bench/loop.py [--quick] [--seeds N] [--simulator twin|zoo] [--seed-set tune|report]

`--simulator zoo` runs the loop on lines it was not written for: per zoo line kind, one run of
each problem type that costs yield and that an action on the line can end (a bad lot, a
machine's step, a tester's drift, one shift's handling), driven through each line's own
profile. Its seeds follow bench/zoo.py: `--seed-set report` uses 0, 1, 2...; `tune` uses
100, 101... (tune on those, report these). The twin plan is the default and mixed scenarios.

Per run: yield gap closed = (loop - none) / (oracle - none) on first-pass yield; time-to-fix of
returning problems versus their first occurrence; recall accuracy of know-how; mistakes (actions
that did not help, false problems acted on). The last line is one JSON object of the means.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from linelab.loop.runner import LoopPolicy
from linelab.loop.session import run_session


def mean(values: list[float | None]) -> float | None:
    """Mean of the runs that have a value: a run with no yield gap (the problem cost nothing the
    oracle would have saved) has no share of it to close (NaN) and is left out."""
    vals = [v for v in values if v is not None and v == v]
    return round(statistics.fmean(vals), 3) if vals else None


# Zoo problems that lose units and that one of the line's actions ends.
ZOO_TYPES = ("bad_lot_fails", "machine_step", "tester_drift", "shift_handling")


def one_run(spec: tuple[str, str, int, int | None, bool]) -> dict:
    simulator, scenario, seed, units, optimise = spec
    with tempfile.TemporaryDirectory() as d:
        r = run_session(d, scenario, seed, units, LoopPolicy(optimise_recipe=optimise), simulator=simulator)
    r.pop("curves", None)
    return r


def zoo_plan(quick: bool, seed_set: str) -> list[tuple[str, str, int, int | None, bool]]:
    from linelab.zoo import KINDS
    from linelab.zoo.simulator import problem_types

    base = 100 if seed_set == "tune" else 0
    if quick:
        return [("zoo", "assembly:bad_lot_fails", base, None, False)]
    plan: list[tuple[str, str, int, int | None, bool]] = []
    for k, kind in enumerate(KINDS):
        types = [t for t in ZOO_TYPES if t in problem_types(kind)]
        plan += [("zoo", f"{kind}:{t}", base + k * 10 + i, None, False) for i, t in enumerate(types)]
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short scenario with a returning problem")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--simulator", choices=("twin", "zoo"), default="twin")
    ap.add_argument("--seed-set", choices=("tune", "report"), default="report", help="zoo seeds (see above)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (one per core)")
    args = ap.parse_args()
    plan: list[tuple[str, str, int, int | None, bool]]
    if args.simulator == "zoo":
        plan = zoo_plan(args.quick, args.seed_set)
    elif args.quick:
        plan = [("twin", "recurring_nozzle", 1, None, False)]  # a returning problem: recurrence and recall
    else:
        plan = [("twin", sc, seed, None, True) for sc in ("default",) for seed in range(args.seeds)]
        plan += [("twin", "mixed", seed, None, True) for seed in range(args.seeds)]
    start = time.perf_counter()
    # One run per core: the runs are independent and each is single-threaded.
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(plan)))) as pool:
        runs = list(pool.map(one_run, plan))
    for (_, scenario, seed, _, _), r in zip(plan, runs, strict=True):
        fy = r["first_pass_yield"]
        print(f"{scenario:>28} seed {seed}: yield none {fy['none']:.4f} loop {fy['loop']:.4f} oracle {fy['oracle']:.4f}"
              f" gap closed {r['yield_gap_closed']:.3f}  recurrence {r['recurrence_ratio']}"
              f"  recall {r['recall_accuracy']}  no-help actions {r['actions_that_did_not_help']}"
              f"  false problems acted on {r['false_problems_acted_on']}  ({r['seconds_loop']} s)")
    gaps = [r["yield_gap_closed"] for r in runs]  # NaN: no gap to close
    result = {
        "bench": "loop",
        "simulator": args.simulator,
        "seed_set": args.seed_set if args.simulator == "zoo" else None,
        "runs": len(runs),
        "yield_gap_closed": mean(gaps),
        "yield_gap_closed_min": min((g for g in gaps if g == g), default=None),
        "runs_without_gap": sum(g != g for g in gaps),
        "recurrence_ratio": mean([r["recurrence_ratio"] for r in runs]),
        "recall_accuracy": mean([r["recall_accuracy"] for r in runs]),
        "actions_applied": sum(r["actions_applied"] for r in runs),
        "actions_that_did_not_help": sum(r["actions_that_did_not_help"] for r in runs),
        "false_problems_acted_on": sum(r["false_problems_acted_on"] for r in runs),
        "problems_injected": sum(r["problems_injected"] for r in runs),
        "problems_fixed_by_loop": sum(r["problems_fixed_by_loop"] for r in runs),
        "gap_closed_per_run": {f"{sc}/{seed}": r["yield_gap_closed"]
                               for (_, sc, seed, _, _), r in zip(plan, runs, strict=True)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
