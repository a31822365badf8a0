"""Actions on the line: proposed, approved, applied through the control interface, checked.

An action is an artefact (kind "action") linked to the problem it answers; `linelab.model.Action`
is its record (the functions here hand it on as that record's JSON form, a dict):

    {id, kind, params, problem_id, experiment_id, source, reason, status,
     expected_effect: {"metric": "first_pass_yield", "delta": 0.01, "window_units": 2000},
     observed_effect, applied: {via, t, unit, ...}, history: [{status, t, by, note}]}

Status goes proposed -> approved -> applied (or sent, while it waits in a real line's
outbox), or rejected. Every change of status is also written to the `events` table (kind
"action"), so the line's history shows what LineLab did and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from linelab.act.control import Control
from linelab.errors import NotFound, UserError
from linelab.model import Action, ExpectedEffect
from linelab.monitor.effect import Effect, effect_in_workspace
from linelab.profile import Profile, require_profile
from linelab.profile.actions import check_action
from linelab.store.schema import RECORD_TABLES

KIND = "action"
STATUSES = ("proposed", "approved", "sent", "applied", "rejected", "failed")
SOURCES = ("person", "diagnosis", "knowhow", "experiment", "monitor")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def validate_action(profile: Profile, kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The action's parameters if the line's profile accepts them (else a clear UserError)."""
    return check_action(profile, kind, params)


def _record_event(ws: Any, action: Mapping[str, Any], status: str, t: datetime | None = None) -> None:
    detail = {"action_id": action["id"], "status": status, "kind": action["kind"], "params": action["params"],
              "problem_id": action.get("problem_id"), "experiment_id": action.get("experiment_id")}
    applied = action.get("applied") or {}
    if applied.get("via"):
        detail["via"] = applied["via"]
    row = {"t": [t or _now()], "kind": ["action"], "station": [None], "machine": [None],
           "target": [action["kind"]], "detail": [json.dumps(detail, sort_keys=True, default=str)]}
    ws.ingest_tables({"events": pa.table(row, schema=RECORD_TABLES["events"])},
                     source=f"linelab:act:{action['id']}:{status}")


def _history(action: dict[str, Any], status: str, by: str, note: str = "") -> None:
    action["status"] = status
    action.setdefault("history", []).append({"status": status, "t": _now().isoformat(timespec="seconds"),
                                             "by": by, "note": note})


def get_action(ws: Any, action_id: str) -> dict[str, Any]:
    a = ws.get_artifact(KIND, action_id)
    if a is None:
        raise NotFound(f"no action {action_id!r}; `linelab act list` shows them")
    return a


def propose(
    ws: Any,
    kind: str,
    params: Mapping[str, Any] | None = None,
    *,
    problem_id: str | None = None,
    experiment_id: str | None = None,
    expected_delta: float | None = None,
    window_units: int = 2000,
    source: str = "person",
    by: str = "person",
    reason: str = "",
    profile: Profile | None = None,
) -> dict[str, Any]:
    """Record a proposed action; its parameters are checked now against the line's profile (`profile`,
    or the workspace's own)."""
    if source not in SOURCES:
        raise UserError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    args = validate_action(profile or require_profile(ws.path), kind, params)
    action_id = ws.next_id(KIND, "ACT")
    while ws.get_artifact(KIND, action_id) is not None:  # ids stay unique even if artefacts were deleted
        action_id = f"{action_id}-1"
    record = Action(id=action_id, kind=kind, params=args, problem_id=problem_id, experiment_id=experiment_id,
                    source=source, reason=reason, expected_effect=None if expected_delta is None else
                    ExpectedEffect(delta=expected_delta, window_units=window_units))
    action = record.model_dump(exclude={"status", "history"})  # both are written by its first move
    _history(action, "proposed", by, reason)
    ws.put_artifact(KIND, action_id, action)
    _record_event(ws, action, "proposed")
    return action


def _move(ws: Any, action_id: str, status: str, allowed: tuple[str, ...], why: str, by: str,
          note: str) -> dict[str, Any]:
    """Move an action to `status` if it is in one of the `allowed` states; recorded and evented."""
    action = get_action(ws, action_id)
    if action["status"] not in allowed:
        raise UserError(f"action {action_id} is {action['status']}; {why}")
    _history(action, status, by, note)
    ws.put_artifact(KIND, action_id, action)
    _record_event(ws, action, status)
    return action


def approve(ws: Any, action_id: str, by: str = "operator", note: str = "") -> dict[str, Any]:
    return _move(ws, action_id, "approved", ("proposed",), "only a proposed action can be approved", by, note)


def reject(ws: Any, action_id: str, by: str = "operator", note: str = "") -> dict[str, Any]:
    return _move(ws, action_id, "rejected", ("proposed", "approved"), "it can no longer be rejected", by, note)


