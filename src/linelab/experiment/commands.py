"""Experiment commands: design, run, analyse, status, verdict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.experiment import experiments as ex
from linelab.experiment import outbox
from linelab.experiment.verdict import Verdict
from linelab.render import fmt, print_rows, recipe_moves, recipe_rows, recipe_text

DesignKind = Literal["split", "full", "fractional", "ccd", "bbd", "optimise"]


def parse_assignments(text: str | None, what: str) -> dict[str, float]:
    """"a=1,b=2.5" -> {"a": 1.0, "b": 2.5}."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"{what}: expected name=number, got {part.strip()!r}") from None
        if not sep:
            raise UserError(f"{what}: expected name=number, got {part.strip()!r}")
    return out


def parse_factors(text: str | None) -> dict[str, tuple[float, float]] | list[str]:
    """"a=4:8,b=20:60" -> ranges; "a,b" -> names (ranges default around the current recipe)."""
    names: list[str] = []
    ranges: dict[str, tuple[float, float]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, rng = part.partition("=")
        if not sep:
            names.append(name.strip())
            continue
        lo, colon, hi = rng.partition(":")
        try:
            ranges[name.strip()] = (float(lo), float(hi))
        except ValueError:
            raise UserError(f"--factors: expected name=low:high, got {part!r}") from None
        if not colon:
            raise UserError(f"--factors: expected name=low:high, got {part!r}")
    if names and ranges:
        raise UserError("--factors: give every factor a range (name=low:high) or none")
    return ranges or names


class DesignParams(BaseModel):
    kind: DesignKind = Field(..., description="split (A/B of --change), full, fractional, ccd, bbd (designed "
                             "experiments over --factors) or optimise (Bayesian optimisation)",
                             json_schema_extra={"argument": True})
    change: str | None = Field(None, description="split: the change, e.g. setpoint=249,speed=80 "
                                                 "(settings of the line's recipe)")
    factors: str | None = Field(None, description="designs: name=low:high,... or names (range: half the safe span "
                                "around the current recipe); optimise: names to tune [default: all]")
    units_per_run: int = Field(1000, gt=0, description="designs: units built at each run")
    center: int | None = Field(None, ge=0, description="designs: centre runs [default: 4 ccd, 3 bbd, 0 factorial]")
    lot_size: int = Field(250, gt=0, description="split: units per lot; lots alternate between the arms")
    test: Literal["msprt", "bayes"] = Field("msprt", description="split: sequential test")
    alpha: float = Field(0.05, gt=0, lt=1, description="split: false-adoption rate the test allows")
    max_units: int = Field(80_000, gt=0, description="split / confirmation: units (both arms) before 'inconclusive'")
    budget: int = Field(60_000, gt=0, description="optimise: units the search may use")
    units_per_trial: int = Field(2000, gt=0, description="optimise: units per trial")
    max_loss: float = Field(0.01, gt=0, lt=1, description="optimise: yield a trial may risk below the incumbent")
    no_confirm: bool = Field(False, description="designs / optimise: skip the split run that confirms the "
                             "candidate (then nothing can be adopted on the model alone, except a design's fit)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of run order, arm order and optimiser")
    problem_id: str | None = Field(None, description="the problem this experiment answers")
    note: str = Field("", description="free text")


class ExperimentResult(Result):
    experiment: dict[str, Any]

    def render(self, console: Console) -> None:
        e = self.experiment
        console.print(f"experiment [bold]{e['id']}[/bold] ({e['kind']}) — {e['status']}")
        spec = e["spec"]
        if e["kind"] == "split":
            console.print(f"change: {spec['change']}  lots of {spec['lot_size']} units, {spec['test']} test, "
                          f"alpha {spec['alpha']}, at most {spec['max_units']:,} units")
        elif e["kind"] == "doe":
            plan = e["plan"]
            console.print(f"{spec['design']} design, {len(plan['runs'])} runs x {spec['units_per_run']:,} units")
            print_rows(console, [{"run": i + 1, **r} for i, r in enumerate(plan["runs"])], "runs (in run order)", 60)
        else:
            console.print(f"optimise {', '.join(spec['params'])} with {spec['sampler']}: "
                          f"budget {spec['budget_units']:,} units, {spec['units_per_trial']:,} per trial, "
                          f"trials risk at most "
                          f"{100 * spec['max_loss']:.1f} pt")
        results = e.get("results") or {}
        analysis = results.get("analysis")
        if analysis:
            rows = [{"term": eff["term"], "effect": f"{100 * eff['effect']:+.2f}",
                     "interval": f"{100 * eff['lower']:+.2f} … {100 * eff['upper']:+.2f}",
                     "p": f"{eff['p_value']:.2g}"} for eff in analysis["effects"]]
            confidence = f"{100 * analysis.get('confidence', 0.95):.0f}% "
            print_rows(console, rows, "effects on first-pass yield in points, low → high level (squares: curvature), "
                       f"with their {confidence}intervals")
            lo, hi = analysis["optimum_interval"]
            console.print(f"fitted optimum {recipe_text(analysis['optimum'])} -> "
                          f"{fmt(analysis['optimum_yield'], 'yield')} [{fmt(lo, 'yield')}, {fmt(hi, 'yield')}]")
        if results.get("steps"):
            console.print(f"search: {len(results['steps'])} trials, incumbent {recipe_text(results['incumbent'])} "
                          f"(est. {fmt(results['incumbent_yield'], 'yield')})")
        schedule = e.get("schedule") or []
        if schedule:
            line = e.get("line") or {}
            console.print(f"{len(schedule)} of {line.get('lots_planned', len(schedule))} lots sent through the outbox; "
                          "acknowledge each when it starts (`linelab act done ACT-ID --at TIME`), ingest the data, "
                          f"then `linelab experiment analyse {e['id']}`")
            print_rows(console, [{"lot": s["lot"], "arm": s["arm"], "action": s["action_id"], **s["settings"]}
                                 for s in schedule], "lots (in run order)", 12)
        units = results.get("units")
        if units:
            sw = results.get("switches") or {}
            console.print(f"units counted: {units['counted']:,}; not counted: {units['after_failed_switch']:,} after a "
                          f"failed switch or another recipe change, {units['past_unacknowledged_switch']:,} past a "
                          f"lot whose next switch is unacknowledged. Switches: {sw.get('acknowledged', 0)} done, "
                          f"{sw.get('failed', 0)} failed, {sw.get('waiting', 0)} waiting")
        if e.get("verdict"):
            console.print("[bold]verdict[/bold] " + Verdict.from_dict(e["verdict"]).summary())
        if e.get("adoption"):
            a = e["adoption"]
            console.print(f"adopted: action {a['action_id']} {a['status']} via {a['via']}: {recipe_text(a['change'])}")
        for name, path in (e.get("plots") or {}).items():
            console.print(f"plot {name}: {path}")


def _design(p: DesignParams, ctx: Context) -> dict[str, Any]:
    ws = ctx.workspace
    if p.kind == "split":
        return ex.design_split(ws, parse_assignments(p.change, "--change"), lot_size=p.lot_size, test=p.test,
                               alpha=p.alpha, max_units=p.max_units, seed=p.seed, problem_id=p.problem_id, note=p.note)
    factors = parse_factors(p.factors)
    if p.kind == "optimise":
        if isinstance(factors, dict):
            raise UserError("optimise tunes within the safe bounds: give --factors as names only")
        return ex.design_optimise(ws, factors or None, budget_units=p.budget, units_per_trial=p.units_per_trial,
                                  max_loss=p.max_loss, confirm=not p.no_confirm, seed=p.seed, problem_id=p.problem_id,
                                  note=p.note, confirm_max_units=p.max_units)
    if not factors:
        raise UserError(f"a {p.kind} design needs --factors")
    return ex.design_doe(ws, p.kind, factors, units_per_run=p.units_per_run, center=p.center, confirm=not p.no_confirm,
                         seed=p.seed, problem_id=p.problem_id, note=p.note, confirm_max_units=p.max_units)


@command("experiment design", DesignParams)
def experiment_design(p: DesignParams, ctx: Context) -> ExperimentResult:
    """Design an experiment: a split-run A/B, a factorial / CCD / Box-Behnken design, or an optimisation."""
    return ExperimentResult(experiment=_design(p, ctx))


class RunParams(BaseModel):
    id: str = Field(..., description="experiment id (EXP-0001)", json_schema_extra={"argument": True})
    scenario: str | None = Field(None, description="twin scenario when the workspace holds no line yet "
                                 "[default: clean]", json_schema_extra={"path": "name"})
    seed: int | None = Field(None, ge=0, le=2**32 - 1,
                             description="twin seed when the workspace holds no line yet [default: 0]")
    no_record: bool = Field(False, description="do not store the units built in the workspace")
    adopt: bool = Field(False, description="apply an adopted change to the line at once")
    lots: int | None = Field(None, gt=0, description="real line (outbox): lots to send now; again on a running "
                             "split run: the next ones [default: enough for its --max-units]")


@command("experiment run", RunParams)
def experiment_run(p: RunParams, ctx: Context) -> ExperimentResult:
    """Run an experiment on the simulated line until its verdict (progress on stderr); on a real line, send
    a split run's lots through the outbox (`experiment analyse` then decides from the data)."""
    ws = ctx.workspace
    e = ex.get_experiment(ws, p.id)
    if ex.runs_through_outbox(ws):
        left = outbox.planned_lots(e["spec"]) - len(e.get("schedule") or []) if e["kind"] == "split" else 0
        with ctx.progress(float(min(left, p.lots or left)), f"experiment {p.id}: lots to the outbox") as advance:
            return ExperimentResult(experiment=ex.run_experiment(ws, p.id, lots=p.lots, progress=advance))
    total = _expected_units(e)
    with ctx.progress(total, f"experiment {p.id}") as advance:
        e = ex.run_experiment(ws, p.id, scenario=p.scenario, seed=p.seed, record=not p.no_record, adopt=p.adopt,
                              progress=advance)
    return ExperimentResult(experiment=e)


def _expected_units(e: dict[str, Any]) -> float | None:
    s = e["spec"]
    if e["kind"] == "split":
        return float(s["max_units"])
    if e["kind"] == "doe":
        return float(s["units_per_run"] * len(e["plan"]["runs"]))
    return float(s["budget_units"])


class AnalyseParams(BaseModel):
    id: str = Field(..., description="experiment id of a split run sent through the outbox",
                    json_schema_extra={"argument": True})
    adopt: bool = Field(False, description="send an adopted change to the outbox at once")


@command("experiment analyse", AnalyseParams)
def experiment_analyse(p: AnalyseParams, ctx: Context) -> ExperimentResult:
    """Analyse a real line's split run from the data ingested since its lots were acknowledged: the verdict
    once the sequential test decides, else "continue"."""
    return ExperimentResult(experiment=ex.analyse_experiment(ctx.workspace, p.id, adopt=p.adopt))


class StatusParams(BaseModel):
    id: str | None = Field(None, description="one experiment [default: list them all]",
                           json_schema_extra={"argument": True})


class StatusResult(Result):
    experiments: list[dict[str, Any]]
    experiment: dict[str, Any] | None = None
    recipe_trials: list[dict[str, Any]] = Field(default_factory=list, description="the recipe trials the last "
                                                "simulated loop ran between incidents (it keeps them in its run)")
    recipe: list[dict[str, str]] = Field(default_factory=list, description="the last loop run's recipe: each "
                                         "setting before and after, rounded to its step, with its bounds")
    recipe_adopted_at_unit: int | None = None
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict, description="the profile's recipe settings "
                                                "(bounds, unit, step) by name")

    def render(self, console: Console) -> None:
        if self.experiment is not None:
            ExperimentResult(experiment=self.experiment).render(console)
            return
        print_rows(console, self.experiments, "experiments")
        if self.recipe:
            adopted = (f", adopted at unit {self.recipe_adopted_at_unit:,}"
                       if self.recipe_adopted_at_unit is not None else "")
            print_rows(console, self.recipe, f"recipe of the last loop run: before and after{adopted}")
        if self.recipe_trials:
            start = self.recipe_trials[0].get("start") or {}
            rows = [{"at_unit": t.get("unit"), "units": t.get("units"), "first_pass_yield": t.get("first_pass_yield"),
                     "changed": recipe_moves(t.get("recipe") or {}, start, self.settings)}
                    for t in self.recipe_trials]
            print_rows(console, rows, f"recipe trials of the last loop run ({len(rows)})",
                       headers={"first_pass_yield": "first-pass yield"})


