"""`linelab diagnose`: a problem from the workspace, or two tables from files.

linelab diagnose PROBLEM_ID                      # stored as artefact "diagnosis"
linelab diagnose --reference normal.csv --incident faulty.parquet --target aoi_fail --json
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.render import print_rows

from .diagnoser import Diagnoser
from .model import Diagnosis
from .plots import render_evidence


class DiagnoseParams(BaseModel):
    problem_id: str | None = Field(
        None, description="problem to diagnose (from `linelab problems`)", json_schema_extra={"argument": True}
    )
    reference: Path | None = Field(None, description="table mode: normal rows (CSV or Parquet)",
                                 json_schema_extra={"path": "input"})
    incident: Path | None = Field(None, description="table mode: faulty rows (CSV or Parquet)",
                                json_schema_extra={"path": "input"})
    target: str | None = Field(None, description="table mode: the symptom column")
    dag: Path | None = Field(None, description="table mode: causal graph CSV with source,target columns",
                           json_schema_extra={"path": "input"})
    stages: Path | None = Field(None, description="table mode, without a causal graph: CSV with column,stage "
                                "giving each column's station position along the line (1, 2, ...)",
                                json_schema_extra={"path": "input"})
    time_column: str | None = Field(None, description="table mode: column that orders rows in time")
    exclude: list[str] = Field(default_factory=list, description="columns that are not candidate causes")
    plot: Path | None = Field(None, description="write the evidence plot here (.png or .html)",
                            json_schema_extra={"path": "output"})
    top: int = Field(10, ge=1, description="causes to show")


class DiagnoseResult(Result):
    problem_id: str | None = None
    diagnosis: Diagnosis
    plot: str | None = None
    seconds: float | None = None
    top: int = 10

    def render(self, console: Console) -> None:
        d = self.diagnosis
        head = f"[bold]diagnosis[/bold] of {self.problem_id}" if self.problem_id else "[bold]diagnosis[/bold]"
        console.print(head)
        console.print(d.summary.splitlines()[0], highlight=False)
        if d.incident_from is not None:
            console.print(f"compared from {d.incident_from}, where the symptom stepped inside the problem's window",
                          highlight=False)
        if d.onset is not None:
            console.print("onset: " + d.onset.text, highlight=False)
        rows = [
            {
                "rank": c.rank,
                "cause": c.label,
                "kind": c.kind,
                "effect": round(c.effect, 3),
                "share": c.share,
                "q": float(f"{c.q_value:.2g}"),
                "note": "confounded" if c.confounded_with else (f"via {c.explained_by}" if c.explained_by else ""),
            }
            for c in d.causes[: self.top]
        ]
        print_rows(console, rows, "candidate causes")
        for c in d.causes[:3]:
            console.print(f"{c.rank}. {c.evidence}", highlight=False, soft_wrap=True)
        for conf in d.confounded:
            console.print(
                f"[yellow]confounded[/yellow]: {' and '.join(conf.causes)}; {conf.experiment}", highlight=False
            )
        checks = [line for line in d.summary.splitlines() if line.startswith("check:")]
        for line in checks:
            console.print(line, highlight=False)
        if self.plot:
            console.print(f"evidence plot: {self.plot}")


def diagnose_files(
    reference: Path | str,
    incident: Path | str,
    target: str,
    *,
    dag: Path | str | None = None,
    stages: Path | str | None = None,
    time_column: str | None = None,
    exclude: list[str] | None = None,
    plot: Path | str | None = None,
) -> DiagnoseResult:
    """Table mode: reference and incident files (CSV or Parquet) and the symptom column."""
    from time import perf_counter

    from .data import read_table

    t0 = perf_counter()
    ref, inc = read_table(reference), read_table(incident)
    dx = Diagnoser(dag=dag, stages=stages, time_column=time_column, exclude=exclude or []).fit(ref, inc, target=target)
    path = str(render_evidence(dx.report_, plot)) if plot else None
    return DiagnoseResult(diagnosis=dx.report_, plot=path, seconds=round(perf_counter() - t0, 3))


@command("diagnose", DiagnoseParams)
def diagnose(p: DiagnoseParams, ctx: Context) -> DiagnoseResult:
    """Rank candidate root causes of a problem (or of a change between two tables)."""
    table_mode = p.reference is not None or p.incident is not None
    if table_mode:
        if p.problem_id:
            raise UserError("give either a PROBLEM_ID or --reference/--incident/--target, not both")
        missing = [n for n in ("reference", "incident", "target") if getattr(p, n) is None]
        if missing:
            raise UserError("table mode needs " + ", ".join(f"--{m}" for m in missing))
        assert p.reference is not None and p.incident is not None and p.target is not None  # checked just above
        result = diagnose_files(
            p.reference, p.incident, p.target, dag=p.dag, stages=p.stages, time_column=p.time_column,
            exclude=p.exclude, plot=p.plot,
        )
        result.top = p.top
        return result
    if not p.problem_id:
        raise UserError("give a PROBLEM_ID, or --reference, --incident and --target for table mode")
    from .workspace import diagnose_problem

    with ctx.progress(None, f"diagnosing {p.problem_id}"):
        report, plot_path, seconds = diagnose_problem(ctx.workspace, p.problem_id, plot=p.plot)
    return DiagnoseResult(problem_id=p.problem_id, diagnosis=report, plot=plot_path, seconds=seconds, top=p.top)
