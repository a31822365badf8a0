"""Univariate SPC charts: Shewhart (individuals/MR, X̄–R, X̄–S), EWMA, tabular CUSUM.

Every chart is fitted on a phase-I window and then only *scores* new data against the
limits it learnt: limits never move with the data being judged (use `StagedChart` when the
process was changed on purpose and limits should be re-learnt after the change).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.signal import lfilter

from linelab.monitor import constants as cc
from linelab.monitor.arl import cusum_design, cusum_h, ewma_design
from linelab.monitor.base import Detector, Scores
from linelab.monitor.rules import RuleState

RuleSpec = str | Iterable[int] | None


def _clean(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size < 2:
        raise ValueError("a reference window needs at least 2 finite values")
    return arr


def mr_sigma(x: np.ndarray) -> float:
    """Short-term sigma from the average moving range (robust to slow drifts)."""
    return float(np.mean(np.abs(np.diff(x))) / cc.d2(2))


class IndividualsChart(Detector):
    """Shewhart individuals chart with its moving-range companion and optional run rules.

    `rules`: None/"none" (3-sigma limits only), "western_electric", "nelson" or a subset of
    Nelson rule numbers, e.g. (1, 2, 5). `trim=True` drops out-of-control points from the
    phase-I window and refits (the usual phase-I practice) so a reference window with a
    few bad points does not widen the limits.
    """

    def __init__(self, rules: RuleSpec = None, mr_chart: bool = True, trim: bool = True) -> None:
        self.rules = rules
        self.mr_chart = mr_chart
        self.trim = trim

    def fit(self, reference: Any) -> IndividualsChart:
        x = _clean(reference)
        centre, sigma = float(np.mean(x)), mr_sigma(x)
        if self.trim and x.size >= 10:
            # Median moving range (/0.954) is not inflated by a few bad points; points beyond
            # 3.5 of its sigmas are left out of the centre and of the moving ranges.
            robust = float(np.median(np.abs(np.diff(x))) / 0.9539)
            if robust > 0:
                keep = np.abs(x - np.median(x)) <= 3.5 * robust
                pairs = keep[1:] & keep[:-1]
                if keep.sum() >= 10 and pairs.any() and not keep.all():
                    sigma = float(np.abs(np.diff(x))[pairs].mean() / cc.d2(2))
                    x = x[keep]
                    centre = float(np.mean(x))
        self.centre_ = centre
        self.sigma_ = sigma if sigma > 0 else float(np.std(x)) or 1e-12
        self.lcl_ = self.centre_ - 3 * self.sigma_
        self.ucl_ = self.centre_ + 3 * self.sigma_
        self.mr_bar_ = self.sigma_ * cc.d2(2)
        self.mr_ucl_ = cc.d4_upper(2) * self.mr_bar_
        self.n_reference_ = int(x.size)
        self._rules = RuleState(self.rules)
        self._last = np.nan
        self.last_value_: float | None = None
        self.fitted_ = True
        return self

    def _update(self, x: np.ndarray) -> Scores:
        x = x.ravel()
        z = (x - self.centre_) / self.sigma_
        mask = self._rules.apply(z)
        mr = np.abs(np.diff(np.concatenate([[self._last], x])))
        mr_alarm = (mr > self.mr_ucl_) if self.mr_chart else np.zeros(len(x), dtype=bool)
        if len(x):
            self._last = x[-1]
            self.last_value_ = float(x[-1])
        n = len(x)
        return Scores(
            statistic=x,
            alarm=(mask > 0) | mr_alarm,
            lower=np.full(n, self.lcl_),
            upper=np.full(n, self.ucl_),
            extra={"z": z, "rules": mask, "moving_range": mr, "mr_alarm": mr_alarm},
        )


class XbarChart(Detector):
    """X̄ chart with an R (`dispersion="range"`) or S (`dispersion="std"`) companion chart.

    Data are subgroups: an array of shape (n_subgroups, n) in batch, one row of n values
    when streaming.
    """

    def __init__(self, dispersion: str = "range", rules: RuleSpec = None, trim: bool = True) -> None:
        if dispersion not in ("range", "std"):
            raise ValueError("dispersion is 'range' (X̄–R) or 'std' (X̄–S)")
        self.dispersion = dispersion
        self.rules = rules
        self.trim = trim

    def _as_batch(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        return arr.reshape(1, -1) if arr.ndim == 1 else arr

    def _spread(self, g: np.ndarray) -> np.ndarray:
        if self.dispersion == "range":
            return g.max(axis=1) - g.min(axis=1)
        return g.std(axis=1, ddof=1)

    def fit(self, reference: Any) -> XbarChart:
        g = self._as_batch(reference)
        n = g.shape[1]
        if n < 2:
            raise ValueError("subgroups need at least 2 values")
        self.n_ = n
        for _ in range(10):
            xbarbar = float(g.mean())
            spread_bar = float(self._spread(g).mean())
            sigma = spread_bar / (cc.d2(n) if self.dispersion == "range" else cc.c4(n))
            if not self.trim:
                break
            keep = np.abs(g.mean(axis=1) - xbarbar) <= 3 * sigma / np.sqrt(n)
            keep &= self._spread(g) <= spread_bar * self._spread_factors(n)[1]
            if keep.all() or keep.sum() < 5:
                break
            g = g[keep]
        self.centre_ = xbarbar
        self.sigma_ = sigma
        self.sigma_xbar_ = sigma / np.sqrt(n)
        self.lcl_ = xbarbar - 3 * self.sigma_xbar_
        self.ucl_ = xbarbar + 3 * self.sigma_xbar_
        lo, hi = self._spread_factors(n)
        self.spread_centre_ = spread_bar
        self.spread_lcl_ = lo * spread_bar
        self.spread_ucl_ = hi * spread_bar
        self._rules = RuleState(self.rules)
        self.fitted_ = True
        return self

    def _spread_factors(self, n: int) -> tuple[float, float]:
        if self.dispersion == "range":
            return cc.d3_lower(n), cc.d4_upper(n)
        return cc.b3(n), cc.b4(n)

    def _update(self, g: np.ndarray) -> Scores:
        if g.shape[1] != self.n_:
            raise ValueError(f"subgroups must have {self.n_} values, got {g.shape[1]}")
        xbar = g.mean(axis=1)
        spread = self._spread(g)
        z = (xbar - self.centre_) / self.sigma_xbar_
        mask = self._rules.apply(z)
        spread_alarm = (spread > self.spread_ucl_) | (spread < self.spread_lcl_)
        m = len(xbar)
        return Scores(
            statistic=xbar,
            alarm=(mask > 0) | spread_alarm,
            lower=np.full(m, self.lcl_),
            upper=np.full(m, self.ucl_),
            extra={"z": z, "rules": mask, "spread": spread, "spread_alarm": spread_alarm},
        )


class _Standardised(Detector):
    """Shared fitting for EWMA/CUSUM: centre and sigma from the reference (or given)."""

    def __init__(self, mu: float | None = None, sigma: float | None = None, sigma_method: str = "mr") -> None:
        self.mu = mu
        self.sigma = sigma
        self.sigma_method = sigma_method

    def _fit_location(self, reference: Any) -> None:
        x = _clean(reference) if reference is not None else None
        if self.mu is not None:
            self.centre_ = float(self.mu)
        elif x is not None:
            self.centre_ = float(np.mean(x))
        else:
            raise ValueError("give a reference window or mu")
        if self.sigma is not None:
            self.sigma_ = float(self.sigma)
        elif x is not None:
            self.sigma_ = mr_sigma(x) if self.sigma_method == "mr" else float(np.std(x, ddof=1))
        else:
            raise ValueError("give a reference window or sigma")
        if not self.sigma_ > 0:
            self.sigma_ = 1e-12


class EWMAChart(_Standardised):
    """EWMA chart: z_t = λ x_t + (1-λ) z_{t-1}, limits ±L·σ_z.

    Give `L`, or `arl0` and L is solved (Markov chain) for that in-control ARL. With
    `exact_limits` the limits widen from the start as the EWMA variance builds up.
    """

    def __init__(
        self,
        lam: float = 0.1,
        L: float | None = None,
        arl0: float = 370.0,
        exact_limits: bool = True,
        mu: float | None = None,
        sigma: float | None = None,
        sigma_method: str = "mr",
    ) -> None:
        super().__init__(mu, sigma, sigma_method)
        self.lam = lam
        self.L = L
        self.arl0 = arl0
        self.exact_limits = exact_limits

    def fit(self, reference: Any = None) -> EWMAChart:
        self._fit_location(reference)
        self.L_ = float(self.L) if self.L is not None else ewma_design(self.arl0, self.lam)
        self.reset()
        self.fitted_ = True
        return self

    def reset(self) -> None:
        """Restart the EWMA at the centre line (e.g. after a fix), keeping the limits."""
        self.ewma_ = self.centre_
        self.n_seen_ = 0

    def _update(self, x: np.ndarray) -> Scores:
        x = x.ravel()
        lam = self.lam
        zi = np.array([(1 - lam) * self.ewma_])
        z, _ = lfilter([lam], [1.0, -(1 - lam)], x, zi=zi)
        if len(z):
            self.ewma_ = float(z[-1])
        t = self.n_seen_ + np.arange(1, len(x) + 1)
        var: float | np.ndarray = lam / (2 - lam)
        if self.exact_limits:
            var = var * (1 - (1 - lam) ** (2 * t))
        half = self.L_ * self.sigma_ * np.sqrt(var) * np.ones(len(x))
        lower, upper = self.centre_ - half, self.centre_ + half
        return Scores(
            statistic=z,
            alarm=(z > upper) | (z < lower),
            lower=lower,
            upper=upper,
            extra={"shift_sigma": (z - self.centre_) / self.sigma_},
        )


def _lindley(increments: np.ndarray, start: float) -> np.ndarray:
    """S_t = max(0, S_{t-1} + inc_t) for all t at once: S_t = U_t - min(-S_0, min_{j<=t} U_j)."""
    u = np.cumsum(increments)
    return u - np.minimum(-start, np.minimum.accumulate(u))


class CUSUMChart(_Standardised):
    """Two-sided tabular CUSUM in sigma units: C± accumulate (±z - k), alarm above h.

    Give `k` and `h`, or `shift` (the mean shift to catch quickest, in sigmas) and `arl0`
    and they are designed (k = shift/2, h solved for the in-control ARL by Markov chain).
    `onset` in the output is the change-point estimate: the last record at which the
    side in alarm was zero.
    """

    def __init__(
        self,
        k: float | None = None,
        h: float | None = None,
        shift: float = 1.0,
        arl0: float = 370.0,
        mu: float | None = None,
        sigma: float | None = None,
        sigma_method: str = "mr",
        clip: float | None = None,
    ) -> None:
        super().__init__(mu, sigma, sigma_method)
        self.k = k
        self.h = h
        self.shift = shift
        self.arl0 = arl0
        self.clip = clip  # winsorise z at ±clip: one wild value cannot fire a CUSUM alone

    def fit(self, reference: Any = None) -> CUSUMChart:
        self._fit_location(reference)
        self.k_ = float(self.k) if self.k is not None else cusum_design(self.arl0, self.shift)[0]
        self.h_ = float(self.h) if self.h is not None else cusum_h(self.k_, self.arl0)
        self.n_seen_ = 0
        self.reset()
        self.fitted_ = True
        return self

    def reset(self) -> None:
        """Zero both sums (e.g. after a fix), keeping the design and the record count."""
        self.c_plus_ = 0.0
        self.c_minus_ = 0.0
        self._zero_plus = self.n_seen_ - 1
        self._zero_minus = self.n_seen_ - 1

    def update(self, x: Any) -> Scores:
        if np.ndim(x) == 0 and self.fitted_:
            return self._update_one(float(x))
        return super().update(x)

    def _update_one(self, v: float) -> Scores:
        """One record without array overhead: the same recursion, in plain floats."""
        z = (v - self.centre_) / self.sigma_
        if self.clip is not None:
            z = min(max(z, -self.clip), self.clip)
        cp = max(0.0, self.c_plus_ + (z - self.k_))
        cm = max(0.0, self.c_minus_ + (-z - self.k_))
        if cp <= 0:
            self._zero_plus = self.n_seen_
        if cm <= 0:
            self._zero_minus = self.n_seen_
        self.c_plus_, self.c_minus_ = cp, cm
        self.n_seen_ += 1
        stat = max(cp, cm)
        onset = (self._zero_plus if cp >= cm else self._zero_minus) + 1
        return Scores(
            statistic=np.array([stat]),
            alarm=np.array([stat > self.h_]),
            lower=np.zeros(1),
            upper=np.array([self.h_]),
            extra={"c_plus": np.array([cp]), "c_minus": np.array([cm]), "onset": np.array([float(onset)]),
                   "onset_plus": np.array([self._zero_plus + 1.0]), "onset_minus": np.array([self._zero_minus + 1.0])},
        )

    def _last_zero(self, c: np.ndarray, carried: int) -> np.ndarray:
        idx = self.n_seen_ + np.arange(len(c))
        return np.maximum.accumulate(np.maximum(np.where(c <= 0, idx, -1), carried))

    def _update(self, x: np.ndarray) -> Scores:
        z = (x.ravel() - self.centre_) / self.sigma_
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        cp = _lindley(z - self.k_, self.c_plus_)
        cm = _lindley(-z - self.k_, self.c_minus_)
        zp = self._last_zero(cp, self._zero_plus)
        zm = self._last_zero(cm, self._zero_minus)
        if len(z):
            self.c_plus_, self.c_minus_ = float(cp[-1]), float(cm[-1])
            self._zero_plus, self._zero_minus = int(zp[-1]), int(zm[-1])
        stat = np.maximum(cp, cm)
        onset = np.where(cp >= cm, zp, zm) + 1
        n = len(z)
        return Scores(
            statistic=stat,
            alarm=stat > self.h_,
            lower=np.zeros(n),
            upper=np.full(n, self.h_),
            extra={"c_plus": cp, "c_minus": cm, "onset": onset.astype(float),
                   "onset_plus": (zp + 1).astype(float), "onset_minus": (zm + 1).astype(float)},
        )


class StagedChart(Detector):
    """Runs a chart in stages: after each recorded process change the limits are re-learnt.

    `changes` are record indices (0-based, counted over everything passed to `update`) or
    timestamps (then `update` needs `t=`). The first `calibrate` records after a change are
    the new stage's phase-I window: they are not judged (alarm False, statistic NaN), and
    the chart is refitted on exactly them. Nothing outside a recorded change moves limits.
    """

    def __init__(self, chart: Detector, changes: Sequence[Any] = (), calibrate: int = 50) -> None:
        self.chart = chart
        self.changes = list(changes)
        self.calibrate = calibrate

    def fit(self, reference: Any) -> StagedChart:
        self.current_ = copy.deepcopy(self.chart).fit(reference)
        self.stage_ = 0
        self._by_time = bool(self.changes) and not isinstance(self.changes[0], (int, np.integer))
        self._marks = (
            np.sort(np.asarray(self.changes, dtype="datetime64[us]"))
            if self._by_time
            else np.sort(np.asarray(self.changes, dtype=np.int64))
        )
        self._buffer: list[np.ndarray] = []
        self._calibrating = False
        self.fitted_ = True
        self.n_seen_ = 0
        return self

    def update(self, x: Any, t: Any = None) -> Scores:
        x = self.current_._as_batch(x)
        n = len(x)
        if self._by_time:
            if t is None:
                raise ValueError("changes are timestamps: pass t= with the records")
            tt = np.asarray(t, dtype="datetime64[us]").reshape(-1)
            stage_of = np.searchsorted(self._marks, tt, side="right")
        else:
            idx = self.n_seen_ + np.arange(n)
            stage_of = np.searchsorted(self._marks, idx, side="right")
        stat = np.full(n, np.nan)
        alarm = np.zeros(n, dtype=bool)
        lower = np.full(n, np.nan)
        upper = np.full(n, np.nan)
        # Stage boundaries split the batch into runs; each run is scored or buffered.
        cuts = np.flatnonzero(np.diff(stage_of)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
            if stage_of[lo] > self.stage_:
                self.stage_ = int(stage_of[lo])
                self._calibrating, self._buffer = True, []
            lo2 = lo
            if self._calibrating:
                need = self.calibrate - sum(len(b) for b in self._buffer)
                take = min(need, hi - lo)
                self._buffer.append(x[lo : lo + take])
                lo2 = lo + take
                if take == need:
                    self.current_ = copy.deepcopy(self.chart).fit(np.concatenate(self._buffer))
                    self._calibrating = False
            if lo2 < hi:
                s = self.current_.update(x[lo2:hi])
                stat[lo2:hi], alarm[lo2:hi] = s.statistic, s.alarm
                if s.lower is not None:
                    lower[lo2:hi] = s.lower
                if s.upper is not None:
                    upper[lo2:hi] = s.upper
        self.n_seen_ += n
        return Scores(stat, alarm, lower, upper, extra={"stage": stage_of.astype(float)})

    @property
    def state(self) -> dict[str, Any]:
        out = self.current_.state
        out.update(detector=f"Staged[{out['detector']}]", stage=self.stage_, calibrating=self._calibrating)
        return out
