"""The closed loop against no loop and an oracle, over several seeds and scenarios.

    python bench/loop.py [--quick] [--seeds N]

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
    vals = [v for v in values if v is not None]
    return round(statistics.fmean(vals), 3) if vals else None


def one_run(spec: tuple[str, int, int | None, bool]) -> dict:
    scenario, seed, units, optimise = spec
    with tempfile.TemporaryDirectory() as d:
        r = run_session(d, scenario, seed, units, LoopPolicy(optimise_recipe=optimise))
    r.pop("curves", None)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short scenario with a returning problem")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at once (one per core)")
    args = ap.parse_args()
    if args.quick:
        plan = [("recurring_nozzle", 1, None, False)]  # a returning problem: recurrence and recall
    else:
        plan = [(sc, seed, None, True) for sc in ("default",) for seed in range(args.seeds)]
        plan += [("mixed", seed, None, True) for seed in range(args.seeds)]
    start = time.perf_counter()
    # One run per core: the runs are independent and each is single-threaded.
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(plan)))) as pool:
        runs = list(pool.map(one_run, plan))
    for (scenario, seed, _, _), r in zip(plan, runs, strict=True):
        fy = r["first_pass_yield"]
        print(f"{scenario:>12} seed {seed}: yield none {fy['none']:.4f} loop {fy['loop']:.4f} oracle {fy['oracle']:.4f}"
              f" gap closed {r['yield_gap_closed']:.3f}  recurrence {r['recurrence_ratio']}"
              f"  recall {r['recall_accuracy']}  no-help actions {r['actions_that_did_not_help']}"
              f"  false problems acted on {r['false_problems_acted_on']}  ({r['seconds_loop']} s)")
    result = {
        "bench": "loop",
        "runs": len(runs),
        "yield_gap_closed": mean([r["yield_gap_closed"] for r in runs]),
        "yield_gap_closed_min": min(r["yield_gap_closed"] for r in runs),
        "recurrence_ratio": mean([r["recurrence_ratio"] for r in runs]),
        "recall_accuracy": mean([r["recall_accuracy"] for r in runs]),
        "actions_applied": sum(r["actions_applied"] for r in runs),
        "actions_that_did_not_help": sum(r["actions_that_did_not_help"] for r in runs),
        "false_problems_acted_on": sum(r["false_problems_acted_on"] for r in runs),
        "problems_injected": sum(r["problems_injected"] for r in runs),
        "problems_fixed_by_loop": sum(r["problems_fixed_by_loop"] for r in runs),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
