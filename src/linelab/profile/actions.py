"""What a line accepts: actions and recipe changes checked against its profile, never assumed.

Three actions are LineLab's own and every line with a recipe understands them: `set_recipe`
(several settings), `set_param` (one setting) and `mark` (an experiment's marker). A profile may
list them to order their remedies; when it does not, they are still accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from linelab.errors import UserError
from linelab.profile.schema import Action, ActionParam, CauseMatch, Profile

BUILTIN: dict[str, Action] = {
    a.name: a
    for a in (
        Action(name="set_recipe", description="Change several recipe settings at once", event_kind="recipe_change",
               params=[ActionParam(name="params", type="mapping", description="{setting: value, ...}")],
               remedies=[CauseMatch(entity=["recipe"]), CauseMatch(role=["setting"])]),
        Action(name="set_param", description="Change one recipe setting", event_kind="recipe_change",
               params=[ActionParam(name="name"), ActionParam(name="value", type="number")]),
        Action(name="mark", description="Record an experiment marker as an event", event_kind="experiment",
               params=[ActionParam(name="label"), ActionParam(name="detail", type="mapping", required=False)]),
    )
}


def line_actions(profile: Profile) -> list[Action]:
    """The profile's actions in its order, then LineLab's own ones it did not list."""
    named = {a.name for a in profile.actions}
    builtin = [a for n, a in BUILTIN.items() if n not in named and (profile.recipe or n == "mark")]
    return [*profile.actions, *builtin]


def find_action(profile: Profile, kind: str) -> Action:
    action = next((a for a in line_actions(profile) if a.name == kind), None)
    if action is None:
        known = ", ".join(a.name for a in line_actions(profile)) or "none"
        raise UserError(f"the line does not accept an action {kind!r}; its profile lists: {known}")
    return action


def check_setting(profile: Profile, name: str, value: object) -> float:
    """`value` as float if `name` is a recipe setting of the line and `value` lies in its safe bounds."""
    spec = profile.setting(name)
    if spec is None:
        known = ", ".join(s.name for s in profile.recipe) or "none"
        raise UserError(f"unknown recipe setting {name!r}; the line's profile lists: {known}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"setting {name!r}: value must be a number, got {value!r}")
    try:
        v = float(value)
    except ValueError:
        raise UserError(f"setting {name!r}: value must be a number, got {value!r}") from None
    if not math.isfinite(v) or not spec.low <= v <= spec.high:
        unit = f" {spec.unit}" if spec.unit else ""
        raise UserError(f"setting {name!r}: {value!r} is outside its safe bounds [{spec.low}, {spec.high}]{unit}")
    return v


def merge_recipe(profile: Profile, base: Mapping[str, float], changes: Mapping[str, object]) -> dict[str, float]:
    """`base` updated with `changes`, every change checked against the line's safe bounds."""
    return {**base, **{name: check_setting(profile, name, v) for name, v in changes.items()}}


def _check_param(kind: str, spec: ActionParam, value: Any) -> Any:
    if spec.type == "mapping":
        if not isinstance(value, Mapping):
            raise UserError(f"{kind}: {spec.name} must be a mapping, got {value!r}")
        return dict(value)
    if spec.type == "number":
        if isinstance(value, bool):
            raise UserError(f"{kind}: {spec.name} must be a number, got {value!r}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{kind}: {spec.name} must be a number, got {value!r}") from None
        if not math.isfinite(v) or (spec.low is not None and v < spec.low) or (spec.high is not None and v > spec.high):
            raise UserError(f"{kind}: {spec.name}={value!r} is outside its safe bounds [{spec.low}, {spec.high}]")
        return v
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
        raise UserError(f"{kind}: {spec.name} must be a non-empty text, got {value!r}")
    text = str(value)
    if spec.choices is not None and text not in spec.choices:
        raise UserError(f"{kind}: {spec.name} must be one of {', '.join(spec.choices)}, got {text!r}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        raise UserError(f"{kind}: {spec.name} {text!r} does not match {spec.pattern!r}")
    return text


def check_action(profile: Profile, kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The action's parameters, checked against what the line's profile accepts (else a UserError
    that names the action, the parameter and what is allowed)."""
    action = find_action(profile, kind)
    args = dict(params or {})
    unexpected = sorted(set(args) - {p.name for p in action.params})
    if unexpected:
        raise UserError(f"{kind}: unexpected parameter(s) {unexpected}; it takes {[p.name for p in action.params]}")
    missing = [p.name for p in action.params if p.required and p.name not in args]
    if missing:
        raise UserError(f"{kind}: missing parameter(s) {missing}")
    out = {p.name: _check_param(kind, p, args[p.name]) for p in action.params if p.name in args}
    if kind == "set_param":
        out["value"] = check_setting(profile, out["name"], out["value"])
    elif kind == "set_recipe":
        if not out["params"]:
            raise UserError("set_recipe: params must name at least one setting")
        out["params"] = merge_recipe(profile, {}, out["params"])
    return out
