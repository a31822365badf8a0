"""The line's control interface as LineLab sees it: apply directly (a simulator) or via an outbox.

A control takes an action {"kind": ..., **params} and returns what was done, including the
line time `t` it took effect (so its effect can be measured on the units around it):

- `LineControl(line)` applies it at once to a line that takes actions directly (a simulator);
- `Outbox(ws)` writes it to the workspace's outbox (artefact kind "outbox") for a real
  line: an operator approves what is there, and `publish(ws, control)` hands pending
  entries to whatever actually drives the line, marking each action applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

OUTBOX = "outbox"


class Control(Protocol):
    name: str

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]: ...


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


class LineControl:
    """Apply actions at once to a line that takes them directly (a simulated line's `apply`)."""

    name = "simulator"

    def __init__(self, line: Any) -> None:
        self.line = line

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        done = self.line.apply({"kind": action["kind"], **dict(action.get("params") or {})})
        return {"via": self.name, "t": done.get("t"), "unit": done.get("unit"), "fixed": done.get("fixed", []),
                "recipe": done.get("recipe"), "applied": True}


class Outbox:
    """Write actions to the workspace's outbox for a real line (applied once published)."""

    name = "outbox"

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        entry = {"action_id": action["id"], "kind": action["kind"], "params": dict(action.get("params") or {}),
                 "problem_id": action.get("problem_id"), "status": "pending", "queued": _now()}
        self.ws.put_artifact(OUTBOX, action["id"], entry)
        return {"via": self.name, "t": entry["queued"], "applied": False}


def pending(ws: Any) -> list[dict[str, Any]]:
    """Outbox entries not yet published to the line."""
    return ws.list_artifacts(OUTBOX, status="pending")


def publish(ws: Any, control: Control, by: str = "publisher") -> list[dict[str, Any]]:
    """Hand every pending outbox entry to `control`; the actions become applied and recorded."""
    from linelab.act.actions import mark_applied

    done = []
    for entry in pending(ws):
        result = control.apply({"id": entry["action_id"], "kind": entry["kind"], "params": entry["params"]})
        entry.update(status="published", published=_now(), result=result)
        ws.put_artifact(OUTBOX, entry["action_id"], entry)
        done.append(mark_applied(ws, entry["action_id"], result, by=by))
    return done


def outbox_entry(ws: Any, action_id: str) -> dict[str, Any] | None:
    """The outbox entry of an action, if it was ever sent through the outbox."""
    return ws.get_artifact(OUTBOX, action_id)


def close_entry(ws: Any, action_id: str, status: str, t: str, by: str = "operator",
                note: str = "") -> dict[str, Any] | None:
    """Mark an action's outbox entry as the line acknowledged it: "done" at line time `t`, or "failed"."""
    entry = outbox_entry(ws, action_id)
    if entry is None:
        return None
    entry.update(status=status, t=t, acknowledged=_now(), by=by, note=note)
    ws.put_artifact(OUTBOX, action_id, entry)
    return entry
