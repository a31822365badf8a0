"""Feedback and review: each version's decisions priced against what really happened, and acted on.

The units' later results (with a person's verdicts) are joined back to every recorded prediction.
A candidate (canary or shadow) is compared with the incumbent on the same units since it entered
its stage, by the always-valid paired test (`sequential.PairedTest`): a canary that is better
becomes full (or waits for a person's sign-off), a shadow that is better becomes the canary when
there is none, a shadow that is worse is withdrawn. Guards withdraw an acting version (canary or
full) by themselves, each judged by an effect size over enough units, never by a p-value:

- escapes: the units it lets skip the test fail at more than `max_escape_factor` times its budget;
- loss: its paired saving is more than `max_loss` standard deviations below the incumbent's (or
  below doing nothing, where no model is the incumbent);
- drift: a reading it reads moved more than `max_shift` training sds over its latest units
  (`drift.input_drift`; the population stability indices of the readings and of its score are
  reported beside it).
A rollback records an event and opens a problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import predict, registry, rollout, tables
from .drift import input_drift, psi
from .features import matrix, unit_frame
from .labels import outcome_sql
from .sequential import PairedTest


def paired(ws: Any, dep: rollout.Deployment, version: str) -> dict[str, np.ndarray]:
    """The version's decisions since it entered its stage, the incumbent's on the same units, and the
    units' outcomes, in scoring order (units without a known result yet are left out)."""
    rec = registry.get(ws, version)
    incumbent = dep.full if dep.full != version else None
    p = tables.PREDICTIONS
    since = dep.since.get(version) or "1970-01-01"
    sql = (f"WITH c AS (SELECT unit_id, arg_max(decision, t) AS dc, bool_or(acted) AS acted, max(t) AS tc "
           f"FROM {p} WHERE station = ? AND version = ? AND t >= ?::TIMESTAMP GROUP BY unit_id), "
           f"i AS (SELECT unit_id, arg_max(decision, t) AS di FROM {p} WHERE station = ? AND version = ? "
           "GROUP BY unit_id), "
           f"o AS {outcome_sql(rec.label, 'c')} "
           "SELECT c.unit_id, dc, coalesce(di, 'none') AS di, acted, o.bad FROM c LEFT JOIN i USING (unit_id) "
           "JOIN o USING (unit_id) WHERE o.bad IS NOT NULL ORDER BY tc, c.unit_id")
    t = ws.query(sql, [dep.station, version, since, dep.station, incumbent or ""])
    return {k: t.column(k).to_numpy(zero_copy_only=False) for k in ("unit_id", "dc", "di", "acted", "bad")}


def evidence(ws: Any, dep: rollout.Deployment, version: str) -> dict[str, Any]:
    """Live metrics of a version and its verdicts: the paired test, the guards, drift."""
    rec = registry.get(ws, version)
    g = dep.guards
    e = paired(ws, dep, version)
    dc, di = e["dc"].astype(object), e["di"].astype(object)
    bad = e["bad"].astype(bool)
    d = predict.savings(dc, bad, rec.costs) - predict.savings(di, bad, rec.costs)
    test = PairedTest(alpha=g.alpha, tau=g.tau, min_units=g.min_units).run(d, discordant=dc != di)
    miss = predict.misrouted(dc, bad)
    out: dict[str, Any] = {
        "version": version, "stage": dep.stage_of(version), "labelled": int(bad.size),
        "live": predict.routing_metrics(dc, bad, rec.costs),
        "incumbent": dep.full if dep.full != version else None,
        "incumbent_live": predict.routing_metrics(di, bad, rec.costs),
        "test": test, "misrouted": int((miss & e["acted"].astype(bool)).sum()),
        "last_unit": str(e["unit_id"][-1]) if bad.size else None,
    }
    guards = []
    inspect = dc == "inspect"
    if inspect.any() and (~inspect).any() and bad[~inspect].any():
        # how much likelier its inspected units fail than the rest: reported, not a guard (inside a bad
        # lot's run every unit is as likely to fail, and inspecting them all is still right)
        out["lift"] = float(bad[inspect].mean() / bad[~inspect].mean())
    passed = dc == "pass"
    if passed.sum() >= g.min_passed:
        escape = float(bad[passed].mean())
        budget = g.max_escape_factor * max(rec.operating.max_escape_rate, 1e-3)
        if escape > budget:
            guards.append(f"{100 * escape:.2f}% of the units it let skip the test were bad "
                          f"(guard: {100 * budget:.2f}%)")
    if bad.size >= g.min_units:
        sd = float(d.std(ddof=1)) or 1e-12
        out["loss_sd"] = float(-d.mean() / sd)
        if out["loss_sd"] > g.max_loss:
            guards.append(f"it saves {out['loss_sd']:.2f} sd less per unit than {out['incumbent'] or 'no model'} "
                          f"(guard: {g.max_loss} sd, over {bad.size} units)")
    drift = _drift(ws, dep, rec)
    out["drift"] = drift
    if drift and drift["max_shift_sd"] > g.max_shift:
        guards.append(f"its inputs drifted: {drift['worst']} moved {drift['max_shift_sd']:.2f} sd from training "
                      f"(PSI {drift['worst_psi']:.2f}; guard: {g.max_shift} sd, over {drift['units']} units)")
    out["guards"] = guards
    return out


