"""Multivariate monitoring: PCA with Hotelling T² and SPE (Q), dynamic PCA, smoothing.

Pipeline per record: (lag) → scale on the reference → (EWMA filter of the scaled inputs)
→ PCA → T² and SPE → (EWMA of the statistics) → each divided by its limit → alarm when
either exceeds 1.

Limits:
- "theoretical": F distribution for T², Jackson–Mudholkar for SPE, at `alpha` each.
- "empirical": quantiles of the statistics on the reference itself (optimistic: in-sample).
- "cv" (default): quantiles of *out-of-sample* statistics from k-fold cross-validation over
  contiguous blocks of the reference — what new in-control data will look like — and the two
  limits are set jointly so the chance that either fires is `alpha`.

Smoothing ("ewma_stat", "ewma_input" or both, comma separated) trades a short delay for much
better sensitivity to small persistent faults at the same false-alarm rate; limits are
always learnt on the statistics after the same smoothing, so the false-alarm target holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import lfilter
from scipy.stats import f as f_dist
from scipy.stats import norm

from linelab.monitor.base import Detector, Scores


def lagged(x: np.ndarray, lags: int, history: np.ndarray | None = None) -> np.ndarray:
    """Rows [x_t, x_{t-1}, ..., x_{t-lags}]; rows without full history are NaN."""
    if lags == 0:
        return x
    full = x if history is None or len(history) == 0 else np.vstack([history, x])
    pad = np.full((lags, x.shape[1]), np.nan)
    full = np.vstack([pad, full])
    n = len(x)
    start = len(full) - n
    return np.hstack([full[start - j : start - j + n] for j in range(lags + 1)])


def _ewma(x: np.ndarray, lam: float, start: np.ndarray) -> np.ndarray:
    """Column-wise EWMA continuing from `start` (the previous EWMA value)."""
    zi = ((1 - lam) * start)[None, :]
    out, _ = lfilter([lam], [1.0, -(1 - lam)], x, axis=0, zi=zi)
    return out


@dataclass
class _Model:
    mean: np.ndarray
    scale: np.ndarray
    loadings: np.ndarray  # (d, a)
    eigvals: np.ndarray  # (a,)
    resid_eigvals: np.ndarray
    input_mean: np.ndarray  # mean of the (filtered) scaled inputs, centres the PCA

    def stats(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zc = z - self.input_mean
        t = zc @ self.loadings
        t2 = np.sum(t * t / self.eigvals, axis=1)
        resid = zc - t @ self.loadings.T
        return t2, np.sum(resid * resid, axis=1)


class PCAMonitor(Detector):
    """PCA monitor with T² and SPE, optional dynamic lags and smoothing.

    Parameters: `n_components` (or `variance`, the fraction kept), `alpha` (target false
    alarm rate), `limits` ("cv", "empirical", "theoretical"), `lags` (dynamic PCA),
    `smoothing` (None, "ewma_stat", "ewma_input", "ewma_input,ewma_stat"), `lam`.
    """

    def __init__(
        self,
        n_components: int | None = None,
        variance: float = 0.9,
        alpha: float = 0.01,
        limits: str = "cv",
        lags: int = 0,
        smoothing: str | None = None,
        lam: float = 0.2,
        folds: int = 5,
    ) -> None:
        self.n_components = n_components
        self.variance = variance
        self.alpha = alpha
        self.limits = limits
        self.lags = lags
        self.smoothing = smoothing
        self.lam = lam
        self.folds = folds

    # -- fitting -----------------------------------------------------------------------
    @property
    def _smooth(self) -> set[str]:
        return {s.strip() for s in (self.smoothing or "").split(",") if s.strip()}

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Lag and drop rows without full history (reference only)."""
        xl = lagged(x, self.lags)
        return xl[self.lags :]

    def _build(self, xl: np.ndarray) -> _Model:
        mean = xl.mean(axis=0)
        scale = xl.std(axis=0, ddof=1)
        scale[scale <= 0] = 1.0
        z = (xl - mean) / scale
        if "ewma_input" in self._smooth:
            z = _ewma(z, self.lam, np.zeros(z.shape[1]))
        input_mean = z.mean(axis=0)
        zc = z - input_mean
        _, s, vt = np.linalg.svd(zc, full_matrices=False)
        eig = s**2 / (len(zc) - 1)
        if self.n_components:
            a = int(self.n_components)
        else:
            a = int(np.searchsorted(np.cumsum(eig) / eig.sum(), self.variance) + 1)
        a = max(1, min(a, len(eig) - 1))
        return _Model(mean, scale, vt[:a].T, eig[:a], eig[a:], input_mean)

    def _raw_stats(self, model: _Model, xl: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        z = (xl - model.mean) / model.scale
        if "ewma_input" in self._smooth:
            z = _ewma(z, self.lam, np.zeros(z.shape[1]) if start is None else start)
        t2, spe = model.stats(z)
        return np.column_stack([t2, spe])

    def fit(self, reference: Any) -> PCAMonitor:
        x = np.asarray(reference, dtype=float)
        if x.ndim != 2 or len(x) < 10:
            raise ValueError("reference must be a 2-D array (records x variables) with >= 10 rows")
        self.n_variables_ = x.shape[1]
        xl = self._prepare(x)
        self._model = self._build(xl)
        self.n_components_ = len(self._model.eigvals)
        self.explained_variance_ = self._model.eigvals.copy()
        stats_ref = self._raw_stats(self._model, xl)
        self._stat_centre = stats_ref.mean(axis=0)
        if self.limits == "theoretical":
            self.limit_ = self._theoretical_limits(len(xl))
            if self._stat_cols.any():
                # Smoothing shrinks the spread: fall back to empirical limits on smoothed stats.
                self.limit_ = self._joint_limits([self._smooth_stats(stats_ref)])
        else:
            blocks = self._cv_blocks(xl) if self.limits == "cv" else [stats_ref]
            self.limit_ = self._joint_limits([self._smooth_stats(b) for b in blocks])
        self.t2_limit_, self.spe_limit_ = float(self.limit_[0]), float(self.limit_[1])
        self._history = np.empty((0, self.n_variables_))
        self._input_state = np.zeros(xl.shape[1])
        self._stat_state = self._stat_centre.copy()
        self.fitted_ = True
        self.n_seen_ = 0
        return self

    def _cv_blocks(self, xl: np.ndarray) -> list[np.ndarray]:
        """Out-of-sample statistics of each contiguous fold under a model fitted without it."""
        edges = np.linspace(0, len(xl), self.folds + 1).astype(int)
        out = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            # Leave a gap of `lags` rows either side: lagged rows share raw samples.
            keep = np.ones(len(xl), dtype=bool)
            keep[max(0, lo - self.lags) : min(len(xl), hi + self.lags)] = False
            model = self._build(xl[keep])
            out.append(self._raw_stats(model, xl[lo:hi]))
        return out

    @property
    def _stat_cols(self) -> np.ndarray:
        """Which of (T², SPE) get an EWMA."""
        sm = self._smooth
        return np.array(["ewma_stat" in sm or "ewma_t2" in sm, "ewma_stat" in sm or "ewma_spe" in sm])

    def _smooth_stats(self, s: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        cols = self._stat_cols
        if not cols.any():
            return s
        out = s.copy()
        begin = self._stat_centre if start is None else start
        out[:, cols] = _ewma(s[:, cols], self.lam, begin[cols])
        return out

    def _joint_limits(self, blocks: list[np.ndarray]) -> np.ndarray:
        """Limits (T², SPE) such that a fraction `alpha` of reference rows exceed either."""
        s = np.vstack(blocks)
        # Same tail probability for both statistics, tuned so the union hits alpha.
        lo, hi = self.alpha / 2, self.alpha
        for _ in range(40):
            mid = (lo + hi) / 2
            lim = np.quantile(s, 1 - mid, axis=0)
            rate = np.mean((s > lim).any(axis=1))
            lo, hi = (mid, hi) if rate < self.alpha else (lo, mid)
        return np.quantile(s, 1 - lo, axis=0)

    def _theoretical_limits(self, n: int) -> np.ndarray:
        a = self.n_components_
        t2 = a * (n - 1) * (n + 1) / (n * (n - a)) * f_dist.ppf(1 - self.alpha, a, n - a)
        lam = self._model.resid_eigvals
        th1, th2, th3 = lam.sum(), (lam**2).sum(), (lam**3).sum()
        h0 = 1 - 2 * th1 * th3 / (3 * th2**2)
        c = norm.ppf(1 - self.alpha)
        spe = th1 * (c * np.sqrt(2 * th2 * h0**2) / th1 + 1 + th2 * h0 * (h0 - 1) / th1**2) ** (1 / h0)
        return np.array([t2, spe])

    # -- scoring -----------------------------------------------------------------------
    def _update(self, x: np.ndarray) -> Scores:
        if x.ndim == 1:
            x = x.reshape(1, -1)
        xl = lagged(x, self.lags, self._history)
        if self.lags:
            self._history = np.vstack([self._history, x])[-self.lags :]
        ready = ~np.isnan(xl).any(axis=1)
        n = len(x)
        raw = np.full((n, 2), np.nan)
        if ready.any():
            rows = xl[ready]
            z = (rows - self._model.mean) / self._model.scale
            if "ewma_input" in self._smooth:
                z = _ewma(z, self.lam, self._input_state)
                self._input_state = z[-1]
            t2, spe = self._model.stats(z)
            raw[ready] = np.column_stack([t2, spe])
        smooth = raw.copy()
        if self._stat_cols.any() and ready.any():
            smooth[ready] = self._smooth_stats(raw[ready], self._stat_state)
            self._stat_state = smooth[ready][-1]
        ratio = smooth / self.limit_
        stat = np.nanmax(np.where(np.isnan(ratio), -np.inf, ratio), axis=1)
        stat[~ready] = np.nan
        alarm = ready & (stat > 1)
        return Scores(
            statistic=stat,
            alarm=alarm,
            upper=np.ones(n),
            extra={
                "t2": raw[:, 0],
                "spe": raw[:, 1],
                "t2_smoothed": smooth[:, 0],
                "spe_smoothed": smooth[:, 1],
                "t2_alarm": ready & (ratio[:, 0] > 1),
                "spe_alarm": ready & (ratio[:, 1] > 1),
            },
        )

    def contributions(self, x: Any) -> dict[str, np.ndarray]:
        """Per-variable contributions to T² and SPE for a batch (rows x original variables).

        T² uses the complete decomposition x_j · (P Λ⁻¹ Pᵀ x)_j (sums to T²); SPE uses the
        squared residual per variable. With lags, a variable's contributions over its lagged
        copies are summed. Does not change the monitor's state; no input smoothing applied.
        """
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        xl = lagged(x, self.lags, self._history)
        m = self._model
        z = (xl - m.mean) / m.scale - m.input_mean
        t = z @ m.loadings
        t2c = z * ((t / m.eigvals) @ m.loadings.T)
        resid = z - t @ m.loadings.T
        spec = resid * resid
        p = self.n_variables_
        fold = lambda c: c.reshape(len(c), self.lags + 1, p).sum(axis=1)  # noqa: E731
        return {"t2": fold(t2c), "spe": fold(spec)}
