"""A version's score and decision for a batch of units, vectorised.

A failure predictor's score is the probability that the unit fails its test; an anomaly
detector's is how strange the unit's readings are, scaled so that 1 is its alarm threshold.
The decision follows the version's operating point: `inspect` at or above the inspection
threshold, `pass` (skip the test) at or below the pass threshold, else `none`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .registry import ModelRecord

# One thread for the models: OpenMP workers spinning on shared cores made a 2-second fit take 30 s,
# and a single unit's score gains nothing from threads. The controller is made on first use: it
# inspects every loaded native library, and a command that never scores should not pay for it.
_POOLS: list[Any] = []


def one_thread() -> Any:
    if not _POOLS:
        from threadpoolctl import ThreadpoolController

        _POOLS.append(ThreadpoolController())
    return _POOLS[0].limit(limits=1, user_api="openmp")

DECISIONS = ("inspect", "pass", "none")


def scores(rec: ModelRecord, estimator: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.empty(0)
    if len(x) <= FEW and rec.kind != "anomaly":
        trees = _walker(estimator)
        if trees is not None:
            return trees.proba(x)
    with one_thread():
        if rec.kind == "anomaly":
            return anomaly_scores(estimator, x)
        return np.asarray(estimator.predict_proba(x)[:, 1], dtype=float)


FEW = 32  # up to this many units, a boosted model's trees are walked all at once (see `Trees`)


class Trees:
    """A fitted binary `HistGradientBoostingClassifier` as flat arrays, walked for every tree at once.

    scikit-learn walks its trees one after another, each in a call that starts OpenMP threads: for
    the single unit of a request, 100 trees cost about a millisecond. Here one step moves every
    tree's current node down a level, with sklearn's own rule for numeric splits (missing values
    follow `missing_go_to_left`, else `value <= num_threshold` goes left), decided for every node
    of every tree up front (one pass over the node arrays), so a level costs one lookup; the leaf values are added
    in tree order onto the baseline, and the probability is sklearn's own link (`_loss`): the answer
    is exactly `predict_proba`'s (tests/test_deploy.py compares them). Used only for models whose
    every split is numeric (categories go in as codes), one tree per iteration.
    """

    def __init__(self, est: Any) -> None:
        trees = [iteration[0].nodes for iteration in est._predictors]
        starts = np.cumsum([0] + [len(t) for t in trees[:-1]]).astype(np.intp)
        nodes = np.concatenate(trees)
        offset = np.repeat(starts, [len(t) for t in trees])
        self.roots = starts
        self.leaf = nodes["is_leaf"].astype(bool)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(float)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = np.where(self.leaf, np.arange(len(nodes)), nodes["left"].astype(np.intp) + offset)
        self.right = np.where(self.leaf, np.arange(len(nodes)), nodes["right"].astype(np.intp) + offset)
        self.value = nodes["value"]
        self.depth = int(nodes["depth"].max()) if len(nodes) else 0
        self.baseline = est._baseline_prediction
        self.loss = est._loss

    def proba(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        # Where every node leads each unit, decided for all nodes at once (a few operations on arrays
        # of all nodes); the walk is then one lookup per level instead of a dozen.
        v = x[:, self.feature]
        step = np.where(np.where(np.isnan(v), self.missing_left, v <= self.threshold), self.left, self.right)
        if len(x) == 1:
            node = self.roots
            ahead = step[0]
            for _ in range(self.depth):
                node = ahead[node]  # a leaf points at itself
            node = node[None, :]
        else:
            node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
            rows = np.arange(len(x))[:, None]
            for _ in range(self.depth):
                node = step[rows, node]
        # onto the baseline, in tree order, as sklearn adds them (a cumulative sum adds one after another)
        start = np.broadcast_to(self.baseline.ravel()[:1], (len(x), 1))
        raw = np.cumsum(np.concatenate([start, self.value[node]], axis=1), axis=1)[:, -1:]
        return np.asarray(self.loss.predict_proba(raw)[:, 1], dtype=float)


_WALKERS: dict[int, tuple[Any, Trees | None]] = {}


def _walker(est: Any) -> Trees | None:
    """The estimator's `Trees`, built once per fitted model; None where they do not apply."""
    held = _WALKERS.get(id(est))
    if held is not None and held[0] is est:
        return held[1]
    trees = None
    categorical = getattr(est, "is_categorical_", None)
    from sklearn.ensemble import HistGradientBoostingClassifier  # loaded already: the estimator is one of its

    if (isinstance(est, HistGradientBoostingClassifier) and est.n_trees_per_iteration_ == 1
            and getattr(est, "_preprocessor", None) is None and not (categorical is not None and np.any(categorical))):
        trees = Trees(est)
    if len(_WALKERS) > 64:
        _WALKERS.clear()
    _WALKERS[id(est)] = (est, trees)
    return trees


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
    if op.inspect_threshold is not None:
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
