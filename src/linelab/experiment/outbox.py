"""A split run on a real line: its arms go out as instructions through the outbox, and the
data that comes back is sorted into them.

The schedule is lots of `lot_size` units in pairs whose order is drawn at random (seeded), as
`runner.run_split` does on a simulated line. Each lot is one `set_recipe` action (source
"experiment") carrying the arm's values of the settings under test, sent through the outbox. The
line, or a person, acknowledges each one when the lot starts (`linelab act done ACT --at TIME`).

Which arm a unit belongs to is read from those acknowledgements, never assumed: a unit (by
`units.t_start`) belongs to the lot whose action was the last one applied before it started.
Units after a switch that failed, or after another recipe change of the same settings, are not
counted; nor are the units of a lot beyond its `lot_size` while the switch that should end it has
not been acknowledged (they may already run the next arm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from linelab.act import actions as act
from linelab.act.control import OUTBOX, Outbox
from linelab.errors import UserError

ARMS = ("control", "treatment")


def arm_order(n_lots: int, seed: int) -> list[str]:
    """The arms of the first `n_lots` lots: pairs in a seeded random order (prefix-stable, the same
    draws as `runner.run_split`)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n_lots:
        out.extend(("control", "treatment") if rng.random() < 0.5 else ("treatment", "control"))
    return out[:n_lots]


def planned_lots(spec: Mapping[str, Any]) -> int:
    """Lots enough for the design's `max_units` (both arms), rounded up to whole pairs."""
    n = math.ceil(spec["max_units"] / spec["lot_size"])
    return n + n % 2


def arm_settings(e: Mapping[str, Any], arm: str) -> dict[str, float]:
    """The arm's values of the settings the experiment changes (the rest of the recipe is left alone)."""
    return {name: float(e["plan"][arm][name]) for name in e["spec"]["change"]}


def queue_lots(ws: Any, e: dict[str, Any], lots: int | None = None, by: str = "experiment",
               progress: Callable[[float], None] | None = None) -> list[dict[str, Any]]:
    """Send the next `lots` lots of the schedule (default: all planned) through the outbox; each becomes
    an approved set_recipe action waiting there. Returns the schedule entries queued now (the experiment's
    `schedule` is extended in place)."""
    spec = e["spec"]
    schedule: list[dict[str, Any]] = e.setdefault("schedule", [])
    total = planned_lots(spec)
    if lots is not None and lots <= 0:
        raise UserError("--lots must be positive")
    start = len(schedule)
    if start >= total:
        raise UserError(f"all {total} lots of experiment {e['id']} (enough for its {spec['max_units']:,} units) "
                        "are already in the outbox; `linelab experiment analyse` reads what came back")
    end = total if lots is None else min(total, start + lots)
    arms = arm_order(end, int(spec["seed"]))
    outbox = Outbox(ws)
    queued = []
    for k in range(start, end):
        arm, settings = arms[k], arm_settings(e, arms[k])
        text = ", ".join(f"{n}={v:g}" for n, v in settings.items())
        a = act.propose(ws, "set_recipe", {"params": settings}, problem_id=e.get("problem_id"),
                        experiment_id=e["id"], source="experiment", by=by,
                        reason=f"experiment {e['id']} split run, lot {k + 1}: {arm} arm ({text}) for "
                               f"{spec['lot_size']} units; acknowledge when the lot starts")
        act.approve(ws, a["id"], by=by, note=f"lot {k + 1} of experiment {e['id']}")
        act.apply(ws, a["id"], outbox, by=by)
        entry = {"lot": k + 1, "arm": arm, "settings": settings, "action_id": a["id"]}
        schedule.append(entry)
        queued.append(entry)
        if progress is not None:
            progress(1)
    return queued


@dataclass
class Switch:
    """A moment the line's recipe of the settings under test changed (or failed to)."""

    t: np.datetime64
    lot: int | None  # the schedule's lot, None for a recipe change from outside the experiment
    arm: str | None  # None: what ran after it is unknown (a failed switch, another change)
    action_id: str


