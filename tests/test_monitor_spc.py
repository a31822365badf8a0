"""Univariate SPC: textbook answers, run rules, staged limits, batch == streaming."""

from __future__ import annotations

import numpy as np
import pytest

from linelab.monitor import (
    CUSUMChart,
    EWMAChart,
    IndividualsChart,
    Scores,
    StagedChart,
    WindowDrift,
    XbarChart,
    capability,
    cusum_arl,
    cusum_design,
    drift_verdict,
    ewma_design,
)
from linelab.monitor import constants as cc
from linelab.monitor.rules import resolve_rules, rule_mask, rules_fired


def stream(detector, x) -> Scores:
    return Scores.concat([detector.update(row) for row in x])


def assert_same(a: Scores, b: Scores) -> None:
    np.testing.assert_array_equal(a.alarm, b.alarm)
    np.testing.assert_allclose(a.statistic, b.statistic, rtol=1e-12, atol=1e-12, equal_nan=True)
    for k in a.extra:
        np.testing.assert_allclose(a.extra[k], b.extra[k], rtol=1e-12, atol=1e-12, equal_nan=True)


# -- constants and designs ---------------------------------------------------------------
def test_chart_constants_match_tables():
    assert cc.a2(5) == pytest.approx(0.577, abs=1e-3)
    assert cc.d4_upper(5) == pytest.approx(2.114, abs=2e-3)
    assert cc.d3_lower(5) == 0.0
    assert cc.c4(5) == pytest.approx(0.9400, abs=1e-4)
    assert cc.b4(5) == pytest.approx(2.089, abs=2e-3)
    assert cc.a3(5) == pytest.approx(1.427, abs=2e-3)


def test_cusum_design_matches_textbook():
    # Montgomery: k = 0.5, h = 4.77 gives a two-sided in-control ARL of about 370.
    k, h = cusum_design(370, shift=1.0)
    assert k == 0.5 and h == pytest.approx(4.77, abs=0.02)
    # One-sided k=0.5, h=5: ARL0 930, ARL(1 sigma) 10.4 (Brook & Evans / Montgomery table 9.3).
    from linelab.monitor.arl import markov_arl_one_sided, siegmund_arl_one_sided

    assert markov_arl_one_sided(0.5, 5.0, 0.0) == pytest.approx(930, rel=0.01)
    assert markov_arl_one_sided(0.5, 5.0, 1.0) == pytest.approx(10.4, rel=0.02)
    assert siegmund_arl_one_sided(0.5, 5.0, 0.0) == pytest.approx(938, rel=0.01)


def _run_lengths(make, n_runs: int, length: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n_runs)
    for i in range(n_runs):
        first = make().update(rng.standard_normal(length) + shift).first_alarm
        out[i] = (first if first is not None else length) + 1
    return out


def test_cusum_arl_by_simulation():
    make = lambda: CUSUMChart(shift=1.0, arl0=370, mu=0.0, sigma=1.0).fit()  # noqa: E731
    arl0 = _run_lengths(make, 1500, 4000, 0.0, seed=1).mean()
    arl1 = _run_lengths(make, 1500, 400, 1.0, seed=2).mean()
    assert arl0 == pytest.approx(370, rel=0.08)
    assert arl1 == pytest.approx(cusum_arl(0.5, make().h_, 1.0), rel=0.05)


def test_ewma_arl_by_simulation():
    assert ewma_design(370, 0.1) == pytest.approx(2.70, abs=0.01)
    make = lambda: EWMAChart(lam=0.1, arl0=370, mu=0.0, sigma=1.0, exact_limits=False).fit()  # noqa: E731
    arl0 = _run_lengths(make, 1500, 4000, 0.0, seed=3).mean()
    assert arl0 == pytest.approx(370, rel=0.08)


