"""Baseline recipe searches, with the optimiser's interface: `ask()`, `update(...)`, `best()`.

What engineers often do (one factor at a time), random search and a full-factorial grid.
They exist so the benchmark can measure the optimiser against them on the same line, with
the same budget; `ask()` returns None when a search has nothing left to try.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class _Tried:
    recipe: dict[str, float]
    units: int
    passed: int

    @property
    def yield_(self) -> float:
        return self.passed / self.units


@dataclass
class _BaseSearch:
    bounds: Mapping[str, tuple[float, float]]
    seed: int = 0
    tried: list[_Tried] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.names = list(self.bounds)
        self.rng = np.random.default_rng(self.seed)
        self.fit()

    def fit(self, reference: Mapping[str, Any] | None = None) -> _BaseSearch:
        self.tried = []
        self.start = {n: (lo + hi) / 2 for n, (lo, hi) in self.bounds.items()}
        if reference and reference.get("recipe"):
            self.start.update({n: float(reference["recipe"][n]) for n in self.names if n in reference["recipe"]})
        self._reset()
        return self

    def _reset(self) -> None:
        pass

    def update(self, recipe: Mapping[str, float], units: int, passed: int, stopped_early: bool = False,
               trial: int | None = None) -> _BaseSearch:
        self.tried.append(_Tried({n: float(recipe[n]) for n in self.names}, int(units), int(passed)))
        return self

    def best(self) -> dict[str, float]:
        """The tried recipe with the highest observed yield (the starting recipe before any trial)."""
        if not self.tried:
            return dict(self.start)
        return dict(max(self.tried, key=lambda t: t.yield_).recipe)

    def state(self) -> dict[str, Any]:
        return {"trials": len(self.tried), "units": sum(t.units for t in self.tried), "incumbent": self.best()}


@dataclass
class OneFactorAtATime(_BaseSearch):
    """Sweep one parameter over `levels` settings across its safe range, others held at their
    best so far; keep its best level; move to the next. Later passes sweep a finer range
    around the current best (half the previous span)."""

    levels: int = 5

    def _reset(self) -> None:
        self.current = dict(self.start)
        self.factor = 0
        self.span = {n: hi - lo for n, (lo, hi) in self.bounds.items()}
        self.queue: list[dict[str, float]] = []
        self.sweep: list[_Tried] = []

    def _plan_sweep(self) -> None:
        name = self.names[self.factor]
        lo, hi = self.bounds[name]
        half = self.span[name] / 2
        centre = self.current[name] if self.span[name] < hi - lo else (lo + hi) / 2
        a, b = max(lo, centre - half), min(hi, centre + half)
        self.queue = [{**self.current, name: float(v)} for v in np.linspace(a, b, self.levels)]
        self.sweep = []

    def ask(self) -> dict[str, float] | None:
        if not self.queue:
            self._plan_sweep()
        return self.queue.pop(0)

    def update(self, recipe: Mapping[str, float], units: int, passed: int, stopped_early: bool = False,
               trial: int | None = None) -> OneFactorAtATime:
        super().update(recipe, units, passed)
        self.sweep.append(self.tried[-1])
        if not self.queue:  # sweep finished: fix this factor at its best level, move on
            name = self.names[self.factor]
            self.current[name] = max(self.sweep, key=lambda t: t.yield_).recipe[name]
            self.span[name] /= 2
            self.factor = (self.factor + 1) % len(self.names)
        return self

    def best(self) -> dict[str, float]:
        """The settings fixed so far, with the best level of the sweep in progress."""
        out = dict(self.current)
        if self.sweep and self.queue:
            name = self.names[self.factor]
            out[name] = max(self.sweep, key=lambda t: t.yield_).recipe[name]
        return out


@dataclass
class RandomSearch(_BaseSearch):
    """Recipes drawn uniformly within the safe bounds."""

    def ask(self) -> dict[str, float] | None:
        return {n: float(self.rng.uniform(lo, hi)) for n, (lo, hi) in self.bounds.items()}


@dataclass
class GridSearch(_BaseSearch):
    """A full-factorial grid of `levels` settings per parameter, in random order."""

    levels: int = 3

    def _reset(self) -> None:
        axes = [np.linspace(lo, hi, self.levels) for lo, hi in self.bounds.values()]
        grid = [dict(zip(self.names, map(float, p), strict=True)) for p in itertools.product(*axes)]
        order = np.random.default_rng(self.seed).permutation(len(grid))
        self.queue = [grid[i] for i in order]

    @property
    def size(self) -> int:
        return self.levels ** len(self.names)

    def ask(self) -> dict[str, float] | None:
        return self.queue.pop(0) if self.queue else None
