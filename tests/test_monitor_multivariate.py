"""PCA T²/SPE monitors, anomaly detection, and the Tennessee Eastman figures via ingest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from linelab.monitor import IsolationAnomaly, PCAMonitor, Scores
from linelab.monitor.tep import PUBLISHED_SPE, monitor_tep, write_alarm_files

DATA = Path(os.environ.get("LINELAB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
TEP = DATA / "tep"


def _correlated(rng, n, p=8):
    latent = rng.normal(size=(n, 2))
    mix = np.random.default_rng(99).normal(size=(2, p))
    return latent @ mix + 0.3 * rng.normal(size=(n, p))


def test_theoretical_limits_hold_their_false_alarm_rate():
    rng = np.random.default_rng(0)
    mon = PCAMonitor(n_components=2, alpha=0.01, limits="theoretical").fit(_correlated(rng, 2000))
    s = mon.update(_correlated(rng, 20000))
    assert s.extra["t2_alarm"].mean() == pytest.approx(0.01, abs=0.004)
    assert s.extra["spe_alarm"].mean() == pytest.approx(0.01, abs=0.004)


def test_cv_limits_give_joint_false_alarm_rate():
    rng = np.random.default_rng(1)
    mon = PCAMonitor(alpha=0.02, limits="cv").fit(_correlated(rng, 3000))
    assert mon.update(_correlated(rng, 20000)).alarm.mean() == pytest.approx(0.02, abs=0.008)


def test_broken_correlation_is_caught_by_spe_and_blamed_on_the_right_variable():
    rng = np.random.default_rng(2)
    mon = PCAMonitor(n_components=2).fit(_correlated(rng, 2000))
    x = _correlated(rng, 200)
    x[:, 2] += 2.0  # a sensor offset: breaks the correlation structure
    s = mon.update(x)
    assert s.extra["spe_alarm"].mean() > 0.8
    contrib = mon.contributions(x)["spe"].mean(axis=0)
    assert int(np.argmax(contrib)) == 2


SETTINGS = [dict(lags=2), dict(lags=1, smoothing="ewma_input,ewma_stat"), dict(smoothing="ewma_spe")]


@pytest.mark.parametrize("kw", SETTINGS)
def test_pca_batch_equals_streaming(kw):
    rng = np.random.default_rng(3)
    ref, x = _correlated(rng, 500), _correlated(rng, 120)
    x[60:, 2] += 2.0
    batch = PCAMonitor(**kw).fit(ref).update(x)
    mon = PCAMonitor(**kw).fit(ref)
    rows = Scores.concat([mon.update(r) for r in x])
    np.testing.assert_array_equal(batch.alarm, rows.alarm)
    np.testing.assert_allclose(batch.statistic, rows.statistic, rtol=1e-9, equal_nan=True)
    assert np.isnan(batch.statistic[: kw.get("lags", 0)]).all()


def test_smoothing_detects_small_shift_sooner_at_same_false_alarm_rate():
    rng = np.random.default_rng(4)
    ref = _correlated(rng, 4000)
    normal = _correlated(rng, 20000)
    shifted = _correlated(rng, 20000)
    shifted[:, 3] += 0.5
    plain = PCAMonitor(n_components=2, alpha=0.01).fit(ref)
    smooth = PCAMonitor(n_components=2, alpha=0.01, smoothing="ewma_stat", lam=0.1).fit(ref)
    assert smooth.update(normal).alarm.mean() < 0.02
    assert smooth.update(shifted).alarm.mean() > 2 * plain.update(shifted).alarm.mean()


def test_isolation_anomaly_flags_odd_units_with_effect_size():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3000, 4))
    det = IsolationAnomaly(alpha=0.005).fit(ref)
    x = rng.normal(size=(50, 4))
    x[10, 2] = 7.0  # extreme in one feature
    x[20] = [3.5, -3.5, 3.5, -3.5]  # unusual in every feature at once
    s = det.update(x)
    assert s.alarm[10] and s.alarm[20] and s.alarm.sum() <= 4
    assert s.extra["top_feature"][10] == 2 and s.extra["effect_sigma"][10] > 5
    np.testing.assert_array_equal(Scores.concat([det.update(r) for r in x]).alarm, s.alarm)


@pytest.mark.skipif(not TEP.exists(), reason="TEP data not available")
def test_tep_through_ingest_beats_published_pca(tmp_path):
    runs = ["d00_te", "d01_te", "d04_te", "d11_te", "d21_te"]
    res = monitor_tep(TEP, tmp_path / "ws", runs=runs)
    figs = {f.fault: f for f in res.faults}
    assert figs[1].fdr > 99 and figs[4].fdr == 100
    for f in (11, 21):  # faults where plain PCA is weak
        assert figs[f].fdr > PUBLISHED_SPE[f - 1]
    assert res.far_normal <= 5.0
    assert all(f.far <= 5.0 for f in figs.values())
    paths = write_alarm_files(res, tmp_path / "alarms")
    lines = (tmp_path / "alarms" / "d01_te.alarms").read_text().splitlines()
    assert len(paths) == len(runs) and len(lines) == 960 and set(lines) <= {"0", "1"}
    # Rerunning on the same workspace re-reads the stored signals (ingest is idempotent).
    again = monitor_tep(TEP, tmp_path / "ws", runs=["d01_te"])
    np.testing.assert_array_equal(again.alarms["d01_te"], res.alarms["d01_te"])


@pytest.mark.skipif(not TEP.exists(), reason="TEP data not available")
def test_tep_command_writes_alarm_files(tmp_path):
    from linelab.commands import call

    res = call("monitor tep", workspace=tmp_path / "ws", data=TEP, alarms_out=tmp_path / "out",
               runs=["d00_te", "d02_te"])
    assert [f["fault"] for f in res.faults] == [2]
    assert res.faults[0]["fdr"] > 95 and res.summary["far_d00_te"] <= 5
    assert sorted(Path(p).name for p in res.alarm_files) == ["d00_te.alarms", "d02_te.alarms"]
