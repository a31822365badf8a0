"""The recipe optimiser improves the twin's yield and never leaves the safe bounds or its trust region."""

from __future__ import annotations

import numpy as np
import pytest

from linelab.experiment import (
    GridSearch,
    OneFactorAtATime,
    RandomSearch,
    RecipeOptimizer,
    run_search,
    trial_guardrail,
    tune_bounds,
)
from linelab.twin import RECIPE_PARAMS, Line
from linelab.twin.simulator import twin_profile


def test_optimiser_improves_the_twins_expected_yield_within_bounds() -> None:
    line = Line("clean", seed=0)
    start = line.recipe
    opt = RecipeOptimizer(tune_bounds(twin_profile()), seed=0).fit({"recipe": start})
    res = run_search(line, opt, budget_units=16_000, units_per_trial=2000)
    for step in res.steps:
        for name, value in step.recipe.items():
            assert RECIPE_PARAMS[name].low <= value <= RECIPE_PARAMS[name].high
    best = opt.best()
    assert line.expected_yield(best) > line.expected_yield(start) + 0.01
    assert res.units <= 16_000
    state = opt.state()
    assert state["trials"] == len(res.steps) and state["incumbent"] == best


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_proposals_stay_in_bounds_and_in_the_trust_region_even_when_the_optimum_is_outside(sampler: str) -> None:
    bounds = {"x": (0.0, 1.0), "y": (10.0, 20.0)}
    opt = RecipeOptimizer(bounds, seed=1, sampler=sampler, n_init=3).fit({"recipe": {"x": 0.5, "y": 15.0}})
    rng = np.random.default_rng(0)
    for _ in range(18):
        lo, hi = opt._box()
        centre = opt._to_recipe(opt.centre_u)
        r = opt.ask()
        assert 0.0 <= r["x"] <= 1.0 and 10.0 <= r["y"] <= 20.0
        u = opt._normalise([r["x"], r["y"]])
        assert np.all(u >= lo - 1e-9) and np.all(u <= hi + 1e-9), (u, lo, hi, centre)
        # yield keeps rising past the upper bound of x: the optimiser must push to the edge, not beyond
        p = 0.9 + 0.06 * r["x"] - 0.0004 * (r["y"] - 14.0) ** 2
        n = 2000
        opt.update(r, n, int(rng.binomial(n, p)))
    assert opt.best()["x"] > 0.7


def test_trial_guardrail_fires_only_when_yield_is_surely_below_the_floor() -> None:
    assert trial_guardrail(500, 440, floor=0.95)  # 88 % over 500 units
    assert not trial_guardrail(500, 470, floor=0.95)  # 94 %: could still be 95 %
    assert not trial_guardrail(0, 0, floor=0.95)


def test_a_bad_region_stops_trials_early_and_shrinks_the_region() -> None:
    line = Line("clean", seed=3)  # a realisation where no trial after the stopped one improves much
    # The region's own mechanics, on yield alone (no process model under the GP).
    opt = RecipeOptimizer(tune_bounds(twin_profile(), ["peak_temp_setpoint"]), seed=0, n_init=2, init_region=0.8,
                          max_step=0.5, use_process=False)
    opt.fit({"recipe": {"peak_temp_setpoint": 247.0}, "units": 4000, "passed": 3820})
    res = run_search(line, opt, budget_units=16_000, units_per_trial=2000)
    assert all(235.0 <= s.recipe["peak_temp_setpoint"] <= 260.0 for s in res.steps)
    stopped = [s for s in res.steps if s.stopped_early]
    assert stopped and all(s.units < 2000 and s.passed / s.units < opt.floor() for s in stopped)
    assert opt.region < 0.8  # failures shrank the box around the incumbent
    assert res.units == 16_000  # units a stopped trial did not use went to later trials


def test_baselines_share_the_interface() -> None:
    bounds = tune_bounds(twin_profile(), ["squeegee_pressure", "print_speed"])
    ofat = OneFactorAtATime(bounds, levels=3).fit({"recipe": {"squeegee_pressure": 5.5, "print_speed": 35.0}})
    seen = [ofat.ask() for _ in range(1)]
    ofat.update(seen[0], 100, 90)
    assert seen[0]["print_speed"] == 35.0 and seen[0]["squeegee_pressure"] == 4.0
    grid = GridSearch(bounds, levels=3)
    points = []
    while (r := grid.ask()) is not None:
        points.append(r)
        grid.update(r, 10, 9)
    assert len(points) == grid.size == 9
    rnd = RandomSearch(bounds, seed=3)
    r = rnd.ask()
    assert bounds["print_speed"][0] <= r["print_speed"] <= bounds["print_speed"][1]


def test_optimiser_verdict_compares_the_incumbent_with_the_start() -> None:
    bounds = {"x": (0.0, 1.0)}
    opt = RecipeOptimizer(bounds, seed=0, n_init=2).fit({"recipe": {"x": 0.2}, "units": 4000, "passed": 3600})
    assert opt.verdict().decision in ("continue", "inconclusive", "reject", "adopt")
    rng = np.random.default_rng(1)
    for _ in range(10):
        r = opt.ask()
        opt.update(r, 3000, int(rng.binomial(3000, 0.9 + 0.08 * r["x"])))
    v = opt.verdict()
    assert v.decision == "adopt" and v.interval[0] > 0 and v.extra["candidate"]["x"] > 0.3
    assert v.control.units == 4000 and v.treatment.units == 30_000
