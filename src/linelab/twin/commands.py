"""Twin commands: list the built-in scenarios, simulate one into the workspace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.act.simulation import prepare_simulation_workspace, record_simulation
from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.render import fmt, print_rows
from linelab.store import queries
from linelab.store.workspace import Workspace
from linelab.twin import list_scenarios, load_scenario
from linelab.twin.simulator import TwinLine

TRUTH_KIND = "twin_truth"  # the injected problems, kept for scoring monitors and diagnoses


class ScenariosParams(BaseModel):
    pass


class ScenariosResult(Result):
    scenarios: list[dict[str, Any]]

    def render(self, console: Console) -> None:
        rows = [{"name": s["name"], "units": s["units"],
                 "problems": ", ".join(p["type"] for p in s["problems"]) or "—",
                 "description": s["description"]} for s in self.scenarios]
        print_rows(console, rows, "built-in scenarios")


@command("twin scenarios", ScenariosParams, workspace=False)
def twin_scenarios(p: ScenariosParams, ctx: Context) -> ScenariosResult:
    """List the built-in scenarios of the simulated line."""
    return ScenariosResult(scenarios=[
        {"name": s.name, "description": s.description, "units": s.units, "problems": s.problems}
        for s in list_scenarios()
    ])


class RunParams(BaseModel):
    scenario: str = Field("default", description="built-in scenario name or a scenario YAML file",
                          json_schema_extra={"path": "name"})
    units: int | None = Field(None, gt=0, description="units to produce [default: the scenario's length]")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed: the same scenario and seed give identical data")
    chunk: int = Field(50_000, gt=0, description="units per chunk written to the workspace")
    fresh: bool = Field(False, description="empty the workspace first (never one holding a real line's data)",
                       json_schema_extra={"destructive": True})


class RunResult(Result):
    scenario: str
    seed: int
    units: int
    rows: dict[str, int]
    seconds: float
    units_per_s: float
    first_pass_yield: float | None
    final_yield: float | None
    problems: list[dict[str, Any]]
    workspace: str

    def render(self, console: Console) -> None:
        console.print(f"simulated [bold]{self.units:,}[/bold] units of '{self.scenario}' (seed {self.seed}) "
                      f"into {self.workspace} in {self.seconds:.1f} s ({self.units_per_s:,.0f} units/s)")
        console.print(f"first-pass yield [bold]{fmt(self.first_pass_yield, 'yield')}[/bold], "
                      f"final yield [bold]{fmt(self.final_yield, 'yield')}[/bold]")
        print_rows(console, [{"problem": q["id"], "type": q["type"], "onset_unit": q["onset_unit"],
                              "cause": _cause(q["cause"]),
                              "status": q["status"], "fixed_by": q.get("fixed_by")} for q in self.problems],
                   "injected micro-problems (ground truth)")


def _cause(cause: dict[str, Any]) -> str:
    """factor=level; the factor alone while its level is not known yet (a bad lot that is not loaded so far)."""
    factor, level = cause.get("factor"), cause.get("level")
    if level is not None:
        return f"{factor}={level}"
    return f"{factor} (not loaded yet)" if factor == "lot" else str(factor)


def _claim(ws: Workspace, source: str) -> None:
    """One workspace holds one line: refuse to mix two simulated runs' serial numbers."""
    other = ws.query("SELECT DISTINCT source FROM batches WHERE source LIKE 'twin:%' AND source <> ?", [source])
    if other.num_rows:
        raise UserError(f"workspace {ws.path} already holds {other.column(0)[0].as_py()}; "
                        "use another --workspace, or --fresh to empty this one")


@command("twin run", RunParams)
def twin_run(p: RunParams, ctx: Context) -> RunResult:
    """Simulate a scenario into a workspace of its own (./linelab-sim unless --workspace says otherwise)."""
    scenario = load_scenario(p.scenario)
    root = prepare_simulation_workspace(ctx.workspace_path, p.fresh)
    ctx.close()
    ctx.workspace_path = root
    ws = ctx.workspace
    line = TwinLine(scenario, seed=p.seed)
    total = p.units or scenario.units
    source = line.source
    _claim(ws, source)
    record_simulation(ws, line, "twin", scenario.name, p.seed)
    rows: dict[str, int] = {}
    start = time.perf_counter()
    with ctx.progress(total, f"simulating {scenario.name}") as advance:
        while line.units_produced < total:
            chunk = line.produce(min(p.chunk, total - line.units_produced))
            ws.ingest_tables(chunk.tables, source=source)
            for name, table in chunk.tables.items():
                rows[name] = rows.get(name, 0) + table.num_rows
            advance(chunk.n_units)
    seconds = time.perf_counter() - start
    ws.put_artifact(TRUTH_KIND, source, {"scenario": scenario.name, "seed": p.seed, "problems": line.truth})
    overall = queries.overall_yield(ws)
    return RunResult(scenario=scenario.name, seed=p.seed, units=total, rows=rows, seconds=round(seconds, 2),
                     units_per_s=round(total / seconds, 1), first_pass_yield=overall["first_pass_yield"],
                     final_yield=overall["final_yield"], problems=line.truth, workspace=str(Path(ws.path)))
