"""The know-how ledger: every solved problem written down so the line never solves it twice.

An entry records the symptom signature (what moved, where, which way), the root cause, the
fix and its measured effect (before/after with an interval), time-to-detect and time-to-fix,
and links to its evidence. People add notes and tags; the loop recalls entries by signature.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from linelab.errors import NotFound, UserError
from linelab.knowhow.signature import Signature, signature_of
from linelab.knowhow.watch import save_watch
from linelab.model import Entity
from linelab.monitor.effect import compare_yields, effect_in_workspace
from linelab.profile import workspace_profile
from linelab.profile.actions import check_action, line_actions

KIND = "knowhow"


class Effect(BaseModel):
    """The fix's measured effect on the problem's metric (a defect or fail rate, lower is better)."""

    metric: str
    before: float
    after: float
    n_before: int
    n_after: int
    diff_low: float = Field(description="95% interval of (after - before), low end")
    diff_high: float = Field(description="95% interval of (after - before), high end")

    @property
    def improved(self) -> bool:
        return self.diff_high < 0

    def text(self) -> str:
        return (f"{self.metric} {100 * self.before:.2f}% → {100 * self.after:.2f}% "
                f"(change {100 * (self.after - self.before):+.2f} pts, 95% CI "
                f"{100 * self.diff_low:+.2f} to {100 * self.diff_high:+.2f})")


def rate_effect(metric: str, bad_before: int, n_before: int, bad_after: int, n_after: int) -> Effect:
    """Before/after failure rates with Newcombe's interval for their difference (lower is better)."""
    e = compare_yields((n_before, n_before - bad_before), (n_after, n_after - bad_after), min_units=1)
    lo, hi = e.interval or (-1.0, 1.0)  # of the pass-rate change: the failure-rate change mirrors it
    return Effect(metric=metric, before=bad_before / n_before if n_before else 0.0,
                  after=bad_after / n_after if n_after else 0.0, n_before=n_before, n_after=n_after,
                  diff_low=-hi, diff_high=-lo)


class Fix(BaseModel):
    """What was done. `target_factor` says which factor of a new problem the action aims at, so a
    recalled fix can be re-aimed (replace *this* nozzle, hold *this* lot)."""

    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    target_factor: str | None = None
    description: str = ""


class RootCause(BaseModel):
    factor: str
    level: str | None = None
    entity: Entity | None = Field(None, description="the thing on the line that was at fault (machine, fixture, "
                                                    "lot...); absent in entries written before it was kept")
    description: str = ""

    def about(self) -> Entity:
        """The entity at fault; for an entry written without one, read from its factor
        (`kind@STATION`) and level as it was written."""
        if self.entity is not None:
            return self.entity
        kind, _, station = self.factor.partition("@")
        return Entity(kind=kind, name=self.level if self.level is not None else kind, station=station or None)


class Entry(BaseModel):
    id: str
    title: str
    problem_id: str | None = None
    diagnosis_id: str | None = None
    signature: Signature
    root_cause: RootCause
    fix: Fix
    effect: Effect | None = None
    time_to_detect_units: int | None = None
    time_to_fix_units: int | None = None
    detected_at: str | None = None
    fixed_at: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict, description="links: problem, diagnosis, actions, plots")
    notes: str = ""
    tags: list[str] = Field(default_factory=list)
    reused: int = Field(0, description="times this entry's fix was applied again on recall")
    created: str = Field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"))

    def text(self) -> str:
        """What text search and the recall's text similarity read."""
        return " ".join([self.title, self.signature.text(), self.root_cause.description,
                         self.fix.description, self.notes, " ".join(self.tags)])


def record(
    ws: Any,
    problem: dict[str, Any],
    root_cause: RootCause,
    fix: Fix,
    effect: Effect | None = None,
    **extra: Any,
) -> Entry:
    """Write a solved problem into the ledger and return the entry."""
    sig = signature_of(problem)
    entry = Entry(
        id=ws.next_id(KIND, "KH"),
        title=f"{sig.headline()}: {root_cause.factor}{'=' + root_cause.level if root_cause.level else ''}"
              f" → {fix.action}",
        problem_id=problem.get("id"),
        signature=sig,
        root_cause=root_cause,
        fix=fix,
        effect=effect,
        evidence={"problem": problem.get("id"), **extra.pop("evidence", {})},
        **extra,
    )
    save(ws, entry)
    save_watch(ws, entry)
    return entry


def save(ws: Any, entry: Entry) -> None:
    ws.put_artifact(KIND, entry.id, entry.model_dump(mode="json"), status="active")


def get(ws: Any, entry_id: str) -> Entry:
    raw = ws.get_artifact(KIND, entry_id)
    if raw is None:
        raise NotFound(f"no know-how entry {entry_id!r} (see `linelab knowhow list`)")
    return Entry.model_validate(raw)


def all_entries(ws: Any) -> list[Entry]:
    return [Entry.model_validate(raw) for raw in ws.list_artifacts(KIND)]


