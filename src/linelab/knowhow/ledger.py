"""The know-how ledger: every solved problem written down so the line never solves it twice.

An entry records the symptom signature (what moved, where, which way), the root cause, the
fix and its measured effect (before/after with an interval), time-to-detect and time-to-fix,
and links to its evidence. People add notes and tags; the loop recalls entries by signature.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from linelab.act.effect import compare_yields
from linelab.errors import NotFound
from linelab.knowhow.signature import Signature, signature_of
from linelab.knowhow.watch import save_watch

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
    description: str = ""


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
