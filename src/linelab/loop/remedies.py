"""Which action answers which diagnosed cause: the line's remedy catalogue.

A diagnosis names an entity (a nozzle, a lot, a tester, a shift, a parameter); the catalogue
turns it into an action of the line's control interface. A real line brings its own catalogue;
this one is the simulated line's, and a cause without a remedy is left to a person.
"""

from __future__ import annotations

from typing import Any

from linelab.diagnose.model import Cause
from linelab.twin.recipe import RECIPE_PARAMS


def remedy(cause: Cause) -> dict[str, Any] | None:
    """The action for `cause`, as {"kind": ..., **params}, or None when there is none."""
    entity = cause.details.get("entity") or {}
    kind = str(entity.get("type") or cause.factor.split("@")[0])
    name = str(entity.get("name") or cause.level or "")
    station = entity.get("station")
    factor = cause.factor.lower()
    if factor.startswith("recipe_id") or factor.split("@")[0] in RECIPE_PARAMS:
        return {"kind": "set_recipe"}  # back to the best recipe known; the loop fills it in
    if kind == "fixture" and station == "PLACE" and "-" in name:  # nozzles are the placement fixtures
        return {"kind": "replace_nozzle", "nozzle": name}
    if kind in ("machine", "fixture") and station == "TEST":
        return {"kind": "recalibrate_tester", "tester": name.split("-")[0]}
    if kind == "lot" and cause.level:
        return {"kind": "hold_lot", "lot": cause.level}
    if kind == "shift" and cause.level:
        return {"kind": "handling_retrain", "shift": cause.level}
    if "humidity" in factor:
        return {"kind": "dehumidify"}
    if kind not in ("measurement", "param", "continuous", "stencil", "oven_zone"):
        return None  # people, machines and materials without a remedy above are left to a person
    if any(k in factor for k in ("paste_volume", "paste_height", "stencil")) or station == "SPI":
        return {"kind": "clean_stencil"}
    if any(k in factor for k in ("zone", "peak_temp", "time_above_liquidus")) or station == "REFLOW":
        return {"kind": "service_oven"}
    return None


def target_of(action: dict[str, Any]) -> str | None:
    """What a fix aims at, so a recalled fix can be re-aimed at a new problem's entity."""
    return {"replace_nozzle": "nozzle", "recalibrate_tester": "tester", "hold_lot": "lot",
            "handling_retrain": "shift"}.get(action["kind"])
