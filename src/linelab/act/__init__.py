"""act stage: actions on the line (proposed, approved, applied through the control interface,
checked against their expected effect).

    from linelab.act import propose, approve, apply, check_effect, LineControl, Outbox
    a = propose(ws, "service_machine", {"machine": "M2"}, problem_id="PRB-0003", expected_delta=0.01)
    approve(ws, a["id"])
    apply(ws, a["id"], LineControl(line))      # or Outbox(ws) for a real line, then publish()
    check_effect(ws, a["id"])                  # yield before vs after, with an interval
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
    from linelab.act.actions import (
        KIND,
        STATUSES,
        apply,
        approve,
        check_effect,
        get_action,
        list_actions,
        mark_applied,
        propose,
        reject,
        validate_action,
    )
    from linelab.act.control import Control, LineControl, Outbox, pending, publish
    from linelab.monitor.effect import Effect, compare_yields, effect_in_workspace, effect_of_outcomes

# Loaded on first use, so that importing one module of the package does not load them all
# (and the heavy libraries they need): commands start fast.
_HOME = {
    "KIND": "linelab.act.actions", "STATUSES": "linelab.act.actions", "apply": "linelab.act.actions",
    "approve": "linelab.act.actions", "check_effect": "linelab.act.actions", "get_action": "linelab.act.actions",
    "list_actions": "linelab.act.actions", "mark_applied": "linelab.act.actions", "propose": "linelab.act.actions",
    "reject": "linelab.act.actions", "validate_action": "linelab.act.actions", "Control": "linelab.act.control",
    "LineControl": "linelab.act.control", "Outbox": "linelab.act.control", "pending": "linelab.act.control",
    "publish": "linelab.act.control", "Effect": "linelab.monitor.effect",
    "compare_yields": "linelab.monitor.effect", "effect_in_workspace": "linelab.monitor.effect",
    "effect_of_outcomes": "linelab.monitor.effect",
}

__all__ = [
    "KIND",
    "STATUSES",
    "Control",
    "Effect",
    "Outbox",
    "LineControl",
    "apply",
    "approve",
    "check_effect",
    "compare_yields",
    "effect_in_workspace",
    "effect_of_outcomes",
    "get_action",
    "list_actions",
    "mark_applied",
    "pending",
    "propose",
    "publish",
    "reject",
    "validate_action",
]


__getattr__ = lazy_attributes(__name__, _HOME, globals())