@command("experiment status", StatusParams, writes=False)
def experiment_status(p: StatusParams, ctx: Context) -> StatusResult:
    """List experiments, or show one: its plan, results so far, verdict and plots."""
    ws = ctx.workspace
    if p.id:
        return StatusResult(experiments=[], experiment=ex.get_experiment(ws, p.id))
    # The simulated loop searches the recipe in trials of its own and keeps them in its run record
    # ("loop_run"): data a later stage wrote, read here so the trials are not reported as "none".
    run = ws.get_artifact("loop_run", "latest") or {}
    recipe = run.get("recipe") or {}
    trials = [{**t, "start": recipe.get("start") or {}} for t in recipe.get("trials") or []]
    from linelab.profile import workspace_profile

    profile = workspace_profile(ws.path) if recipe else None
    settings = {s.name: s.model_dump() for s in profile.recipe} if profile else {}
    rows = recipe_rows(recipe.get("start") or {}, recipe.get("adopted"), settings) if recipe else []
    return StatusResult(experiments=ex.summary_rows(ws), recipe_trials=trials, recipe=rows,
                        recipe_adopted_at_unit=recipe.get("adopted_at_unit") if recipe.get("adopted") else None,
                        settings=settings)


class VerdictParams(BaseModel):
    id: str = Field(..., description="experiment id", json_schema_extra={"argument": True})
    adopt: bool = Field(False, description="make an adopted change the line's recipe "
                       "(twin: at once; real line: outbox)")


