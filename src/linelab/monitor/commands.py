"""Monitor commands: run the engine, list and show problems, move their status, TEP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.monitor import problems as pb
from linelab.render import print_rows

Rows = list[dict[str, Any]]


# -- monitor run ---------------------------------------------------------------------------------
class MonitorRunParams(BaseModel):
    reset: bool = Field(False, description="forget the saved monitor state and start from the first batch",
                        json_schema_extra={"destructive": True})
    reference_hours: float | None = Field(None, gt=0, description="phase I: hours of data each series learns its "
                                          "limits from (default: the monitor's own, as the loop uses)")
    max_batches: int | None = Field(None, gt=0, description="process at most this many new ingest batches")
    lot_levels: bool = Field(False, description="watch readings that move with a material's lots net of each lot's "
                                                "level (a new engine only; about twice the time on long runs)")


class MonitorRunResult(Result):
    batches: list[int]
    records: dict[str, int]
    alarms: int
    problems_opened: list[str]
    problems_updated: list[str]
    detectors: dict[str, dict[str, Any]]
    open_problems: Rows

    def render(self, console: Console) -> None:
        if self.batches == [0, 0]:
            console.print("nothing new since the last run")
        else:
            rec = ", ".join(f"{v:,} {k}" for k, v in self.records.items())
            console.print(f"batches {self.batches[0]}–{self.batches[1]}: {rec}; {self.alarms} alarm(s)")
        if self.problems_opened:
            console.print(f"[bold red]new problems:[/bold red] {', '.join(self.problems_opened)}")
        if self.problems_updated:
            console.print(f"updated: {', '.join(self.problems_updated)}")
        print_rows(console, self.open_problems, "open problems")


@command("monitor run", MonitorRunParams)
def monitor_run(p: MonitorRunParams, ctx: Context) -> MonitorRunResult:
    """Run the detectors over everything ingested since the last run; file problems."""
    from linelab.monitor.engine import EngineConfig, MonitorEngine  # the detectors' libraries: only here

    ws = ctx.workspace
    if p.reset:
        path = MonitorEngine.state_path(ws)
        if path.exists():
            path.unlink()
    config = EngineConfig(lot_levels=p.lot_levels)
    if p.reference_hours is not None:
        config.reference_hours = p.reference_hours
    engine = MonitorEngine.load(ws, config)
    todo = max(0, ws.last_batch_seq() - engine.last_seq)
    with ctx.progress(todo, "monitoring") as advance:
        rep = engine.run(ws, progress=advance, max_batches=p.max_batches)
    return MonitorRunResult(
        batches=list(rep.batches), records=rep.records, alarms=rep.alarms,
        problems_opened=rep.problems_opened, problems_updated=rep.problems_updated,
        detectors=rep.detectors,
        open_problems=[_row(x) for x in pb.list_problems(ws, fields=pb.LISTING_FIELDS) if x["status"] in pb.ACTIVE],
    )


def _row(p: dict[str, Any]) -> dict[str, Any]:
    """A problem's line in a listing: reads only `pb.LISTING_FIELDS`."""
    return {
        "id": p["id"],
        "status": p["status"],
        "about": p["entity"],
        "since": (p["onset"].get("t") or "")[:16].replace("T", " "),
        "units": p["severity"]["units_affected"],
        "lost_units": p["severity"]["yield_lost_units"],
        "description": p["description"],
    }


# -- problems ------------------------------------------------------------------------------------
class ProblemsParams(BaseModel):
    status: str | None = Field(None, description=f"only problems in this status ({', '.join(pb.STATUSES)})")


class ProblemsResult(Result):
    problems: Rows

    def render(self, console: Console) -> None:
        if console.width >= 120 or not self.problems:
            print_rows(console, self.problems, "problems")
            return
        # A narrow terminal gave the description a column of twenty characters: the table keeps the
        # short fields and each description follows in full, under its problem's id.
        print_rows(console, [{k: v for k, v in r.items() if k != "description"} for r in self.problems], "problems")
        for r in self.problems:
            console.print(f"[bold]{r['id']}[/bold] {r.get('description', '')}", highlight=False)


