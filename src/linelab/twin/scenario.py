"""Scenario files: the line's schedule of micro-problems, its maintenance plan and recipe.

A scenario is a YAML file anyone can write; the built-in ones live in `scenarios/`. Example:

    name: my_line
    description: a worn nozzle, then a wet week
    units: 100000                       # suggested run length
    recipe: {squeegee_pressure: 6.0}    # optional overrides of the default recipe
    maintenance: {stencil_clean_every: 5000, nozzle_swap_every: 60000}
    problems:
      - {type: nozzle_wear, onset: 20000, machine: P2, nozzle: N3, magnitude: 0.07}
      - {type: humidity_excursion, onset: 60000, duration: 6000, magnitude: 25}
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from linelab.twin.errors import ActionError, ScenarioError
from linelab.twin.materials import COMPONENTS, MATERIALS
from linelab.twin.recipe import check_param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Maintenance(_Strict):
    """Scheduled maintenance; null disables one. Counts are in units (boards) built."""

    stencil_clean_every: PositiveInt | None = 5000
    nozzle_swap_every: PositiveInt | None = 60000  # every nozzle on both placers
    tester_calibration_every: PositiveInt | None = 40000  # both testers
    oven_service_every: PositiveInt | None = None


class _Problem(_Strict):
    id: str | None = None
    onset: int = Field(ge=0, description="unit index at which the problem starts")
    magnitude: float | None = Field(None, gt=0)
    duration: PositiveInt | None = None
    ramp: PositiveInt | None = None
    note: str = ""


class StencilClog(_Problem):
    """Apertures clog faster than normal: paste volume falls by `magnitude` % per 1000 prints."""

    type: Literal["stencil_clog"]


class NozzleWear(_Problem):
    """One nozzle wears: placement offset grows to `magnitude` mm over `ramp` units."""

    type: Literal["nozzle_wear"]
    machine: Literal["P1", "P2"]
    nozzle: Literal["N1", "N2", "N3", "N4"]


class BadLot(_Problem):
    """The first lot of `material` from `supplier` loaded after onset solders badly (+`magnitude` logit)."""

    type: Literal["bad_lot"]
    material: str = "CAP-22UF"
    supplier: str

    @field_validator("material")
    @classmethod
    def _known_component(cls, v: str) -> str:
        names = [m.name for m in COMPONENTS]
        if v not in names:
            raise ValueError(f"must be one of the placed components {names}")
        return v


class ReflowZoneLoss(_Problem):
    """An oven zone heater weakens: the zone runs `magnitude` degC cold after `ramp` units."""

    type: Literal["reflow_zone_loss"]
    zone: Literal[6, 7] = 7


class ShiftHandling(_Problem):
    """One shift handles boards badly: HANDLING defects +`magnitude` logit on that shift."""

    type: Literal["shift_handling"]
    shift: Literal["A", "B", "C"]


class TesterDrift(_Problem):
    """A functional tester drifts out of calibration: vout reads `magnitude` V high after `ramp` units."""

    type: Literal["tester_drift"]
    tester: Literal["T1", "T2"]


class HumidityExcursion(_Problem):
    """Ambient humidity rises by `magnitude` %RH (ramping over `ramp` units) for `duration` units."""

    type: Literal["humidity_excursion"]


ProblemSpec = Annotated[
    StencilClog | NozzleWear | BadLot | ReflowZoneLoss | ShiftHandling | TesterDrift | HumidityExcursion,
    Field(discriminator="type"),
]
PROBLEM_TYPES = (
    "stencil_clog",
    "nozzle_wear",
    "bad_lot",
    "reflow_zone_loss",
    "shift_handling",
    "tester_drift",
    "humidity_excursion",
)
DEFAULT_MAGNITUDE = {
    "stencil_clog": 4.0,
    "nozzle_wear": 0.07,
    "bad_lot": 3.0,
    "reflow_zone_loss": 4.0,
    "shift_handling": 3.5,
    "tester_drift": 0.05,
    "humidity_excursion": 25.0,
}
DEFAULT_RAMP = {"nozzle_wear": 8000, "reflow_zone_loss": 3000, "tester_drift": 10000, "humidity_excursion": 300}
DEFAULT_DURATION = {"humidity_excursion": 6000}


class Scenario(_Strict):
    name: str
    description: str = ""
    product: str = "PSU-5V"
    line: str = "L1"
    start: datetime = datetime(2025, 1, 6, 6, 0, 0)
    takt_s: float = Field(15.0, ge=5.0, le=120.0)
    units: PositiveInt = 100_000  # suggested run length: covers every problem's onset
    work_order_size: PositiveInt = 5000
    recipe: dict[str, float] = Field(default_factory=dict)
    maintenance: Maintenance = Maintenance()
    problems: list[ProblemSpec] = Field(default_factory=list)

    @field_validator("recipe")
    @classmethod
    def _recipe_in_bounds(cls, v: dict[str, float]) -> dict[str, float]:
        try:
            return {name: check_param(name, value) for name, value in v.items()}
        except ActionError as e:
            raise ValueError(str(e)) from None

    @field_validator("problems")
    @classmethod
    def _suppliers_exist(cls, v: list[Any]) -> list[Any]:
        for p in v:
            if isinstance(p, BadLot) and p.supplier not in MATERIALS[p.material].suppliers:
                known = list(MATERIALS[p.material].suppliers)
                raise ValueError(f"bad_lot: supplier {p.supplier!r} does not supply {p.material} (one of {known})")
        ids = [p.id for p in v if p.id]
        if len(ids) != len(set(ids)):
            raise ValueError("problem ids must be unique")
        return v


@dataclass(frozen=True)
class ScenarioInfo:
    name: str
    description: str
    units: int
    problems: list[dict[str, Any]]
    path: str


def _scenario_dir() -> Path:
    return Path(str(resources.files("linelab.twin") / "scenarios"))


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif i > 0 and loc[i - 1] != "problems" and isinstance(loc[i - 1], int) and item in PROBLEM_TYPES:
            continue  # the discriminator tag pydantic inserts; the index already says which problem
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def parse_scenario(data: Any, origin: str = "<scenario>") -> Scenario:
    """A validated Scenario from parsed YAML; a ScenarioError names the file and field otherwise."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{origin}: a scenario must be a mapping of fields, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        lines = [f"{origin}: {_format_loc(err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ScenarioError("invalid scenario\n  " + "\n  ".join(lines)) from None


def load_scenario(name_or_path: str | Path | Scenario) -> Scenario:
    """A built-in scenario by name, or a user's YAML file by path."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    text = str(name_or_path)
    builtin = _scenario_dir() / f"{text}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and builtin.exists():
        path = builtin
    else:
        path = Path(text)
        if not path.exists():
            names = ", ".join(s.name for s in list_scenarios())
            raise ScenarioError(f"no built-in scenario or file named {text!r}; built-in: {names}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from None
    return parse_scenario(data, str(path))


def _problem_summary(p: Any) -> dict[str, Any]:
    out = {k: v for k, v in p.model_dump().items() if v not in (None, "")}
    return out


def list_scenarios() -> list[ScenarioInfo]:
    """The built-in scenarios, sorted by name."""
    out = []
    for path in sorted(_scenario_dir().glob("*.yaml")):
        sc = parse_scenario(yaml.safe_load(path.read_text()), str(path))
        out.append(
            ScenarioInfo(sc.name, sc.description, sc.units, [_problem_summary(p) for p in sc.problems], str(path))
        )
    return out
