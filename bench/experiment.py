"""Experiment benchmark: finding the recipe optimum on the twin, and honesty of verdicts.

1. Recipe search on the twin ("clean" scenario: no injected problem), starting from the default
   recipe. LineLab's trust-region Bayesian optimiser versus one-factor-at-a-time (OFAT, what
   engineers often do), random search and a 3-level full-factorial grid — same unit budget,
   same line and seed for every method. Reported per method: units until the recommended
   recipe's true yield reaches, and then stays, within 0.5 points of the true optimum
   (line.expected_yield(line.optimal_recipe())); how often it gets there at all; and the cost
   of learning — units lost during the search against the optimum and against the start.
2. Honesty of the split-run verdicts (mixture SPRT, the default; and the Bayesian test):
   false-adoption rate in A/A experiments and power / median units to a verdict in A/B with a
   known +1 point gain. These use exact binomial draws at the twin's expected yield of the
   default recipe (so the gain is exactly known); the full run adds split runs on the twin
   itself (A/A with the same recipe in both arms, A/B with a recipe change whose true gain is
   about one point).

`--quick` (< 30 s): two seeds and a 24,000-unit budget; the oracle is the twin's own yield model
evaluated on a 40,000-unit sample (the full run uses the twin's 200,000-unit oracle and its
optimal_recipe()); the optimum is found by L-BFGS-B on that oracle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # searches run in parallel processes: one BLAS thread each

from linelab.experiment import (  # noqa: E402
    BayesianSplitTest,
    GridSearch,
    MixtureSPRT,
    OneFactorAtATime,
    RandomSearch,
    RecipeOptimizer,
    run_search,
    run_split,
    tune_bounds,
)
from linelab.twin import Line  # noqa: E402
from linelab.twin import physics as ph  # noqa: E402
from linelab.twin.simulator import twin_profile  # noqa: E402

WITHIN = 0.005  # "at the optimum": within half a point of first-pass yield


class Oracle:
    """The twin's noise-free first-pass yield of a recipe, cached."""

    def __init__(self, line: Line, sample: int | None) -> None:
        self.line = line
        self.sample = sample
        self.cache: dict[tuple[float, ...], float] = {}
        self.calls = 0

    def __call__(self, recipe: dict[str, float]) -> float:
        full = {**self.line.recipe, **recipe}
        key = tuple(round(full[k], 6) for k in sorted(full))
        if key not in self.cache:
            self.calls += 1
            if self.sample is None:
                self.cache[key] = self.line.expected_yield(full)
            else:
                self.cache[key] = ph.expected_first_pass_yield(full, self.line.scenario.maintenance.stencil_clean_every,
                                                               n=self.sample)
        return self.cache[key]

    def optimum(self) -> tuple[dict[str, float], float]:
        if self.sample is None:
            best = self.line.optimal_recipe()
            return best, self(best)
        bounds = tune_bounds(twin_profile())
        names = list(bounds)
        lo = np.array([b[0] for b in bounds.values()])
        span = np.array([b[1] - b[0] for b in bounds.values()])

        def neg(u: np.ndarray) -> float:
            return -self(dict(zip(names, lo + np.clip(u, 0, 1) * span, strict=True)))

        starts = [np.full(len(names), 0.5), (np.array([self.line.recipe[n] for n in names]) - lo) / span]
        res = min((minimize(neg, u0, method="L-BFGS-B", bounds=[(0, 1)] * len(names),
                            options={"eps": 1e-3, "maxiter": 60}) for u0 in starts), key=lambda r: r.fun)
        best = dict(zip(names, lo + np.clip(res.x, 0, 1) * span, strict=True))
        return best, self(best)


METHODS: dict[str, Callable[[dict[str, tuple[float, float]], int], Any]] = {
    "linelab_bo": lambda b, s: RecipeOptimizer(b, seed=s),
    "ofat": lambda b, s: OneFactorAtATime(b, seed=s),
    "random": lambda b, s: RandomSearch(b, seed=s),
    "grid": lambda b, s: GridSearch(b, seed=s),
}


