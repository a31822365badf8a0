"""Model commands: train, list, show, metrics, export, promote, rollback, score, label, review."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.render import fmt, print_rows

# Training, scoring, export and the live review load scikit-learn, skops or NumPy's statistics: they
# are imported by the commands that use them, so `model list` and the other commands start fast.
from . import labels, registry, rollout, timeline
from .registry import Costs, ModelKind


class TrainParams(BaseModel):
    station: str = Field(..., description="the station whose first-visit failures it predicts (a failure "
                                          "predictor) or whose readings it watches (an anomaly detector)")
    kind: ModelKind = Field("failure_predictor", description="failure_predictor | anomaly")
    estimator: Literal["hgb", "logistic"] = Field("hgb", description="hgb (gradient boosting) | logistic")
    seq_from: int | None = Field(None, ge=1, description="first ingest batch of the training data")
    seq_to: int | None = Field(None, ge=1, description="last ingest batch of the training data [latest]")
    inspect_share: float = Field(0.1, gt=0, lt=1, description="share of units inspection can take")
    fill_capacity: bool = Field(False, description="inspect the top inspect_share of units even where the holdout "
                                                   "says inspecting them does not pay (a line that inspects a fixed "
                                                   "share anyway)")
    max_escape_rate: float = Field(0.002, ge=0, lt=1, description="failure rate allowed among units that skip "
                                                                  "the test")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed of the holdout and the estimator")
    shuffle_labels: bool = Field(False, description="train on permuted labels (a control that must be rolled back)")
    environment: bool = Field(False, description="use the room's readings (role environment) as features too")
    cost_inspect: float = Field(1.0, ge=0)
    cost_fail: float = Field(10.0, ge=0, description="a bad unit found at the test rather than at inspection")
    cost_test: float = Field(1.0, ge=0)
    cost_escape: float = Field(100.0, ge=0)


class ModelResult(Result):
    model: dict[str, Any]
    stage: str | None = None
    evidence: dict[str, Any] | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)
    scored: list[dict[str, Any]] = Field(default_factory=list, description="units it scored per stage: how "
                                                                           "many, acted on, first and last")

    def render(self, console: Console) -> None:
        m = self.model
        console.print(f"[bold]{m['id']}[/bold] {m['kind']} at {m['station']} ({m['estimator']}), "
                      f"stage {self.stage or m.get('status')}; parent {m.get('parent') or '—'}")
        d, c = m["data"], m["code"]
        shuffled = " — labels shuffled" if d.get("shuffled") else ""
        console.print(f"data: batches {d['seq_from']}..{d['seq_to']}, {d['units']} units ({d['bad']} bad, "
                      f"{d.get('verdicts', 0)} verdicts by a person){shuffled}; "
                      f"code linelab {c.get('linelab')} {c.get('git') or ''}")
        met = m["metrics"]
        console.print("holdout: " + ", ".join(f"{k} {fmt(met.get(k))}" for k in
                                              ("auc", "precision", "recall", "saving_per_unit", "passed")))
        if self.evidence:
            e = self.evidence
            console.print(f"live ({e['labelled']} units with results): " + ", ".join(
                f"{k} {fmt(e['live'].get(k))}" for k in ("precision", "recall", "saving_per_unit"))
                + f"; test {e['test']['decision']}; guards: {'; '.join(e['guards']) or 'none'}")
        for r in self.scored:
            console.print(f"scored as {r['stage']}: {r['units']} units ({r['acted']} acted on), "
                          f"{str(r['first'])[:19]} .. {str(r['last'])[:19]}")
        for ev in self.events[-10:]:
            console.print(f"  {ev['t'][:19]} {ev['event']}: {ev['from']} → {ev['to']} by {ev['by']} — {ev['reason']}")


@command("model train", TrainParams)
def model_train(p: TrainParams, ctx: Context) -> ModelResult:
    """Train a model from the workspace and register it (data snapshot, code, parameters, metrics)."""
    from .train import TrainSettings, train

    costs = Costs(inspect=p.cost_inspect, fail=p.cost_fail, test=p.cost_test, escape=p.cost_escape)
    s = TrainSettings(**p.model_dump(exclude={"cost_inspect", "cost_fail", "cost_test", "cost_escape"}), costs=costs)
    rec = train(ctx.workspace, s)
    return ModelResult(model=rec.model_dump(mode="json"), stage="registered")


class ListParams(BaseModel):
    station: str | None = Field(None, description="only this station's models")


class ListResult(Result):
    models: list[dict[str, Any]]
    deployments: list[dict[str, Any]]

    def render(self, console: Console) -> None:
        print_rows(console, self.models, "models")
        print_rows(console, self.deployments, "deployments")


@command("model list", ListParams)
def model_list(p: ListParams, ctx: Context) -> ListResult:
    """List model versions and each station's deployment (full, canary, shadows)."""
    ws = ctx.workspace
    deps = {d.station: d for d in rollout.all_deployments(ws)}
    rows = []
    for r in registry.all_versions(ws, p.station):
        dep = deps.get(r.station)
        stage = dep.stage_of(r.id) if dep and r.id in dep.live else r.status
        rows.append({"id": r.id, "kind": r.kind, "station": r.station, "stage": stage,
                     "auc": r.metrics.get("auc"), "precision": r.metrics.get("precision"),
                     "recall": r.metrics.get("recall"), "units": r.data.get("units"),
                     "batches": f"{r.data.get('seq_from')}..{r.data.get('seq_to')}", "parent": r.parent,
                     "created": r.created})
    return ListResult(models=rows, deployments=[
        {"station": d.station, "full": d.full, "canary": d.canary, "canary_share": d.canary_share,
         "shadows": ", ".join(d.shadows), "require_signoff": d.require_signoff, "awaiting_signoff": d.awaiting_signoff}
        for d in deps.values() if p.station in (None, d.station)])