@command("problems", ProblemsParams, writes=False)
def problems(p: ProblemsParams, ctx: Context) -> ProblemsResult:
    """List the problems the monitor has found."""
    return ProblemsResult(problems=[_row(x) for x in pb.list_problems(ctx.workspace, p.status, pb.LISTING_FIELDS)])


class ProblemShowParams(BaseModel):
    id: str = Field(..., description="problem id, e.g. PRB-0001", json_schema_extra={"argument": True})
    plot: str = Field("png", description="control chart to write: png, html, both or none")
    out: Path | None = Field(None, description="folder for the chart (default: <workspace>/reports)",
                             json_schema_extra={"path": "output-dir"})


class ProblemShowResult(Result):
    problem: pb.Problem = Field(description="the problem without its chart data (and its signals without "
                                            "their chart data and units)")
    charts: list[str]

    def render(self, console: Console) -> None:
        p = self.problem
        console.print(f"[bold]{p.id}[/bold] [{p.status}] {p.entity}")
        console.print(p.description)
        console.print(f"onset {p.onset.t} (unit {p.onset.unit}); first evidence "
                      f"{p.first_evidence.t}; latest {p.latest_evidence.t}")
        sev = p.severity
        losing = f"; losing {100 * sev['loss_rate']:.3g} % of units now" if "loss_rate" in sev else ""
        console.print(f"units affected {sev['units_affected']:,}; yield lost {sev['yield_lost_units']:,} units"
                      f"{losing}; {sev['signals']} signal(s)")
        rows = [{"detector": s.detector, "scope": ", ".join(f"{k}={v}" for k, v in s.scope.items()),
                 "first": s.first.t, "latest": s.latest.t,
                 "effect": ", ".join(f"{k}={v:.3g}" for k, v in s.effect.items() if isinstance(v, float))}
                for s in p.signals]
        print_rows(console, rows, "signals")
        for c in self.charts:
            console.print(f"chart: {c}")


@command("problem show", ProblemShowParams, writes=False)  # charts are files; the store is only read
def problem_show(p: ProblemShowParams, ctx: Context) -> ProblemShowResult:
    """Show one problem: what, where, since when, how bad, and its control chart."""
    if p.plot not in ("png", "html", "both", "none"):
        raise UserError("--plot is one of png, html, both, none")
    problem = pb.get_problem(ctx.workspace, p.id)
    out = p.out or Path(ctx.workspace.path) / "reports"
    charts: list[str] = []
    if p.plot in ("png", "both"):
        charts.append(str(chart_png(problem, out / f"{p.id}.png")))
    if p.plot in ("html", "both"):
        charts.append(str(chart_html(problem, out / f"{p.id}.html")))
    slim = {k: v for k, v in problem.items() if k != "chart"}
    slim["signals"] = [{k: v for k, v in s.items() if k not in ("chart", "units")} for s in problem["signals"]]
    return ProblemShowResult(problem=pb.Problem.model_validate(slim), charts=charts)


class ProblemStatusParams(BaseModel):
    id: str = Field(..., description="problem id", json_schema_extra={"argument": True})
    status: str = Field(..., description=f"new status: {', '.join(pb.STATUSES)}", json_schema_extra={"argument": True})
    note: str = Field("", description="why (kept in the problem's history)")


class ProblemStatusResult(Result):
    id: str
    status: str
    history: Rows

    def render(self, console: Console) -> None:
        console.print(f"{self.id} is now [bold]{self.status}[/bold]")


@command("problem status", ProblemStatusParams)
def problem_status(p: ProblemStatusParams, ctx: Context) -> ProblemStatusResult:
    """Move a problem along open → diagnosed → fixing → resolved (or mark it a false alarm)."""
    done = pb.set_status(ctx.workspace, p.id, p.status, p.note)
    return ProblemStatusResult(id=done["id"], status=done["status"], history=done["history"])


