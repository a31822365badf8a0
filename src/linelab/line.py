"""A line as the loop drives it: a simulated line (the twin, the zoo) or a real one behind a channel.

Stages never construct a simulator themselves: they are handed a `SimulatedLine` (or a control
channel for a real line) whose names all come from its profile. `open_simulator("twin", ...)`
resolves a simulator by the name a profile's `control.simulator` gives.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from linelab.errors import UserError
from linelab.profile.schema import Profile

# Simulators LineLab ships: name -> "module:factory". A factory takes (scenario, seed) and
# returns a SimulatedLine; `scenarios()` of the same module lists what it can simulate.
SIMULATORS: dict[str, str] = {
    "twin": "linelab.twin.simulator:open_line",
    "zoo": "linelab.zoo.simulator:open_line",
}


@runtime_checkable
class SimulatedLine(Protocol):
    """What the closed loop needs of a line it can run: produce, apply, and (for scoring) its truth."""

    profile: Profile
    source: str  # the batch source its records are stored under, unique per simulator, scenario and seed
    scenario_name: str
    planned_units: int | None  # the scenario's length, when it has one

    @property
    def units_produced(self) -> int: ...

    @property
    def recipe(self) -> dict[str, float]: ...

    @property
    def truth(self) -> list[dict[str, Any]]:
        """Injected problems: id, type, onset_unit, end_unit, fixed_by, fix_actions [{kind...}]."""
        ...

    def produce(self, n: int) -> Mapping[str, pa.Table]:
        """The next `n` units' records, one Arrow table per LineLab table."""
        ...

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        """Apply {"kind": ..., **params}; returns at least {"t": iso time, "unit": units produced}."""
        ...

    def optimal_recipe(self) -> dict[str, float]: ...

    def clock(self) -> str:
        """The line's time now (ISO 8601): where events about its next units sit."""
        ...

    def without_problems(self) -> SimulatedLine:
        """The same line and seed with no problem injected (the oracle's line)."""
        ...


def open_simulator(name: str, scenario: str | None = None, seed: int = 0) -> SimulatedLine:
    target = SIMULATORS.get(name)
    if target is None:
        raise UserError(f"unknown simulator {name!r}; known: {', '.join(SIMULATORS)}")
    module, _, factory = target.partition(":")
    line = getattr(importlib.import_module(module), factory)(scenario, seed)
    return line
