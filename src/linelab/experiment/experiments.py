"""Experiments as workspace records: design, run on the line, verdict, adoption.

An experiment is an artefact (kind "experiment"):

    {id, kind: split | doe | optimise, status: designed | running | decided | adopted,
     spec: {...what to try and how to judge it}, plan: {...runs or arms},
     line: {source, scenario, seed, first_unit, last_unit}, results: {...}, verdict: {...},
     adoption: {action_id, status}, plots: {name: path}}

`split` compares a change against the current recipe in alternating lots with a sequential
test. `doe` runs a designed experiment and fits it; `optimise` searches the recipe with the
trust-region optimiser. Both end, by default, with a confirmation split run of what they
found against the current recipe: that run's verdict is the one that can adopt a change,
so nothing reaches the line on the strength of a model alone.

On a real line (the profile's control channel is the outbox) a split run is a set of
instructions: `run` sends its lots as set_recipe actions through the outbox (`experiment.outbox`),
the line acknowledges each switch (`linelab act done`), and `analyse` sorts the units ingested
since into the arms and runs the same sequential test, to the same verdict. Designs and
optimisation run on a simulated line only.

Adopting writes a set_recipe action (source "experiment") that goes through the control
interface: applied to a simulated line at once, or queued in the outbox for a real line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from linelab.act import actions as act
from linelab.act.control import LineControl, Outbox
from linelab.act.simulation import HeldLine, open_workspace_line, record_simulation, workspace_simulation
from linelab.errors import NotFound, UserError
from linelab.experiment import outbox
from linelab.experiment.designs import Design, Factor, make_design
from linelab.experiment.verdict import Verdict
from linelab.profile import Setting, require_profile
from linelab.profile.actions import merge_recipe
from linelab.store.schema import RECORD_TABLES

KIND = "experiment"
KINDS = ("split", "doe", "optimise")
Progress = Callable[[float], None]


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def recipe_params(ws: Any) -> dict[str, Setting]:
    """The recipe settings the line's profile lets experiments change."""
    return {s.name: s for s in require_profile(ws.path).recipe}


def current_recipe(ws: Any) -> dict[str, float]:
    """The line's recipe now: the profile's defaults (or the simulated run's starting recipe),
    updated by every recipe action applied since."""
    recipe = require_profile(ws.path).default_recipe()
    held = workspace_simulation(ws)
    if held is not None:
        recipe.update(held[0].get("recipe") or {})
    applied = [a for a in ws.list_artifacts("action", status="applied") if a["kind"] in ("set_param", "set_recipe")]
    for a in sorted(applied, key=lambda a: (a.get("applied") or {}).get("unit") or 0):
        p = a["params"]
        recipe.update({p["name"]: float(p["value"])} if a["kind"] == "set_param" else
                      {k: float(v) for k, v in p["params"].items()})
    return recipe


def get_experiment(ws: Any, exp_id: str) -> dict[str, Any]:
    e = ws.get_artifact(KIND, exp_id)
    if e is None:
        raise NotFound(f"no experiment {exp_id!r}; `linelab experiment status` lists them")
    return e


def _save(ws: Any, e: dict[str, Any]) -> None:
    e["updated"] = _now()
    ws.put_artifact(KIND, e["id"], e)


def _event(ws: Any, e: Mapping[str, Any], what: str, t: datetime | None = None, **detail: Any) -> None:
    row = {"t": [t or datetime.now(UTC).replace(tzinfo=None)], "kind": ["experiment"], "station": [None],
           "machine": [None], "target": [e["id"]],
           "detail": [json.dumps({"experiment_id": e["id"], "what": what, **detail}, sort_keys=True, default=str)]}
    ws.ingest_tables({"events": pa.table(row, schema=RECORD_TABLES["events"])},
                     source=f"linelab:experiment:{e['id']}:{what}")