def search_once(method: str, seed: int, budget: int, per_trial: int, sample: int | None,
                optimum: float | None) -> dict[str, Any]:
    line = Line("clean", seed=seed)
    oracle = Oracle(line, sample)
    if optimum is None:
        optimum = oracle.optimum()[1]
    start_yield = oracle(line.recipe)
    search = METHODS[method](tune_bounds(twin_profile()), seed)
    search.fit({"recipe": line.recipe})
    units = per_trial
    if method == "grid":  # the grid spends the same budget over all of its points
        units = max(1, budget // search.size)
    t0 = time.perf_counter()
    res = run_search(line, search, budget, units)
    seconds = time.perf_counter() - t0
    inc = np.array([oracle(s.incumbent) for s in res.steps])
    tried = np.array([oracle(s.recipe) for s in res.steps])
    n = np.array([s.units for s in res.steps])
    cum = np.array([s.cumulative_units for s in res.steps])
    ok = optimum - inc <= WITHIN
    # first step after which the recommendation stays within the target to the end
    tail_ok = np.logical_and.accumulate(ok[::-1])[::-1]
    reach = int(cum[np.argmax(tail_ok)]) if tail_ok.any() else None
    return {
        "method": method, "seed": seed, "units_to_optimum": reach, "final_yield": float(inc[-1]),
        "final_gap_pt": float(100 * (optimum - inc[-1])), "trials": len(res.steps),
        "units_lost_vs_optimum": float(np.sum(n * (optimum - tried))),
        "units_lost_vs_start": float(np.sum(n * (start_yield - tried))),
        "worst_trial_yield": float(tried.min()), "stopped_early": int(sum(s.stopped_early for s in res.steps)),
        "units": int(cum[-1]), "seconds": round(seconds, 2), "optimum": optimum, "start_yield": start_yield,
    }


def _search_job(job: tuple[Any, ...]) -> dict[str, Any]:
    return search_once(*job)


def binomial_split(test_factory: Callable[[], Any], p_control: float, p_treatment: float, runs: int, lot: int,
                   seed: int) -> dict[str, Any]:
    """Sequential split runs with exact binomial outcomes; lots alternate in random pair order."""
    rng = np.random.default_rng(seed)
    decisions: list[str] = []
    units: list[int] = []
    for _ in range(runs):
        test = test_factory().fit()
        while not test.stopped:
            order = rng.permutation(2)
            arm = np.repeat(order, lot)
            p = np.where(arm == 1, p_treatment, p_control)
            test.update(arm, rng.random(arm.size) < p)
        v = test.verdict()
        decisions.append(v.decision)
        units.append(v.units)
    d = np.array(decisions)
    return {"runs": runs, "adopt": float(np.mean(d == "adopt")), "reject": float(np.mean(d == "reject")),
            "inconclusive": float(np.mean(d == "inconclusive")), "median_units": float(np.median(units))}


def twin_split(change: dict[str, float], runs: int, lot: int, seed0: int, max_units: int) -> dict[str, Any]:
    """Split runs on the twin itself ("clean" scenario): a fresh line per run."""
    decisions, units = [], []
    for k in range(runs):
        line = Line("clean", seed=seed0 + k)
        res = run_split(line, change, MixtureSPRT(max_units=max_units), lot_size=lot, seed=seed0 + k)
        decisions.append(res.verdict.decision)
        units.append(res.verdict.units)
    d = np.array(decisions)
    return {"runs": runs, "adopt": float(np.mean(d == "adopt")), "reject": float(np.mean(d == "reject")),
            "inconclusive": float(np.mean(d == "inconclusive")), "median_units": float(np.median(units))}


def one_point_change(oracle: Oracle) -> tuple[dict[str, float], float]:
    """A recipe change on the way from the default to the optimum whose true gain is ~1 point."""
    start = oracle.line.recipe
    best, _ = oracle.optimum()
    base = oracle(start)
    lo, hi = 0.0, 1.0
    for _ in range(25):
        t = (lo + hi) / 2
        r = {k: start[k] + t * (best[k] - start[k]) for k in best}
        lo, hi = (t, hi) if oracle(r) - base < 0.01 else (lo, t)
    r = {k: round(start[k] + hi * (best[k] - start[k]), 3) for k in best}
    return r, oracle(r) - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed, smaller budget, sampled oracle (< 30 s)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="units per search")
    ap.add_argument("--per-trial", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    args = ap.parse_args()
    quick = args.quick
    seeds = args.seeds or (2 if quick else 10)
    budget = args.budget or (24_000 if quick else 60_000)
    sample = 40_000 if quick else None
    t_start = time.perf_counter()

    # -- 1. recipe search ------------------------------------------------------------------
    ref = Oracle(Line("clean", seed=0), sample)
    best_recipe, optimum = ref.optimum()
    start_yield = ref(ref.line.recipe)
    print(f"twin 'clean': default recipe {100 * start_yield:.2f}% first-pass yield; optimum {100 * optimum:.2f}% at "
          + ", ".join(f"{k}={v:.2f}" for k, v in best_recipe.items()))
    print(f"recipe search: budget {budget:,} units, {args.per_trial:,} units per trial (grid: budget / 81 points), "
          f"{seeds} seed(s); target: within {100 * WITHIN:.1f} pt of the optimum")
    jobs = [(m, seed, budget, args.per_trial, sample, optimum) for m in METHODS for seed in range(seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(_search_job, jobs))
    print(f"({len(jobs)} searches in {time.perf_counter() - t0:.1f} s on {args.workers} worker(s))")
    summary: dict[str, dict[str, Any]] = {}
    censor = 2 * budget  # not reached within the budget: counted as twice the budget
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        reach = [r["units_to_optimum"] for r in rs]
        summary[method] = {
            "median_units_to_optimum": float(np.median([u if u is not None else censor for u in reach])),
            "reached": sum(u is not None for u in reach) / len(rs),
            "final_gap_pt": float(np.mean([r["final_gap_pt"] for r in rs])),
            "units_lost_vs_optimum": float(np.mean([r["units_lost_vs_optimum"] for r in rs])),
            "units_lost_vs_start": float(np.mean([r["units_lost_vs_start"] for r in rs])),
            "worst_trial_yield": float(np.min([r["worst_trial_yield"] for r in rs])),
            "seconds": float(np.mean([r["seconds"] for r in rs])),
        }
    print(f"{'method':<12}{'units to opt':>14}{'reached':>9}{'final gap pt':>14}{'lost vs opt':>13}"
          f"{'lost vs start':>15}{'worst trial':>13}{'s/run':>7}")
    for m, s in summary.items():
        print(f"{m:<12}{s['median_units_to_optimum']:>14,.0f}{s['reached']:>9.0%}{s['final_gap_pt']:>14.2f}"
              f"{s['units_lost_vs_optimum']:>13,.0f}{s['units_lost_vs_start']:>15,.0f}"
              f"{100 * s['worst_trial_yield']:>12.1f}%{s['seconds']:>7.1f}")
    print("(units to opt: median over seeds, a search that never got there counts as twice the budget; "
          "lost = expected defective units beyond those of the optimum / of the start recipe)")
    ours, ofat = summary["linelab_bo"], summary["ofat"]
    units_vs_ofat = ours["median_units_to_optimum"] / ofat["median_units_to_optimum"]
    loss_vs_ofat = ours["units_lost_vs_optimum"] / ofat["units_lost_vs_optimum"]

    # -- 2. honesty of verdicts ----------------------------------------------------------
    p0 = start_yield
    n_aa = 200
    n_ab = 100 if quick else 200
    lot = 1000 if quick else 250
    t0 = time.perf_counter()
    aa = binomial_split(lambda: MixtureSPRT(), p0, p0, n_aa, lot, seed=1)
    ab = binomial_split(lambda: MixtureSPRT(), p0, p0 + 0.01, n_ab, lot, seed=2)
    aa_b = binomial_split(lambda: BayesianSplitTest(), p0, p0, n_aa, lot, seed=3)
    ab_b = binomial_split(lambda: BayesianSplitTest(), p0, p0 + 0.01, n_ab, lot, seed=4)
    print(f"\nsplit runs, binomial draws at the twin's default-recipe yield {100 * p0:.2f}%, lots of {lot} "
          "alternating in random pair order, alpha 0.05, at most 80,000 units")
    print(f"{'test':<8}{'A/A false adoption':>20}{'A/A reject':>12}{'A/B power':>11}{'A/B median units':>18}")
    for name, a, b in (("msprt", aa, ab), ("bayes", aa_b, ab_b)):
        print(f"{name:<8}{a['adopt']:>20.1%}{a['reject']:>12.1%}{b['adopt']:>11.1%}{b['median_units']:>18,.0f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    twin_checks: dict[str, Any] = {}
    if not quick:
        change, gain = one_point_change(ref)
        twin_aa = twin_split({}, 40, 500, 1000, 80_000)
        twin_ab = twin_split(change, 40, 500, 2000, 80_000)
        twin_checks = {"twin_aa_false_adoption": twin_aa["adopt"], "twin_ab_power": twin_ab["adopt"],
                       "twin_ab_median_units": twin_ab["median_units"], "twin_ab_true_gain_pt": 100 * gain}
        print(f"on the twin (40 split runs each, lots of 500): A/A false adoption {twin_aa['adopt']:.1%}; "
              f"A/B of {change} (true gain {100 * gain:+.2f} pt): power {twin_ab['adopt']:.1%}, "
              f"median {twin_ab['median_units']:,.0f} units")

    seconds = time.perf_counter() - t_start
    print(f"\nLineLab optimiser: {units_vs_ofat:.2f}x the units OFAT needs to reach the optimum, "
          f"{loss_vs_ofat:.2f}x its cost of learning; {seconds:.1f} s in all")
    result = {
        "bench": "experiment",
        "quick": quick,
        "seeds": seeds,
        "budget_units": budget,
        "units_per_trial": args.per_trial,
        "optimum_yield": optimum,
        "start_yield": start_yield,
        "search": summary,
        "units_vs_ofat": units_vs_ofat,
        "learning_cost_vs_ofat": loss_vs_ofat,
        "false_adoption_rate": aa["adopt"],
        "power_1pt": ab["adopt"],
        "median_units_to_verdict_1pt": ab["median_units"],
        "bayes_false_adoption_rate": aa_b["adopt"],
        "bayes_power_1pt": ab_b["adopt"],
        "ab_source": "binomial draws at the twin's expected yield",
        **twin_checks,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
