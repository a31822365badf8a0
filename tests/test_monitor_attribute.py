"""Attribute monitors: p-chart, per-group defect rates with FDR control and minimum effect."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from linelab.monitor import GroupRateMonitor, PChart, bh_adjust


def test_bh_matches_statsmodels():
    p = np.random.default_rng(0).uniform(0, 0.2, 200) ** 2
    np.testing.assert_allclose(bh_adjust(p), multipletests(p, method="fdr_bh")[1])


def test_p_chart_limits_and_alarm():
    ref = np.column_stack([np.full(50, 5), np.full(50, 100)])  # p-bar = 5%
    chart = PChart().fit(ref)
    s = chart.update([[5, 100], [16, 100], [18, 400], [2, 400]])
    assert chart.p_bar_ == pytest.approx(0.05)
    assert s.upper[0] == pytest.approx(0.05 + 3 * np.sqrt(0.05 * 0.95 / 100))
    # A rate far below the centre line is a signal too (something changed, maybe for the better).
    assert s.alarm.tolist() == [False, True, False, True]


def _line(rng, n_groups=40, n_per=2000, p0=0.01, bad=None, ratio=3.0):
    groups = np.repeat(np.arange(n_groups), n_per)
    rate = np.full(n_groups, p0)
    if bad is not None:
        rate[bad] = p0 * ratio
    return groups, rng.random(groups.size) < rate[groups]


def test_group_monitor_finds_the_bad_group_only():
    rng = np.random.default_rng(1)
    mon = GroupRateMonitor(alpha=0.01).fit(*_line(rng)[::-1])
    groups, fails = _line(rng, bad=7, ratio=3.0)
    v = mon.update(groups, fails)
    flagged = v.flagged()
    assert [f["group"] for f in flagged] == [7]
    assert flagged[0]["rate_ratio"] == pytest.approx(3.0, rel=0.3)
    assert flagged[0]["excess_rate"] > 0.01 and flagged[0]["q_value"] < 0.01


def test_huge_samples_do_not_fire_on_trivial_differences():
    rng = np.random.default_rng(2)
    mon = GroupRateMonitor(min_ratio=1.5).fit(rng.random(200_000) < 0.02)
    groups, fails = _line(rng, n_groups=5, n_per=400_000, p0=0.02, bad=2, ratio=1.1)
    v = mon.update(groups, fails)
    i = list(v.groups).index(2)
    assert v.rate_ratio[i] == pytest.approx(1.1, abs=0.03)
    assert not v.alarm.any()


def test_overdispersed_reference_needs_stronger_evidence():
    rng = np.random.default_rng(3)
    # Reference groups differ more than binomial chance (lot-to-lot variation).
    group_rates = rng.beta(2, 98, 60)
    groups = np.repeat(np.arange(60), 1000)
    fails = rng.random(groups.size) < group_rates[groups]
    od = GroupRateMonitor().fit(fails, groups)
    assert od.rho_ > 0.005
    plain = GroupRateMonitor(overdispersion=False).fit(fails, groups)
    new_groups, new_fails = np.repeat([0], 1000), rng.random(1000) < 0.045
    assert od.update(new_groups, new_fails).p_value[0] > plain.update(new_groups, new_fails).p_value[0]


def test_group_monitor_batch_equals_streaming():
    rng = np.random.default_rng(4)
    ref = rng.random(5000) < 0.01
    groups, fails = _line(rng, n_groups=10, n_per=300, bad=3, ratio=4)
    order = rng.permutation(groups.size)
    groups, fails = groups[order], fails[order]
    batch = GroupRateMonitor().fit(ref).update(groups, fails)
    mon = GroupRateMonitor().fit(ref)
    for g, f in zip(groups, fails, strict=True):
        last = mon.update(g, f)
    assert list(batch.groups) == list(last.groups)
    np.testing.assert_allclose(batch.q_value, last.q_value)
    np.testing.assert_array_equal(batch.alarm, last.alarm)
