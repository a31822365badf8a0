"""The control interface's vocabulary: which actions the line accepts and with which arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from linelab.twin.errors import ActionError


@dataclass(frozen=True)
class ActionKind:
    kind: str
    args: dict[str, str]  # argument -> description
    event_kind: str  # the `events.kind` it is recorded as
    description: str
    optional: dict[str, str] = field(default_factory=dict)


ACTION_KINDS: dict[str, ActionKind] = {
    a.kind: a
    for a in (
        ActionKind("clean_stencil", {}, "maintenance", "Clean the printer's stencil (resets clogging)"),
        ActionKind(
            "replace_nozzle",
            {"machine": "P1 | P2", "nozzle": "N1..N4 (or 'P2-N3' with machine omitted)"},
            "maintenance",
            "Replace one placement nozzle",
        ),
        ActionKind("hold_lot", {"lot": "lot id"}, "hold", "Put a material lot on hold; feeders holding it swap reels"),
        ActionKind("release_lot", {"lot": "lot id"}, "release", "Release a held lot back to production"),
        ActionKind("recalibrate_tester", {"tester": "T1 | T2"}, "calibration", "Recalibrate a functional tester"),
        ActionKind("service_oven", {}, "maintenance", "Service the reflow oven (restores zone heaters)"),
        ActionKind("handling_retrain", {"shift": "A | B | C"}, "action", "Retrain a shift's board handling"),
        ActionKind("dehumidify", {}, "action", "Turn on environment control: humidity back to normal"),
        ActionKind(
            "set_param",
            {"name": "recipe parameter", "value": "number within safe bounds"},
            "recipe_change",
            "Change one recipe parameter",
        ),
        ActionKind(
            "set_recipe", {"params": "{name: value, ...}"}, "recipe_change", "Change several parameters at once"
        ),
        ActionKind(
            "mark",
            {"label": "text"},
            "experiment",
            "Record an experiment marker (arm start, note) as an event",
            optional={"detail": "JSON-able mapping"},
        ),
    )
}
MACHINES = ("P1", "P2")
NOZZLES = ("N1", "N2", "N3", "N4")
TESTERS = ("T1", "T2")
SHIFTS = ("A", "B", "C")


def _choice(kind: str, arg: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ActionError(f"{kind}: {arg} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def parse_action(action: Any, kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind, arguments) from a dict {"kind": ...}, a kind name plus keyword arguments, or an object
    with `kind` and `args`; raises ActionError naming what is wrong."""
    if isinstance(action, str):
        kind, args = action, dict(kwargs)
    elif isinstance(action, Mapping):
        args = dict(action) | dict(kwargs)
        kind = args.pop("kind", None)
    elif hasattr(action, "kind"):
        kind, args = action.kind, dict(getattr(action, "args", {}) or {}) | dict(kwargs)
    else:
        raise ActionError(f"an action is a dict with a 'kind', or a kind name; got {type(action).__name__}")
    spec = ACTION_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise ActionError(f"unknown action {kind!r}; known: {', '.join(ACTION_KINDS)}")
    if kind == "replace_nozzle" and "machine" not in args and isinstance(args.get("nozzle"), str):
        machine, _, nozzle = args["nozzle"].partition("-")
        args["machine"], args["nozzle"] = machine, nozzle
    unexpected = set(args) - set(spec.args) - set(spec.optional)
    if unexpected:
        raise ActionError(f"{kind}: unexpected argument(s) {sorted(unexpected)}; it takes {list(spec.args)}")
    missing = [a for a in spec.args if a not in args]
    if missing:
        raise ActionError(f"{kind}: missing argument(s) {missing}")
    if kind == "replace_nozzle":
        _choice(kind, "machine", args["machine"], MACHINES)
        _choice(kind, "nozzle", args["nozzle"], NOZZLES)
    elif kind == "recalibrate_tester":
        _choice(kind, "tester", args["tester"], TESTERS)
    elif kind == "handling_retrain":
        _choice(kind, "shift", args["shift"], SHIFTS)
    elif kind in ("hold_lot", "release_lot") and not isinstance(args["lot"], str):
        raise ActionError(f"{kind}: lot must be a lot id string, got {args['lot']!r}")
    elif kind == "set_recipe" and (not isinstance(args["params"], Mapping) or not args["params"]):
        raise ActionError("set_recipe: params must be a non-empty mapping of parameter -> value")
    elif kind == "mark" and "detail" in args and not isinstance(args["detail"], Mapping):
        raise ActionError("mark: detail must be a mapping")
    return kind, args