# -- run rules ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule, pattern",
    [
        (1, [0.2, -0.1, 3.5]),
        (2, [0.5] * 9),
        (3, [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]),
        (4, [0.5, -0.5] * 7),
        (5, [2.5, 0.0, 2.4]),
        (6, [1.5, 1.2, 0.2, 1.4, 1.6]),
        (7, [0.3, -0.3] * 7 + [0.1]),
        (8, [1.5, -1.5] * 4),
    ],
)
def test_nelson_rules_fire_on_their_pattern(rule, pattern):
    # A lead-in point that cannot be part of the pattern (a flat step breaks alternation).
    lead = {4: [0.5], 7: [1.5]}.get(rule, [0.0])
    z = np.array(lead + pattern)
    mask = rule_mask(z, resolve_rules([rule])[0])
    assert mask[-1] & (1 << (rule - 1)), f"rule {rule} should fire on the last point"
    assert rule in rules_fired(int(mask[-1]))
    assert not mask[:-1].any(), f"rule {rule} fired before its pattern was complete"


def test_western_electric_run_of_eight_vs_nelson_nine():
    z = np.array([0.5] * 8)
    we, run_we = resolve_rules("western_electric")
    ne, run_ne = resolve_rules("nelson")
    assert rule_mask(z, we, run_we)[-1] & 2
    assert not rule_mask(z, ne, run_ne)[-1] & 2
    assert set(we) == {1, 2, 5, 6}


def test_individuals_chart_limits_and_rules_on_stream():
    rng = np.random.default_rng(0)
    ref = rng.normal(10, 2, 500)
    chart = IndividualsChart(rules="western_electric").fit(ref)
    assert chart.sigma_ == pytest.approx(2.0, rel=0.1)
    assert chart.ucl_ - chart.centre_ == pytest.approx(3 * chart.sigma_)
    # A 1-sigma sustained shift is mostly invisible to 3-sigma limits but caught by rule 2/6.
    shifted = rng.normal(10 + 2.0, 2, 60)
    s = chart.update(shifted)
    assert s.n_alarms > 0
    fired = set().union(*(rules_fired(int(m)) for m in s.extra["rules"]))
    assert fired & {2, 6}
    assert IndividualsChart(rules=None).fit(ref).update(shifted).extra["rules"].max() <= 1


def test_phase_one_trim_ignores_outliers_in_reference():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 300)
    ref[[10, 50, 90]] = 15.0
    chart = IndividualsChart(trim=True).fit(ref)
    assert chart.sigma_ == pytest.approx(1.0, rel=0.15)
    assert IndividualsChart(trim=False).fit(ref).sigma_ > chart.sigma_


def test_xbar_r_and_s_charts():
    rng = np.random.default_rng(2)
    ref = rng.normal(5, 1, (200, 5))
    for disp in ("range", "std"):
        chart = XbarChart(dispersion=disp, rules="nelson").fit(ref)
        assert chart.sigma_ == pytest.approx(1.0, rel=0.1)
        assert chart.ucl_ - chart.centre_ == pytest.approx(3 / np.sqrt(5) * chart.sigma_)
        wide = rng.normal(5, 3, (20, 5))  # dispersion tripled: the R/S chart must see it
        assert chart.update(wide).extra["spread_alarm"].any()
        assert_same(XbarChart(disp, "nelson").fit(ref).update(wide), stream(XbarChart(disp, "nelson").fit(ref), wide))


def test_capability_indices_on_known_data():
    rng = np.random.default_rng(3)
    x = rng.normal(10.0, 1.0, 200_000)
    c = capability(x, lsl=7.0, usl=13.0)
    assert c.cp == pytest.approx(1.0, abs=0.01)
    assert c.cpk == pytest.approx(1.0, abs=0.01)
    assert c.pp == pytest.approx(1.0, abs=0.01)
    assert c.expected_ppm == pytest.approx(2700, rel=0.05)
    off = capability(x + 1.0, lsl=7.0, usl=13.0)
    assert off.cpk == pytest.approx(2 / 3, abs=0.01)
    one_sided = capability(x, usl=13.0)
    assert one_sided.cp is None and one_sided.cpk == pytest.approx(1.0, abs=0.01)
    # Between-subgroup drift inflates the overall sigma, not the within sigma: Pp < Cp.
    drift = rng.normal(0, 1, (1000, 5)) + np.repeat(rng.normal(0, 1, 1000)[:, None], 5, axis=1)
    cd = capability(drift.ravel() + 10, lsl=4, usl=16, subgroup_size=5)
    assert cd.pp < cd.cp


