"""Run rules for control charts (Western Electric, Nelson), vectorised over a batch.

Rules are numbered as Nelson (1984) numbered them; `z` is the plotted point in sigma units
of the plotted statistic, measured from the centre line:

1. one point beyond 3 sigma
2. `run_length` points in a row on the same side of the centre (9 for Nelson, 8 for WE)
3. six points in a row steadily increasing or decreasing
4. fourteen points in a row alternating up and down
5. two of three points beyond 2 sigma on the same side
6. four of five points beyond 1 sigma on the same side
7. fifteen points in a row within 1 sigma (either side) — stratification
8. eight points in a row beyond 1 sigma (either side) — mixture

Western Electric = rules 1, 2 (run of 8), 5, 6. A rule fires on the point that completes the
pattern. Each point gets a bit mask (bit r-1 set when rule r fires), so a caller can say
which rule caught it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RULE_TEXT = {
    1: "a point beyond 3 sigma",
    2: "a run of points on one side of the centre line",
    3: "six points in a row steadily rising or falling",
    4: "fourteen points alternating up and down",
    5: "two of three points beyond 2 sigma on one side",
    6: "four of five points beyond 1 sigma on one side",
    7: "fifteen points hugging the centre line (within 1 sigma)",
    8: "eight points in a row beyond 1 sigma on either side",
}

# Longest pattern (rule 7) spans 15 points, so 14 earlier points are all a rule can need.
HISTORY = 14


def resolve_rules(rules: str | Iterable[int] | None) -> tuple[tuple[int, ...], int]:
    """Rule set name or subset -> (rule numbers, run length for rule 2)."""
    if rules is None or rules == "none":
        return (1,), 9
    if rules == "western_electric":
        return (1, 2, 5, 6), 8
    if rules == "nelson":
        return (1, 2, 3, 4, 5, 6, 7, 8), 9
    if isinstance(rules, str):
        raise ValueError(f"unknown rule set {rules!r}: use 'none', 'western_electric', 'nelson' or numbers")
    nums = tuple(sorted({int(r) for r in rules}))
    bad = [r for r in nums if r not in RULE_TEXT]
    if bad:
        raise ValueError(f"unknown rule numbers {bad}: rules are 1..8 (Nelson numbering)")
    return nums, 9


def _windows(a: np.ndarray, w: int) -> np.ndarray:
    """Windows of length w ending at every position (NaN-padded at the start)."""
    padded = np.concatenate([np.full(w - 1, np.nan), a])
    return sliding_window_view(padded, w)


def _k_of_m(flag: np.ndarray, k: int, m: int) -> np.ndarray:
    return _windows(flag.astype(float), m).sum(axis=1) >= k


def rule_mask(z: np.ndarray, rules: tuple[int, ...], run_length: int = 9) -> np.ndarray:
    """Bit mask per point of `z` (history first, then new points) of the rules that fire."""
    z = np.asarray(z, dtype=float)
    mask = np.zeros(len(z), dtype=np.int64)
    if len(z) == 0:
        return mask
    valid = ~np.isnan(z)
    zz = np.where(valid, z, 0.0)

    def put(rule: int, hit: np.ndarray | np.bool_) -> None:  # numpy types `.all(axis=...)` as either
        mask[hit] |= 1 << (rule - 1)

    for r in rules:
        if r == 1:
            put(1, valid & (np.abs(zz) > 3))
        elif r == 2:
            w = _windows(np.where(valid, np.sign(zz), np.nan), run_length)
            put(2, (w > 0).all(axis=1) | (w < 0).all(axis=1))
        elif r == 3:
            d = np.concatenate([[np.nan], np.diff(z)])
            w = _windows(d, 5)
            put(3, (w > 0).all(axis=1) | (w < 0).all(axis=1))
        elif r == 4:
            d = np.concatenate([[np.nan], np.diff(z)])
            alt = np.concatenate([[np.nan], np.sign(d[1:]) * np.sign(d[:-1])])
            put(4, (_windows(alt, 12) < 0).all(axis=1))
        elif r == 5:
            put(5, _k_of_m(valid & (zz > 2), 2, 3) | _k_of_m(valid & (zz < -2), 2, 3))
        elif r == 6:
            put(6, _k_of_m(valid & (zz > 1), 4, 5) | _k_of_m(valid & (zz < -1), 4, 5))
        elif r == 7:
            put(7, _k_of_m(valid & (np.abs(zz) < 1), 15, 15))
        elif r == 8:
            put(8, _k_of_m(valid & (np.abs(zz) > 1), 8, 8))
    return mask


def rules_fired(mask: int) -> list[int]:
    return [r for r in RULE_TEXT if mask & (1 << (r - 1))]


class RuleState:
    """Keeps the last `HISTORY` points so rules see across `update` calls."""

    def __init__(self, rules: str | Iterable[int] | None) -> None:
        self.rules, self.run_length = resolve_rules(rules)
        self.history = np.empty(0)

    def apply(self, z: np.ndarray) -> np.ndarray:
        full = np.concatenate([self.history, z])
        mask = rule_mask(full, self.rules, self.run_length)[len(self.history) :]
        self.history = full[-HISTORY:]
        return mask
