"""Continuous factors: did the factor move, and does its move account for the symptom?

Two kinds of evidence:

* distribution shift of the factor between reference and incident: robust standardised shift
  of the median, spread ratio, Welch and Brown–Forsythe tests;
* model-based attribution: a gradient-boosting model of the symptom on all factors (pooled
  reference + incident rows), and for each shifted factor the counterfactual "had this factor
  kept its reference distribution" (incident values mapped onto reference quantiles, rank for
  rank). The drop in the predicted symptom is the factor's share of the excess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from .data import Column
from .stats import robust_scale, spread_p, welch_p

MAX_MODEL_ROWS = 12_000  # rows the attribution model is trained on (sampled), keeps big histories fast
MAX_EVAL_ROWS = 4_000
CORRELATED = 0.7  # |correlation| above which continuous factors are attributed as one group


@dataclass
class ShiftStats:
    factor: str
    kind: str
    median_ref: float
    median_inc: float
    scale: float
    z_shift: float  # (median_inc - median_ref) / robust sd of the reference
    spread_ratio: float
    p_mean: float
    p_spread: float
    p_value: float


def shift_stats(col: Column) -> ShiftStats:
    r = col.ref[np.isfinite(col.ref)]
    i = col.inc[np.isfinite(col.inc)]
    scale = robust_scale(r)
    med_r, med_i = float(np.median(r)) if r.size else np.nan, float(np.median(i)) if i.size else np.nan
    # mean shift in robust sds: the median alone misses shifts of discrete (tied) columns
    z = float((np.mean(i) - np.mean(r)) / scale) if r.size and i.size else 0.0
    p_mean, p_spread = welch_p(i, r), spread_p(i, r)
    ratio = robust_scale(i) / scale if i.size > 2 else 1.0
    return ShiftStats(
        col.name, col.kind, med_r, med_i, scale, z, float(ratio), p_mean, p_spread, min(1.0, 2 * min(p_mean, p_spread))
    )


def quantile_map(x_inc: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
    """Incident values replaced by the reference value of the same rank (optimal transport in 1-D)."""
    ref = np.sort(x_ref[np.isfinite(x_ref)])
    if ref.size == 0:
        return x_inc.copy()
    ranks = np.argsort(np.argsort(x_inc, kind="stable"), kind="stable")
    pos = ((ranks + 0.5) / x_inc.size * ref.size).astype(np.int64)
    return ref[np.clip(pos, 0, ref.size - 1)]


@dataclass
class Attribution:
    shares: dict[str, float]  # factor -> share of the excess its shift accounts for
    model_r2: float
    groups: dict[str, list[str]]  # factor -> the strongly correlated factors mapped with it


def attribute(
    columns: dict[str, Column],
    s_ref: np.ndarray,
    s_inc: np.ndarray,
    factors: list[str],
    seed: int = 0,
    counterfactual: Callable[[str, np.ndarray], dict[str, np.ndarray]] | None = None,
) -> Attribution | None:
    """Share of the excess symptom accounted for by each listed continuous factor's shift.

    `counterfactual(factor, incident_rows)` may supply the counterfactual columns (the factor and
    its causal descendants); by default only the factor is mapped onto its reference distribution.
    """
    excess = float(np.mean(s_inc) - np.mean(s_ref))
    if not factors or abs(excess) < 1e-12:
        return None
    rng = np.random.default_rng(seed)
    names = list(columns)
    cat_mask = np.array([columns[c].kind == "categorical" for c in names])

    n_ref, n_inc = s_ref.size, s_inc.size
    ri = np.sort(rng.choice(n_ref, min(n_ref, MAX_MODEL_ROWS // 2), replace=False))
    ii = np.sort(rng.choice(n_inc, min(n_inc, MAX_MODEL_ROWS // 2), replace=False))

    def matrix(part: str, rows: np.ndarray) -> np.ndarray:
        cols = []
        for c in names:
            col = columns[c]
            if col.kind == "categorical":
                from .categorical import encode

                _, rc, ic = encode(col)
                # beyond 250 levels the model lumps the rest together (HistGB's categorical limit)
                v = np.minimum((rc if part == "ref" else ic)[rows], 250)
            else:
                v = getattr(col, part)[rows]
            cols.append(np.asarray(v, dtype=float))
        return np.column_stack(cols)

    x_ref, xi = matrix("ref", ri), matrix("inc", ii)
    x = np.vstack([x_ref, xi])
    y = np.concatenate([s_ref[ri], s_inc[ii]])
    model = HistGradientBoostingRegressor(
        max_iter=60,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        categorical_features=cat_mask if cat_mask.any() else None,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=10,
        random_state=seed,
    )
    # one thread: on these sizes OpenMP start-up and contention cost more than they save
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(x, y)
        r2 = float(model.score(x, y))
        pick = np.sort(rng.permutation(xi.shape[0])[:MAX_EVAL_ROWS])  # spread over the whole incident
        xi, ii_eval = xi[pick], ii[pick]
        base = float(model.predict(xi).mean())
        shares: dict[str, float] = {}
        groups: dict[str, list[str]] = {}
        cont = [j for j, c in enumerate(names) if not cat_mask[j]]
        # measurements of one thing (paste volume, area, height) stand in for each other in the
        # model: map the strongly correlated ones together, or each would look unimportant
        corr = _correlation(x_ref[:, cont], x[:, cont])
        for f in factors:
            cf = xi.copy()
            k = cont.index(names.index(f))
            groups[f] = [names[cont[m]] for m in np.flatnonzero(np.abs(np.nan_to_num(corr[k])) >= CORRELATED)]
            for g in groups[f]:
                if g != f:
                    cf[:, names.index(g)] = quantile_map(xi[:, names.index(g)], columns[g].ref)
            if counterfactual is None:
                cf[:, names.index(f)] = quantile_map(xi[:, names.index(f)], columns[f].ref)
            else:  # the factor and, through the causal graph, what it drives downstream
                for col, values in counterfactual(f, ii_eval).items():
                    if col in names:
                        cf[:, names.index(col)] = values
            shares[f] = float((base - model.predict(cf).mean()) / excess)
    return Attribution(shares, r2, groups)


def _correlation(ref: np.ndarray, both: np.ndarray) -> np.ndarray:
    """Correlation of the columns in normal running (the reference rows): factors that merely
    drifted together during the incident (a clogging stencil and a cooling oven zone) are not one
    thing, and each answers for itself. A column that did not vary in the reference (a setting
    changed for the incident) has no correlation there; the whole window decides for it."""
    if ref.shape[1] < 2:
        return np.ones((1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(np.nan_to_num(ref), rowvar=False)
        pooled = np.corrcoef(np.nan_to_num(both), rowvar=False)
    return np.where(np.isfinite(corr), corr, pooled)


def plot_data(col: Column, bins: int = 30) -> dict:
    both = np.concatenate([col.ref, col.inc])
    both = both[np.isfinite(both)]
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hr, _ = np.histogram(np.clip(col.ref, lo, hi), edges, density=True)
    hi_, _ = np.histogram(np.clip(col.inc, lo, hi), edges, density=True)
    return {
        "type": "histogram",
        "factor": col.name,
        "edges": edges.tolist(),
        "reference": hr.tolist(),
        "incident": hi_.tolist(),
    }
