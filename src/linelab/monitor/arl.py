"""Average run lengths of CUSUM and EWMA charts, and the limits that hit a target ARL.

Two methods for CUSUM: Siegmund's closed-form approximation (fast, a few percent off) and
the Brook–Evans Markov chain (accurate to well under 1% with a few hundred states). EWMA uses
the Lucas–Saccucci Markov chain. Everything is in units of the in-control sigma of the
charted variable; `shift` is the mean shift in those units.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm


def siegmund_arl_one_sided(k: float, h: float, shift: float = 0.0) -> float:
    """Upper CUSUM ARL for a normal mean `shift` (Siegmund 1985)."""
    delta = shift - k
    b = h + 1.166
    if abs(delta) < 1e-9:
        return b * b
    return (np.exp(-2 * delta * b) + 2 * delta * b - 1) / (2 * delta * delta)


@lru_cache(maxsize=4096)
def markov_arl_one_sided(k: float, h: float, shift: float = 0.0, states: int = 300) -> float:
    """Zero-state upper CUSUM ARL by the Brook–Evans Markov chain."""
    w = 2 * h / (2 * states - 1)
    centres = np.arange(states) * w
    # Transition from state i to state j>=1 lands in [(j-.5)w, (j+.5)w); j=0 is [.., w/2).
    upper = (np.arange(states) + 0.5) * w
    cdf = norm.cdf(upper[None, :] - centres[:, None] + k - shift)
    trans = np.diff(np.concatenate([np.zeros((states, 1)), cdf], axis=1), axis=1)
    arl = np.linalg.solve(np.eye(states) - trans, np.ones(states))
    return float(arl[0])


def cusum_arl(k: float, h: float, shift: float = 0.0, method: str = "markov") -> float:
    """Two-sided CUSUM ARL (upper and lower charts, each with k, h)."""
    one = markov_arl_one_sided if method == "markov" else siegmund_arl_one_sided
    up = one(k, h, shift)
    down = one(k, h, -shift)
    return 1.0 / (1.0 / up + 1.0 / down)


def cusum_design(arl0: float = 370.0, shift: float = 1.0, method: str = "markov") -> tuple[float, float]:
    """(k, h) of the two-sided CUSUM that is quickest for `shift` at in-control ARL `arl0`.

    k = shift/2 is the reference value that makes CUSUM the likelihood-ratio optimum for
    that shift; h is solved numerically so the in-control ARL is `arl0`.
    """
    k = shift / 2.0
    return k, cusum_h(k, arl0, method)


def cusum_h(k: float, arl0: float = 370.0, method: str = "markov") -> float:
    """Decision interval h of a two-sided CUSUM with reference value k for in-control ARL `arl0`."""
    def gap(h: float) -> float:
        return float(np.log(cusum_arl(k, h, 0.0, method)) - np.log(arl0))

    hi = 1.0
    while gap(hi) < 0:  # widen the bracket until the ARL passes the target
        hi *= 1.5
        if hi > 200:
            raise ValueError(f"no CUSUM h reaches ARL {arl0} with k={k}")
    return float(brentq(gap, 1e-3, hi, xtol=1e-6))


@lru_cache(maxsize=4096)
def ewma_arl(lam: float, L: float, shift: float = 0.0, states: int = 301) -> float:
    """Zero-state ARL of an EWMA chart with asymptotic limits ±L·sigma_z (Lucas–Saccucci)."""
    h = L * np.sqrt(lam / (2 - lam))
    width = 2 * h / states
    centres = -h + (np.arange(states) + 0.5) * width
    # From z_i the next value is (1-lam) z_i + lam x; it lands in cell j with this probability.
    lo = (centres[None, :] - width / 2 - (1 - lam) * centres[:, None]) / lam - shift
    hi = (centres[None, :] + width / 2 - (1 - lam) * centres[:, None]) / lam - shift
    trans = norm.cdf(hi) - norm.cdf(lo)
    arl = np.linalg.solve(np.eye(states) - trans, np.ones(states))
    return float(arl[states // 2])


def ewma_design(arl0: float = 370.0, lam: float = 0.1) -> float:
    """Limit width L (in asymptotic sigmas of the EWMA) giving in-control ARL `arl0`."""
    return float(brentq(lambda L: ewma_arl(lam, L, 0.0) - arl0, 0.5, 6.0, xtol=1e-6))
