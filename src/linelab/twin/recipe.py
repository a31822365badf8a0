"""Recipe parameters of the twin: names, units, safe bounds and the default recipe."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from linelab.twin.errors import ActionError


@dataclass(frozen=True)
class ParamSpec:
    """A settable process parameter. Values outside [low, high] are refused as unsafe."""

    name: str
    station: str
    machine: str
    unit: str
    low: float
    high: float
    default: float
    description: str


RECIPE_PARAMS: dict[str, ParamSpec] = {
    p.name: p
    for p in (
        ParamSpec("squeegee_pressure", "PRINT", "SP1", "kg", 4.0, 12.0, 5.5, "Squeegee force on the stencil"),
        ParamSpec("print_speed", "PRINT", "SP1", "mm/s", 20.0, 100.0, 35.0, "Squeegee travel speed"),
        ParamSpec("peak_temp_setpoint", "REFLOW", "R1", "degC", 235.0, 260.0, 247.0, "Setpoint of the peak zone (7)"),
        ParamSpec("conveyor_speed", "REFLOW", "R1", "cm/min", 60.0, 110.0, 85.0, "Oven conveyor speed"),
    )
}


def default_recipe() -> dict[str, float]:
    return {name: spec.default for name, spec in RECIPE_PARAMS.items()}


def check_param(name: str, value: object) -> float:
    """The value as float if `name` is a recipe parameter and `value` lies in its safe bounds."""
    spec = RECIPE_PARAMS.get(name)
    if spec is None:
        raise ActionError(f"unknown recipe parameter {name!r}; known: {', '.join(RECIPE_PARAMS)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ActionError(f"parameter {name!r}: value must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or not spec.low <= v <= spec.high:
        raise ActionError(
            f"parameter {name!r}: {value!r} is outside its safe bounds [{spec.low}, {spec.high}] {spec.unit}"
        )
    return v


def merge_recipe(base: Mapping[str, float], changes: Mapping[str, object]) -> dict[str, float]:
    """`base` updated with `changes`, every change checked against the safe bounds."""
    out = dict(base)
    for name, value in changes.items():
        out[name] = check_param(name, value)
    return out
