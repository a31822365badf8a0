"""Categorical factors: which level carries the excess symptom.

For each level we ask two questions, both of which a real cause must pass (an
intersection-union test, so the larger p-value counts):

* specificity: in the incident, is the symptom worse on this level than on the other levels?
  (one-sided Fisher exact / hypergeometric for defect flags, Welch t for measurements);
* change: is it worse than this level's own reference (shrunk towards the reference overall
  when the level is new or rare)? (one-sided binomial, or Welch t).

A level's excess is the symptom it carries beyond its expected reference level; its share is
that excess over the incident's total excess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .data import Column
from .symptom import Symptom

SHRINK_UNITS = 10.0  # pseudo-units of the reference overall that temper a rare level's own history
MIN_UNITS = 5  # levels with fewer incident units are not judged


@dataclass
class LevelStats:
    factor: str
    levels: np.ndarray  # level names
    ref_codes: np.ndarray  # per reference row, index into levels
    inc_codes: np.ndarray
    n_ref: np.ndarray
    n_inc: np.ndarray
    sum_ref: np.ndarray
    sum_inc: np.ndarray
    expected: np.ndarray  # expected symptom per incident unit of the level, from the reference
    excess: np.ndarray  # symptom beyond expectation carried by the level
    effect: np.ndarray
    p_spec: np.ndarray
    p_change: np.ndarray
    p_value: np.ndarray
    only_level: np.ndarray  # the level covers (nearly) the whole incident: no contrast possible


def encode(col: Column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if col.levels is not None and col.ref_codes is not None and col.inc_codes is not None:
        return col.levels, col.ref_codes, col.inc_codes
    levels, codes = np.unique(np.concatenate([col.ref, col.inc]).astype(str), return_inverse=True)
    return levels, codes[: col.ref.size], codes[col.ref.size :]


def _welch_greater(m1, v1, n1, m0, v0, n0) -> np.ndarray:
    """One-sided Welch p-values that mean m1 exceeds m0, vectorised over levels."""
    se2 = np.where(n1 > 0, v1 / np.maximum(n1, 1), np.inf) + np.where(n0 > 0, v0 / np.maximum(n0, 1), np.inf)
    se2 = np.maximum(se2, 1e-24)
    t = (m1 - m0) / np.sqrt(se2)
    num = se2**2
    den = (v1 / np.maximum(n1, 1)) ** 2 / np.maximum(n1 - 1, 1) + (v0 / np.maximum(n0, 1)) ** 2 / np.maximum(n0 - 1, 1)
    df = np.clip(num / np.maximum(den, 1e-300), 1.0, 1e6)
    p = stats.t.sf(t, df)
    return np.where((n1 >= 2) & (n0 >= 2), p, 1.0)


def level_stats(col: Column, sym: Symptom) -> LevelStats:
    levels, rc, ic = encode(col)
    k = levels.size
    s_ref, s_inc = sym.s_ref, sym.s_inc
    n_ref = np.bincount(rc, minlength=k).astype(float)
    n_inc = np.bincount(ic, minlength=k).astype(float)
    sum_ref = np.bincount(rc, weights=s_ref, minlength=k)
    sum_inc = np.bincount(ic, weights=s_inc, minlength=k)
    N, S = float(s_inc.size), float(s_inc.sum())
    n_oth, sum_oth = N - n_inc, S - sum_inc
    only = n_oth < MIN_UNITS
    if sym.mode == "case-control":
        n1, n0 = float(s_inc.size), float(s_ref.size)
        a, b = n_inc, n_ref
        odds = ((a + 0.5) * (n0 - b + 0.5)) / ((b + 0.5) * (n1 - a + 0.5))
        p = stats.hypergeom.sf(a - 1, n1 + n0, n1, a + b)
        expected = (a + b) / (n1 + n0) * np.ones(k)
        # attributable fraction among the affected units (Miettinen), as excess units
        excess = a * np.clip(1 - 1 / odds, 0, None)
        return LevelStats(
            col.name, levels, rc, ic, n_ref, n_inc, sum_ref, sum_inc, expected, excess, odds,
            p, p, p, np.zeros(k, bool),
        )  # fmt: skip
    mean_ref_all = float(s_ref.mean())
    expected = (sum_ref + SHRINK_UNITS * mean_ref_all) / (n_ref + SHRINK_UNITS)
    excess = sum_inc - n_inc * expected
    if sym.mode == "rate":
        K = S
        p_spec = stats.hypergeom.sf(sum_inc - 1, N, K, n_inc)
        p_change = stats.binom.sf(sum_inc - 1, n_inc, np.clip(expected, 1e-9, 1 - 1e-9))
        rate_l = (sum_inc + 0.5) / (n_inc + 1)
        rate_o = (sum_oth + 0.5) / (n_oth + 1)
        effect = np.where(only, rate_l / np.maximum((sum_ref + 0.5) / (n_ref + 1), 1e-9), rate_l / rate_o)
    else:
        sq_ref = np.bincount(rc, weights=s_ref**2, minlength=k)
        sq_inc = np.bincount(ic, weights=s_inc**2, minlength=k)
        m_l = sum_inc / np.maximum(n_inc, 1)
        v_l = np.maximum(sq_inc / np.maximum(n_inc, 1) - m_l**2, 0) * n_inc / np.maximum(n_inc - 1, 1)
        m_o = sum_oth / np.maximum(n_oth, 1)
        sq_oth = float((s_inc**2).sum()) - sq_inc
        v_o = np.maximum(sq_oth / np.maximum(n_oth, 1) - m_o**2, 0) * n_oth / np.maximum(n_oth - 1, 1)
        p_spec = _welch_greater(m_l, v_l, n_inc, m_o, v_o, n_oth)
        # change: against the level's own reference when it has enough history, else the whole reference
        own = n_ref >= MIN_UNITS
        m_r_own = sum_ref / np.maximum(n_ref, 1)
        v_r_own = np.maximum(sq_ref / np.maximum(n_ref, 1) - m_r_own**2, 0) * n_ref / np.maximum(n_ref - 1, 1)
        m_r = np.where(own, m_r_own, mean_ref_all)
        v_r = np.where(own, v_r_own, float(np.var(s_ref, ddof=1)) if s_ref.size > 1 else 1.0)
        nr = np.where(own, n_ref, float(s_ref.size))
        p_change = _welch_greater(m_l, v_l, n_inc, m_r, v_r, nr)
        effect = np.where(only, m_l - m_r, m_l - m_o)
    p_spec = np.where(only, 1.0, p_spec)
    # With no other level to contrast against, the change test is all the evidence there is.
    p = np.where(only, p_change, np.maximum(p_spec, p_change))
    p = np.where(n_inc >= MIN_UNITS, p, 1.0)
    return LevelStats(
        col.name, levels, rc, ic, n_ref, n_inc, sum_ref, sum_inc, expected, excess, effect,
        np.nan_to_num(p_spec, nan=1.0), np.nan_to_num(p_change, nan=1.0), np.nan_to_num(p, nan=1.0), only,
    )  # fmt: skip


def plot_data(ls: LevelStats, highlight: int, *, max_levels: int = 12, center: float = 0.0, scale: float = 1.0,
              sign: float = 1.0) -> dict:
    """Per-level symptom in reference and incident, the most used levels and the highlighted one.

    A measured symptom is scored standardised and signed (a fall counts as excess); the plot
    shows it back in the measurement's own units: `center + sign * scale * score`."""
    order = list(np.argsort(-ls.n_inc)[:max_levels])
    if highlight not in order:
        order[-1] = highlight

    def units(total: float, n: int) -> float | None:
        return float(center + sign * scale * total / n) if n else None

    return {
        "type": "levels",
        "factor": ls.factor,
        "levels": [str(ls.levels[i]) for i in order],
        "reference": [units(ls.sum_ref[i], ls.n_ref[i]) for i in order],
        "incident": [units(ls.sum_inc[i], ls.n_inc[i]) for i in order],
        "n_reference": [int(ls.n_ref[i]) for i in order],
        "n_incident": [int(ls.n_inc[i]) for i in order],
        "highlight": str(ls.levels[highlight]),
    }
