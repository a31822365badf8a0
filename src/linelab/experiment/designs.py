"""Designed experiments over recipe parameters: factorial, fractional factorial, CCD, Box–Behnken.

Designs are generated here with NumPy (they are small) in coded units: -1 and +1 are the low
and high levels of a factor, 0 its centre. A `Design` maps coded runs to recipes through
each factor's range, and refuses a range that leaves the parameter's safe bounds, so no run
of a design can ask the line for an unsafe setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linelab.errors import UserError

# Standard generators of 2^(k-p) designs with the highest resolution for a given run count
# (Montgomery, Design and Analysis of Experiments, table 8.14). Letters name base factors.
_GENERATORS: dict[tuple[int, int], list[str]] = {
    (3, 4): ["ab"],  # III (rarely wise; for screening 3 factors in 4 runs)
    (4, 8): ["abc"],  # IV
    (5, 8): ["ab", "ac"],  # III
    (5, 16): ["abcd"],  # V
    (6, 8): ["ab", "ac", "bc"],  # III
    (6, 16): ["abc", "bcd"],  # IV
    (6, 32): ["abcde"],  # VI
    (7, 8): ["ab", "ac", "bc", "abc"],  # III
    (7, 16): ["abc", "bcd", "acd"],  # IV
    (7, 32): ["abcd", "abce"],  # IV
    (7, 64): ["abcdef"],  # VII
    (8, 16): ["bcd", "acd", "abc", "abd"],  # IV
    (8, 32): ["abc", "abd", "bcde"],  # IV
    (8, 64): ["abcd", "abef"],  # V
}


def full_factorial(k: int, levels: int = 2) -> np.ndarray:
    """Every combination of `levels` equally spaced coded levels in [-1, 1] for `k` factors."""
    if k < 1 or levels < 2:
        raise UserError("a factorial needs at least one factor and two levels")
    grid = np.linspace(-1.0, 1.0, levels)
    runs = np.array(list(itertools.product(grid, repeat=k)), dtype=float)
    return runs[:, ::-1]  # standard (Yates) order: the first factor alternates fastest


def fractional_factorial(generators: str | Sequence[str]) -> np.ndarray:
    """A two-level fractional factorial from generator words, e.g. "a b c abc" (D = ABC).

    Single letters are base factors (a full factorial of them); longer words are the
    columns generated as products of base columns. A leading "-" negates a column.
    """
    words = generators.split() if isinstance(generators, str) else list(generators)
    base = [w for w in words if len(w.lstrip("-")) == 1]
    letters = [w.lstrip("-") for w in base]
    if len(set(letters)) != len(letters) or not letters:
        raise UserError(f"generators {words}: base factors must be distinct single letters")
    core = full_factorial(len(letters))
    cols = []
    for w in words:
        sign = -1.0 if w.startswith("-") else 1.0
        body = w.lstrip("-")
        unknown = set(body) - set(letters)
        if unknown:
            raise UserError(f"generator {w!r} uses {sorted(unknown)}, not among base factors {letters}")
        col = np.prod([core[:, letters.index(ch)] for ch in body], axis=0)
        cols.append(sign * col)
    return np.column_stack(cols)


def fractional_factorial_for(k: int, runs: int | None = None) -> tuple[np.ndarray, list[str]]:
    """The standard 2^(k-p) design for `k` factors in `runs` runs (default: the smallest of resolution >= IV)."""
    if runs is None:
        if 2**k <= 8 or k <= 3:
            return full_factorial(k), []
        options = sorted(r for (kk, r) in _GENERATORS if kk == k)
        runs = next((r for r in options if r >= 2 * k), options[-1])
    if runs == 2**k:
        return full_factorial(k), []
    gens = _GENERATORS.get((k, runs))
    if gens is None:
        known = sorted(r for (kk, r) in _GENERATORS if kk == k)
        raise UserError(f"no standard fractional factorial for {k} factors in {runs} runs; try {known or 2**k}")
    n_base = k - len(gens)
    words = list("abcdefghij"[:n_base]) + gens
    return fractional_factorial(words), words


def central_composite(k: int, alpha: str | float = "face", center: int = 4, fraction: bool | None = None) -> np.ndarray:
    """Central composite design: a two-level (fractional) factorial, 2k axial points, centre runs.

    `alpha` places the axial points: "face" (±1, every run inside the factorial box),
    "rotatable" ((2^(k-p))^(1/4)) or a number. For k >= 5 the factorial part is a
    resolution-V fraction (`fraction=None` picks it), enough for a full quadratic model.
    """
    if k < 2:
        raise UserError("a central composite design needs at least two factors")
    use_fraction = k >= 5 if fraction is None else fraction
    cube = fractional_factorial_for(k, 2 ** (k - 1) if k >= 5 else None)[0] if use_fraction else full_factorial(k)
    if alpha == "face":
        a = 1.0
    elif alpha == "rotatable":
        a = float(len(cube) ** 0.25)
    else:
        a = float(alpha)
    axial = np.zeros((2 * k, k))
    for i in range(k):
        axial[2 * i, i], axial[2 * i + 1, i] = -a, a
    return np.vstack([cube, axial, np.zeros((center, k))])


def box_behnken(k: int, center: int = 3) -> np.ndarray:
    """Box–Behnken design: for every pair of factors a 2² factorial at ±1, the others at 0.

    For 3, 4 and 5 factors this is the standard design (12, 24 and 40 edge runs); no run sits
    on a corner of the box, which keeps every setting away from the extremes at once.
    """
    if k < 3:
        raise UserError("a Box–Behnken design needs at least three factors")
    square = full_factorial(2)
    blocks = []
    for i, j in itertools.combinations(range(k), 2):
        b = np.zeros((4, k))
        b[:, i], b[:, j] = square[:, 0], square[:, 1]
        blocks.append(b)
    return np.vstack([*blocks, np.zeros((center, k))])


@dataclass(frozen=True)
class Factor:
    """A recipe parameter varied by a design: coded -1/+1 map to `low`/`high`."""

    name: str
    low: float
    high: float

    @property
    def centre(self) -> float:
        return (self.low + self.high) / 2

    @property
    def half_range(self) -> float:
        return (self.high - self.low) / 2


DESIGN_KINDS = ("full", "fractional", "ccd", "bbd")


@dataclass
class Design:
    """A design in coded units with the factors it varies; `recipes()` gives settings to run."""

    kind: str
    factors: list[Factor]
    coded: np.ndarray  # (runs, k), in standard order
    order: np.ndarray  # run order (a permutation), randomised so drift does not alias an effect
    generators: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return int(self.coded.shape[0])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.factors]

    def natural(self) -> np.ndarray:
        """The runs in engineering units, in standard order."""
        centre = np.array([f.centre for f in self.factors])
        half = np.array([f.half_range for f in self.factors])
        return centre + self.coded * half

    def recipes(self, base: Mapping[str, float] | None = None) -> list[dict[str, float]]:
        """One recipe per run in run order: `base` with the design's factors set."""
        nat = self.natural()
        out = []
        for i in self.order:
            r = dict(base or {})
            r.update({name: float(v) for name, v in zip(self.names, nat[i], strict=True)})
            out.append(r)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "factors": [{"name": f.name, "low": f.low, "high": f.high} for f in self.factors],
            "coded": self.coded.tolist(),
            "order": self.order.tolist(),
            "generators": self.generators,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Design:
        return Design(
            kind=d["kind"],
            factors=[Factor(f["name"], float(f["low"]), float(f["high"])) for f in d["factors"]],
            coded=np.asarray(d["coded"], dtype=float),
            order=np.asarray(d["order"], dtype=int),
            generators=list(d.get("generators", [])),
        )


