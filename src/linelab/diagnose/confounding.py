"""Telling overlapping candidates apart, or saying honestly that the data cannot.

Two categorical candidates A and B (say lot L7 and machine M2) often share affected units. The
units that have one but not the other decide between them: if B-without-A is clean while
A-without-B still shows the symptom, A explains B. If neither discordant group is large enough
to show the symptom reliably, the pair is aliased: the diagnosis says so and proposes the run
that would separate them, instead of picking one with false confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import two_mean_sample_size, two_proportion_sample_size
from .symptom import Symptom

Z_SIGNAL = 2.5  # z a discordant group must reach to count as showing (or able to show) the symptom
SHRINK_UNITS = 10.0


@dataclass
class Group:
    """The rows of one candidate: a categorical level (or any row subset)."""

    label: str
    factor: str
    level: str
    ref: np.ndarray  # bool mask over reference rows
    inc: np.ndarray  # bool mask over incident rows


@dataclass
class SubExcess:
    n: int
    per_unit: float  # excess symptom per unit in the subgroup
    z: float
    se: float = float("inf")  # standard error of its own mean (its own spread: a rare failure's rate)


def sub_excess(sym: Symptom, ref_mask: np.ndarray, inc_mask: np.ndarray, sd: float) -> SubExcess:
    n = int(inc_mask.sum())
    if n == 0:
        return SubExcess(0, 0.0, 0.0)
    n_r = float(ref_mask.sum())
    expected = (float(sym.s_ref[ref_mask].sum()) + SHRINK_UNITS * float(sym.s_ref.mean())) / (n_r + SHRINK_UNITS)
    values = sym.s_inc[inc_mask]
    e = float(values.mean()) - expected
    se = float(values.std(ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    return SubExcess(n, e, e * np.sqrt(n) / sd, se)


@dataclass
class Relation:
    verdict: str  # "a_explains_b" | "b_explains_a" | "confounded" | "interaction" | "independent" | "disjoint"
    overlap: float
    a_only: SubExcess
    b_only: SubExcess
    both: SubExcess


def symptom_sd(sym: Symptom) -> float:
    s = np.concatenate([sym.s_ref, sym.s_inc]) if sym.mode == "case-control" else sym.s_ref
    if sym.mode == "rate":
        p = float(np.clip(s.mean(), 1e-3, 1 - 1e-3))
        return float(np.sqrt(p * (1 - p)))
    sd = float(np.std(s))
    return sd if sd > 0 else 1.0


def relate(a: Group, b: Group, sym: Symptom) -> Relation:
    sd = symptom_sd(sym)
    both = sub_excess(sym, a.ref & b.ref, a.inc & b.inc, sd)
    a_only = sub_excess(sym, a.ref & ~b.ref, a.inc & ~b.inc, sd)
    b_only = sub_excess(sym, b.ref & ~a.ref, b.inc & ~a.inc, sd)
    union = int((a.inc | b.inc).sum())
    overlap = both.n / union if union else 0.0
    if both.n == 0:
        return Relation("disjoint", overlap, a_only, b_only, both)
    target = max(both.per_unit, 1e-12)

    def can_show(g: SubExcess) -> bool:
        # would this group reach Z_SIGNAL if it carried the same excess as the shared units?
        return g.n > 0 and target * np.sqrt(g.n) / sd >= Z_SIGNAL

    def shows(g: SubExcess) -> bool:
        return g.z >= Z_SIGNAL and g.per_unit >= 0.3 * target

    def clean(g: SubExcess) -> bool:
        # below a third of the shared excess, and either no excess beyond its own noise or clearly below
        # the third: 6 failures in 224 units, where the reference had none, are not "no excess" because
        # 10 in 76 elsewhere make them look small
        small = g.per_unit - 2.0 * g.se <= 0 or g.per_unit + 2.0 * g.se < 0.3 * target
        return can_show(g) and not shows(g) and g.per_unit < 0.3 * target and small

    def carries(g: SubExcess) -> bool:
        # Where the other level is never seen alone, a level whose own units show a third of the
        # shared excess may only have a small offset of its own, the other carrying the rest (the
        # two add up); it explains the other only if alone it carries most of the shared excess.
        return g.per_unit >= 0.5 * target

    def under_half(g: SubExcess) -> bool:
        # clearly below half the shared excess, beyond its own noise: a rate of a few events (8 failures
        # against 25) is not told from the same rate by their ratio alone
        return g.per_unit + 2.0 * g.se < 0.5 * target

    ca, cb = can_show(a_only), can_show(b_only)
    if not ca and not cb:
        verdict = "confounded"
    elif shows(a_only) and (clean(b_only) or (not cb and carries(a_only))):
        verdict = "a_explains_b"
    elif shows(b_only) and (clean(a_only) or (not ca and carries(b_only))):
        verdict = "b_explains_a"
    elif shows(a_only) and not cb and under_half(a_only):
        # b is never seen without a, and a's units elsewhere show clearly less than half of what the two
        # share: most of the excess sits where b is (a keeps a small offset of its own, ranked after b)
        verdict = "b_explains_a"
    elif shows(b_only) and not ca and under_half(b_only):
        verdict = "a_explains_b"
    elif clean(a_only) and clean(b_only):
        verdict = "interaction"
    elif clean(b_only) and not ca:
        verdict = "a_explains_b"
    elif clean(a_only) and not cb:
        verdict = "b_explains_a"
    else:
        verdict = "independent"
    return Relation(verdict, overlap, a_only, b_only, both)


def separating_experiment(a: Group, b: Group, sym: Symptom, rel: Relation) -> tuple[str, int | None]:
    """The run that would tell A from B, and how many units each arm needs."""
    if sym.mode == "rate":
        p0 = float(np.clip(sym.s_ref.mean(), 1e-4, 1 - 1e-4))
        p1 = float(np.clip(p0 + rel.both.per_unit, 1e-4, 1 - 1e-4))
        n = two_proportion_sample_size(p1, p0)
        rate = f" (enough to tell a {100 * p1:.2g}% symptom rate from {100 * p0:.2g}%)"
    else:
        n = two_mean_sample_size(rel.both.per_unit / max(symptom_sd(sym), 1e-9))
        rate = f" (enough to see a shift of {rel.both.per_unit:.2g} reference sds)"
    if a.factor == b.factor:
        text = f"run {a.label} and {b.label} separately, {n} units each{rate}"
    else:
        text = (
            f"split the next run: {a.factor} {a.level} with a {b.factor} other than {b.level}, and "
            f"{b.factor} {b.level} with a {a.factor} other than {a.level}, {n} units per arm{rate}; "
            f"the arm that keeps the symptom holds the cause"
        )
    return text, (n or None)
