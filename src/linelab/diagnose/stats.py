"""Small statistical helpers shared by the diagnosers (vectorised, no pandas)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

# Smallest p-value we report; below this a p-value carries no more useful information and
# -log10(p) stays finite so scores can be compared and summed.
P_FLOOR = 1e-300


def robust_scale(x: np.ndarray) -> float:
    """A spread estimate that ignores outliers but survives discrete or tied data.

    MAD first; when more than half the values are tied (MAD == 0) fall back to the IQR, then to
    the standard deviation, and finally to 1 so that a constant column never divides by zero.
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return 1.0
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    if mad > 0:
        return float(mad)
    q75, q25 = np.percentile(x, [75, 25])
    if q75 > q25:
        return float((q75 - q25) / 1.349)
    sd = float(np.std(x, ddof=1))
    return sd if sd > 0 else 1.0


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the input's order (statsmodels)."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return p
    return multipletests(p, method="fdr_bh")[1]


def neglog10(p: float | np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(p, P_FLOOR, 1.0))


def _set_points(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Samples with a set-point read back (float noise of 1e-13 at most) made exactly constant:
    scipy warns of precision loss on nearly identical data, once per such column of a diagnosis."""
    tol = 1e-9 * max(1.0, abs(float(a[0])), abs(float(b[0])))
    snap = [np.full(x.shape, float(x.mean())) if np.ptp(x) <= tol else x for x in (a, b)]
    return snap[0], snap[1], tol


@contextmanager
def _exact_constants(a: np.ndarray, b: np.ndarray) -> Iterator[None]:
    """scipy's precision warning is about data nearly identical by accident; a sample that is
    exactly constant (a set-point, see `_set_points`) is computed exactly, so it is not warned of."""
    with warnings.catch_warnings():
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        yield


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of a difference in means."""
    if a.size < 2 or b.size < 2:
        return 1.0
    a, b, tol = _set_points(a, b)
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # two set-points: no spread to test against
        return 0.0 if abs(float(a[0]) - float(b[0])) > tol else 1.0
    with _exact_constants(a, b):
        res = stats.ttest_ind(a, b, equal_var=False)
    p = float(res.pvalue)
    return p if np.isfinite(p) else 1.0


def spread_p(a: np.ndarray, b: np.ndarray) -> float:
    """Brown–Forsythe test (Levene around the median): robust test of a change of spread."""
    if a.size < 3 or b.size < 3:
        return 1.0
    a, b, _ = _set_points(a, b)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0
    with _exact_constants(a, b):
        p = float(stats.levene(a, b, center="median").pvalue)
    return p if np.isfinite(p) else 1.0


def fisher_greater(k1: int, n1: int, k0: int, n0: int) -> float:
    """One-sided Fisher exact p-value that the rate k1/n1 exceeds k0/n0."""
    if n1 == 0 or n0 == 0:
        return 1.0
    table = [[k1, n1 - k1], [k0, n0 - k0]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def binom_greater(k: int, n: int, p0: float) -> float:
    """One-sided binomial p-value that k successes in n trials exceed the rate p0."""
    if n == 0:
        return 1.0
    p0 = float(np.clip(p0, 1e-9, 1 - 1e-9))
    return float(stats.binomtest(int(k), int(n), p0, alternative="greater").pvalue)


def two_proportion_sample_size(p1: float, p0: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per arm to tell a rate p1 from p0 (two-sided normal approximation)."""
    p1 = float(np.clip(p1, 1e-6, 1 - 1e-6))
    p0 = float(np.clip(p0, 1e-6, 1 - 1e-6))
    if abs(p1 - p0) < 1e-9:
        return 0
    za = stats.norm.ppf(1 - alpha / 2)
    zb = stats.norm.ppf(power)
    pbar = (p1 + p0) / 2
    num = (za * np.sqrt(2 * pbar * (1 - pbar)) + zb * np.sqrt(p1 * (1 - p1) + p0 * (1 - p0))) ** 2
    return int(np.ceil(num / (p1 - p0) ** 2))


def two_mean_sample_size(delta_sd: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units per arm to detect a mean difference of `delta_sd` standard deviations."""
    if abs(delta_sd) < 1e-9:
        return 0
    za = stats.norm.ppf(1 - alpha / 2)
    zb = stats.norm.ppf(power)
    return int(np.ceil(2 * (za + zb) ** 2 / delta_sd**2))