def edit(ws: Any, entry_id: str, notes: str | None = None, add_tags: list[str] | None = None,
         remove_tags: list[str] | None = None) -> Entry:
    """A person's additions: notes replace, tags add or remove."""
    entry = get(ws, entry_id)
    if notes is not None:
        entry.notes = notes
    tags = [t for t in entry.tags if t not in set(remove_tags or [])]
    entry.tags = tags + [t for t in add_tags or [] if t not in tags]
    save(ws, entry)
    save_watch(ws, entry)
    return entry


# -- a person's know-how ----------------------------------------------------------------------
_FACTOR = re.compile(r"^(?P<factor>[A-Za-z_][\w.@:-]*)(?:=(?P<level>\S+))?$")


def parse_cause(text: str) -> RootCause:
    """A cause as a person gives it: a factor and its level (`machine=M2`, `fixture@ASSEMBLY=M2-H3`),
    a factor alone (`humidity`), or words (`worn spindle bearing on M2`)."""
    text = text.strip()
    if not text:
        raise UserError("give the cause: a factor and its level (machine=M2), a factor, or words")
    m = _FACTOR.match(text)
    if m is None:
        return RootCause(factor=text, description=text)
    kind, _, station = m["factor"].partition("@")
    entity = Entity(kind=kind, name=m["level"], station=station or None) if m["level"] is not None else None
    return RootCause(factor=m["factor"], level=m["level"], entity=entity, description=text)


def symptom(station: str | None = None, measurement: str | None = None, defect_code: str | None = None,
            kind: str | None = None, direction: str | None = None,
            scope: dict[str, str] | None = None) -> dict[str, Any]:
    """A symptom a person describes, with no problem on file, as the problem record its signature is
    read from: failures rising (a defect rate, the default), or a measurement moving."""
    if not (station or measurement or defect_code):
        raise UserError("describe the symptom: at least a station, a measurement or a defect code")
    kind = kind or ("measurement_shift" if measurement else "defect_rate")
    direction = direction or ("up" if kind == "defect_rate" else None)
    where = {"station": station, "measurement": measurement, "defect_code": defect_code, **(scope or {})}
    where = {k: v for k, v in where.items() if v}
    return {"id": None, "kind": kind, "scope": where,
            "signals": [{"scope": where, "effect": {"direction": direction} if direction else {}}]}


def _fix_effect(ws: Any, action: dict[str, Any]) -> Effect | None:
    """The fix's effect as its action measured it (or measures it now): line first-pass failures around it."""
    applied = action.get("applied") or {}
    if action.get("status") != "applied" or not applied.get("t"):
        return None
    seen = action.get("observed_effect")
    if not seen:
        window = int((action.get("expected_effect") or {}).get("window_units", 2000))
        seen = effect_in_workspace(ws, applied["t"], window).as_dict()
    if seen.get("delta") is None:
        return None
    n0, n1 = int(seen["before_units"]), int(seen["after_units"])
    bad0, bad1 = n0 - round(n0 * seen["before_yield"]), n1 - round(n1 * seen["after_yield"])
    return rate_effect(f"first-pass failure rate around {action['id']}", bad0, n0, bad1, n1)


def add(
    ws: Any,
    problem: dict[str, Any],
    cause: str,
    fix: str,
    params: dict[str, Any] | None = None,
    *,
    note: str = "",
    action_id: str | None = None,
    tags: list[str] | None = None,
    by: str = "person",
) -> Entry:
    """A person writes know-how: the cause and fix of `problem` (a problem on file, or a `symptom`).

    The entry is written like the loop's (`record`), so recall and watches treat it alike. The
    action that carried the fix out (`action_id`, or the problem's last applied action of that
    kind) lends its parameters when none are given, its time and its measured effect.
    """
    from linelab.act.actions import get_action, list_actions

    if not fix.strip():
        raise UserError("give the fix: the action that solved it (e.g. service_machine)")
    root = parse_cause(cause)
    if action_id:
        action: dict[str, Any] | None = get_action(ws, action_id)
        if action and action["kind"] != fix:
            raise UserError(f"action {action_id} is {action['kind']}, not the fix {fix!r}")
    elif problem.get("id"):
        done = [a for a in list_actions(ws, "applied", problem["id"]) if a["kind"] == fix]
        action = done[-1] if done else None
    else:
        action = None
    params = dict(params or {})
    if not params and action is not None:
        params = dict(action.get("params") or {})
    profile = workspace_profile(ws.path)
    line_action = profile is not None and any(a.name == fix for a in line_actions(profile))
    if line_action and params:
        assert profile is not None
        params = check_action(profile, fix, params)  # a fix the line can be sent again must be one it accepts
    target = root.about().kind if root.level is not None and root.level in map(str, params.values()) else None
    entry = record(
        ws, problem, root,
        Fix(action=fix, params=params, target_factor=target,
            description=f"{fix} (written by {by}" + ("" if line_action else "; done by hand, not an action of the line")
            + ")"),
        _fix_effect(ws, action) if action else None,
        notes=note,
        tags=list(tags or []),
        detected_at=(problem.get("first_evidence") or {}).get("t"),
        fixed_at=((action or {}).get("applied") or {}).get("t"),
        evidence={"written_by": by, **({"actions": [action["id"]]} if action else {})},
    )
    return entry
