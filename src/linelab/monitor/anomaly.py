"""Unit-level anomaly detection (Isolation Forest) with an effect size per record.

An anomaly score alone does not tell an engineer how unusual a unit is, so every flagged
record also gets the feature that deviates most from the reference and by how many robust
sigmas (median / MAD scaled to sigma). Isolation Forest is weak on a unit that is extreme in
one feature only (its trees stop splitting at the edge of the reference), so the largest
robust |z| is a second statistic; the two thresholds are set jointly so that a fraction
`alpha` of reference records exceed either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from linelab.monitor.base import Detector, Scores


class IsolationAnomaly(Detector):
    """Isolation Forest fitted on reference records; threshold at the (1-alpha) quantile.

    `update(x)` takes rows (records x features) or one row; output `statistic` is the
    anomaly score (higher = stranger), `extra["effect_sigma"]` the largest robust |z| of
    any feature and `extra["top_feature"]` its column index. Scoring is row-wise, so batch
    and streaming agree exactly.
    """

    def __init__(self, alpha: float = 0.005, n_estimators: int = 200, random_state: int = 0,
                 feature_names: list[str] | None = None) -> None:
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.feature_names = feature_names

    def _as_batch(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        return arr.reshape(1, -1) if arr.ndim == 1 else arr

    def fit(self, reference: Any) -> IsolationAnomaly:
        x = self._as_batch(reference)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
        self.forest_.fit(x)
        self.median_ = np.median(x, axis=0)
        mad = np.median(np.abs(x - self.median_), axis=0) * 1.4826
        std = x.std(axis=0)
        self.robust_sigma_ = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
        ref = np.column_stack([-self.forest_.score_samples(x), self._max_z(x)])
        lo, hi = self.alpha / 2, self.alpha
        for _ in range(30):
            mid = (lo + hi) / 2
            rate = np.mean((ref > np.quantile(ref, 1 - mid, axis=0)).any(axis=1))
            lo, hi = (mid, hi) if rate < self.alpha else (lo, mid)
        self.threshold_, self.z_threshold_ = (float(v) for v in np.quantile(ref, 1 - lo, axis=0))
        self.fitted_ = True
        return self

    def _max_z(self, x: np.ndarray) -> np.ndarray:
        return (np.abs(x - self.median_) / self.robust_sigma_).max(axis=1)

    def _update(self, x: np.ndarray) -> Scores:
        score = -self.forest_.score_samples(x)
        z = np.abs(x - self.median_) / self.robust_sigma_
        top = np.argmax(z, axis=1)
        n = len(x)
        return Scores(
            statistic=score,
            alarm=(score > self.threshold_) | (z[np.arange(n), top] > self.z_threshold_),
            upper=np.full(n, self.threshold_),
            extra={"effect_sigma": z[np.arange(n), top], "top_feature": top.astype(float)},
        )

    def explain(self, row: Any) -> dict[str, Any]:
        """The most deviant features of one record, in robust sigmas."""
        r = np.asarray(row, dtype=float).ravel()
        z = (r - self.median_) / self.robust_sigma_
        order = np.argsort(-np.abs(z))[:5]
        names = self.feature_names or [f"x{i}" for i in range(len(r))]
        return {"score": float(-self.forest_.score_samples(r.reshape(1, -1))[0]),
                "features": [{"name": names[i], "value": float(r[i]), "shift_sigma": float(z[i])}
                             for i in order]}
