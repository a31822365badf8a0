"""Train a model from the workspace, reproducibly: the same batches, settings and code give the same model.

Units are taken from a range of ingest batches (the data snapshot, kept in the record), in build
order; a seeded random `holdout` share of them judges the model and sets its operating point:

- inspection: the units whose inspection paid on the holdout (their failure rate clearly above
  the costs' break-even `inspect / fail`), at most `inspect_share` of them (the inspection
  station's capacity); none where no score paid. `fill_capacity` inspects the top `inspect_share`
  whatever the holdout says (a line that inspects a fixed share anyway);
- pass (skip the test): the highest score below which at most `max_escape_rate` of holdout
  units failed, over at least `MIN_PASS_UNITS` of them; none when no such score exists.

`shuffle_labels` trains on permuted labels: a model that has learned nothing, to check that a
rollout withdraws such a model by itself.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from linelab.errors import UserError
from linelab.monitor.anomaly import IsolationAnomaly
from linelab.profile import workspace_profile

from . import registry
from .drift import product_stats, reference_bins
from .features import FeatureSpec, discover, matrix, unit_frame
from .labels import Label, outcome_sql, verdict_count
from .predict import anomaly_scores, decisions, one_thread, routing_metrics
from .registry import Costs, ModelKind, ModelRecord, OperatingPoint

MIN_UNITS = 200
MIN_BAD = 10
MIN_PASS_UNITS = 50
INSPECT_ALPHA = 0.05  # how sure the holdout must make us that inspecting the chosen units pays


class TrainSettings(BaseModel):
    station: str
    kind: ModelKind = "failure_predictor"
    estimator: Literal["hgb", "logistic"] = "hgb"
    seq_from: int | None = Field(None, ge=1, description="first ingest batch (default: the first)")
    seq_to: int | None = Field(None, ge=1, description="last ingest batch (default: the latest)")
    holdout: float = Field(0.25, gt=0.05, lt=0.9)
    inspect_share: float = Field(0.1, gt=0, lt=1)
    fill_capacity: bool = False
    max_escape_rate: float = Field(0.002, ge=0, lt=1)
    anomaly_alpha: float = Field(0.01, gt=0, lt=0.5)
    max_iter: int = Field(100, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    seed: int = 0
    shuffle_labels: bool = False
    environment: bool = False
    costs: Costs = Field(default_factory=Costs)


def train(ws: Any, s: TrainSettings) -> ModelRecord:
    lo = s.seq_from or 1
    hi = s.seq_to or ws.last_batch_seq()
    if hi < lo:
        raise UserError(f"batch range {lo}..{hi} is empty (the workspace's last batch is {ws.last_batch_seq()})")
    where = f"batch BETWEEN {int(lo)} AND {int(hi)}"
    profile = workspace_profile(ws.path)
    anomaly = s.kind == "anomaly"
    spec = discover(ws, profile, s.station, own_station=anomaly, where_units=where, environment=s.environment)
    if anomaly and not spec.numeric:
        raise UserError(f"station {s.station} records no varying reading: nothing for an anomaly detector")
    label = Label(kind="first_pass") if anomaly else Label(kind="station_fail", station=s.station)
    frame, bad = _labelled(ws, spec, label, where)
    n = frame.num_rows
    if n < MIN_UNITS or (not anomaly and int(bad.sum()) < MIN_BAD):
        raise UserError(f"too little data to train at {s.station}: {n} labelled units, {int(bad.sum())} bad "
                        f"(need {MIN_UNITS} and {MIN_BAD}) in batches {lo}..{hi}")
    rng = np.random.default_rng(s.seed)
    if s.shuffle_labels:
        bad = rng.permutation(bad)
    x = matrix(frame, spec)
    products = frame.column("product").to_numpy(zero_copy_only=False).astype(str)
    # A seeded random holdout: a line's failures come in episodes, and the latest units alone may hold none.
    held = rng.permutation(n) < int(round(n * s.holdout))
    with one_thread():
        est: Any
        if anomaly:
            est, params = _fit_anomaly(x[~held], s)
            hold = anomaly_scores(est, x[held])
        else:
            est, params = _fit_predictor(x[~held], bad[~held], spec, s)
            hold = est.predict_proba(x[held])[:, 1]
    operating = OperatingPoint(inspect_threshold=1.0, inspect_share=s.inspect_share, max_escape_rate=0.0) \
        if anomaly else _operating_point(hold, bad[held], s)
    fields: dict[str, Any] = {
        "id": registry.next_version(ws), "kind": s.kind, "station": s.station, "label": label,
        "estimator": "isolation_forest" if anomaly else s.estimator, "features": spec, "operating": operating,
        "costs": s.costs, "params": {**params, **s.model_dump(exclude={"costs", "station", "kind"})},
        "data": {"seq_from": lo, "seq_to": hi, "units": n, "bad": int(bad.sum()), "train_units": int((~held).sum()),
                 "holdout_units": int(held.sum()), "verdicts": verdict_count(ws), "shuffled": s.shuffle_labels,
                 "first_unit": frame.column("unit_id")[0].as_py(), "last_unit": frame.column("unit_id")[-1].as_py()},
        "code": registry.code_version(),
        "reference": {"features": reference_bins(x[~held], spec), "score": _score_bins(hold),
                      "products": product_stats(x[~held], products[~held], spec)},
        "parent": _parent(ws, s.station, s.kind),
    }
    probe = ModelRecord(**fields, file="", sha256="")
    fields["metrics"] = holdout_metrics(probe, hold, bad[held])
    return registry.save(ws, fields, est)


def _labelled(ws: Any, spec: FeatureSpec, label: Label, where: str) -> tuple[pa.Table, np.ndarray]:
    frame = unit_frame(ws, spec, where)
    known = ws.query(f"SELECT unit_id, bad FROM {outcome_sql(label, f'(SELECT unit_id FROM units WHERE {where})')} "
                     "WHERE bad IS NOT NULL")
    frame = frame.join(known, "unit_id", join_type="inner").sort_by([("t_start", "ascending"),
                                                                      ("unit_id", "ascending")])
    bad = frame.column("bad").to_numpy(zero_copy_only=False).astype(bool)
    return frame, bad


def _fit_predictor(x: np.ndarray, y: np.ndarray, spec: FeatureSpec, s: TrainSettings) -> tuple[Any, dict[str, Any]]:
    if len(np.unique(y)) < 2:
        raise UserError("the training units are all good or all bad: nothing to learn from")
    cats = spec.is_categorical
    if s.estimator == "hgb":
        # Categories go in as their vocabulary codes, split like numbers: the trees isolate a level in
        # two splits, and scoring one unit skips the categorical encoder that took 25 ms of a 30 ms call.
        est: Any = HistGradientBoostingClassifier(max_iter=s.max_iter, learning_rate=s.learning_rate,
                                                  random_state=s.seed, early_stopping=False)
    else:
        num = [i for i, c in enumerate(cats) if not c]
        cat = [i for i, c in enumerate(cats) if c]
        est = Pipeline([
            ("columns", ColumnTransformer([
                ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()),
                 num),
                ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0),
                                      OneHotEncoder(handle_unknown="ignore")), cat),
            ])),
            ("logistic", LogisticRegression(max_iter=1000, random_state=s.seed)),
        ])
    est.fit(x, y)
    return est, {"features": len(spec.names)}


def _fit_anomaly(x: np.ndarray, s: TrainSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    median = np.nanmedian(x, axis=0)
    filled = np.where(np.isnan(x), median, x)
    det = IsolationAnomaly(alpha=s.anomaly_alpha, random_state=s.seed).fit(filled)
    parts = {"forest": det.forest_, "median": det.median_, "sigma": det.robust_sigma_,
             "threshold": float(det.threshold_), "z_threshold": float(det.z_threshold_)}
    return parts, {"features": x.shape[1]}


def _operating_point(p: np.ndarray, bad: np.ndarray, s: TrainSettings) -> OperatingPoint:
    inspect = float(np.quantile(p, 1 - s.inspect_share)) if s.fill_capacity else \
        _inspect_threshold(p, bad, s.inspect_share, s.costs)
    pass_at = _pass_threshold(p, bad, s.max_escape_rate)
    if pass_at is not None and inspect is not None and pass_at >= inspect:
        pass_at = None
    return OperatingPoint(inspect_threshold=inspect, pass_threshold=pass_at,
                          inspect_share=s.inspect_share, max_escape_rate=s.max_escape_rate)


def _inspect_threshold(p: np.ndarray, bad: np.ndarray, capacity: float, costs: Costs,
                       alpha: float = INSPECT_ALPHA) -> float | None:
    """The score from which inspecting pays most on the holdout, within the inspection's capacity.

    Filling the capacity whatever the scores lost money on most lines: where failures are rare and
    hard to foresee, a tenth of the units holds fewer than `inspect / fail` bad ones. Inspecting the
    top k units pays where their failure rate beats that break-even; the best k is kept only if its
    rate beats it clearly (one-sided binomial test), else the model inspects nothing (None)."""
    from scipy.stats import binomtest

    if costs.fail <= costs.inspect or len(p) == 0:
        return None
    order = np.argsort(-p, kind="stable")
    cap = max(1, int(capacity * len(p)))
    found = np.cumsum(bad[order][:cap])
    k = np.arange(1, cap + 1)
    saved = (costs.fail - costs.inspect) * found - costs.inspect * (k - found)
    best = int(np.argmax(saved))
    if saved[best] <= 0:
        return None
    if binomtest(int(found[best]), int(k[best]), costs.inspect / costs.fail, alternative="greater").pvalue > alpha:
        return None
    return float(p[order][best])


def _pass_threshold(p: np.ndarray, bad: np.ndarray, max_escape_rate: float) -> float | None:
    """The highest score below which at most `max_escape_rate` of the holdout failed (over enough units)."""
    order = np.argsort(p, kind="stable")
    rate = np.cumsum(bad[order]) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero((rate <= max_escape_rate) & (np.arange(1, len(p) + 1) >= MIN_PASS_UNITS))
    return float(p[order][ok[-1]]) if ok.size else None


def holdout_metrics(rec: ModelRecord, score: np.ndarray, bad: np.ndarray) -> dict[str, Any]:
    d = decisions(rec, score)
    return {**routing_metrics(d, bad, rec.costs), "auc": _auc(bad, score)}


def _auc(bad: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(bad, score)) if 0 < bad.sum() < len(bad) else None


def _score_bins(score: np.ndarray) -> dict[str, Any]:
    edges = np.unique(np.quantile(score, np.linspace(0.1, 0.9, 9)))
    return {"edges": edges.tolist(), "share": _shares(score, edges).tolist()}


def _shares(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return counts / max(len(v), 1)


def _parent(ws: Any, station: str, kind: str) -> str | None:
    earlier = [r for r in registry.all_versions(ws, station) if r.kind == kind]
    return earlier[-1].id if earlier else None
