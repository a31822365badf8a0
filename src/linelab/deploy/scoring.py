"""Scoring: every live version scores every unit; the stage's routing says whose decision is applied.

Units outside the canary get the incumbent's decision (`none` when the station has no incumbent),
units inside it the canary's; shadows are scored and recorded but never applied. Every version's
score and decision is a row of `deploy_predictions` (with `acted` telling which one was applied),
so feedback can later price each version on every unit. Batch scoring takes the units ingested
since the station was last scored; a station scores one unit at a time through `score_unit`
(`POST /score`), handing the unit's readings in or letting them be read from the workspace.
A server can first try a request from what the process holds alone (`held_only`: no database,
no file read), and hand it to a worker thread only when that raises `NotHeld`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from linelab.errors import NotFound, UserError

from . import predict, registry, rollout, serving, tables
from .features import features_of, matrix, unit_frame, vector
from .registry import ModelRecord
from .serving import NotHeld

_RECORDS: dict[tuple[str, str, str], ModelRecord] = {}


def record(ws: Any, version: str, sha256: str | None = None, held_only: bool = False) -> ModelRecord:
    """A version's record; cached by its model file's hash (what it scores never changes with it)."""
    if sha256 is None:
        if held_only:
            raise NotHeld(version)
        return registry.get(ws, version)
    key = (str(ws.path), version, sha256)
    if key not in _RECORDS:
        if held_only:
            raise NotHeld(version)
        rec = registry.get(ws, version)
        if rec.sha256 != sha256:
            return rec
        _RECORDS[key] = rec
    return _RECORDS[key]


# Where a request's prediction rows go instead of the workspace (a server's group-commit writer):
# tuples in the order of `tables.prediction_schema()`, one per version (`tables.rows_table` makes them a table).
Store = Callable[[list[tuple[Any, ...]]], None]


def route(ws: Any, dep: rollout.Deployment, inputs: Mapping[str, np.ndarray], serials: pa.Array, via: str,
          store: Store | None = None, held_only: bool = False) -> dict[str, Any]:
    """Score units (each live version's input matrix) with every live version, apply the routing and
    record the rows (appended to the workspace, or handed to `store`); returns the applied decisions."""
    n = len(serials)
    records = [record(ws, v, dep.files.get(v), held_only) for v in dep.live]
    models = [(v, rec, registry.load(ws, rec, held_only)) for v, rec in zip(dep.live, records, strict=True)]
    in_canary = rollout.canary_units(serials, dep.station, dep.canary_share) if dep.canary else np.zeros(n, bool)
    applied = np.full(n, "none", dtype=object)
    acting = np.full(n, None, dtype=object)
    scores_of: dict[str, np.ndarray] = {}
    decisions: list[np.ndarray] = []
    acted: list[np.ndarray] = []
    stages: list[str] = []
    for v, rec, estimator in models:
        score = predict.scores(rec, estimator, inputs[v])
        decision = predict.decisions(rec, score)
        stage = dep.stage_of(v)
        acts = in_canary if stage == "canary" else (~in_canary if stage == "full" else np.zeros(n, bool))
        applied[acts] = decision[acts]
        acting[acts] = v
        scores_of[v] = score
        decisions.append(decision)
        acted.append(acts)
        stages.append(stage)
    if stages and store is not None:  # a request's few rows: plain tuples, made a table once per commit
        t_now = datetime.now(UTC).replace(tzinfo=None)
        units = serials.to_pylist()
        store([(u, dep.station, v, stage, float(sc), str(d), bool(a), t_now, via)
               for v, stage, score_v, dec, act in zip(dep.live, stages, scores_of.values(), decisions, acted,
                                                      strict=True)
               for u, sc, d, a in zip(units, score_v, dec, act, strict=True)])
    elif stages:  # one table for every version's rows
        k = len(stages)
        t = pa.scalar(datetime.now(UTC).replace(tzinfo=None), pa.timestamp("us"))
        table = pa.table({
            "unit_id": pa.concat_arrays([serials] * k), "station": pa.repeat(dep.station, n * k),
            "version": pa.array(np.repeat(np.array(dep.live, dtype=object), n), pa.string()),
            "stage": pa.array(np.repeat(np.array(stages, dtype=object), n), pa.string()),
            "score": np.concatenate(list(scores_of.values())),
            "decision": pa.array(np.concatenate(decisions), pa.string()), "acted": np.concatenate(acted),
            "t": pa.repeat(t, n * k), "via": pa.repeat(via, n * k),
        }, schema=tables.prediction_schema())
        tables.append(ws, tables.PREDICTIONS, table)
    return {"decision": applied, "version": acting, "scores": scores_of}


def score_batch(ws: Any, station: str) -> dict[str, Any]:
    """Score the units ingested since the station was last scored; then review the live versions."""
    dep = rollout.get(ws, station)
    if not dep.live:
        raise UserError(f"no model is live at {station}: `linelab model promote VERSION --to shadow` first")
    last = ws.last_batch_seq()
    where = f"batch > {int(dep.scored_seq)} AND batch <= {int(last)}"
    frames = _frames(ws, dep, where)
    first = next(iter(frames.values()))
    serials = first.column("unit_id").combine_chunks()
    out = route(ws, dep, {v: matrix(f, record(ws, v, dep.files.get(v)).features) for v, f in frames.items()},
                serials, "batch")
    dep = rollout.get(ws, station)
    dep.scored_seq = last
    rollout.save(ws, dep)
    d = out["decision"]
    return {"station": station, "units": len(serials),
            "decisions": {k: int((d == k).sum()) for k in predict.DECISIONS},
            "by_version": {str(v): int((out["version"] == v).sum()) for v in dep.live}}


def _frames(ws: Any, dep: rollout.Deployment, where: str) -> dict[str, pa.Table]:
    """Each live version's feature rows for the same units in the same order (versions sharing a
    feature spec share one query)."""
    by_spec: dict[str, pa.Table] = {}
    frames = {}
    for v in dep.live:
        spec = record(ws, v, dep.files.get(v)).features
        key = spec.model_dump_json()
        if key not in by_spec:
            by_spec[key] = unit_frame(ws, spec, where)
        frames[v] = by_spec[key]
    return frames


def score_unit(ws: Any, station: str, unit_id: str, features: Mapping[str, Any] | None = None,
               store: Store | None = None, unchanged_since: Hashable = None,
               held_only: bool = False) -> dict[str, Any]:
    """One unit, as a station asks before acting on it: the applied decision and the version behind it.
    Its readings are those handed in, else the workspace's (through this process's `serving` cache;
    `unchanged_since` see `serving.RecentUnits.get`). `held_only`: raise `NotHeld`, before anything
    is recorded, where the answer needs the workspace read (the stages, a unit, a model not held)."""
    dep = rollout.recent(ws, station, held_only)
    if not dep.live:
        raise UserError(f"no model is live at {station}")
    raw = None
    if features is None:
        raw = serving.recent_units(ws).get(ws, unit_id, unchanged_since, held_only)
        if raw is None:
            raise NotFound(f"no unit {unit_id!r} in the workspace: send its readings with the request")
    inputs: dict[str, np.ndarray] = {}
    for v in dep.live:
        spec = record(ws, v, dep.files.get(v), held_only).features
        inputs[v] = vector(features_of(raw, spec) if raw is not None else features or {}, spec)
    out = route(ws, dep, inputs, pa.array([unit_id], pa.string()), "request", store, held_only)
    version = out["version"][0]
    return {"unit_id": unit_id, "station": station, "decision": str(out["decision"][0]), "version": version,
            "stage": dep.stage_of(version) if version else None,
            "score": float(out["scores"][version][0]) if version else None,
            "shadow": {v: float(s[0]) for v, s in out["scores"].items() if v != version}}


def scored(ws: Any, version: str) -> list[dict[str, Any]]:
    """The audit trail of a version: per stage, the units it scored, those it acted on, and when."""
    rows = ws.query(f"SELECT stage, count(*) AS units, count(*) FILTER (WHERE acted) AS acted, min(t) AS first, "
                    f"max(t) AS last FROM {tables.PREDICTIONS} WHERE version = ? GROUP BY stage ORDER BY first",
                    [version]).to_pylist()
    return [{**r, "first": r["first"].isoformat(), "last": r["last"].isoformat()} for r in rows]
