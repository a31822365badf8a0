"""Attribute monitors: defect rate / first-pass yield, overall and per group.

`PChart` is the classic p-chart over subgroups (a shift, a lot, an hour of production).
`GroupRateMonitor` watches many groups at once (stations, machines, nozzles, fixtures, lots,
suppliers, shifts ...) against the reference defect rate: a one-sided binomial — or
beta-binomial, when the reference shows groups differ more than chance allows — test per
group, Benjamini–Hochberg across the groups, and a *minimum effect*: the null hypothesis is
"this group is at most `min_ratio` × the reference rate (and at most `min_excess` above it)",
so a million units do not make a 2% relative difference an alarm. Effect sizes (rate ratio,
excess rate, excess defects) come with every verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import betabinom, binom
from statsmodels.stats.multitest import multipletests

from linelab.monitor.base import Detector, Scores


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input's order (statsmodels)."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return p
    return multipletests(p, method="fdr_bh")[1]


class PChart(Detector):
    """p-chart: fraction defective per subgroup with limits p̄ ± 3·sqrt(p̄(1-p̄)/n_i).

    Records are (defects, inspected) pairs: an array of shape (m, 2), or one pair.
    """

    def _as_batch(self, x: Any) -> np.ndarray:
        arr = np.asarray(x, dtype=float)
        return arr.reshape(1, 2) if arr.ndim == 1 else arr

    def fit(self, reference: Any) -> PChart:
        r = self._as_batch(reference)
        if r[:, 1].sum() <= 0:
            raise ValueError("reference has no inspected units")
        self.p_bar_ = float(r[:, 0].sum() / r[:, 1].sum())
        self.fitted_ = True
        return self

    def _update(self, x: np.ndarray) -> Scores:
        d, n = x[:, 0], np.maximum(x[:, 1], 1)
        p = d / n
        half = 3 * np.sqrt(self.p_bar_ * (1 - self.p_bar_) / n)
        lower, upper = np.maximum(self.p_bar_ - half, 0), self.p_bar_ + half
        return Scores(p, (p > upper) | (p < lower), lower, upper, extra={"n": n})


@dataclass
class GroupVerdicts:
    """Current verdict per group (arrays aligned with `groups`)."""

    groups: np.ndarray
    n: np.ndarray
    defects: np.ndarray
    rate: np.ndarray
    reference_rate: np.ndarray
    rate_ratio: np.ndarray
    excess_rate: np.ndarray
    excess_defects: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    alarm: np.ndarray

    def flagged(self) -> list[dict[str, Any]]:
        """Alarmed groups, worst (most excess defects) first, as plain dicts."""
        idx = np.flatnonzero(self.alarm)
        idx = idx[np.argsort(-self.excess_defects[idx])]
        return [self.row(int(i)) for i in idx]

    def row(self, i: int) -> dict[str, Any]:
        return {
            "group": self.groups[i].item() if hasattr(self.groups[i], "item") else self.groups[i],
            "n": int(self.n[i]),
            "defects": int(self.defects[i]),
            "rate": float(self.rate[i]),
            "reference_rate": float(self.reference_rate[i]),
            "rate_ratio": float(self.rate_ratio[i]),
            "excess_rate": float(self.excess_rate[i]),
            "excess_defects": float(self.excess_defects[i]),
            "p_value": float(self.p_value[i]),
            "q_value": float(self.q_value[i]),
        }


class GroupRateMonitor:
    """Defect rate per group vs the reference rate, with FDR control across groups.

    `fit(fails, groups=None)`: reference records (bool/0-1 per unit), optionally with their
    group, which lets the monitor measure between-group overdispersion (beta-binomial).
    `update((groups, fails))` or `update(groups, fails)`: adds records (one or many) and
    returns the verdicts over everything seen since `fit`/`reset`. Counts are sums, so one
    batch or record-by-record give identical verdicts.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        min_ratio: float = 1.5,
        min_excess: float = 0.002,
        min_defects: int = 3,
        overdispersion: bool = True,
    ) -> None:
        self.alpha = alpha
        self.min_ratio = min_ratio
        self.min_excess = min_excess
        self.min_defects = min_defects
        self.overdispersion = overdispersion

    def fit(self, fails: Any, groups: Any = None) -> GroupRateMonitor:
        f = np.asarray(fails, dtype=float).ravel()
        if f.size == 0:
            raise ValueError("reference has no records")
        self.reference_rate_ = float(np.clip(f.mean(), 1e-9, 1 - 1e-9))
        self.rho_ = 0.0
        if self.overdispersion and groups is not None:
            self.rho_ = _overdispersion(np.asarray(groups).ravel(), f, self.reference_rate_)
        self.reset()
        self.fitted_ = True
        return self

    def reset(self, groups: Any = None) -> None:
        """Forget counts (of the given groups, or all) — e.g. after a fix is confirmed."""
        if groups is None:
            self._counts: dict[Any, list[int]] = {}
        else:
            for g in np.atleast_1d(groups):
                self._counts.pop(g.item() if hasattr(g, "item") else g, None)

    def update(self, groups: Any, fails: Any = None) -> GroupVerdicts:
        if fails is None:
            groups, fails = groups
        g = np.atleast_1d(np.asarray(groups))
        f = np.atleast_1d(np.asarray(fails, dtype=np.int64))
        keys, inv = np.unique(g, return_inverse=True)
        n = np.bincount(inv, minlength=len(keys))
        d = np.bincount(inv, weights=f, minlength=len(keys)).astype(np.int64)
        for key, ni, di in zip(keys.tolist(), n.tolist(), d.tolist(), strict=True):
            c = self._counts.setdefault(key, [0, 0])
            c[0] += ni
            c[1] += di
        return self.verdicts()

    def verdicts(self) -> GroupVerdicts:
        keys = sorted(self._counts, key=lambda k: (type(k).__name__, k))
        n = np.array([self._counts[k][0] for k in keys], dtype=np.int64)
        d = np.array([self._counts[k][1] for k in keys], dtype=np.int64)
        return self.test_counts(keys, n, d)

    def test_counts(
        self, keys: Any, n: np.ndarray, d: np.ndarray, reference: np.ndarray | None = None
    ) -> GroupVerdicts:
        """Verdicts for given per-group counts (e.g. a moving window), without touching state.

        `reference` optionally gives each group its own comparison rate (e.g. the rate of its
        peers in the same window); default: the fitted reference rate.
        """
        n = np.asarray(n, dtype=np.int64)
        d = np.asarray(d, dtype=np.int64)
        p0 = np.full(len(n), self.reference_rate_) if reference is None else np.clip(reference, 1e-9, 1 - 1e-9)
        pval = self.p_values(n, d, p0)
        q = bh_adjust(pval)
        rate = np.divide(d, n, out=np.zeros(len(n)), where=n > 0)
        alarm = (q < self.alpha) & (d >= self.min_defects)
        groups = np.empty(len(n), dtype=object)
        groups[:] = list(keys)
        return GroupVerdicts(
            groups=groups,
            n=n,
            defects=d,
            rate=rate,
            reference_rate=p0,
            rate_ratio=rate / p0,
            excess_rate=rate - p0,
            excess_defects=d - n * p0,
            p_value=pval,
            q_value=q,
            alarm=alarm,
        )

    def p_values(self, n: np.ndarray, d: np.ndarray, p0: np.ndarray) -> np.ndarray:
        """One-sided p-value of `d` defects in `n` units against each group's comparison rate `p0`
        (1 where a group has no units). Element by element: many windows can share one call."""
        # Interval null: "no worse than the smallest effect worth an alarm".
        p_null = np.minimum(p0 + np.maximum(self.min_excess, (self.min_ratio - 1) * p0), 1 - 1e-9)
        if self.rho_ > 0:
            s = 1 / self.rho_ - 1
            pval = betabinom.sf(d - 1, n, p_null * s, (1 - p_null) * s)
        else:
            pval = binom.sf(d - 1, n, p_null)
        return np.where(n > 0, pval, 1.0)

    @property
    def state(self) -> dict[str, Any]:
        return {
            "detector": "GroupRateMonitor",
            "reference_rate": self.reference_rate_,
            "overdispersion_rho": self.rho_,
            "groups": len(self._counts),
            "alpha": self.alpha,
            "min_ratio": self.min_ratio,
            "min_excess": self.min_excess,
        }


def _overdispersion(groups: np.ndarray, fails: np.ndarray, p: float) -> float:
    """Intra-group correlation rho of a beta-binomial, by the method of moments (>= 0)."""
    keys, inv = np.unique(groups, return_inverse=True)
    if len(keys) < 10:  # too few groups to tell real heterogeneity from chance
        return 0.0
    n = np.bincount(inv).astype(float)
    d = np.bincount(inv, weights=fails)
    # Pearson chi-square / df estimates the variance inflation 1 + (n-1) rho.
    chi2 = np.sum((d - n * p) ** 2 / (n * p * (1 - p)))
    inflation = chi2 / (len(keys) - 1)
    n_tilde = (n.sum() - (n**2).sum() / n.sum()) / (len(keys) - 1)
    if inflation <= 1 or n_tilde <= 1:
        return 0.0
    return float(min((inflation - 1) / (n_tilde - 1), 0.5))