@dataclass
class Lot:
    """A lot's units as the data shows them: the first-pass result of each, in time order."""

    lot: int
    arm: str
    action_id: str
    start: str
    passed: np.ndarray
    t_last: np.datetime64 | None


@dataclass
class Sorted:
    lots: list[Lot] = field(default_factory=list)
    after_failed: int = 0  # units after a failed switch or another change of the settings
    beyond_lot: int = 0  # units of a lot past lot_size while its ending switch is unacknowledged
    acknowledged: int = 0
    failed: int = 0
    waiting: int = 0
    last_arm: str | None = None  # after the last switch: an arm, None (a failed switch), "other" (another change)


def _t(text: str) -> np.datetime64:
    return np.datetime64(datetime.fromisoformat(text).replace(tzinfo=None), "us")


def switches(ws: Any, e: Mapping[str, Any]) -> tuple[list[Switch], int]:
    """Acknowledged switches in line time (applied or failed, the experiment's and other changes of its
    settings after the first lot started), and how many of the experiment's lots still wait."""
    names = set(e["spec"]["change"])
    lot_of = {s["action_id"]: s for s in e.get("schedule") or []}
    entries = {x["action_id"]: x for x in ws.list_artifacts(OUTBOX)}
    out: list[Switch] = []
    waiting = 0
    for a in ws.list_artifacts(act.KIND):
        mine = a["id"] in lot_of
        if not mine:
            touched = set((a.get("params") or {}).get("params") or {}) if a["kind"] == "set_recipe" else \
                {(a.get("params") or {}).get("name")} if a["kind"] == "set_param" else set()
            if a["status"] != "applied" or not touched & names:
                continue
        if a["status"] == "applied" and (a.get("applied") or {}).get("t"):
            s = lot_of.get(a["id"])
            out.append(Switch(_t(a["applied"]["t"]), s["lot"] if s else None, s["arm"] if s else None, a["id"]))
        elif a["status"] == "failed" and mine and (entries.get(a["id"]) or {}).get("t"):
            out.append(Switch(_t(entries[a["id"]]["t"]), lot_of[a["id"]]["lot"], None, a["id"]))
        elif a["status"] == "sent":
            waiting += 1
    first = min((s.t for s in out if s.lot is not None), default=None)
    out = [s for s in out if first is not None and s.t >= first]
    out.sort(key=lambda s: (s.t, s.lot or 0))
    return out, waiting


def sort_units(ws: Any, e: Mapping[str, Any]) -> Sorted:
    """Sort the units ingested since the first lot started into the experiment's lots."""
    found, waiting = switches(ws, e)
    res = Sorted(acknowledged=sum(s.lot is not None and s.arm is not None for s in found),
                 failed=sum(s.lot is not None and s.arm is None for s in found), waiting=waiting)
    if not found:
        return res
    res.last_arm = "other" if found[-1].lot is None else found[-1].arm
    rows = ws.query("SELECT t_start, first_pass FROM units WHERE t_start >= ? AND first_pass IS NOT NULL "
                    "ORDER BY t_start, unit_id", [found[0].t.astype(datetime)])
    t = rows.column("t_start").to_numpy().astype("datetime64[us]")
    fp = np.asarray(rows.column("first_pass").to_numpy(zero_copy_only=False), dtype=bool)
    starts = np.array([s.t for s in found], dtype="datetime64[us]")
    window = np.searchsorted(starts, t, side="right") - 1  # the last switch at or before each unit's start
    bounds = np.searchsorted(window, np.arange(len(found) + 1))
    lot_size = int(e["spec"]["lot_size"])
    for i, s in enumerate(found):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if s.arm is None or s.lot is None:
            res.after_failed += hi - lo
            continue
        nxt = found[i + 1] if i + 1 < len(found) else None
        closed = nxt is not None and (nxt.lot is None or nxt.lot == s.lot + 1)
        if not closed and hi - lo > lot_size:
            res.beyond_lot += hi - lo - lot_size
            hi = lo + lot_size
        if hi > lo:
            res.lots.append(Lot(s.lot, s.arm, s.action_id, str(s.t.astype(datetime).isoformat()), fp[lo:hi],
                                t[hi - 1]))
    return res