class VerdictResult(Result):
    id: str
    decision: str
    reason: str
    summary: str
    verdict: dict[str, Any]
    change: dict[str, float]
    adoption: dict[str, Any] | None = None

    def render(self, console: Console) -> None:
        colour = {"adopt": "green", "reject": "red"}.get(self.decision, "yellow")
        console.print(f"[bold {colour}]{self.decision}[/bold {colour}] {self.id}: {self.summary}")
        v = self.verdict
        print_rows(console, [v["control"], v["treatment"]], "arms")
        if self.change:
            console.print(f"change: {self.change}")
        if self.adoption:
            console.print(f"adopted through action {self.adoption['action_id']} ({self.adoption['status']} via "
                          f"{self.adoption['via']})")

    def exit_code(self) -> int:
        return 0


@command("experiment verdict", VerdictParams)
def experiment_verdict(p: VerdictParams, ctx: Context) -> VerdictResult:
    """The verdict of a run experiment (adopt / reject / inconclusive, with the numbers); --adopt applies it."""
    ws = ctx.workspace
    e = ex.get_experiment(ws, p.id)
    if not e.get("verdict"):
        if (e.get("line") or {}).get("source") == "outbox":
            raise UserError(f"experiment {p.id} is running on the line: `linelab experiment analyse {p.id}` reads "
                            "the data that came back")
        raise UserError(f"experiment {p.id} is {e['status']}: run it first (`linelab experiment run {p.id}`)")
    if p.adopt:
        e = ex.adopt_change(ws, p.id)
    v = Verdict.from_dict(e["verdict"])
    return VerdictResult(id=e["id"], decision=v.decision, reason=v.reason, summary=v.summary(), verdict=e["verdict"],
                         change=e["verdict"].get("change") or {}, adoption=e.get("adoption"))
