"""Is a candidate better than the incumbent, unit for unit? An always-valid test on paired savings.

Every live version scores every unit, so for each unit whose result is known the candidate's
decision and the incumbent's can both be priced (`predict.savings`); `d` is the difference. The
test is the mixture SPRT the experiments use (`linelab.experiment.sequential.MixtureSPRT`: a
normal mixture over the effect, Robbins 1970; Johari et al. 2017), here on the mean of `d` with
its running variance: the confidence sequence holds at every look at once, so looking after
every batch of feedback and stopping the moment it excludes 0 keeps the false-promotion rate
under `alpha`. `tau` is the effect, in standard deviations of `d`, it is tuned to find fastest.
Looks are at fixed unit counts and evaluated vectorised over a whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def mixture_halfwidth(var_mean: np.ndarray, tau2: np.ndarray | float, alpha: float) -> np.ndarray:
    """Half-width of the normal-mixture confidence sequence for an estimate with variance `var_mean`."""
    v = np.asarray(var_mean, dtype=float)
    return np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))


@dataclass(frozen=True)
class PairedTest:
    alpha: float = 0.05
    tau: float = 0.1
    min_units: int = 300  # paired units with a known result before the first look
    min_discordant: int = 20  # units on which the two decisions differ: fewer say nothing yet
    look_every: int = 50

    def run(self, d: np.ndarray, discordant: np.ndarray | None = None) -> dict[str, Any]:
        """The verdict on a history of paired differences in order: better | worse | continue."""
        d = np.asarray(d, dtype=float)
        n = np.arange(1, d.size + 1)
        disc = np.cumsum(d != 0 if discordant is None else discordant)
        s1, s2 = np.cumsum(d), np.cumsum(d * d)
        at = np.flatnonzero((n % self.look_every == 0) & (n >= self.min_units) & (disc >= self.min_discordant))
        out: dict[str, Any] = {"decision": "continue", "units": int(d.size),
                               "discordant": int(disc[-1]) if d.size else 0,
                               "mean": float(d.mean()) if d.size else None, "lower": None, "upper": None, "at": None}
        if not at.size:
            return out
        k = n[at].astype(float)
        mean = s1[at] / k
        var = np.maximum((s2[at] - k * mean**2) / (k - 1), 1e-12)
        h = mixture_halfwidth(var / k, self.tau**2 * var, self.alpha)
        lower, upper = mean - h, mean + h
        hit = np.flatnonzero((lower > 0) | (upper < 0))
        j = int(hit[0]) if hit.size else at.size - 1
        out.update(lower=float(lower[j]), upper=float(upper[j]), mean=float(mean[j]))
        if hit.size:
            out.update(decision="better" if lower[j] > 0 else "worse", at=int(k[j]))
        return out
