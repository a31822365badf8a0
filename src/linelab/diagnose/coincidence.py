"""Telling a cause from a coincidence of time: what moved, or began, together with the symptom.

Two checks keep a candidate from ranking on timing alone:

* a continuous factor that drifted between reference and incident (the room's temperature over a
  day, a measurement that followed a new lot) causes the symptom only if the symptom follows it
  *within* each period too, where the factor varies on its own: a shift D that accounts for an
  excess E needs a slope of about E / D there. Where the data would show that slope clearly and
  do not, the factor's share is only what the slope it does have accounts for. A factor that
  hardly varies within the periods (a set-point that stepped) cannot be judged this way and is
  left as it is;
* of candidates that hold the very same incident units (a new lot, and the product and the shift
  that ran while it was used), one that ran just before the onset without the symptom is not what
  changed; one that began with the symptom is (`recent_history`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

POWER_T = 5.0  # t the needed slope would reach within the periods: below it the check has no say
UPPER_Z = 2.0  # the observed slope's upper bound (slope + UPPER_Z se) ...
ENOUGH = 0.3  # ... must reach this fraction of the needed slope, or the shift is a coincidence


@dataclass
class WithinPeriod:
    slope: float  # symptom per unit of the factor, within reference and incident (period means removed)
    se: float
    needed: float  # the slope the factor's shift needs to account for the whole excess
    power_t: float  # t the needed slope would reach with this much within-period variation
    share: float  # share of the excess the observed slope accounts for (0..1)
    coincidence: bool  # the data could show the needed slope and do not
    p_along: float = 1.0  # one-sided p that the symptom follows the factor the way its shift needs

    @property
    def judged(self) -> bool:
        """The needed slope would show clearly: the within-period evidence counts."""
        return self.power_t >= POWER_T


def within_period(x_ref: np.ndarray, x_inc: np.ndarray, s_ref: np.ndarray, s_inc: np.ndarray) -> WithinPeriod | None:
    """Does the symptom follow the factor within the periods as much as its shift needs? None when
    the factor did not move, the symptom did not change or too few rows carry both."""
    okr, oki = np.isfinite(x_ref) & np.isfinite(s_ref), np.isfinite(x_inc) & np.isfinite(s_inc)
    if okr.sum() < 10 or oki.sum() < 10:
        return None
    xr, xi, sr, si = x_ref[okr], x_inc[oki], s_ref[okr], s_inc[oki]
    shift, excess = float(xi.mean() - xr.mean()), float(si.mean() - sr.mean())
    if shift == 0.0 or excess <= 0.0:
        return None
    x = np.concatenate([xr - xr.mean(), xi - xi.mean()])
    s = np.concatenate([sr - sr.mean(), si - si.mean()])
    sxx = float(x @ x)
    n = x.size
    needed = excess / shift
    if sxx <= 0.0 or n < 20:
        return WithinPeriod(0.0, float("inf"), needed, 0.0, 0.0, False)
    slope = float(x @ s) / sxx
    resid = s - slope * x
    sd = float(np.sqrt(float(resid @ resid) / (n - 3)))
    se = sd / np.sqrt(sxx) if sd > 0 else float("inf")
    power = abs(needed) / se if np.isfinite(se) and se > 0 else 0.0
    # oriented along the needed slope: a slope the other way accounts for nothing
    along = slope * np.sign(needed)
    share = float(np.clip(along / abs(needed), 0.0, 1.0))
    coincidence = power >= POWER_T and along + UPPER_Z * se < ENOUGH * abs(needed)
    p_along = float(stats.t.sf(along / se, n - 3)) if np.isfinite(se) and se > 0 else 1.0
    return WithinPeriod(slope, float(se), float(needed), float(power), share, bool(coincidence), p_along)


@dataclass
class Recent:
    units: int  # the candidate's units among the reference rows just before the onset
    per_unit: float  # their symptom above the reference's (score units)
    z: float


def recent_history(mask_ref: np.ndarray, order_ref: np.ndarray, s_ref: np.ndarray, last: int) -> Recent:
    """The candidate's rows among the last `last` reference rows (in time order) and their symptom."""
    recent = order_ref[-last:] if last > 0 else order_ref[:0]
    rows = recent[mask_ref[recent]]
    if rows.size == 0:
        return Recent(0, 0.0, 0.0)
    sd = float(np.std(s_ref)) or 1.0
    e = float(s_ref[rows].mean() - s_ref.mean())
    return Recent(int(rows.size), e, e * np.sqrt(rows.size) / sd)