class ShowParams(BaseModel):
    version: str = Field(..., description="model version (M-0001)", json_schema_extra={"argument": True})


@command("model show", ShowParams)
def model_show(p: ShowParams, ctx: Context) -> ModelResult:
    """A version: lineage, data, code, metrics, live metrics from feedback, and its stage history."""
    from . import live, scoring

    ws = ctx.workspace
    rec = registry.get(ws, p.version)
    dep = rollout.get(ws, rec.station)
    stage = dep.stage_of(rec.id) if rec.id in dep.live else rec.status
    ev = live.evidence(ws, dep, rec.id) if rec.id in dep.live else None
    return ModelResult(model=rec.model_dump(mode="json"), stage=stage, evidence=ev,
                       events=rollout.events(ws, version=rec.id), scored=scoring.scored(ws, rec.id))


class MetricsParams(BaseModel):
    version: str = Field(..., description="model version", json_schema_extra={"argument": True})
    by: timeline.Period = Field("auto", description="periods: day | hour | units (blocks of units in scoring "
                                                    "order) | auto")
    latest: int = Field(50, ge=0, le=1000, description="how many of the latest scored units to list")


class MetricsResult(Result):
    version: str
    kind: str
    station: str
    stage: str
    by: str = Field(description="what a period is: day, hour or units")
    periods: list[dict[str, Any]] = Field(description="per stage and period: units, labelled, acted, precision, "
                                                      "recall, escape_rate, saving_per_unit")
    events: list[dict[str, Any]]
    units: list[dict[str, Any]] = Field(description="the latest units it scored, newest first")

    def render(self, console: Console) -> None:
        console.print(f"[bold]{self.version}[/bold] {self.kind} at {self.station}, stage {self.stage}; "
                      f"live metrics per {self.by}")
        print_rows(console, [{"stage": r["stage"], "until": r["t_last"][:16].replace("T", " "),
                              **{k: r[k] for k in ("units", "labelled", "acted", "precision", "recall", "escape_rate",
                                                   "saving_per_unit")}} for r in self.periods], "periods")
        for ev in self.events:
            console.print(f"  {ev['t'][:19]} {ev['event']}: {ev['from']} → {ev['to']} by {ev['by']} — {ev['reason']}")


