"""A version's score and decision for a batch of units, vectorised.

A failure predictor's score is the probability that the unit fails its test; an anomaly
detector's is how strange the unit's readings are, scaled so that 1 is its alarm threshold.
The decision follows the version's operating point: `inspect` at or above the inspection
threshold, `pass` (skip the test) at or below the pass threshold, else `none`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from .registry import ModelRecord

# One thread for the models: OpenMP workers spinning on shared cores made a 2-second fit take 30 s,
# and a single unit's score gains nothing from threads.
_POOLS = ThreadpoolController()


def one_thread() -> Any:
    return _POOLS.limit(limits=1, user_api="openmp")

DECISIONS = ("inspect", "pass", "none")


def scores(rec: ModelRecord, estimator: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.empty(0)
    with one_thread():
        if rec.kind == "anomaly":
            return anomaly_scores(estimator, x)
        return np.asarray(estimator.predict_proba(x)[:, 1], dtype=float)


def anomaly_scores(parts: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The monitor's isolation score and largest robust |z|, each over its own threshold; the larger."""
    median = np.asarray(parts["median"], dtype=float)
    filled = np.where(np.isnan(x), median, x)  # a missing reading is not evidence of anything strange
    forest = -parts["forest"].score_samples(filled) / float(parts["threshold"])
    z = (np.abs(filled - median) / np.asarray(parts["sigma"], dtype=float)).max(axis=1) / float(parts["z_threshold"])
    return np.asarray(np.maximum(forest, z), dtype=float)


def decisions(rec: ModelRecord, score: np.ndarray) -> np.ndarray:
    op = rec.operating
    out = np.full(score.shape, "none", dtype=object)
    if op.pass_threshold is not None:
        out[score <= op.pass_threshold] = "pass"
    out[score >= op.inspect_threshold] = "inspect"
    return out


def savings(decision: np.ndarray, bad: np.ndarray, costs: Any) -> np.ndarray:
    """Per unit, what a decision saved against doing nothing (negative: what it cost)."""
    bad = bad.astype(bool)
    inspect = decision == "inspect"
    passed = decision == "pass"
    out = np.zeros(decision.shape, dtype=float)
    out[inspect & bad] = costs.fail - costs.inspect
    out[inspect & ~bad] = -costs.inspect
    out[passed & ~bad] = costs.test
    out[passed & bad] = -costs.escape
    return out


def misrouted(decision: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """A good unit sent to inspection, or a bad one let skip its test."""
    bad = bad.astype(bool)
    return ((decision == "inspect") & ~bad) | ((decision == "pass") & bad)


def routing_metrics(d: np.ndarray, bad: np.ndarray, costs: Any) -> dict[str, Any]:
    """Precision and recall of inspection, escapes of passing, and what it all saved per unit."""
    bad = bad.astype(bool)
    n, inspect, passed = len(d), d == "inspect", d == "pass"
    return {
        "units": int(n), "bad_rate": float(bad.mean()) if n else None,
        "inspected": int(inspect.sum()),
        "precision": float(bad[inspect].mean()) if inspect.any() else None,
        "recall": float((inspect & bad).sum() / bad.sum()) if bad.any() else None,
        "passed": int(passed.sum()),
        "escape_rate": float(bad[passed].mean()) if passed.any() else None,
        "saving_per_unit": float(savings(d, bad, costs).mean()) if n else 0.0,
    }