def apply(ws: Any, action_id: str, control: Control, by: str = "operator") -> dict[str, Any]:
    """Send an approved action through `control`: applied at once (twin) or queued (outbox)."""
    action = get_action(ws, action_id)
    if action["status"] != "approved":
        raise UserError(f"action {action_id} is {action['status']}; approve it first (`linelab act approve`)")
    result = control.apply(action)
    if result.get("applied"):
        return mark_applied(ws, action_id, result, by=by)
    action["applied"] = result
    _history(action, "sent", by, f"queued in the {result.get('via')}")
    ws.put_artifact(KIND, action_id, action)
    _record_event(ws, action, "sent")
    return action


def mark_applied(ws: Any, action_id: str, result: Mapping[str, Any], by: str = "operator") -> dict[str, Any]:
    action = get_action(ws, action_id)
    action["applied"] = dict(result)
    _history(action, "applied", by, f"via {result.get('via')}")
    ws.put_artifact(KIND, action_id, action)
    t = result.get("t")
    _record_event(ws, action, "applied", datetime.fromisoformat(t) if isinstance(t, str) else None)
    return action


def check_effect(ws: Any, action_id: str, window_units: int | None = None, confidence: float = 0.95) -> Effect:
    """Compare first-pass yield of the units just before and just after the action took effect."""
    action = get_action(ws, action_id)
    applied = action.get("applied") or {}
    if action["status"] != "applied" or not applied.get("t"):
        raise UserError(f"action {action_id} is {action['status']}: its effect can be checked once applied")
    expected = action.get("expected_effect") or {}
    window = window_units or int(expected.get("window_units", 2000))
    effect = effect_in_workspace(ws, applied["t"], window, expected.get("delta"), confidence)
    action["observed_effect"] = effect.as_dict()
    ws.put_artifact(KIND, action_id, action)
    return effect


def list_actions(ws: Any, status: str | None = None, problem_id: str | None = None) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise UserError(f"status must be one of {', '.join(STATUSES)}")
    rows = ws.list_artifacts(KIND, status=status)
    return [a for a in rows if problem_id is None or a.get("problem_id") == problem_id]


def line_time(at: str | datetime | None) -> datetime:
    """A time as the workspace stores times (naive UTC): ISO 8601 text, with or without an offset
    (none: already the stored clock); None is now."""
    if at is None:
        return _now()
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.strip())
        except ValueError:
            raise UserError(f"not an ISO 8601 time: {at!r} (e.g. 2026-03-02T14:05 or 2026-03-02T14:05+01:00)") from None
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def mark_failed(ws: Any, action_id: str, note: str = "", by: str = "operator",
                t: datetime | None = None) -> dict[str, Any]:
    """The line could not carry a sent action out: status "failed", with the note in its history and
    the line's events (at `t`, default now)."""
    action = get_action(ws, action_id)
    if action["status"] != "sent":
        raise UserError(f"action {action_id} is {action['status']}; only a sent action can fail")
    _history(action, "failed", by, note or "failed on the line")
    ws.put_artifact(KIND, action_id, action)
    _record_event(ws, action, "failed", t)
    return action


def acknowledge(ws: Any, action_id: str, *, failed: bool = False, note: str = "", at: str | datetime | None = None,
                by: str = "operator") -> dict[str, Any]:
    """The line, or a person, acknowledges an action sent through the outbox.

    Done: the action becomes applied at `at` (the line's time, default now) via the outbox, so
    `check_effect` measures it on the units started before and after that time. Failed: the
    action becomes "failed" with the note. Either way its outbox entry is closed.
    """
    from linelab.act.control import close_entry, outbox_entry

    action = get_action(ws, action_id)
    entry = outbox_entry(ws, action_id)
    if action["status"] != "sent":
        hint = {"proposed": "approve it, then send it with `linelab act apply --via outbox`",
                "approved": "send it first with `linelab act apply ID --via outbox`",
                "applied": f"it was applied at {(action.get('applied') or {}).get('t')}"}.get(action["status"], "")
        raise UserError(f"action {action_id} is {action['status']}, not sent: only an action waiting in the outbox "
                        f"can be marked done or failed" + (f"; {hint}" if hint else ""))
    if entry is None or entry.get("status") != "pending":
        via = (action.get("applied") or {}).get("via")
        raise UserError(f"action {action_id} is not waiting in the outbox "
                        + (f"(its entry is {entry.get('status')})" if entry else f"(it was sent via {via})"))
    t = line_time(at)
    if failed:
        action = mark_failed(ws, action_id, note, by=by, t=t)
    else:
        sent = action.get("applied") or {}
        action = mark_applied(ws, action_id, {"via": "outbox", "t": t.isoformat(), "sent": sent.get("t"),
                                              "applied": True, "by": by, "note": note}, by=by)
        if note:  # the person's words belong in the action's history, not only in `applied`
            action["history"][-1]["note"] = f"via outbox: {note}"
            ws.put_artifact(KIND, action_id, action)
    close_entry(ws, action_id, "failed" if failed else "done", t.isoformat(), by=by, note=note)
    return action