def _drift(ws: Any, dep: rollout.Deployment, rec: registry.ModelRecord) -> dict[str, Any] | None:
    g = dep.guards
    latest = (f"SELECT unit_id, score FROM {tables.PREDICTIONS} WHERE station = ? AND version = ? "
              f"ORDER BY t DESC, unit_id DESC LIMIT {int(g.drift_units)}")
    scored = ws.query(latest, [dep.station, rec.id])
    if scored.num_rows < g.drift_units:
        return None
    ref = rec.reference.get("score") or {}
    found: list[dict[str, Any]] = []
    if ref:
        found.append({"name": "score", "psi": _score_psi(scored.column("score").to_numpy(), ref)})
    inputs: list[dict[str, Any]] = []
    frame = unit_frame(ws, rec.features, f"unit_id IN (SELECT unit_id FROM ({latest}))", [dep.station, rec.id])
    if frame.num_rows >= g.drift_units // 2 and rec.reference.get("features"):
        inputs = input_drift(matrix(frame, rec.features), rec.reference["features"],
                             frame.column("product").to_numpy(zero_copy_only=False).astype(str),
                             rec.reference.get("products"), min_units=g.drift_units // 5)
    worst: dict[str, Any] = inputs[0] if inputs else {"name": None, "shift_sd": 0.0, "psi": 0.0}
    return {"units": int(scored.num_rows), "max_shift_sd": abs(worst["shift_sd"] or 0.0), "worst": worst["name"],
            "worst_psi": worst["psi"], "score_psi": found[0]["psi"] if found else None, "inputs": inputs[:5]}


def _score_psi(score: np.ndarray, ref: dict[str, Any]) -> float:
    edges = np.asarray(ref["edges"], dtype=float)
    live = np.bincount(np.searchsorted(edges, score, side="right"), minlength=len(edges) + 1) / max(len(score), 1)
    return psi(ref["share"], live)


def review(ws: Any, station: str) -> list[dict[str, Any]]:
    """Judge every live version at the station and act: rollbacks, promotions, withdrawals."""
    dep = rollout.get(ws, station)
    changes: list[dict[str, Any]] = []
    for version in [v for v in (dep.canary, dep.full) if v]:
        dep = rollout.get(ws, station)
        if dep.stage_of(version) not in ("canary", "full"):
            continue  # moved by an earlier verdict of this review
        ev = evidence(ws, dep, version)
        if ev["guards"] or (dep.canary == version and ev["test"]["decision"] == "worse"):
            reason = "; ".join(ev["guards"]) or "the always-valid test finds it worse than the incumbent"
            changes.append(rollout.rollback(ws, dep, version, reason, by="review", evidence=_brief(ev)))
        elif dep.canary == version and ev["test"]["decision"] == "better":
            changes += _promote(ws, dep, version, ev)
    for version in list(rollout.get(ws, station).shadows):
        dep = rollout.get(ws, station)
        if dep.stage_of(version) != "shadow":
            continue
        ev = evidence(ws, dep, version)
        verdict = ev["test"]["decision"]
        if verdict == "worse":
            changes.append(rollout.move(ws, dep, version, "retired", "the always-valid test finds it worse than "
                                        "the incumbent", by="review", evidence=_brief(ev)))
        elif verdict == "better" and dep.canary is None:
            changes.append(rollout.move(ws, dep, version, "canary", "better than the incumbent with confidence",
                                        by="review", evidence=_brief(ev)))
    return changes


def _promote(ws: Any, dep: rollout.Deployment, version: str, ev: dict[str, Any]) -> list[dict[str, Any]]:
    reason = f"better than {ev['incumbent'] or 'no model'} with confidence (paired saving interval " \
             f"{ev['test']['lower']:.4f}..{ev['test']['upper']:.4f} per unit)"
    if dep.require_signoff:
        if dep.awaiting_signoff == version:
            return []
        dep.awaiting_signoff = version
        rollout.save(ws, dep)
        return [rollout.record_event(ws, dep.station, version, "canary", "canary", "awaiting_signoff",
                                     reason + "; a person's sign-off is required", "review", _brief(ev))]
    return [rollout.move(ws, dep, version, "full", reason, by="review", evidence=_brief(ev))]


def _brief(ev: dict[str, Any]) -> dict[str, Any]:
    """The evidence an event keeps: the numbers, not the arrays."""
    test = ev["test"]
    return {"labelled": ev["labelled"], "misrouted": ev["misrouted"], "last_unit": ev["last_unit"],
            "test": test["decision"], "at": test["at"], "mean_saving_diff": test["mean"],
            "lower": test["lower"], "upper": test["upper"], "lift": ev.get("lift"), "loss_sd": ev.get("loss_sd"),
            "max_shift_sd": (ev.get("drift") or {}).get("max_shift_sd"), "guards": ev["guards"],
            "precision": ev["live"]["precision"], "recall": ev["live"]["recall"],
            "saving_per_unit": ev["live"]["saving_per_unit"]}