# -- design ------------------------------------------------------------------------------------
def design_split(ws: Any, change: Mapping[str, float], *, lot_size: int = 250, test: str = "msprt",
                 alpha: float = 0.05, max_units: int = 80_000, min_gain: float = 0.0, seed: int = 0,
                 problem_id: str | None = None, note: str = "") -> dict[str, Any]:
    """A split-run A/B of `change` against the current recipe."""
    if not change:
        raise UserError("a split run needs a change, e.g. --change setpoint=249 (a setting of the line's recipe)")
    base = current_recipe(ws)
    merge_recipe(require_profile(ws.path), base, change)  # refuses out-of-bounds values with the bounds in the message
    spec = {"change": dict(change), "lot_size": lot_size, "test": test, "alpha": alpha, "max_units": max_units,
            "min_gain": min_gain, "seed": seed}
    plan = {"control": base, "treatment": {**base, **change}}
    return _create(ws, "split", spec, plan, problem_id, note)


def default_ranges(ws: Any, names: list[str], base: Mapping[str, float],
                   width: float = 0.5) -> dict[str, tuple[float, float]]:
    """A box of `width` x each parameter's safe span around the current recipe, inside the bounds."""
    params = recipe_params(ws)
    out = {}
    for n in names:
        s = params[n]
        half = width * (s.high - s.low) / 2
        lo, hi = max(s.low, base[n] - half), min(s.high, base[n] + half)
        out[n] = (float(lo), float(hi))
    return out


def design_doe(ws: Any, design_kind: str, factors: Mapping[str, tuple[float, float]] | list[str], *,
               units_per_run: int = 1000, center: int | None = None, replicates: int = 1, model: str = "auto",
               confirm: bool = True, seed: int = 0, problem_id: str | None = None, note: str = "",
               confirm_max_units: int = 80_000) -> dict[str, Any]:
    """A designed experiment (full, fractional, ccd, bbd) over recipe parameters."""
    params = recipe_params(ws)
    base = current_recipe(ws)
    names = list(factors)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise UserError(f"unknown recipe parameter(s) {unknown}; known: {', '.join(params)}")
    ranges = dict(factors) if isinstance(factors, Mapping) else default_ranges(ws, names, base)
    for n, (lo, hi) in ranges.items():
        if lo < params[n].low or hi > params[n].high:
            raise UserError(f"factor {n}: range [{lo}, {hi}] leaves its safe bounds "
                            f"[{params[n].low}, {params[n].high}] {params[n].unit}")
    bounds = {n: (params[n].low, params[n].high) for n in names}
    design = make_design(design_kind, [Factor(n, *ranges[n]) for n in names], center=center, replicates=replicates,
                         seed=seed, bounds=bounds)
    spec = {"design": design_kind, "factors": {n: list(r) for n, r in ranges.items()}, "units_per_run": units_per_run,
            "model": model, "confirm": confirm, "seed": seed, "confirm_max_units": confirm_max_units}
    plan = {"design": design.as_dict(), "base": base, "runs": design.recipes(base)}
    return _create(ws, "doe", spec, plan, problem_id, note)


