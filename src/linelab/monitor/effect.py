"""Did an action do what it was expected to? First-pass yield before versus after, with an interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Effect:
    """Observed change in first-pass yield across an action, and how it compares with the expectation."""

    before_units: int
    before_yield: float | None
    after_units: int
    after_yield: float | None
    delta: float | None  # after - before (fraction)
    interval: tuple[float, float] | None  # Newcombe hybrid score interval for the difference
    confidence: float
    expected_delta: float | None
    verdict: str  # improved | worse | no clear change | not enough data
    meets_expectation: bool | None  # the interval reaches the expected gain (None: nothing expected)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = list(self.interval) if self.interval else None
        return d


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def compare_yields(
    before: tuple[int, int],
    after: tuple[int, int],
    expected_delta: float | None = None,
    confidence: float = 0.95,
    min_units: int = 100,
) -> Effect:
    """Compare (units, passed) before and after; Newcombe's interval for the difference.

    `verdict` is "improved" when the interval lies above 0, "worse" when below, else
    "no clear change". `meets_expectation`: the interval's upper end reaches the expected gain
    and the change is in its direction (a fix expected to add 2 points that added 0.3 does not).
    """
    (n0, x0), (n1, x1) = before, after
    if n0 < min_units or n1 < min_units:
        return Effect(n0, x0 / n0 if n0 else None, n1, x1 / n1 if n1 else None, None, None, confidence,
                      expected_delta, "not enough data", None)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)  # the standard library's: no SciPy to load
    p0, p1 = x0 / n0, x1 / n1
    l0, u0 = _wilson(x0, n0, z)
    l1, u1 = _wilson(x1, n1, z)
    d = p1 - p0
    lo = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    verdict = "improved" if lo > 0 else "worse" if hi < 0 else "no clear change"
    meets = None
    if expected_delta is not None:
        if expected_delta > 0:
            meets = bool(lo > 0 and hi >= expected_delta)
        elif expected_delta < 0:
            meets = bool(hi < 0 and lo <= expected_delta)
        else:
            meets = bool(lo <= 0 <= hi)
    return Effect(n0, p0, n1, p1, d, (lo, hi), confidence, expected_delta, verdict, meets)


def effect_in_workspace(
    ws: Any, at: datetime | str, window_units: int = 2000, expected_delta: float | None = None,
    confidence: float = 0.95,
) -> Effect:
    """First-pass yield of the `window_units` units started before `at` versus as many after it."""
    t = datetime.fromisoformat(at) if isinstance(at, str) else at
    rows = ws.query(
        """
        WITH b AS (SELECT first_pass FROM units WHERE t_start < ? AND first_pass IS NOT NULL
                   ORDER BY t_start DESC LIMIT ?),
             a AS (SELECT first_pass FROM units WHERE t_start >= ? AND first_pass IS NOT NULL
                   ORDER BY t_start LIMIT ?)
        SELECT (SELECT count(*) FROM b), (SELECT count(*) FILTER (WHERE first_pass) FROM b),
               (SELECT count(*) FROM a), (SELECT count(*) FILTER (WHERE first_pass) FROM a)
        """,
        [t, window_units, t, window_units],
    )
    n0, x0, n1, x1 = (int(rows.column(i)[0].as_py() or 0) for i in range(4))
    return compare_yields((n0, x0), (n1, x1), expected_delta, confidence)


def effect_of_outcomes(before: np.ndarray, after: np.ndarray, expected_delta: float | None = None,
                       confidence: float = 0.95) -> Effect:
    """The same comparison from per-unit first-pass outcomes (e.g. two chunks of the twin)."""
    b, a = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    return compare_yields((b.size, int(b.sum())), (a.size, int(a.sum())), expected_delta, confidence)
