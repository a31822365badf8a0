"""The symptom as one number per row, oriented so that "worse" is larger.

Causes are then compared on one scale whatever the target is: a defect flag (rate), a
measurement whose mean moved (signed deviation in reference sds) or one whose spread grew
(absolute deviation in reference sds). When the incident rows all carry the symptom and the
reference rows none (affected vs unaffected units), membership itself is the symptom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import robust_scale


@dataclass
class Symptom:
    mode: str  # rate | mean | spread | case-control
    s_ref: np.ndarray
    s_inc: np.ndarray
    reference_level: float  # defect rate, mean or spread of the target in the reference
    incident_level: float
    center: float = 0.0
    scale: float = 1.0
    sign: float = 1.0

    @property
    def excess_per_unit(self) -> float:
        return float(np.mean(self.s_inc) - np.mean(self.s_ref))

    @property
    def excess(self) -> float:
        """Total excess in the incident: extra defective units, or summed extra deviation."""
        return self.excess_per_unit * self.s_inc.size

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Score new target values the same way (used by counterfactuals)."""
        if self.mode == "rate":
            return y if self.sign > 0 else 1 - y
        z = (y - self.center) / self.scale
        return self.sign * (z if self.mode == "mean" else np.abs(z))


def make_symptom(y_ref: np.ndarray, y_inc: np.ndarray, binary: bool, mode: str = "auto") -> Symptom:
    if binary and np.ptp(y_inc) == 0 and np.ptp(y_ref) == 0 and y_inc[0] != y_ref[0]:
        # Affected vs unaffected units: the symptom is being in the incident table.
        return Symptom("case-control", np.zeros(y_ref.size), np.ones(y_inc.size), 0.0, 1.0)
    if binary or mode == "rate":
        s_ref, s_inc = y_ref.astype(float), y_inc.astype(float)
        if s_inc.mean() < s_ref.mean():  # fewer defects: explain the improvement instead
            return Symptom("rate", 1 - s_ref, 1 - s_inc, float(y_ref.mean()), float(y_inc.mean()), sign=-1.0)
        return Symptom("rate", s_ref, s_inc, float(y_ref.mean()), float(y_inc.mean()))
    center = float(np.median(y_ref))
    scale = robust_scale(y_ref)
    z_ref, z_inc = (y_ref - center) / scale, (y_inc - center) / scale
    shift = float(np.mean(z_inc) - np.mean(z_ref))
    spread_change = float(np.log(max(float(np.std(z_inc)), 1e-12) / max(float(np.std(z_ref)), 1e-12)))
    if mode == "auto":
        mode = "mean" if abs(shift) >= abs(spread_change) else "spread"
    if mode == "mean":
        sign = 1.0 if shift >= 0 else -1.0
        return Symptom(
            "mean", sign * z_ref, sign * z_inc, float(np.mean(y_ref)), float(np.mean(y_inc)), center, scale, sign
        )
    # Spread: the size of the deviation; a shrinking spread is oriented so that it counts up.
    a_ref, a_inc = np.abs(z_ref), np.abs(z_inc)
    sign = 1.0 if a_inc.mean() >= a_ref.mean() else -1.0
    return Symptom(
        "spread",
        sign * a_ref,
        sign * a_inc,
        float(np.std(y_ref)),
        float(np.std(y_inc)),
        center,
        scale,
        sign,
    )
