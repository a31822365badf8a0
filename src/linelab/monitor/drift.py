"""Drift verdicts that say how big a change is, not only whether it is significant."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from linelab.monitor.base import Detector, Scores


@dataclass
class DriftVerdict:
    n_reference: int
    n_current: int
    shift: float  # current mean - reference mean, in data units
    shift_sigma: float  # the same in reference sigmas (the effect size)
    ci_sigma: tuple[float, float]  # 95% interval of shift_sigma
    sigma_ratio: float  # current sd / reference sd
    p_value: float  # Welch t-test on the means
    ks_statistic: float  # largest gap between the two distribution functions
    drifted: bool  # significant AND at least `min_shift` sigmas (or a sigma ratio beyond bounds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_verdict(
    reference: Any, current: Any, alpha: float = 0.01, min_shift: float = 0.5, max_sigma_ratio: float = 1.5
) -> DriftVerdict:
    """Compare `current` with `reference`: effect size first, then significance."""
    r = np.asarray(reference, dtype=float).ravel()
    c = np.asarray(current, dtype=float).ravel()
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    if r.size < 2 or c.size < 2:
        raise ValueError("drift needs at least 2 reference and 2 current values")
    sd = float(r.std(ddof=1)) or 1e-12
    shift = float(c.mean() - r.mean())
    se = np.sqrt(r.var(ddof=1) / r.size + c.var(ddof=1) / c.size)
    p = float(stats.ttest_ind(c, r, equal_var=False).pvalue)
    ratio = float(c.std(ddof=1) / sd)
    ks = float(stats.ks_2samp(r, c).statistic)
    big = abs(shift / sd) >= min_shift or ratio >= max_sigma_ratio or ratio <= 1 / max_sigma_ratio
    return DriftVerdict(
        n_reference=int(r.size), n_current=int(c.size), shift=shift, shift_sigma=shift / sd,
        ci_sigma=((shift - 1.96 * se) / sd, (shift + 1.96 * se) / sd), sigma_ratio=ratio,
        p_value=p, ks_statistic=ks, drifted=bool(big and p < alpha),
    )


class WindowDrift(Detector):
    """Mean shift of the last `window` records vs the reference, in reference sigmas.

    Alarm when the window mean is significant at `alpha` (z-test with the reference sigma)
    and at least `min_shift` sigmas away. Per-record output via cumulative sums; the last
    `window-1` values are carried so batch and streaming agree.
    """

    def __init__(self, window: int = 50, alpha: float = 0.001, min_shift: float = 0.5) -> None:
        self.window = window
        self.alpha = alpha
        self.min_shift = min_shift

    def fit(self, reference: Any) -> WindowDrift:
        r = np.asarray(reference, dtype=float).ravel()
        r = r[np.isfinite(r)]
        self.mean_ = float(r.mean())
        self.sigma_ = float(r.std(ddof=1)) or 1e-12
        self.z_crit_ = float(stats.norm.isf(self.alpha / 2))
        self._tail = np.empty(0)
        self.fitted_ = True
        return self

    def _update(self, x: np.ndarray) -> Scores:
        x = x.ravel()
        full = np.concatenate([self._tail, x])
        csum = np.concatenate([[0.0], np.cumsum(full - self.mean_)])
        end = np.arange(len(self._tail) + 1, len(full) + 1)
        start = np.maximum(end - self.window, 0)
        count = end - start
        # Counts include carried records, so a window straddling two calls is the same window.
        seen = self.n_seen_ + np.arange(1, len(x) + 1)
        count = np.minimum(count, seen)
        start = end - count
        shift = (csum[end] - csum[start]) / count / self.sigma_
        z = shift * np.sqrt(count)
        self._tail = full[-(self.window - 1):] if self.window > 1 else np.empty(0)
        alarm = (np.abs(z) > self.z_crit_) & (np.abs(shift) >= self.min_shift) & (count >= min(self.window, 10))
        return Scores(shift, alarm, extra={"z": z, "window_n": count.astype(float)})