@command("model metrics", MetricsParams, writes=False)
def model_metrics(p: MetricsParams, ctx: Context) -> MetricsResult:
    """A version's live metrics per stage over time (precision, recall, escapes, saving), its events, its units."""
    ws = ctx.workspace
    rec = registry.get(ws, p.version)
    dep = rollout.get(ws, rec.station)
    kind, rows = timeline.periods(ws, rec, p.by)
    return MetricsResult(version=rec.id, kind=rec.kind, station=rec.station,
                         stage=dep.stage_of(rec.id) if rec.id in dep.live else rec.status, by=kind, periods=rows,
                         events=rollout.events(ws, version=rec.id),
                         units=timeline.latest_units(ws, rec, p.latest) if p.latest else [])


class ExportParams(BaseModel):
    version: str = Field(..., description="model version", json_schema_extra={"argument": True})
    mlflow: Path = Field(..., description="a new folder for the MLflow model (MLmodel, model.skops, "
                                          "requirements, signature, input example)",
                         json_schema_extra={"path": "output-dir"})


class ExportResult(Result):
    version: str
    format: str
    folder: str
    files: dict[str, str]

    def render(self, console: Console) -> None:
        console.print(f"{self.version} exported in {self.format} format to {self.folder}: "
                      f"{', '.join(self.files)}; load it with mlflow.pyfunc.load_model({self.folder!r})")


@command("model export", ExportParams, writes=False)
def model_export(p: ExportParams, ctx: Context) -> ExportResult:
    """Export a version to MLflow's model format (sklearn and python_function flavors, skops: no pickle)."""
    from . import export

    ws = ctx.workspace
    files = export.export_mlflow(ws, registry.get(ws, p.version), p.mlflow)
    return ExportResult(version=p.version, format="mlflow", folder=str(p.mlflow), files=files)


class PromoteParams(BaseModel):
    version: str = Field(..., description="model version", json_schema_extra={"argument": True})
    to: Literal["shadow", "canary", "full"] = Field(..., description="shadow | canary | full")
    share: float | None = Field(None, gt=0, lt=1, description="canary: share of units it acts on [0.1]")
    require_signoff: bool | None = Field(None, description="from now on, a person signs off every promotion to full")
    force: bool = Field(False, description="to full without live evidence that it is better")
    by: str = Field("person", description="who promotes (recorded with the event)")
    reason: str = ""


class EventResult(Result):
    events: list[dict[str, Any]]
    deployment: dict[str, Any] | None = None

    def render(self, console: Console) -> None:
        for e in self.events:
            extra = f" (problem {e['problem']})" if e.get("problem") else ""
            console.print(f"{e['id']} {e['station']} {e['version']}: {e['event']} {e['from']} → {e['to']} "
                          f"by {e['by']} — {e['reason']}{extra}")
        if not self.events:
            console.print("no change")


@command("model promote", PromoteParams)
def model_promote(p: PromoteParams, ctx: Context) -> EventResult:
    """Move a version to shadow, canary or full at its station (full needs live evidence or --force)."""
    from . import live

    ws = ctx.workspace
    rec = registry.get(ws, p.version)
    dep = rollout.get(ws, rec.station)
    if p.share is not None:
        dep.canary_share = p.share
    if p.require_signoff is not None:
        dep.require_signoff = p.require_signoff
    reason = p.reason
    if p.to == "full" and not p.force:
        ev = live.evidence(ws, dep, rec.id)
        if ev["test"]["decision"] != "better":
            raise UserError(f"{rec.id} is not yet better than {ev['incumbent'] or 'no model'} with confidence "
                            f"({ev['labelled']} units with results, test: {ev['test']['decision']}); "
                            "wait for more feedback or use --force")
        reason = reason or ("signed off: " if dep.awaiting_signoff == rec.id else "") + \
            f"better than {ev['incumbent'] or 'no model'} with confidence"
    event = rollout.move(ws, dep, rec.id, p.to, reason or f"promoted to {p.to} by {p.by}", by=p.by)
    return EventResult(events=[event], deployment=rollout.get(ws, rec.station).model_dump(mode="json"))


class RollbackParams(BaseModel):
    station: str = Field(..., description="the station")
    version: str | None = Field(None, description="the version to withdraw [the canary, else the incumbent]")
    reason: str = Field("rolled back by a person", description="why (kept with the event and the problem)")
    by: str = "person"


