"""Designs have the run counts and orthogonality the textbooks give; the analysis recovers known effects."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from linelab.errors import UserError
from linelab.experiment import (
    DesignedExperiment,
    Factor,
    analyse,
    box_behnken,
    central_composite,
    fractional_factorial,
    full_factorial,
    make_design,
)


def test_run_counts() -> None:
    assert full_factorial(3).shape == (8, 3)
    assert full_factorial(2, levels=3).shape == (9, 2)
    assert fractional_factorial("a b c abc").shape == (8, 4)
    assert central_composite(3, center=4).shape == (8 + 6 + 4, 3)
    assert central_composite(5, center=4).shape == (16 + 10 + 4, 5)  # half fraction (resolution V) cube
    assert box_behnken(3, center=3).shape == (12 + 3, 3)
    assert box_behnken(4, center=3).shape == (24 + 3, 4)
    assert make_design("fractional", [Factor(n, 0, 1) for n in "abcde"]).runs == 16


@pytest.mark.parametrize(
    "x", [full_factorial(4), fractional_factorial("a b c abc"), fractional_factorial("a b c d abcd")]
)
def test_two_level_designs_are_orthogonal_and_balanced(x: np.ndarray) -> None:
    k = x.shape[1]
    assert np.allclose(x.T @ x, x.shape[0] * np.eye(k))
    assert np.allclose(x.sum(axis=0), 0)


def test_resolution_iv_fraction_keeps_main_effects_clear_of_two_factor_interactions() -> None:
    x = fractional_factorial("a b c abc")
    for i, j in itertools.combinations(range(4), 2):
        assert np.allclose(x.T @ (x[:, i] * x[:, j]), 0)


@pytest.mark.parametrize("x", [central_composite(3, alpha="rotatable"), box_behnken(4)])
def test_response_surface_designs_separate_linear_and_interaction_terms(x: np.ndarray) -> None:
    k = x.shape[1]
    mains = x
    inter = np.column_stack([x[:, i] * x[:, j] for i, j in itertools.combinations(range(k), 2)])
    cols = np.column_stack([mains, inter])
    gram = cols.T @ cols
    assert np.allclose(gram - np.diag(np.diag(gram)), 0)
    assert len(np.unique(x[:, 0].round(6))) >= 3  # enough levels for curvature


def test_design_maps_to_recipes_and_refuses_unsafe_runs() -> None:
    d = make_design("ccd", [Factor("squeegee_pressure", 5, 9), Factor("print_speed", 30, 60)], seed=1)
    recipes = d.recipes({"peak_temp_setpoint": 247.0})
    assert len(recipes) == d.runs == 4 + 4 + 4
    assert {r["squeegee_pressure"] for r in recipes} == {5.0, 7.0, 9.0}
    assert all(r["peak_temp_setpoint"] == 247.0 for r in recipes)
    assert sorted(d.order.tolist()) == list(range(d.runs))
    with pytest.raises(UserError, match="outside its safe bounds"):
        make_design("ccd", [Factor("squeegee_pressure", 4, 12), Factor("print_speed", 20, 100)], alpha="rotatable",
                    bounds={"squeegee_pressure": (4, 12), "print_speed": (20, 100)})


def _simulate(design, logit_fn, units: int, seed: int):
    x = design.coded
    p = 1 / (1 + np.exp(-logit_fn(x)))
    n = np.full(design.runs, units)
    return n, np.random.default_rng(seed).binomial(n, p)


def test_analysis_recovers_known_effects_and_the_optimum() -> None:
    d = make_design("ccd", [Factor("a", 4, 12), Factor("b", 20, 100), Factor("c", 235, 260)], center=4)

    def truth(x: np.ndarray) -> np.ndarray:
        return 3.0 + 0.4 * x[:, 0] - 0.3 * x[:, 1] + 0.2 * x[:, 0] * x[:, 1] - 0.6 * x[:, 0] ** 2 - 0.4 * x[:, 2] ** 2

    n, s = _simulate(d, truth, 4000, seed=5)
    a = analyse(d, n, s)
    coef = {e.term: e.logit_coef for e in a.effects}
    assert coef["a"] == pytest.approx(0.4, abs=0.08)
    assert coef["b"] == pytest.approx(-0.3, abs=0.08)
    assert coef["a:b"] == pytest.approx(0.2, abs=0.08)
    assert coef["a^2"] == pytest.approx(-0.6, abs=0.15)
    assert a.effect("a").lower > 0 and a.effect("b").upper < 0  # real effects: intervals exclude 0
    assert a.effect("c").lower < 0 < a.effect("c").upper  # no linear effect of c
    assert a.effect("a").p_value < 0.01
    # the true optimum in coded units: b at its low edge, a where d/da = 0.4 + 0.2 b - 1.2 a = 0, c = 0
    assert a.optimum_coded[1] == pytest.approx(-1.0, abs=0.05)
    assert a.optimum_coded[0] == pytest.approx((0.4 - 0.2) / 1.2, abs=0.2)
    assert a.optimum_coded[2] == pytest.approx(0.0, abs=0.2)
    assert a.optimum_interval[0] < a.optimum_yield < a.optimum_interval[1]
    assert {row["term"] for row in a.anova} >= {"a", "b", "a:b", "Residual"}


def test_fraction_reports_its_aliases_and_the_learner_gives_a_verdict() -> None:
    d = make_design("fractional", [Factor(n, 0, 1) for n in "abcd"])
    assert d.runs == 8 and d.generators == ["a", "b", "c", "abc"]
    n, s = _simulate(d, lambda x: 2.5 + 0.5 * x[:, 0], 3000, seed=2)
    exp = DesignedExperiment(d).fit({"recipe": {"a": 0.0, "b": 0.5, "c": 0.5, "d": 0.5}})
    for run in range(d.runs):  # one unit at a time for run 0, counts for the rest: same analysis
        if run == 0:
            exp.update(np.zeros(n[0], dtype=int), np.arange(n[0]) < s[0])
        else:
            exp.update_counts(run, int(n[run]), int(s[run]))
    a = exp.analysis()
    assert len(a.aliased) == 3  # ab=cd, ac=bd, ad=bc in a resolution IV half fraction
    assert a.effect("a").lower > 0
    v = exp.verdict()
    assert v.decision == "adopt" and v.extra["candidate"]["a"] == pytest.approx(1.0)