def make_design(
    kind: str,
    factors: Sequence[Factor],
    *,
    center: int | None = None,
    alpha: str | float = "face",
    runs: int | None = None,
    replicates: int = 1,
    seed: int = 0,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> Design:
    """A design of `kind` ("full", "fractional", "ccd", "bbd") over `factors`, run order randomised.

    `bounds` (name -> (low, high)) are the safe limits: a design whose runs would leave them
    (the axial points of a rotatable CCD, say) is refused with the offending run named.
    """
    k = len(factors)
    names = [f.name for f in factors]
    if len(set(names)) != k:
        raise UserError(f"factors repeat: {names}")
    for f in factors:
        if not f.high > f.low:
            raise UserError(f"factor {f.name}: high ({f.high}) must exceed low ({f.low})")
    generators: list[str] = []
    if kind == "full":
        coded = full_factorial(k)
    elif kind == "fractional":
        coded, generators = fractional_factorial_for(k, runs)
    elif kind == "ccd":
        coded = central_composite(k, alpha=alpha, center=4 if center is None else center)
    elif kind == "bbd":
        coded = box_behnken(k, center=3 if center is None else center)
    else:
        raise UserError(f"unknown design kind {kind!r}; choose one of {', '.join(DESIGN_KINDS)}")
    if kind in ("full", "fractional") and center:
        coded = np.vstack([coded, np.zeros((center, k))])
    if replicates > 1:
        coded = np.tile(coded, (replicates, 1))
    order = np.random.default_rng(seed).permutation(coded.shape[0])
    design = Design(kind, list(factors), coded, order, generators)
    if bounds:
        nat = design.natural()
        for j, f in enumerate(factors):
            lo, hi = bounds.get(f.name, (-np.inf, np.inf))
            bad = np.flatnonzero((nat[:, j] < lo - 1e-9) | (nat[:, j] > hi + 1e-9))
            if bad.size:
                raise UserError(
                    f"design {kind}: run {int(bad[0]) + 1} sets {f.name}={nat[bad[0], j]:.4g}, outside its "
                    f"safe bounds [{lo}, {hi}]; narrow the factor's range or use alpha='face'"
                )
    return design