@command("model rollback", RollbackParams)
def model_rollback(p: RollbackParams, ctx: Context) -> EventResult:
    """Withdraw a live version (its predecessor takes over); records the event and opens a problem."""
    ws = ctx.workspace
    event = rollout.rollback(ws, rollout.get(ws, p.station), p.version, p.reason, by=p.by)
    return EventResult(events=[event], deployment=rollout.get(ws, p.station).model_dump(mode="json"))


class ScoreParams(BaseModel):
    station: str = Field(..., description="the station whose deployment scores")
    unit: str | None = Field(None, description="one unit's serial (default: every unit ingested since the last "
                                               "scoring)")
    features: str | None = Field(None, description="the unit's readings as JSON {name: value} (default: read "
                                                   "from the workspace)")
    review: bool = Field(True, description="after batch scoring, judge the live versions on the feedback")


class ScoreResult(Result):
    result: dict[str, Any]
    changes: list[dict[str, Any]] = Field(default_factory=list)

    def render(self, console: Console) -> None:
        r = self.result
        if "unit_id" in r:  # one unit, as its station asked
            if r.get("version"):
                acting = f" by {r['version']} ({r.get('stage') or 'live'}, score {r['score']:.3f})"
            else:
                acting = " (no live version acts on it)"
            console.print(f"{r['unit_id']} at {r['station']}: [bold]{r['decision']}[/bold]{acting}", highlight=False)
            if r.get("shadow"):
                console.print("  beside it: " + ", ".join(f"{v} {s:.3f}" for v, s in r["shadow"].items()),
                              highlight=False)
        else:
            decided = ", ".join(f"{k} {v:,}" for k, v in (r.get("decisions") or {}).items() if v)
            console.print(f"{r.get('station')}: {r.get('units', 0):,} units scored" +
                          (f" — {decided}" if decided else ""), highlight=False)
            if r.get("by_version"):
                console.print("  by version: " + ", ".join(f"{v} {n:,}" for v, n in r["by_version"].items()),
                              highlight=False)
        if self.changes:
            EventResult(events=self.changes).render(console)


@command("model score", ScoreParams)
def model_score(p: ScoreParams, ctx: Context) -> ScoreResult:
    """Score units with the station's live versions; the applied decision (inspect/pass/none) is recorded."""
    from . import live, scoring

    ws = ctx.workspace
    if p.unit is not None:
        feats = _features(p.features)
        return ScoreResult(result=scoring.score_unit(ws, p.station, p.unit, feats))
    if p.features is not None:
        raise UserError("--features goes with --unit")
    out = scoring.score_batch(ws, p.station)
    return ScoreResult(result=out, changes=live.review(ws, p.station) if p.review else [])


def _features(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--features: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise UserError("--features: expected a JSON object {name: value}")
    return value


class ReviewParams(BaseModel):
    station: str = Field(..., description="the station")


@command("model review", ReviewParams)
def model_review(p: ReviewParams, ctx: Context) -> EventResult:
    """Judge the station's live versions on the feedback so far: promote, withdraw or roll back."""
    from . import live

    ws = ctx.workspace
    return EventResult(events=live.review(ws, p.station), deployment=rollout.get(ws, p.station).model_dump(mode="json"))


class LabelParams(BaseModel):
    unit: str = Field(..., description="the unit's serial", json_schema_extra={"argument": True})
    verdict: labels.Verdict = Field(..., description="false_fail (failed the test, is good) | escape (passed, is "
                                                     "bad) | bad | good")
    note: str = ""
    by: str = "person"


class LabelResult(Result):
    verdict: dict[str, Any]

    def render(self, console: Console) -> None:
        v = self.verdict
        counted = "bad" if v.get("bad") else "good"
        note = f" — {v['note']}" if v.get("note") else ""
        console.print(f"{v['unit_id']}: {v['verdict']} (counted as {counted} in live metrics and training), "
                      f"recorded by {v.get('who') or 'person'} at {str(v.get('t', ''))[:16].replace('T', ' ')}"
                      f"{note}", highlight=False)


@command("model label", LabelParams)
def model_label(p: LabelParams, ctx: Context) -> LabelResult:
    """Record a person's verdict on a unit: it overrules the line's result in live metrics and in training."""
    return LabelResult(verdict=labels.relabel(ctx.workspace, p.unit, p.verdict, p.note, p.by))