# -- batch == streaming, and the stateful pieces ------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: IndividualsChart(rules="nelson"),
        lambda: IndividualsChart(rules=(1, 2, 3)),
        lambda: EWMAChart(lam=0.2),
        lambda: CUSUMChart(shift=1.0),
        lambda: WindowDrift(window=20),
        lambda: StagedChart(EWMAChart(lam=0.2), changes=[150, 260], calibrate=40),
    ],
)
def test_batch_equals_streaming(make):
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, 300)
    x = np.concatenate([rng.normal(0, 1, 200), rng.normal(1.5, 1, 200)])
    batch = make().fit(ref).update(x)
    one_by_one = stream(make().fit(ref), x)
    assert_same(batch, one_by_one)
    chunks = make().fit(ref)
    chunked = Scores.concat([chunks.update(c) for c in np.array_split(x, 7)])
    assert_same(batch, chunked)
    assert batch.n_alarms > 0


def test_cusum_onset_estimate_points_at_the_change():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 300), rng.normal(1.0, 1, 200)])
    chart = CUSUMChart(shift=1.0).fit(rng.normal(0, 1, 500))
    s = chart.update(x)
    first = s.first_alarm
    assert first is not None and first > 300
    assert abs(s.extra["onset"][first] - 300) < 25


def test_staged_chart_relearns_only_at_recorded_changes():
    rng = np.random.default_rng(6)
    ref = rng.normal(0, 1, 200)
    # A deliberate recipe change at record 300 moves the level by 4 sigma; later an unrecorded
    # 3-sigma shift at 600 is a real problem.
    x = np.concatenate([rng.normal(0, 1, 300), rng.normal(4, 1, 300), rng.normal(7, 1, 200)])
    plain = IndividualsChart().fit(ref).update(x)
    assert plain.alarm[300:600].mean() > 0.5
    staged = StagedChart(IndividualsChart(), changes=[300], calibrate=100).fit(ref)
    s = staged.update(x)
    assert np.isnan(s.statistic[300:400]).all() and not s.alarm[300:400].any()
    assert s.alarm[400:600].mean() < 0.05
    assert s.alarm[600:].mean() > 0.5
    assert staged.state["stage"] == 1
    # Changes given as timestamps work the same way.
    t = np.datetime64("2024-01-01T00:00") + np.arange(len(x)) * np.timedelta64(1, "m")
    by_time = StagedChart(IndividualsChart(), changes=[t[300]], calibrate=100).fit(ref)
    np.testing.assert_array_equal(by_time.update(x, t=t).alarm, s.alarm)


def test_drift_verdict_reports_effect_size():
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 2, 2000)
    v = drift_verdict(ref, rng.normal(1.6, 2, 500))
    assert v.drifted and v.shift_sigma == pytest.approx(0.8, abs=0.1)
    assert v.ci_sigma[0] < v.shift_sigma < v.ci_sigma[1]
    # Huge samples make a trivial shift significant; the minimum effect keeps it quiet.
    tiny = drift_verdict(rng.normal(0, 2, 200_000), rng.normal(0.1, 2, 200_000))
    assert tiny.p_value < 1e-6 and not tiny.drifted


def test_state_is_readable():
    chart = CUSUMChart(shift=1.0).fit(np.random.default_rng(8).normal(0, 1, 100))
    chart.update([0.1, 3.0])
    st = chart.state
    assert st["detector"] == "CUSUMChart" and st["n_seen"] == 2
    assert {"h", "k", "c_plus", "c_minus", "centre", "sigma"} <= set(st)
