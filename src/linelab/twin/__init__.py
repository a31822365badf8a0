"""The twin: a simulated surface-mount electronics line (see MODEL.md for the hidden model).

    from linelab.twin import Line, list_scenarios
    line = Line("default", seed=0)
    chunk = line.produce(10_000)        # chunk.tables: units, steps, measurements, params, materials, events
    line.apply({"kind": "replace_nozzle", "machine": "P2", "nozzle": "N3"})
    line.truth                          # injected problems with ground-truth cause and fix
    line.expected_yield(), line.optimal_recipe()   # the oracle

Quality model (summary; MODEL.md has every constant):
- Paste volume ~ N(100 - 5*(P-8)/2 - 6*(S-55)/25 - stencil drift, 4*(1 + 0.25*d^2)), d = normalised
  distance of (pressure P, speed S) from their hidden best (8 kg, 55 mm/s). INSUFFICIENT and BRIDGE
  log-odds rise with a smooth hinge once volume leaves 100 +- 2 %.
- Board peak = setpoint - 6 - 0.18*(conveyor-80) (+ zone losses), TAL = 70 + 2.2*(peak-243) -
  0.6*(conveyor-80); COLD_JOINT below and DEWETTING above the window peak 243 +- 1, TAL 70 +- 3.
- MISALIGN log-odds = -7.4 + (offset/0.045 mm)^2; TOMBSTONE rises with conveyor speed and bad lots;
  SOLDER_BALL with humidity above 55 %RH and hot peaks; HANDLING by shift.
- TEST: vout ~ N(5.0, 0.034) read with tester bias; ripple, Icc; 0.25 % contact false fails.
- Default recipe (5.5 kg, 35 mm/s, 247 degC, 85 cm/min): ~95.5 % first-pass yield; the optimum
  inside the safe bounds (near 7.8 kg, 52 mm/s, 248.8 degC, 77.4 cm/min): ~98.1 %.
- Micro-problems (scenario YAML): stencil_clog, nozzle_wear, bad_lot, reflow_zone_loss,
  shift_handling, tester_drift, humidity_excursion; each with onset, magnitude, duration, ramp,
  a ground-truth cause and the actions that fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
    from linelab.twin.actions import ACTION_KINDS, parse_action
    from linelab.twin.errors import ActionError, ScenarioError, TwinError
    from linelab.twin.line import Chunk, Line
    from linelab.twin.materials import MATERIALS
    from linelab.twin.recipe import RECIPE_PARAMS, ParamSpec, default_recipe
    from linelab.twin.scenario import (
        PROBLEM_TYPES,
        Scenario,
        ScenarioInfo,
        list_scenarios,
        load_scenario,
        parse_scenario,
    )

# Loaded on first use, so that importing one module of the package does not load them all
# (and the heavy libraries they need): commands start fast.
_HOME = {
    "ACTION_KINDS": "linelab.twin.actions", "parse_action": "linelab.twin.actions",
    "ActionError": "linelab.twin.errors", "ScenarioError": "linelab.twin.errors",
    "TwinError": "linelab.twin.errors", "Chunk": "linelab.twin.line", "Line": "linelab.twin.line",
    "MATERIALS": "linelab.twin.materials", "RECIPE_PARAMS": "linelab.twin.recipe",
    "ParamSpec": "linelab.twin.recipe", "default_recipe": "linelab.twin.recipe",
    "PROBLEM_TYPES": "linelab.twin.scenario", "Scenario": "linelab.twin.scenario",
    "ScenarioInfo": "linelab.twin.scenario", "list_scenarios": "linelab.twin.scenario",
    "load_scenario": "linelab.twin.scenario", "parse_scenario": "linelab.twin.scenario",
}

__all__ = [
    "ACTION_KINDS",
    "MATERIALS",
    "PROBLEM_TYPES",
    "RECIPE_PARAMS",
    "ActionError",
    "Chunk",
    "Line",
    "ParamSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioInfo",
    "TwinError",
    "default_recipe",
    "list_scenarios",
    "load_scenario",
    "parse_action",
    "parse_scenario",
]


__getattr__ = lazy_attributes(__name__, _HOME, globals())
