"""act stage: actions on the line (proposed, approved, applied through the control interface,
checked against their expected effect).

    from linelab.act import propose, approve, apply, check_effect, LineControl, Outbox
    a = propose(ws, "service_machine", {"machine": "M2"}, problem_id="PRB-0003", expected_delta=0.01)
    approve(ws, a["id"])
    apply(ws, a["id"], LineControl(line))      # or Outbox(ws) for a real line, then publish()
    check_effect(ws, a["id"])                  # yield before vs after, with an interval
"""

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