# -- charts --------------------------------------------------------------------------------------
def _series(problem: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np

    chart = problem.get("chart") or {}
    if not chart.get("t"):
        raise UserError(f"problem {problem['id']} has no chart data")
    t = np.array(chart["t"], dtype="datetime64[s]").astype(object)
    return list(t), chart


def chart_png(problem: dict[str, Any], path: Path) -> Path:
    """Control chart of the problem's lead signal as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t, c = _series(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, c["value"], lw=0.8, marker=".", ms=2, label=c.get("label", "value"))
    ax.axhline(c["centre"], color="green", lw=1, label="centre (reference)")
    for key, style in (("lcl", "--"), ("ucl", "--"), ("lsl", ":"), ("usl", ":")):
        if c.get(key) is not None:
            ax.axhline(c[key], color="red" if key in ("lcl", "ucl") else "black", ls=style, lw=1, label=key.upper())
    if c.get("onset_t"):
        ax.axvline(np.datetime64(c["onset_t"]).astype(object), color="orange", lw=1.5, label="estimated onset")
    ax.set_title(f"{problem['id']}: {problem['entity']}", loc="left")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chart_html(problem: dict[str, Any], path: Path) -> Path:
    """The same chart, interactive (plotly, self-contained HTML)."""
    import plotly.graph_objects as go

    t, c = _series(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = go.Figure(go.Scatter(x=t, y=c["value"], mode="lines+markers", name=c.get("label", "value")))
    fig.add_hline(y=c["centre"], line_color="green", annotation_text="centre")
    for key in ("lcl", "ucl", "lsl", "usl"):
        if c.get(key) is not None:
            fig.add_hline(y=c[key], line_dash="dash", annotation_text=key.upper())
    if c.get("onset_t"):
        fig.add_vline(x=c["onset_t"], line_color="orange")
    fig.update_layout(title=f"{problem['id']}: {problem['description']}", height=450)
    fig.write_html(path, include_plotlyjs="cdn")
    return path


# -- TEP -----------------------------------------------------------------------------------------
class TepParams(BaseModel):
    data: Path = Field(..., description="folder with the Braatz TEP files (d00.dat, dNN_te.dat)",
                      json_schema_extra={"path": "input"})
    alarms_out: Path | None = Field(None, description="write dNN_te.alarms files (one 0/1 per sample) here",
                                    json_schema_extra={"path": "output-dir"})
    runs: list[str] | None = Field(None, description="test runs to score, e.g. d01_te (default: all)")


class TepResult(Result):
    faults: Rows
    summary: dict[str, float]
    alarm_files: list[str]

    def render(self, console: Console) -> None:
        rows = [{"fault": f["fault"], "FDR %": round(f["fdr"], 1), "FAR %": round(f["far"], 1),
                 "delay (samples)": f["delay"], "published T2 %": f["published_t2"],
                 "published SPE %": f["published_spe"]} for f in self.faults]
        print_rows(console, rows, "Tennessee Eastman: LineLab dynamic PCA monitor vs published PCA")
        s = self.summary
        console.print(f"mean FDR over 21 faults {s['fdr_mean_21']:.1f}% (published T2 {s['published_t2_mean_21']:.1f}, "
                      f"SPE {s['published_spe_mean_21']:.1f}); over 18 {s['fdr_mean_18']:.1f}% "
                      f"(T2 {s['published_t2_mean_18']:.1f}, SPE {s['published_spe_mean_18']:.1f})")
        console.print(f"false alarms: {s['far_fault_runs']:.2f}% of normal samples in fault runs, "
                      f"{s['far_d00_te']:.2f}% of d00_te")


@command("monitor tep", TepParams, rest=False)  # reads a folder of data files
def monitor_tep_cmd(p: TepParams, ctx: Context) -> TepResult:
    """Tennessee Eastman: ingest the runs as signals, fit on d00, score every fault run."""
    from dataclasses import asdict

    from linelab.monitor.tep import monitor_tep, write_alarm_files

    if not (p.data / "d00.dat").exists():
        raise UserError(f"{p.data}: no d00.dat (the TEP training run) there")
    res = monitor_tep(p.data, ctx.workspace, runs=p.runs)
    files = [str(x) for x in write_alarm_files(res, p.alarms_out)] if p.alarms_out else []
    return TepResult(faults=[asdict(f) for f in res.faults], summary=res.summary(), alarm_files=files)
