"""Which action answers which diagnosed cause: the line's remedy catalogue, read from its profile.

A diagnosis names an entity (`Cause.entity`: a machine, a part, a lot, a shift, a reading); the
profile's actions say which causes each one remedies (`remedies` rules) and which of their
parameters the cause's entity fills (`from_cause`). The first action whose rules match is proposed; a cause no action
remedies is left to a person.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from linelab.model import Cause, Entity
from linelab.profile.actions import line_actions
from linelab.profile.schema import Action, ActionParam, CauseMatch, Profile


def _matches(rule: CauseMatch, profile: Profile, cause: Cause, entity: Entity) -> bool:
    kind, station, name = entity.kind, entity.station, entity.name
    if rule.entity and kind not in rule.entity:
        return False
    if rule.station and station not in rule.station:
        return False
    if rule.name:
        names = {name.lower(), cause.factor.split("@")[0].lower(), cause.factor.lower()}
        if not any(fnmatch.fnmatchcase(n, g.lower()) for g in rule.name for n in names):
            return False
    if rule.role:
        if kind not in ("param", "measurement", "signal"):
            return False
        role = profile.line.role(name, station)
        if role is None and kind == "param" and profile.setting(name) is not None:
            role = "setting"
        if role not in rule.role:
            return False
    return True


def _fill(spec: ActionParam, cause: Cause, entity: Entity) -> str | None:
    source = {"level": cause.level, "name": entity.name, "station": entity.station,
              "material": entity.material, "machine": entity.name}
    value = source.get(spec.from_cause or "")
    if value is None:
        return None
    text = str(value)
    if spec.extract:
        m = re.search(spec.extract, text)
        if m is None:
            return None
        text = m.group(1) if m.groups() else m.group(0)
    return text


def remedy(profile: Profile, cause: Cause) -> dict[str, Any] | None:
    """The action for `cause`, as {"kind": ..., **params}, or None when the line has none.

    `set_recipe` comes back without its settings: the caller knows the best recipe to go back to."""
    entity = cause.about()
    for action in line_actions(profile):
        if not any(_matches(rule, profile, cause, entity) for rule in action.remedies):
            continue
        params: dict[str, Any] = {}
        for spec in action.params:
            if spec.from_cause is None:
                continue
            value = _fill(spec, cause, entity)
            if value is None or (spec.choices is not None and value not in spec.choices) or (
                    spec.pattern is not None and not re.fullmatch(spec.pattern, value)):
                params = {}
                break
            params[spec.name] = value
        if len(params) < sum(p.from_cause is not None and p.required for p in action.params):
            continue  # the cause does not name what this action needs: the next rule may
        return {"kind": action.name, **params}
    return None


def target_of(profile: Profile, kind: str) -> str | None:
    """The parameter a fix aims at (filled from the cause), so a recalled fix can be re-aimed."""
    action: Action | None = next((a for a in line_actions(profile) if a.name == kind), None)
    if action is None:
        return None
    return next((p.name for p in action.params if p.from_cause is not None), None)
