"""Run experiments on a line through its control interface: split runs, designs, optimisation.

A line here is anything with `apply(action)`, `produce(n)` (record tables, at least `units`
with `first_pass`) and `recipe` — the twin's `Line` as it is. Every chunk produced can be
handed to `sink` (e.g. `Workspace.ingest_tables`) so the experiment's units, and the events
marking its arms, land in the store like any other production.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from linelab.experiment.analysis import DesignedExperiment
from linelab.experiment.designs import Design
from linelab.experiment.optimise import trial_guardrail
from linelab.experiment.process_model import readings_of
from linelab.experiment.sequential import SplitRunTest
from linelab.experiment.verdict import Verdict


class ControllableLine(Protocol):
    @property
    def recipe(self) -> dict[str, float]: ...

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]: ...

    def produce(self, n: int) -> Mapping[str, pa.Table]: ...


Sink = Callable[[Mapping[str, pa.Table]], Any]


def first_pass(tables: Mapping[str, pa.Table]) -> np.ndarray:
    """Per unit, in production order: passed every station at the first visit."""
    col = tables["units"].column("first_pass")
    return np.asarray(pc.fill_null(col, False).to_numpy(zero_copy_only=False), dtype=bool)


def set_recipe(line: ControllableLine, recipe: Mapping[str, float]) -> None:
    """Move the line to `recipe` (only the parameters that differ), through its control interface."""
    current = line.recipe
    changes = {k: float(v) for k, v in recipe.items() if abs(float(v) - current.get(k, np.nan)) > 1e-12}
    if changes:
        line.apply({"kind": "set_recipe", "params": changes})


def _mark(line: ControllableLine, label: str, detail: Mapping[str, Any]) -> None:
    line.apply({"kind": "mark", "label": label, "detail": dict(detail)})


@dataclass
class TrialResult:
    recipe: dict[str, float]
    units: int
    passed: int
    stopped_early: bool

    @property
    def yield_(self) -> float:
        return self.passed / self.units if self.units else float("nan")


def run_trial(
    line: ControllableLine,
    recipe: Mapping[str, float],
    units: int,
    floor: float | None = None,
    chunks: int = 4,
    sink: Sink | None = None,
    label: str | None = None,
) -> TrialResult:
    """Produce `units` at `recipe`; stop early once the yield is surely below `floor`."""
    set_recipe(line, recipe)
    if label:
        _mark(line, label, {"recipe": dict(recipe)})
    sizes = np.diff(np.linspace(0, units, chunks + 1).round().astype(int))
    n = x = 0
    stopped = False
    for size in sizes[sizes > 0]:
        chunk = line.produce(int(size))
        if sink is not None:
            sink(chunk)
        fp = first_pass(chunk)
        n += fp.size
        x += int(fp.sum())
        if floor is not None and n < units and trial_guardrail(n, x, floor):
            stopped = True
            break
    return TrialResult(dict(recipe), n, x, stopped)


@dataclass
class SearchStep:
    """One trial of a recipe search and where the search stood after it."""

    trial: int
    recipe: dict[str, float]
    units: int
    passed: int
    stopped_early: bool
    cumulative_units: int
    incumbent: dict[str, float]


@dataclass
class SearchResult:
    steps: list[SearchStep] = field(default_factory=list)

    @property
    def units(self) -> int:
        return self.steps[-1].cumulative_units if self.steps else 0

    def best(self) -> dict[str, float] | None:
        return self.steps[-1].incumbent if self.steps else None


def run_search(
    line: ControllableLine,
    search: Any,
    budget_units: int,
    units_per_trial: int,
    guardrail: bool = True,
    sink: Sink | None = None,
    on_step: Callable[[SearchStep], None] | None = None,
    label: str | None = None,
) -> SearchResult:
    """Drive a search (the optimiser or a baseline) on the line until `budget_units` are spent.

    The search's `ask()` gives the next recipe (None: nothing left), the trial runs on the
    line (stopped early below the search's `floor()` when it has one and `guardrail` is on),
    and `update` tells the search what happened. The line's other parameters stay as they are.
    A search that learns through the process (`use_process`) is told each trial's unit readings.
    """
    out = SearchResult()
    spent = 0
    base = line.recipe
    with_readings = bool(getattr(search, "use_process", False))
    while spent < budget_units:
        proposal = search.ask()
        if proposal is None:
            break
        n = min(units_per_trial, budget_units - spent)
        floor = search.floor() if guardrail and hasattr(search, "floor") else None
        recipe = {**base, **proposal}
        produced: list[Mapping[str, pa.Table]] = []
        res = run_trial(line, recipe, n, floor=floor, sink=_keeping(produced, sink) if with_readings else sink,
                        label=f"{label}:trial-{len(out.steps) + 1}" if label else None)
        names = ("units", "measurements", "params", "steps")
        extra = {"readings": readings_of({name: pa.concat_tables([c[name] for c in produced]) for name in names})} \
            if produced and all(name in produced[0] for name in names) else {}
        search.update(proposal, res.units, res.passed, stopped_early=res.stopped_early, **extra)
        spent += res.units
        step = SearchStep(len(out.steps) + 1, dict(proposal), res.units, res.passed, res.stopped_early, spent,
                          search.best())
        out.steps.append(step)
        if on_step is not None:
            on_step(step)
    return out


def _keeping(produced: list[Mapping[str, pa.Table]], sink: Sink | None) -> Sink:
    """A sink that also keeps each chunk (a trial's readings are read from them)."""
    def keep(chunk: Mapping[str, pa.Table]) -> None:
        produced.append(chunk)
        if sink is not None:
            sink(chunk)
    return keep


@dataclass
class LotRecord:
    """One lot of a split run: which arm, its units and passes, and the test's view after it."""

    lot: int
    arm: str
    units: int
    passed: int
    cumulative_units: int
    difference: float | None = None
    lower: float | None = None
    upper: float | None = None


@dataclass
class SplitRunResult:
    verdict: Verdict
    lots: list[LotRecord]


def run_split(
    line: ControllableLine,
    change: Mapping[str, float],
    test: SplitRunTest,
    lot_size: int = 250,
    seed: int = 0,
    control: Mapping[str, float] | None = None,
    sink: Sink | None = None,
    label: str | None = None,
    max_lots: int | None = None,
) -> SplitRunResult:
    """A split-run A/B: lots alternate between the current recipe and the changed one.

    Lots come in pairs whose order is drawn at random (seeded), so a drift in time (humidity,
    stencil wear) falls on both arms alike. Runs until the sequential test stops (or
    `max_lots`); the line is left at the control recipe.
    """
    rng = np.random.default_rng(seed)
    base = {**line.recipe, **(control or {})}
    arms = {"control": base, "treatment": {**base, **change}}
    lots: list[LotRecord] = []
    total = 0
    while not test.stopped and (max_lots is None or len(lots) < max_lots):
        order = ("control", "treatment") if rng.random() < 0.5 else ("treatment", "control")
        for arm in order:
            if test.stopped:
                break
            set_recipe(line, arms[arm])
            if label:
                _mark(line, f"{label}:{arm}", {"arm": arm, "lot": len(lots) + 1})
            chunk = line.produce(lot_size)
            if sink is not None:
                sink(chunk)
            fp = first_pass(chunk)
            before = int(test.n.sum())
            test.update(np.full(fp.size, arm == "treatment"), fp)
            used = int(test.n.sum()) - before
            total += fp.size
            v = test.verdict()
            passed = int(fp[:used].sum()) if used < fp.size else int(fp.sum())
            lots.append(LotRecord(len(lots) + 1, arm, fp.size, passed, total, v.difference,
                                  v.interval[0] if v.interval else None, v.interval[1] if v.interval else None))
    set_recipe(line, base)
    return SplitRunResult(test.verdict(), lots)


def run_design(
    line: ControllableLine,
    experiment: DesignedExperiment,
    units_per_run: int,
    sink: Sink | None = None,
    label: str | None = None,
    on_run: Callable[[int, TrialResult], None] | None = None,
) -> DesignedExperiment:
    """Run every run of a design on the line in its randomised order, then return to the recipe."""
    design: Design = experiment.design
    base = line.recipe
    recipes = design.recipes(base)
    for k, (run, recipe) in enumerate(zip(design.order, recipes, strict=True)):
        res = run_trial(line, recipe, units_per_run, sink=sink,
                        label=f"{label}:run-{int(run) + 1}" if label else None)
        experiment.update_counts(int(run), res.units, res.passed)
        if on_run is not None:
            on_run(k, res)
    set_recipe(line, base)
    return experiment
