"""Process capability: Cp, Cpk (short-term sigma) and Pp, Ppk (overall sigma)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from linelab.monitor import constants as cc


@dataclass
class Capability:
    n: int
    mean: float
    sigma_within: float
    sigma_overall: float
    lsl: float | None
    usl: float | None
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None
    expected_ppm: float  # out-of-spec parts per million at the overall sigma

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capability(
    x: Any, lsl: float | None = None, usl: float | None = None, subgroup_size: int | None = None
) -> Capability:
    """Capability indices of `x` against spec limits (either may be missing).

    The within (short-term) sigma is R̄/d2 over consecutive subgroups of `subgroup_size`,
    or the average moving range / d2(2) for individual values; the overall sigma is the
    sample standard deviation. One-sided specs give only Cpk/Ppk (Cp, Pp need both).
    """
    if lsl is None and usl is None:
        raise ValueError("capability needs at least one spec limit (lsl or usl)")
    v = np.asarray(x, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise ValueError("capability needs at least 2 values")
    mean = float(v.mean())
    overall = float(v.std(ddof=1))
    if subgroup_size and subgroup_size >= 2:
        m = v.size // subgroup_size
        g = v[: m * subgroup_size].reshape(m, subgroup_size)
        within = float((g.max(axis=1) - g.min(axis=1)).mean() / cc.d2(subgroup_size))
    else:
        within = float(np.mean(np.abs(np.diff(v))) / cc.d2(2))

    def indices(sigma: float) -> tuple[float | None, float | None]:
        if sigma <= 0:
            return None, None
        both = lsl is not None and usl is not None
        spread = (usl - lsl) / (6 * sigma) if both else None  # type: ignore[operator]
        sides = []
        if usl is not None:
            sides.append((usl - mean) / (3 * sigma))
        if lsl is not None:
            sides.append((mean - lsl) / (3 * sigma))
        return spread, min(sides)

    cp, cpk = indices(within)
    pp, ppk = indices(overall)
    frac = 0.0
    if overall > 0:
        if usl is not None:
            frac += float(norm.sf((usl - mean) / overall))
        if lsl is not None:
            frac += float(norm.cdf((lsl - mean) / overall))
    return Capability(
        n=int(v.size), mean=mean, sigma_within=within, sigma_overall=overall, lsl=lsl, usl=usl,
        cp=cp, cpk=cpk, pp=pp, ppk=ppk, expected_ppm=frac * 1e6,
    )
