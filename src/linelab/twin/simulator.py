"""The twin as a line like any other: its profile file, and the simulator `linelab.line` opens by name."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from linelab.profile import Profile, load_profile
from linelab.twin.line import Line
from linelab.twin.scenario import Scenario, list_scenarios

PROFILE = Path(__file__).with_name("profile.yaml")


@cache
def twin_profile() -> Profile:
    return load_profile(PROFILE)


class TwinLine(Line):
    """The simulated SMT line behind the `SimulatedLine` seam (see linelab.line)."""

    def __init__(self, scenario: Scenario | str | Path = "default", seed: int = 0) -> None:
        super().__init__(scenario, seed)
        self.profile = twin_profile()
        self.source = f"twin:{self.scenario.name}:seed={self.seed}"
        self.scenario_name = self.scenario.name
        self.planned_units: int | None = self.scenario.units

    def without_problems(self) -> TwinLine:
        return TwinLine(self.scenario.model_copy(update={"problems": []}), seed=self.seed)

    def clock(self) -> str:
        return str(self.state["clock"])

    def apply(self, action: Any, **kwargs: Any) -> dict[str, Any]:
        done = super().apply(action, **kwargs)
        return {**done, "applied": True}


def open_line(scenario: str | None, seed: int) -> TwinLine:
    return TwinLine(scenario or "default", seed=seed)


def scenarios() -> list[dict[str, Any]]:
    return [{"name": s.name, "description": s.description, "units": s.units} for s in list_scenarios()]
