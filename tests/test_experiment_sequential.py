"""Sequential split-run tests: honest under no difference, quick to see a real gain, guarded against harm."""

from __future__ import annotations

import numpy as np
import pytest

from linelab.experiment import BayesianSplitTest, MixtureSPRT, make_test


def _run(test, p_control: float, p_treatment: float, rng: np.random.Generator, lot: int = 500):
    test.fit()
    while not test.stopped:
        arm = np.repeat(rng.permutation(2), lot)
        test.update(arm, rng.random(arm.size) < np.where(arm == 1, p_treatment, p_control))
    return test.verdict()


def test_false_adoption_under_aa_stays_below_alpha() -> None:
    rng = np.random.default_rng(7)
    verdicts = [_run(MixtureSPRT(alpha=0.05, max_units=30_000), 0.955, 0.955, rng) for _ in range(200)]
    adopted = np.mean([v.decision == "adopt" for v in verdicts])
    assert adopted <= 0.05
    assert {v.decision for v in verdicts} <= {"adopt", "reject", "inconclusive"}


def test_detects_a_one_point_gain_and_reports_it_with_an_interval() -> None:
    rng = np.random.default_rng(8)
    verdicts = [_run(MixtureSPRT(), 0.955, 0.965, rng) for _ in range(40)]
    assert np.mean([v.decision == "adopt" for v in verdicts]) >= 0.9
    v = next(v for v in verdicts if v.decision == "adopt")
    lo, hi = v.interval
    assert 0 < lo < v.difference < hi
    assert v.units < 80_000 and v.stopped_at == v.units
    assert "treatment is better" in v.summary()


def test_guardrail_stops_a_harmful_arm_early() -> None:
    rng = np.random.default_rng(9)
    v = _run(MixtureSPRT(), 0.955, 0.92, rng, lot=250)
    assert v.decision == "reject"
    assert v.units < 5_000
    assert v.interval[1] < 0 or v.guardrail


def test_one_record_at_a_time_gives_the_same_answer_as_one_batch() -> None:
    rng = np.random.default_rng(3)
    arm = np.tile(np.repeat([0, 1], 50), 60)
    passed = rng.random(arm.size) < np.where(arm == 1, 0.99, 0.93)
    batch = MixtureSPRT(min_units=200, look_every=10).update(arm, passed)
    single = MixtureSPRT(min_units=200, look_every=10)
    for a, ok in zip(arm, passed, strict=True):
        single.update(int(a), bool(ok))
    chunks = MixtureSPRT(min_units=200, look_every=10)
    cuts = np.sort(rng.choice(arm.size, 30, replace=False))
    for part_a, part_p in zip(np.split(arm, cuts), np.split(passed, cuts), strict=True):
        chunks.update(part_a, part_p)
    vb, vs, vc = batch.verdict(), single.verdict(), chunks.verdict()
    assert vb.decision == "adopt"
    assert vb.as_dict() == vs.as_dict() == vc.as_dict()
    assert batch.ignored_after_stop == single.ignored_after_stop == chunks.ignored_after_stop > 0


def test_arms_by_name_and_readable_state() -> None:
    t = make_test("msprt", min_units=10, look_every=10)
    t.update(["control", "treatment"] * 20, [True, True] * 20)
    state = t.state()
    assert state["units"] == {"control": 20, "treatment": 20}
    assert state["decision"] == "continue" and t.verdict().decision == "continue"
    with pytest.raises(ValueError, match="unknown sequential test"):
        make_test("t-test")


def test_bayesian_test_decides_both_ways_with_a_posterior_probability() -> None:
    rng = np.random.default_rng(11)
    better = _run(BayesianSplitTest(), 0.955, 0.975, rng)
    worse = _run(BayesianSplitTest(), 0.955, 0.935, rng)
    assert better.decision == "adopt" and better.prob_better > 0.99
    assert worse.decision == "reject" and worse.prob_better < 0.05
    aa = [_run(BayesianSplitTest(max_units=20_000), 0.955, 0.955, rng) for _ in range(60)]
    assert np.mean([v.decision == "adopt" for v in aa]) <= 0.1


def test_lot_totals_feed_the_same_counts_as_units() -> None:
    by_lot = MixtureSPRT(min_units=100, look_every=50).update_counts((400, 380), (400, 395))
    assert by_lot.state()["units"] == {"control": 400, "treatment": 400}
    assert by_lot.state()["passed"] == {"control": 380, "treatment": 395}
