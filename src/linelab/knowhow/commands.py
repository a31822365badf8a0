"""Know-how commands: list, show, search, recall, edit, export, watches; add, problem resolve and problem report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.act.commands import parse_params
from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.knowhow import ledger, problem_report, recall, report, watch
from linelab.monitor import problems as pb
from linelab.render import print_rows


class ListParams(BaseModel):
    tag: str | None = Field(None, description="only entries with this tag")


class EntriesResult(Result):
    entries: list[dict[str, Any]]

    def render(self, console: Console) -> None:
        rows = [{"id": e["id"], "title": e["title"], "reused": e["reused"],
                 "effect": ledger.Effect(**e["effect"]).text() if e.get("effect") else "—",
                 "tags": ", ".join(e["tags"])} for e in self.entries]
        print_rows(console, rows, "know-how")


@command("knowhow list", ListParams, writes=False)
def knowhow_list(p: ListParams, ctx: Context) -> EntriesResult:
    """List know-how entries (solved problems, their causes and fixes)."""
    entries = [e for e in ledger.all_entries(ctx.workspace) if p.tag is None or p.tag in e.tags]
    return EntriesResult(entries=[e.model_dump(mode="json") for e in entries])


class ShowParams(BaseModel):
    id: str = Field(..., description="entry id (KH-0001)", json_schema_extra={"argument": True})


class EntryResult(Result):
    entry: dict[str, Any]

    def render(self, console: Console) -> None:
        e = ledger.Entry.model_validate(self.entry)
        console.print(f"[bold]{e.id}[/bold] {e.title}")
        for head, text in report.sections(e, None):
            console.print(f"[bold]{head}[/bold]: {text}")


@command("knowhow show", ShowParams, writes=False)
def knowhow_show(p: ShowParams, ctx: Context) -> EntryResult:
    """Show one know-how entry as its 8D sections."""
    return EntryResult(entry=ledger.get(ctx.workspace, p.id).model_dump(mode="json"))


class SearchParams(BaseModel):
    text: str | None = Field(None, description="free text", json_schema_extra={"argument": True})
    problem: str | None = Field(None, description="recall by a problem's signature instead (problem id)")
    top: int = Field(5, ge=1, description="entries to show")


class MatchesResult(Result):
    matches: list[recall.Match]

    def render(self, console: Console) -> None:
        print_rows(console, [m.model_dump() for m in self.matches], "matches")


@command("knowhow search", SearchParams, writes=False)
def knowhow_search(p: SearchParams, ctx: Context) -> MatchesResult:
    """Search the ledger by text, or recall the entries most like a problem (--problem ID)."""
    ws = ctx.workspace
    if p.problem:
        problem = ws.get_artifact("problem", p.problem)
        if problem is None:
            raise UserError(f"no problem {p.problem!r}")
        return MatchesResult(matches=recall.recall(ws, problem, p.top))
    if not p.text:
        raise UserError("give search TEXT or --problem ID")
    return MatchesResult(matches=recall.search(ws, p.text, p.top))


class EditParams(BaseModel):
    id: str = Field(..., description="entry id", json_schema_extra={"argument": True})
    notes: str | None = Field(None, description="replace the notes")
    tag: list[str] | None = Field(None, description="add a tag (repeatable)")
    untag: list[str] | None = Field(None, description="remove a tag (repeatable)")


@command("knowhow edit", EditParams)
def knowhow_edit(p: EditParams, ctx: Context) -> EntryResult:
    """Add notes and tags to an entry."""
    entry = ledger.edit(ctx.workspace, p.id, p.notes, p.tag, p.untag)
    return EntryResult(entry=entry.model_dump(mode="json"))


class ExportParams(BaseModel):
    id: str | None = Field(None, description="one entry; default: every entry in the period",
                           json_schema_extra={"argument": True})
    since: str | None = Field(None, description="entries created on or after this date (YYYY-MM-DD)")
    until: str | None = Field(None, description="entries created before this date (YYYY-MM-DD)")
    out: Path = Field(Path("reports"), description="folder for the report files",
                     json_schema_extra={"path": "output-dir"})


class ExportResult(Result):
    entries: int
    files: dict[str, str]

    def render(self, console: Console) -> None:
        console.print(f"8D report of {self.entries} entr{'y' if self.entries == 1 else 'ies'}: "
                      + ", ".join(self.files.values()))


@command("knowhow export", ExportParams)
def knowhow_export(p: ExportParams, ctx: Context) -> ExportResult:
    """Export an entry, or a period, as an 8D report (Markdown and HTML with plots)."""
    ws = ctx.workspace
    if p.id:
        entries = [ledger.get(ws, p.id)]
    else:
        entries = [e for e in ledger.all_entries(ws)
                   if (p.since is None or e.created >= p.since) and (p.until is None or e.created < p.until)]
    if not entries:
        raise UserError("no know-how entries to export")
    problems = {e.problem_id: ws.get_artifact("problem", e.problem_id) or {} for e in entries if e.problem_id}
    name = p.id or f"8D-{p.since or 'all'}-{p.until or 'now'}"
    return ExportResult(entries=len(entries), files=report.export(entries, problems, p.out, name))


class WatchesParams(BaseModel):
    pass


class WatchesResult(Result):
    watches: list[watch.Watch]

    def render(self, console: Console) -> None:
        rows = [{"entry": w.id, "station": w.station, "each": w.factor, "last at fault": w.level or "—",
                 "measurements": ", ".join(f"{m} ({w.moves[m]:+.1f}σ)" if m in w.moves else m for m in w.measurements)}
                for w in self.watches]
        print_rows(console, rows, "watches (what solved problems taught the monitor to look for)")


@command("knowhow watches", WatchesParams, writes=False)
def knowhow_watches(p: WatchesParams, ctx: Context) -> WatchesResult:
    """The watches know-how has set: measurements the monitor follows entity by entity."""
    return WatchesResult(watches=watch.active_watches(ctx.workspace))


# -- a person's know-how -----------------------------------------------------------------------
class _Written(BaseModel):
    """What a person says solved a problem."""

    params: str | None = Field(None, description='the fix\'s arguments: JSON ({"machine": "M2"}) or name=value '
                               "pairs [default: those of the action that carried it out]")
    note: str = Field("", description="what was seen and done, in a person's words (search and recall read it)")
    action: str | None = Field(None, description="the action that carried the fix out (its time and measured effect "
                               "go into the entry) [default: the problem's last applied action of that kind]")
    tag: list[str] | None = Field(None, description="a tag (repeatable)")
    by: str = Field("person", description="who writes it")


class AddParams(_Written):
    cause: str = Field(..., description="the root cause: factor=level (machine=M2), a factor, or words")
    fix: str = Field(..., description="what solved it: the action's name (e.g. service_machine)")
    problem: str | None = Field(None, description="the problem it solved (PRB-0001); or describe the symptom:")
    station: str | None = Field(None, description="symptom: where it showed")
    measurement: str | None = Field(None, description="symptom: the measurement that moved")
    defect_code: str | None = Field(None, description="symptom: the defect that rose")
    kind: str | None = Field(None, description="symptom: defect_rate or measurement_shift [default: "
                             "measurement_shift with a measurement, else defect_rate]")
    direction: str | None = Field(None, description="symptom: up, down or wider [default: up for a defect rate]")


def _symptom(p: AddParams) -> dict[str, Any] | None:
    given = [p.station, p.measurement, p.defect_code, p.kind, p.direction]
    if p.problem:
        if any(given):
            raise UserError("give --problem or describe the symptom (--station, --measurement, ...), not both")
        return None
    return ledger.symptom(p.station, p.measurement, p.defect_code, p.kind, p.direction)


@command("knowhow add", AddParams)
def knowhow_add(p: AddParams, ctx: Context) -> EntryResult:
    """Write know-how by hand: a problem's (or a symptom's) root cause and the fix that solved it."""
    ws = ctx.workspace
    problem = _symptom(p) or pb.get_problem(ws, p.problem or "")
    entry = ledger.add(ws, problem, p.cause, p.fix, parse_params(p.params), note=p.note, action_id=p.action,
                       tags=p.tag, by=p.by)
    return EntryResult(entry=entry.model_dump(mode="json"))


class ResolveParams(_Written):
    id: str = Field(..., description="problem id", json_schema_extra={"argument": True})
    cause: str | None = Field(None, description="the root cause: factor=level (machine=M2), a factor, or words")
    fix: str | None = Field(None, description="what solved it: the action's name; with --cause, writes know-how")


class ResolveResult(Result):
    problem: dict[str, Any]
    entry: dict[str, Any] | None

    def render(self, console: Console) -> None:
        console.print(f"{self.problem['id']} is now [bold]{self.problem['status']}[/bold]")
        if self.entry:
            console.print(f"know-how [bold]{self.entry['id']}[/bold] {self.entry['title']}")


@command("problem resolve", ResolveParams)
def problem_resolve(p: ResolveParams, ctx: Context) -> ResolveResult:
    """Close a problem as resolved; with --cause and --fix, write its know-how entry too."""
    ws = ctx.workspace
    if (p.cause is None) != (p.fix is None):
        raise UserError("give both --cause and --fix (to write know-how), or neither")
    pb.check_move(pb.get_problem(ws, p.id), "resolved")
    entry = None
    if p.cause is not None and p.fix is not None:
        entry = ledger.add(ws, pb.get_problem(ws, p.id), p.cause, p.fix, parse_params(p.params), note=p.note,
                           action_id=p.action, tags=p.tag, by=p.by)
    resolution = {"cause": p.cause, "fix": p.fix, "knowhow": entry.id, "by": p.by} if entry else {"by": p.by}
    note = p.note or (f"solved by {p.fix} ({p.cause}); know-how {entry.id}" if entry else "")
    problem = pb.resolve(ws, p.id, note, resolution)
    return ResolveResult(problem={k: problem[k] for k in ("id", "status", "history", "resolution")},
                         entry=entry.model_dump(mode="json") if entry else None)


class ProblemReportParams(BaseModel):
    id: str = Field(..., description="problem id", json_schema_extra={"argument": True})
    out: Path | None = Field(None, description="the HTML file to write [default: <workspace>/reports/<ID>-report.html]",
                             json_schema_extra={"path": "output"})


class ProblemReportResult(Result):
    problem_id: str
    status: str
    file: str = Field(description="the report: one HTML page, self-contained, that prints well")
    next_step: str

    def render(self, console: Console) -> None:
        console.print(f"problem report of [bold]{self.problem_id}[/bold] ({self.status.replace('_', ' ')}): "
                      f"{self.file}", highlight=False)
        console.print(f"next: {self.next_step}", highlight=False)


@command("problem report", ProblemReportParams, writes=False)  # the report is a file; the store is only read
def problem_report_command(p: ProblemReportParams, ctx: Context) -> ProblemReportResult:
    """Write a problem's report for the morning meeting: what was seen and when, the units it lost, its
    ranked causes with their evidence, the actions taken and their effect, its know-how, what to do next."""
    from linelab.act.commands import ListParams as ActionsParams
    from linelab.act.commands import act_list
    from linelab.monitor.chart_commands import spec_unit
    from linelab.profile import workspace_profile

    ws = ctx.workspace
    record = pb.get_problem(ws, p.id)
    scope = record.get("scope") or {}
    unit = spec_unit(ws, scope.get("station"), scope["measurement"]) if scope.get("measurement") else None
    stored = ws.get_artifact("diagnosis", p.id) or {}
    actions = act_list(ActionsParams(problem_id=p.id), ctx).actions  # type: ignore[attr-defined]
    entries = [e.model_dump(mode="json") for e in ledger.all_entries(ws) if e.problem_id == p.id]
    recalled = [m for m in recall.recall(ws, record, 3) if m.entry_id not in {e["id"] for e in entries}]
    diagnosis = stored.get("diagnosis")
    step = problem_report.next_step(record, diagnosis, actions, entries,
                                    problem_report.profile_remedy(workspace_profile(ws.path)))
    report_data = problem_report.Report(record=record, unit=unit, diagnosis=diagnosis, actions=actions,
                                        entries=entries, recalled=recalled, next=step,
                                        workspace=Path(str(ws.path)).name)
    out = p.out or Path(ws.path) / "reports" / f"{p.id}-report.html"
    path = problem_report.write(report_data, out)
    return ProblemReportResult(problem_id=p.id, status=record["status"], file=str(path), next_step=step["text"])
