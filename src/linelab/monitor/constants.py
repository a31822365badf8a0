"""Control-chart constants (d2, d3, c4 and the A/B/D factors derived from them)."""

from __future__ import annotations

import math

# Mean (d2) and standard deviation (d3) of the range of n standard normals, n = 2..25
# (ASTM E2587 / Montgomery, Appendix VI).
_D2 = [1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258, 3.336,
       3.407, 3.472, 3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858, 3.895, 3.931]
_D3 = [0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787, 0.778, 0.770,
       0.763, 0.756, 0.750, 0.744, 0.739, 0.734, 0.729, 0.724, 0.720, 0.716, 0.712, 0.708]


def _check(n: int) -> None:
    if not 2 <= n <= 25:
        raise ValueError(f"subgroup size must be 2..25 for range-based constants, got {n}")


def d2(n: int) -> float:
    _check(n)
    return _D2[n - 2]


def d3(n: int) -> float:
    _check(n)
    return _D3[n - 2]


def c4(n: int) -> float:
    """E[s]/sigma for a sample of n normals."""
    if n < 2:
        raise ValueError("subgroup size must be at least 2")
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def a2(n: int) -> float:
    return 3.0 / (d2(n) * math.sqrt(n))


def d3_lower(n: int) -> float:
    """D3: lower R-chart factor (0 for n <= 6)."""
    return max(0.0, 1 - 3 * d3(n) / d2(n))


def d4_upper(n: int) -> float:
    """D4: upper R-chart factor."""
    return 1 + 3 * d3(n) / d2(n)


def a3(n: int) -> float:
    return 3.0 / (c4(n) * math.sqrt(n))


def b3(n: int) -> float:
    c = c4(n)
    return max(0.0, 1 - 3 * math.sqrt(1 - c * c) / c)


def b4(n: int) -> float:
    c = c4(n)
    return 1 + 3 * math.sqrt(1 - c * c) / c
