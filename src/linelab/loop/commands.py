"""`linelab loop`: the main job. `linelab learning`: the last loop's learning curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.line import open_simulator
from linelab.loop.report import action_text, write_report
from linelab.loop.runner import LoopPolicy
from linelab.loop.session import RUN_KIND, run_session
from linelab.render import print_rows


class LoopParams(BaseModel):
    simulator: str = Field("twin", description="the simulated line to run the loop on (twin, zoo)")
    scenario: str | None = Field(None, description="the simulator's scenario (a name, or for the twin a YAML "
                                                   "file) [default: the simulator's own]")
    seed: int = Field(0, description="random seed")
    units: int | None = Field(None, gt=0, description="units to produce [default: the scenario's length]")
    chunk: int | None = Field(None, gt=0, description="units between two looks at the data "
                                                     "[default: --look-hours of the line's production]")
    look_hours: float = Field(4.0, gt=0, description="line time between two looks at the data")
    optimise: bool = Field(True, description="run recipe experiments between incidents")
    report: Path = Field(Path("reports"), description="folder for the HTML report",
                        json_schema_extra={"path": "output-dir"})


class LoopResult(Result):
    scenario: str
    seed: int
    units: int
    first_pass_yield: dict[str, float]
    copq_per_unit: dict[str, float]
    yield_gap_closed: float
    learning_rate: dict[str, float]
    recurrence_ratio: float | None
    recall_accuracy: float | None
    recurrences: int
    problems_injected: int
    problems_fixed_by_loop: int
    actions_applied: int
    actions_that_did_not_help: int
    false_problems_acted_on: int
    incidents: list[dict[str, Any]]
    knowhow: list[dict[str, Any]]
    adopted_recipe: dict[str, float] | None
    report: str
    seconds_loop: float

    def render(self, console: Console) -> None:
        fy = self.first_pass_yield
        console.print(f"[bold]{self.scenario}[/bold] (seed {self.seed}, {self.units:,} units): first-pass yield "
                      f"no loop {fy['none']:.2%} · [bold]LineLab {fy['loop']:.2%}[/bold] · oracle {fy['oracle']:.2%}")
        console.print(f"yield gap closed [bold]{self.yield_gap_closed:.2f}[/bold]; learning rate "
                      f"{self.learning_rate['loop']:.1%} per doubling (no loop {self.learning_rate['none']:.1%})"
                      + (f"; recurrence time-to-fix ratio {self.recurrence_ratio:.2f}"
                         if self.recurrence_ratio is not None else "")
                      + (f"; recall accuracy {self.recall_accuracy:.0%}" if self.recall_accuracy is not None else ""))
        cols = ("problem_id", "onset_unit", "detected_unit", "fixed_unit", "action", "cause", "resolved_unit",
                "knowhow_reused")
        rows = [{k: action_text(i.get(k)) if k == "action" else i.get(k) for k in cols} for i in self.incidents]
        print_rows(console, rows, "incidents (in units produced)",
                   headers={"problem_id": "problem", "onset_unit": "onset", "detected_unit": "detected",
                            "fixed_unit": "fixed", "resolved_unit": "verified", "knowhow_reused": "know-how reused"})
        console.print(f"actions applied {self.actions_applied}, did not help {self.actions_that_did_not_help}, "
                      f"false problems acted on {self.false_problems_acted_on}")
        console.print(f"report: [bold]{self.report}[/bold]")


@command("loop", LoopParams, rest=False)  # it empties its workspace first
def loop(p: LoopParams, ctx: Context) -> LoopResult:
    """Run the closed loop on a simulated line, against no loop and an oracle; write the report.

    It writes to a workspace of its own (./linelab-sim unless --workspace says otherwise) and
    refuses one that holds a real line's data."""
    policy = LoopPolicy(chunk=p.chunk, look_hours=p.look_hours, optimise_recipe=p.optimise)
    total = p.units or open_simulator(p.simulator, p.scenario, p.seed).planned_units or 0
    with ctx.progress(3 * total or None, f"loop on {p.simulator} {p.scenario or ''}".strip()) as advance:
        result = run_session(ctx.workspace_path, p.scenario, p.seed, p.units, policy, advance=advance,
                             simulator=p.simulator)
    path = write_report(result, p.report)
    return LoopResult(
        **{k: result[k] for k in LoopResult.model_fields if k in result and k not in ("report",)},
        adopted_recipe=result["recipe"]["adopted"], report=str(path),
    )


class LearningParams(BaseModel):
    pass


class LearningResult(Result):
    scenario: str
    yield_gap_closed: float
    recurrence_ratio: float | None = None
    curves: dict[str, dict[str, list[float]]]
    incidents: list[dict[str, Any]] = Field(default_factory=list, description="the run's incident table")

    def render(self, console: Console) -> None:
        console.print(f"[bold]{self.scenario}[/bold]: yield gap closed [bold]{self.yield_gap_closed:.2f}[/bold]"
                      + (f", recurrence time-to-fix ratio {self.recurrence_ratio:.2f}"
                         if self.recurrence_ratio is not None else ""))
        rows = []
        for name, c in self.curves.items():
            y, units = c.get("yield") or [], c.get("units") or []
            tenth = max(1, len(y) // 10)  # first and last tenth of the run: where the curve starts and ends
            rows.append({"run": name, "units": int(units[-1]) if units else 0,
                         "first_tenth_yield": sum(y[:tenth]) / tenth if y else None,
                         "last_tenth_yield": sum(y[-tenth:]) / tenth if y else None,
                         "mean_yield": sum(y) / len(y) if y else None})
        print_rows(console, rows, "first-pass yield along the run",
                   headers={"first_tenth_yield": "first tenth", "last_tenth_yield": "last tenth"})
        cols = ("problem_id", "onset_unit", "detected_unit", "fixed_unit", "action", "knowhow_reused")
        rows = [{k: action_text(i.get(k)) if k == "action" else i.get(k) for k in cols} for i in self.incidents]
        print_rows(console, rows, "incidents (in units produced)",
                   headers={"problem_id": "problem", "onset_unit": "onset", "detected_unit": "detected",
                            "fixed_unit": "fixed", "knowhow_reused": "know-how reused"})
        console.print("[dim]the curves point by point: --json; the plot: linelab serve → Learning curve[/dim]")


@command("learning", LearningParams, writes=False)
def learning(p: LearningParams, ctx: Context) -> LearningResult:
    """The learning curves of the last `linelab loop` run in this workspace."""
    last = ctx.workspace.get_artifact(RUN_KIND, "latest")
    if last is None:
        raise UserError("no loop has run in this workspace yet (run `linelab loop`)")
    return LearningResult(scenario=last["scenario"], yield_gap_closed=last["yield_gap_closed"],
                          recurrence_ratio=last.get("recurrence_ratio"), curves=last["curves"],
                          incidents=last.get("incidents", []))