def design_optimise(ws: Any, names: list[str] | None = None, *, budget_units: int = 60_000,
                    units_per_trial: int = 2000, max_loss: float = 0.01, sampler: str = "gp", confirm: bool = True,
                    seed: int = 0, problem_id: str | None = None, note: str = "",
                    confirm_max_units: int = 80_000) -> dict[str, Any]:
    """Bayesian optimisation of recipe parameters (all by default) inside their safe bounds."""
    from linelab.experiment.optimise import tune_bounds

    bounds = tune_bounds(require_profile(ws.path), names)
    if units_per_trial <= 0 or budget_units < units_per_trial:
        raise UserError("the budget must cover at least one trial (budget_units >= units_per_trial > 0)")
    spec = {"params": list(bounds), "bounds": {n: list(b) for n, b in bounds.items()}, "budget_units": budget_units,
            "units_per_trial": units_per_trial, "max_loss": max_loss, "sampler": sampler, "confirm": confirm,
            "seed": seed, "confirm_max_units": confirm_max_units}
    plan = {"base": current_recipe(ws), "trials": budget_units // units_per_trial}
    return _create(ws, "optimise", spec, plan, problem_id, note)


def _create(ws: Any, kind: str, spec: dict[str, Any], plan: dict[str, Any], problem_id: str | None,
            note: str) -> dict[str, Any]:
    exp_id = ws.next_id(KIND, "EXP")
    while ws.get_artifact(KIND, exp_id) is not None:
        exp_id = f"{exp_id}-1"
    e = {"id": exp_id, "kind": kind, "status": "designed", "problem_id": problem_id, "note": note, "spec": spec,
         "plan": plan, "line": None, "results": None, "verdict": None, "adoption": None, "plots": {},
         "created": _now()}
    _save(ws, e)
    _event(ws, e, "designed", kind=kind)
    return e


# -- run ---------------------------------------------------------------------------------------
class _Recorder:
    """Collects produced chunks and ingests them in large batches (fewer, bigger transactions)."""

    def __init__(self, ws: Any, source: str, enabled: bool, progress: Progress | None, flush_units: int = 20_000):
        self.ws, self.source, self.enabled, self.progress = ws, source, enabled, progress
        self.flush_units = flush_units
        self.buffer: dict[str, list[pa.Table]] = {}
        self.buffered = 0

    def __call__(self, chunk: Mapping[str, pa.Table]) -> None:
        n = chunk["units"].num_rows
        if self.progress is not None:
            self.progress(n)
        if not self.enabled:
            return
        for name, t in chunk.items():
            self.buffer.setdefault(name, []).append(t)
        self.buffered += n
        if self.buffered >= self.flush_units:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        tables = {name: pa.concat_tables(parts) for name, parts in self.buffer.items()}
        self.ws.ingest_tables(tables, source=self.source)
        self.buffer, self.buffered = {}, 0


def _split_test(spec: Mapping[str, Any]) -> Any:
    from linelab.experiment.sequential import make_test  # SciPy: only when a split runs or is analysed

    settings: dict[str, Any] = {"alpha": spec.get("alpha", 0.05), "max_units": spec.get("max_units", 80_000),
                                "min_gain": spec.get("min_gain", 0.0)}
    return make_test(spec.get("test", "msprt"), **settings)


def _lots(result: Any) -> list[dict[str, Any]]:
    return [lot.__dict__ for lot in result.lots]


def run_experiment(ws: Any, exp_id: str, *, scenario: str | None = None, seed: int | None = None,
                   record: bool = True, adopt: bool = False, progress: Progress | None = None,
                   line: HeldLine | None = None, plots: bool = True, lots: int | None = None) -> dict[str, Any]:
    """Run a designed experiment on the workspace's simulated line (or a fresh one) and decide.

    With `record`, every unit built lands in the workspace (source of the simulated line).
    With `adopt`, an adopted change is applied to the line at once and recorded.
    On a real line (control channel: the outbox) a split run's lots are sent through the outbox
    instead (`lots` of them, default all that `max_units` needs; again on a running one: the next
    ones), and `analyse_experiment` decides from the data that comes back.
    """
    # The analysis (pandas, statsmodels), the optimiser (scikit-learn) and the runner load here, not
    # with the module: listing or showing experiments does not pay for them (commands start fast).
    from linelab.experiment.analysis import DesignedExperiment
    from linelab.experiment.optimise import RecipeOptimizer
    from linelab.experiment.runner import run_design, run_search, run_split

    e = get_experiment(ws, exp_id)
    if line is None and runs_through_outbox(ws):
        return _send_split(ws, e, lots, progress)
    if e["status"] != "designed":
        raise UserError(f"experiment {exp_id} is {e['status']}; design a new one to run again")
    tl = line or _experiment_line(ws, scenario, seed)
    if record and workspace_simulation(ws) is None and ws.count("units"):
        raise UserError("workspace holds line data that no simulation made; use another --workspace, "
                        "or --no-record to run on the simulated line without storing its units")
    if record and workspace_simulation(ws) is None:
        record_simulation(ws, tl.line, tl.simulator, tl.line.scenario_name, tl.seed)
    base = tl.line.recipe
    rec = _Recorder(ws, tl.source, record, progress)
    label = e["id"]
    e["status"] = "running"
    e["line"] = {"source": tl.source, "scenario": tl.scenario, "seed": tl.seed, "first_unit": tl.line.units_produced,
                 "recipe": base}
    _save(ws, e)
    spec = e["spec"]
    verdict: Verdict | None  # a search has none until its candidate is confirmed
    if e["kind"] == "split":
        res = run_split(tl.line, spec["change"], _split_test(spec), lot_size=spec["lot_size"], seed=spec["seed"],
                        sink=rec, label=label)
        e["results"] = {"lots": _lots(res)}
        verdict = res.verdict
        candidate = dict(spec["change"])
    else:
        if e["kind"] == "doe":
            design = Design.from_dict(e["plan"]["design"])
            experiment = DesignedExperiment(design, model=spec["model"]).fit({"recipe": base})
            runs: list[dict[str, Any]] = []

            def on_run(k: int, r: Any) -> None:
                runs.append({"run": int(design.order[k]) + 1, "recipe": r.recipe, "units": r.units, "passed": r.passed})

            run_design(tl.line, experiment, spec["units_per_run"], sink=rec, label=label, on_run=on_run)
            analysis = experiment.analysis()
            model_verdict = experiment.verdict()
            e["results"] = {"runs": runs, "analysis": analysis.as_dict(), "model_verdict": model_verdict.as_dict()}
            candidate = {n: round(v, 4) for n, v in analysis.optimum.items()}
            if plots:
                _surface_plots(ws, e, analysis, design)
            verdict = model_verdict
        else:
            bounds = {n: tuple(b) for n, b in spec["bounds"].items()}
            opt = RecipeOptimizer(bounds, seed=spec["seed"], max_loss=spec["max_loss"], sampler=spec["sampler"])
            opt.fit({"recipe": base})
            steps: list[dict[str, Any]] = []

            def on_step(s: Any) -> None:
                mu, sd = opt.best_estimate()
                steps.append({**s.__dict__, "incumbent_yield": mu, "incumbent_sd": sd})

            run_search(tl.line, opt, spec["budget_units"], spec["units_per_trial"], sink=rec, on_step=on_step,
                       label=label)
            candidate = {n: round(v, 4) for n, v in opt.best().items()}
            mu, sd = opt.best_estimate()
            e["results"] = {"steps": steps, "incumbent": candidate, "incumbent_yield": mu, "incumbent_sd": sd,
                            "state": opt.state()}
            verdict = None
        candidate = {n: v for n, v in candidate.items() if abs(v - base.get(n, np.nan)) > 1e-9}
        e["results"]["candidate"] = candidate
        if spec.get("confirm", True) and candidate:
            conf_spec = {"alpha": 0.05, "max_units": spec.get("confirm_max_units", 80_000), "test": "msprt"}
            res = run_split(tl.line, candidate, _split_test(conf_spec), lot_size=250, seed=spec["seed"], sink=rec,
                            label=f"{label}:confirm")
            e["results"]["confirmation"] = {"change": candidate, "lots": _lots(res)}
            verdict = res.verdict
        elif verdict is None:
            verdict = _no_confirmation(e, candidate)
    rec.flush()
    e["line"]["last_unit"] = tl.line.units_produced
    e["verdict"] = verdict.as_dict()
    e["verdict"]["change"] = candidate
    e["status"] = "decided"
    if plots:
        _run_plots(ws, e)
    _save(ws, e)
    _event(ws, e, "verdict", t=_line_time(tl), decision=verdict.decision, difference=verdict.difference,
           change=candidate)
    if adopt and verdict.decision == "adopt":
        adopt_change(ws, e["id"], line=tl)
    return get_experiment(ws, e["id"])


def _no_confirmation(e: Mapping[str, Any], candidate: Mapping[str, float]) -> Verdict:
    from linelab.experiment.verdict import ArmSummary

    r = e["results"]
    units = sum(s["units"] for s in r.get("steps", []))
    passed = sum(s["passed"] for s in r.get("steps", []))
    reason = ("optimiser found no better recipe than the current one" if not candidate else
              "optimiser's incumbent was not confirmed by a split run (confirm is off)")
    return Verdict("inconclusive", reason, ArmSummary("control", 0, 0), ArmSummary("search", units, passed),
                   None, None, 0.95, "optimise", extra={"incumbent_yield": r.get("incumbent_yield")})


def _experiment_line(ws: Any, scenario: str | None, seed: int | None) -> HeldLine:
    """The line an experiment runs on: the workspace's simulated line, or a fresh one of the
    simulator its profile names (a real line behind the outbox takes split runs: `_send_split`)."""
    profile = require_profile(ws.path)
    if workspace_simulation(ws) is None and (profile.control.channel != "simulator" or not profile.control.simulator):
        raise UserError("this workspace's line is a real one (its profile's control channel is "
                        f"{profile.control.channel}); experiments run on it only as split runs through the outbox: "
                        "design it here and run the arms on the line by hand")
    return open_workspace_line(ws, profile.control.simulator or "", scenario, seed)


# -- a split run on a real line, through the outbox ----------------------------------------------
def runs_through_outbox(ws: Any) -> bool:
    """The workspace's line is a real one whose actions go through the outbox (no simulated line here)."""
    return require_profile(ws.path).control.channel == "outbox" and workspace_simulation(ws) is None


def _send_split(ws: Any, e: dict[str, Any], lots: int | None, progress: Progress | None = None) -> dict[str, Any]:
    """Send a split run's next lots through the outbox: one set_recipe action per lot, arms in seeded
    random pairs. The experiment is "running" until `analyse_experiment` decides."""
    if e["kind"] != "split":
        raise UserError(f"experiment {e['id']} is a {e['kind']} experiment: on a real line only a split run goes "
                        "through the outbox; run its recipes on the line by hand, or design a split run of the change "
                        "to try (`linelab experiment design split --change NAME=VALUE`)")
    if e["status"] not in ("designed", "running") or (e["status"] == "running" and
                                                      (e.get("line") or {}).get("source") != "outbox"):
        raise UserError(f"experiment {e['id']} is {e['status']}; design a new one to run again")
    profile = require_profile(ws.path)
    for arm in outbox.ARMS:  # the profile may have changed since the design: check both arms before sending any
        merge_recipe(profile, {}, outbox.arm_settings(e, arm))
    queued = outbox.queue_lots(ws, e, lots, progress=progress)
    if e["status"] == "designed":
        e["status"] = "running"
        e["line"] = {"source": "outbox", "channel": "outbox", "recipe": e["plan"]["control"],
                     "lots_planned": outbox.planned_lots(e["spec"]), "started": _now()}
    e["line"]["lots_sent"] = len(e["schedule"])
    _save(ws, e)
    _event(ws, e, "sent", lots=[queued[0]["lot"], queued[-1]["lot"]], actions=[q["action_id"] for q in queued])
    return get_experiment(ws, e["id"])


def analyse_experiment(ws: Any, exp_id: str, *, adopt: bool = False, plots: bool = True) -> dict[str, Any]:
    """Read a real line's split run from the data ingested since its lots were sent: each unit belongs to
    the arm of the last lot switch acknowledged before it started (`experiment.outbox.sort_units`). The
    same sequential test as on a simulated line gives the verdict; while it has not decided the
    experiment stays "running" with the interim verdict "continue".

    Once decided, the lots still waiting in the outbox are withdrawn (marked failed, with why), and if
    the line was left on the treatment of a change not adopted, an action back to the control settings
    is sent. With `adopt`, an adopted change goes to the outbox at once.
    """
    from linelab.experiment.runner import LotRecord  # NumPy and Arrow compute: only when analysing

    e = get_experiment(ws, exp_id)
    if e["status"] == "designed":
        raise UserError(f"experiment {exp_id} has not started: `linelab experiment run {exp_id}` sends its lots "
                        "through the outbox first")
    if (e.get("line") or {}).get("source") != "outbox":
        raise UserError(f"experiment {exp_id} ran on the simulated line: its verdict came with the run "
                        f"(`linelab experiment verdict {exp_id}`)")
    if e["status"] != "running":
        return e
    found = outbox.sort_units(ws, e)
    if not any(lot.passed.size for lot in found.lots):
        sent = len(e.get("schedule") or [])
        raise UserError(
            f"no data for experiment {exp_id} yet: of its {sent} lots sent through the outbox, "
            f"{found.acknowledged} acknowledged{f', {found.failed} failed' if found.failed else ''}, and no units "
            "ingested after them. Acknowledge each lot's switch when it starts (`linelab act done ACT-ID --at TIME`) "
            "and ingest the line's data (`linelab ingest`), then analyse again")
    spec = e["spec"]
    test = _split_test(spec)
    lots: list[dict[str, Any]] = []
    total = 0
    for lot in found.lots:
        if test.stopped:  # as on a simulated line, the run ends at the lot that decided it
            break
        fp = lot.passed
        before = int(test.n.sum())
        test.update(np.full(fp.size, lot.arm == "treatment"), fp)
        used = int(test.n.sum()) - before
        total += fp.size
        v = test.verdict()
        passed = int(fp[:used].sum()) if used < fp.size else int(fp.sum())
        rec = LotRecord(lot.lot, lot.arm, int(fp.size), passed, total, v.difference,
                        v.interval[0] if v.interval else None, v.interval[1] if v.interval else None)
        lots.append({**rec.__dict__, "action_id": lot.action_id, "started": lot.start})
    verdict = test.verdict()
    e["results"] = {"lots": lots, "units": {"counted": total, "after_failed_switch": found.after_failed,
                                            "past_unacknowledged_switch": found.beyond_lot,
                                            "after_verdict": sum(lot.passed.size for lot in found.lots) - total},
                    "switches": {"acknowledged": found.acknowledged, "failed": found.failed,
                                 "waiting": found.waiting}}
    e["verdict"] = verdict.as_dict()
    e["verdict"]["change"] = dict(spec["change"])
    last = max(lot.t_last for lot in found.lots[:len(lots)] if lot.t_last is not None)
    e["line"].update(units=total, last_unit_t=str(last.astype(datetime).isoformat()), analysed=_now())
    if not test.stopped:
        _save(ws, e)
        return get_experiment(ws, exp_id)
    e["status"] = "decided"
    e["line"]["withdrawn"] = _withdraw(ws, e, verdict.decision)
    if verdict.decision != "adopt" and found.last_arm in (None, "treatment"):
        e["line"]["restore_action"] = _restore(ws, e, verdict.decision)
    if plots:
        _run_plots(ws, e)
    _save(ws, e)
    _event(ws, e, "verdict", t=last.astype(datetime), decision=verdict.decision, difference=verdict.difference,
           change=e["verdict"]["change"])
    if adopt and verdict.decision == "adopt":
        adopt_change(ws, exp_id)
    return get_experiment(ws, exp_id)


def _withdraw(ws: Any, e: Mapping[str, Any], decision: str) -> list[str]:
    """Close the experiment's lots still waiting in the outbox: the run is over (marked failed, with why)."""
    out = []
    for s in e.get("schedule") or []:
        if act.get_action(ws, s["action_id"])["status"] == "sent":
            act.acknowledge(ws, s["action_id"], failed=True, by="experiment",
                            note=f"withdrawn: experiment {e['id']} decided ({decision}) before lot {s['lot']} ran")
            out.append(s["action_id"])
    return out


def _restore(ws: Any, e: Mapping[str, Any], decision: str) -> str:
    """Send the control arm's settings through the outbox: the line may still run the treatment."""
    settings = outbox.arm_settings(e, "control")
    a = act.propose(ws, "set_recipe", {"params": settings}, problem_id=e.get("problem_id"), experiment_id=e["id"],
                    source="experiment", by="experiment",
                    reason=f"experiment {e['id']} decided {decision}: back to the control recipe")
    act.approve(ws, a["id"], by="experiment", note="the split run is over")
    return str(act.apply(ws, a["id"], Outbox(ws), by="experiment")["id"])


def _line_time(tl: HeldLine) -> datetime:
    """The simulated line's clock: events about its production sit on its own timeline."""
    return datetime.fromisoformat(tl.line.clock())


# -- verdict and adoption -----------------------------------------------------------------------
def adopt_change(ws: Any, exp_id: str, line: HeldLine | None = None, by: str = "experiment") -> dict[str, Any]:
    """Make an adopted experiment's change the line's recipe, through the control interface.

    A simulated line (the workspace's own, or `line`) takes it at once; a workspace of real line
    data gets it in its outbox. Either way an action (source "experiment") records it.
    """
    e = get_experiment(ws, exp_id)
    v = e.get("verdict")
    if not v or v["decision"] != "adopt":
        raise UserError(f"experiment {exp_id}'s verdict is {v['decision'] if v else 'not reached'}; "
                        "only an adopted change can become the recipe")
    if e.get("adoption"):
        return e
    change = v.get("change") or {}
    a = act.propose(ws, "set_recipe", {"params": change}, problem_id=e.get("problem_id"), experiment_id=exp_id,
                    expected_delta=v.get("difference"), source="experiment", by=by,
                    reason=f"experiment {exp_id}: {Verdict.from_dict(v).summary()}")
    act.approve(ws, a["id"], by=by, note="adopted by the experiment's verdict")
    if line is None and workspace_simulation(ws) is not None:
        line = open_workspace_line(ws)
    control = LineControl(line.line) if line is not None else Outbox(ws)
    a = act.apply(ws, a["id"], control, by=by)
    e["adoption"] = {"action_id": a["id"], "status": a["status"], "via": control.name, "change": change}
    e["status"] = "adopted"
    _save(ws, e)
    _event(ws, e, "adopted", action_id=a["id"], change=change)
    return e


def summary_rows(ws: Any) -> list[dict[str, Any]]:
    rows = []
    for e in ws.list_artifacts(KIND):
        v = e.get("verdict") or {}
        rows.append({"id": e["id"], "kind": e["kind"], "status": e["status"], "decision": v.get("decision"),
                     "difference": v.get("difference"), "units": v.get("units"), "problem_id": e.get("problem_id"),
                     "created": e.get("created")})
    return rows


# -- plots -------------------------------------------------------------------------------------
def plot_dir(ws: Any) -> Path:
    return Path(ws.path) / "plots"


def _surface_plots(ws: Any, e: dict[str, Any], analysis: Any, design: Design) -> None:
    from linelab.experiment import plots

    names = design.names
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))][:3]
    for x, y in pairs or [(names[0], names[0])]:
        fig = plots.surface_figure(analysis, design, x, y)
        path = plots.save(fig, plot_dir(ws) / f"{e['id']}-surface-{x}-{y}.html")
        e["plots"][f"surface {x} x {y}"] = str(path)


def _run_plots(ws: Any, e: dict[str, Any]) -> None:
    from linelab.experiment import plots

    r = e["results"] or {}
    lots = r.get("lots") or (r.get("confirmation") or {}).get("lots")
    if lots:
        title = f"{e['id']}: " + ("split run" if e["kind"] == "split" else "confirmation split run")
        e["plots"]["arms"] = str(plots.save(plots.arms_figure(lots, title), plot_dir(ws) / f"{e['id']}-arms.html"))
    if r.get("steps"):
        e["plots"]["search"] = str(plots.save(plots.search_figure(r["steps"], f"{e['id']}: recipe optimisation"),
                                              plot_dir(ws) / f"{e['id']}-search.html"))
