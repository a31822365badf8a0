"""Workspace commands: init, yield, pareto, trace, quarantine (ingest is the connect stage's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.render import bar, fmt, print_rows
from linelab.store import queries

Rows = list[dict[str, Any]]


class InitParams(BaseModel):
    pass


class InitResult(Result):
    workspace: str
    tables: dict[str, int]

    def render(self, console: Console) -> None:
        console.print(f"workspace [bold]{self.workspace}[/bold] ready")
        print_rows(console, [{"table": k, "rows": v} for k, v in self.tables.items()], "tables")


@command("init", InitParams)
def init(p: InitParams, ctx: Context) -> InitResult:
    """Create (or open) the workspace and show its tables."""
    from linelab.store.schema import RECORD_TABLES  # Arrow: only the commands that need it load it

    ws = ctx.workspace
    return InitResult(workspace=ws.location, tables={t: ws.count(t) for t in RECORD_TABLES})


class QuarantineParams(BaseModel):
    limit: int = Field(100, ge=0, description="rows to show")
    state: Literal["open", "resolved", "all"] = Field(
        "open", description="open entries, those a corrected record resolved, or all")
    awaiting: bool = Field(False, description="also count the stored rows whose unit is not ingested yet "
                                              "(reads every row of the unit tables)")


class QuarantineResult(Result):
    total: int
    open: int = Field(description="entries no corrected record has resolved yet")
    resolved: int = Field(description="entries a later, corrected record of the same key resolved")
    awaiting_unit: int | None = Field(None, description="with --awaiting: stored rows whose unit is not in the "
                                                     "workspace yet (kept, not quarantined: late data is normal)")
    rows: Rows

    def render(self, console: Console) -> None:
        print_rows(console, self.rows, f"quarantine: {self.open:,} open, {self.resolved:,} resolved")
        if self.awaiting_unit:
            console.print(f"{self.awaiting_unit:,} stored row(s) await their unit")


@command("quarantine", QuarantineParams, writes=False)
def quarantine(p: QuarantineParams, ctx: Context) -> QuarantineResult:
    """List quarantined rows: source file, line, field, reason, and whether a corrected record resolved them."""
    ws = ctx.workspace
    resolved_col = "resolved_batch"
    where = {"open": f"WHERE {resolved_col} IS NULL", "resolved": f"WHERE {resolved_col} IS NOT NULL",
             "all": ""}[p.state]
    rows = ws.rows(  # plain rows, not Arrow: a quick command need not load it
        f'SELECT source, "row", field, reason, table_name, {resolved_col} IS NOT NULL AS resolved, raw '
        f'FROM quarantine {where} ORDER BY t_ingested DESC, source, "row" LIMIT ?', [p.limit])
    total = ws.count("quarantine")
    n_resolved = ws.count("quarantine", f"{resolved_col} IS NOT NULL")
    awaiting = None
    if p.awaiting:
        from linelab.store.ingest import awaiting_unit  # the ingest machinery: only for --awaiting

        awaiting = awaiting_unit(ws)
    return QuarantineResult(total=total, open=total - n_resolved, resolved=n_resolved,
                            awaiting_unit=awaiting, rows=rows)


class YieldParams(BaseModel):
    by: str = Field("station", description=f"factor: {', '.join(queries.FACTORS)}")


class YieldResult(Result):
    by: str
    overall: dict[str, Any]
    rows: Rows

    def render(self, console: Console) -> None:
        o = self.overall
        console.print(f"[bold]{fmt(o['units'])}[/bold] units — first-pass yield "
                      f"[bold]{fmt(o['first_pass_yield'], 'yield')}[/bold], final yield "
                      f"[bold]{fmt(o['final_yield'], 'yield')}[/bold]")
        if self.by in queries.STEP_FACTORS:
            # Per visit at a station versus per unit: two different things, so two plain names.
            headers = {"units": "units visited", "first_pass_yield": "passed here 1st time",
                       "final_yield": "its units' final yield"}
        else:
            headers = {"first_pass_yield": "first-pass yield", "final_yield": "final yield"}
        print_rows(console, self.rows, f"yield by {self.by}", headers=headers)


@command("yield", YieldParams, writes=False)
def yield_(p: YieldParams, ctx: Context) -> YieldResult:
    """First-pass and final yield by station, machine, lot, supplier, shift, day…"""
    ws = ctx.workspace
    return YieldResult(by=p.by, overall=queries.overall_yield(ws), rows=queries.yield_by(ws, p.by).to_pylist())


class ParetoParams(BaseModel):
    station: str | None = Field(None, description="only this station")
    top: int = Field(15, ge=1, description="how many defect codes")


class ParetoResult(Result):
    rows: Rows

    def render(self, console: Console) -> None:
        if not self.rows:
            console.print("no defects recorded")
            return
        console.print("[bold]defect Pareto[/bold]")
        top = max(r["defects"] for r in self.rows)
        station = max(len(str(r["station"])) for r in self.rows)
        code = max(len(str(r["defect_code"])) for r in self.rows)
        count = max(len(f"{r['defects']:,}") for r in self.rows)
        # One line per code whatever the terminal: the bar takes what the names and numbers leave.
        numbers = count + len(" 100.0%  cum 100.0%")
        width = max(5, min(30, console.width - station - code - numbers - 4))
        for r in self.rows:
            console.print(f"{r['station']:>{station}} {r['defect_code']:<{code}} {bar(r['defects'] / top, width)} "
                          f"{r['defects']:>{count},} {100 * r['share']:5.1f}%  cum {100 * r['cumulative_share']:5.1f}%",
                          no_wrap=True, overflow="ellipsis", highlight=False)


@command("pareto", ParetoParams, writes=False)
def pareto(p: ParetoParams, ctx: Context) -> ParetoResult:
    """Defect Pareto: defect codes by count, with share and cumulative share."""
    return ParetoResult(rows=queries.pareto(ctx.workspace, p.station, p.top).to_pylist())


class UnitsParams(BaseModel):
    outcome: Literal["all", "first_pass_fail", "final_fail"] = Field(
        "all", description="all, first_pass_fail (failed a station on its first visit) or final_fail (did not "
                           "ship good)")
    since: datetime | None = Field(None, description="started at or after this time")
    until: datetime | None = Field(None, description="started before this time")
    station: str | None = Field(None, description="visited this station")
    defect_code: str | None = Field(None, description="had this defect code (at --station when given)")
    machine: str | None = Field(None, description="visited this machine (at --station when given)")
    operator: str | None = Field(None, description="handled by this operator (at --station when given)")
    shift: str | None = Field(None, description="worked in this shift (at --station when given)")
    lot: str | None = Field(None, description="consumed this material lot")
    product: str | None = Field(None, description="of this product")
    limit: int = Field(100, ge=1, le=10_000, description="units to list")
    offset: int = Field(0, ge=0, description="skip this many first")


class UnitsResult(Result):
    count: int = Field(description="units that match, all pages together")
    offset: int = 0
    units: Rows

    def render(self, console: Console) -> None:
        shown = f" (listed {self.offset + 1:,}–{self.offset + len(self.units):,})" if self.count > len(self.units) \
            else ""
        console.print(f"{self.count:,} units{shown}", highlight=False)
        # to the minute, so that why each unit failed (station, defect code) fits 80 columns
        rows = [{**u, "t_start": fmt(u.get("t_start"))[:16]} for u in self.units]
        print_rows(console, rows, "units", limit=len(rows) or 1,
                   headers={"unit_id": "unit", "t_start": "started", "first_pass": "1st pass",
                            "failed_at": "failed at"})
        if self.offset + len(self.units) < self.count:
            console.print(f"[dim]the next ones: --offset {self.offset + len(self.units)}[/dim]")


@command("units", UnitsParams, writes=False)
def units(p: UnitsParams, ctx: Context) -> UnitsResult:
    """The units behind a number: by outcome, start time, product, station visit (machine, operator, shift,
    defect code) and lot, in the order they started."""
    count, rows = queries.units_where(ctx.workspace, since=p.since, until=p.until, outcome=p.outcome,
                                      station=p.station, defect_code=p.defect_code, machine=p.machine,
                                      operator=p.operator, shift=p.shift, lot=p.lot, product=p.product,
                                      limit=p.limit, offset=p.offset)
    return UnitsResult(count=count, offset=p.offset, units=rows.to_pylist())


class TraceParams(BaseModel):
    serial: str | None = Field(None, description="unit serial number", json_schema_extra={"argument": True})
    lot: str | None = Field(None, description="material lot: list every unit that consumed it")


class TraceResult(Result):
    serial: str | None = None
    lot: str | None = None
    tables: dict[str, Rows]

    def render(self, console: Console) -> None:
        for name, rows in self.tables.items():
            if self.serial and name == "unit" and len(rows) == 1:
                console.print(_unit_line(rows[0]), highlight=False)
                continue
            if self.serial and name == "steps":
                rows = [_first(r, STEP_FIRST) for r in rows]
            print_rows(console, rows, name, limit=200 if self.serial else 50)
        if self.lot:
            units = self.tables["units"]
            bad = sum(1 for u in units if u["result"] != "pass")
            console.print(f"lot [bold]{self.lot}[/bold]: {len({u['unit_id'] for u in units}):,} units, "
                          f"{bad:,} not passed")


# What a step's row says first: what happened at the station; times are the first left out when narrow.
STEP_FIRST = ("station", "result", "defect_code")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: row[k] for k in keys if k in row}, **{k: v for k, v in row.items() if k not in keys}}


def _unit_line(u: dict[str, Any]) -> str:
    """A unit as a few lines of `name value`, its result first: one row never needs a table."""
    said = [f"[bold]unit {u.get('unit_id')}[/bold]"]
    if "result" in u:
        said.append(f"result {fmt(u['result'])}")
    if "first_pass" in u:
        said.append(f"first pass {fmt(u['first_pass'])}")
    rest = [f"{k.replace('_', ' ')} {fmt(v, k)}" for k, v in u.items()
            if k not in {"unit_id", "result", "first_pass"} and v is not None]
    return " · ".join(said) + "\n" + " · ".join(rest)


@command("trace", TraceParams, writes=False)
def trace(p: TraceParams, ctx: Context) -> TraceResult:
    """Traceability both ways: a unit's genealogy (SERIAL) or every unit of a lot (--lot)."""
    if bool(p.serial) == bool(p.lot):
        raise UserError("give either a SERIAL or --lot LOT")
    ws = ctx.workspace
    if p.serial:
        found = queries.trace_unit(ws, p.serial)
        return TraceResult(serial=p.serial, tables={k: v.to_pylist() for k, v in found.items()})
    assert p.lot is not None
    lot = queries.trace_lot(ws, p.lot)
    return TraceResult(lot=p.lot, tables={k: v.to_pylist() for k, v in lot.items()})
