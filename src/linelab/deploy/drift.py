"""Have a model's inputs moved away from what it was trained on? Judged by how far, not by a p-value.

Each reading's training distribution is kept as deciles, mean and standard deviation (and each
category's level shares). Live units are compared by two effect sizes that do not shrink or grow
with the number of units, so a verdict does not flip with sample size: the standardized mean
shift (live mean - training mean, in training sds, within each product: products differ by design)
and the population stability index
(PSI = sum (live - train) * ln(live / train) over the training deciles). The mean shift decides;
PSI is reported, since a line that runs products in campaigns empties whole deciles of a reading
for hundreds of units without anything being wrong. New lots, suppliers and operators are a
line's normal life, not drift: categories are not judged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import FeatureSpec

EPS = 1e-4  # a share of zero would make the index infinite


def reference_bins(x: np.ndarray, spec: FeatureSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, name in enumerate(spec.names):
        col = x[:, j]
        if spec.is_categorical[j]:
            cat = spec.categorical[j - len(spec.numeric)]
            # lots, suppliers, operators come and go by design: a new one is not a drifted input
            out.append({"name": name, "categorical": True, "judged": False,
                        "share": _cat_shares(col, len(cat.levels)).tolist()})
            continue
        finite = col[np.isfinite(col)]
        edges = np.unique(np.quantile(finite, np.linspace(0.1, 0.9, 9))) if finite.size else np.empty(0)
        out.append({"name": name, "categorical": False, "edges": edges.tolist(),
                    "share": _num_shares(col, edges).tolist(),
                    "mean": float(finite.mean()) if finite.size else None,
                    "sd": float(finite.std(ddof=1)) if finite.size > 1 else None})
    return out


def _cat_shares(col: np.ndarray, levels: int) -> np.ndarray:
    codes = np.where(np.isnan(col), levels, col).astype(int)  # the last bin: missing or unknown
    return np.bincount(codes, minlength=levels + 1) / max(len(col), 1)


def _num_shares(col: np.ndarray, edges: np.ndarray) -> np.ndarray:
    finite = np.isfinite(col)
    counts = np.bincount(np.searchsorted(edges, col[finite], side="right"), minlength=len(edges) + 1)
    return np.append(counts, (~finite).sum()) / max(len(col), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def product_stats(x: np.ndarray, products: np.ndarray, spec: FeatureSpec) -> dict[str, dict[str, Any]]:
    """Mean and sd of every reading per product: products differ by design, so a shift is judged within one."""
    k = len(spec.numeric)
    out = {}
    for prod in np.unique(products):
        rows = x[products == prod, :k]
        if len(rows) > 1:
            out[str(prod)] = {"units": int(len(rows)), "mean": _nan_list(np.nanmean(rows, axis=0)),
                              "sd": _nan_list(np.nanstd(rows, axis=0, ddof=1))}
    return out


def _nan_list(v: np.ndarray) -> list[float | None]:
    return [float(a) if np.isfinite(a) else None for a in v]


def input_drift(x: np.ndarray, reference: list[dict[str, Any]], products: np.ndarray | None = None,
                by_product: dict[str, dict[str, Any]] | None = None, min_units: int = 100) -> list[dict[str, Any]]:
    """Each judged input of live units `x` against training, largest mean shift first: the shift in
    training sds within each product (both sides with `min_units`; the largest counts), and PSI."""
    out = []
    for j, ref in enumerate(reference):
        if not ref.get("judged", True):
            continue
        col = x[:, j]
        if ref["categorical"]:
            live = _cat_shares(col, len(ref["share"]) - 1)
        else:
            live = _num_shares(col, np.asarray(ref["edges"], dtype=float))
        out.append({"name": ref["name"], "psi": psi(ref["share"], live),
                    "shift_sd": _shift(col, j, ref, products, by_product, min_units)})
    return sorted(out, key=lambda r: -abs(r["shift_sd"] or 0.0))


def _shift(col: np.ndarray, j: int, ref: dict[str, Any], products: np.ndarray | None,
           by_product: dict[str, dict[str, Any]] | None, min_units: int) -> float | None:
    if products is None or not by_product:
        finite = col[np.isfinite(col)]
        return float((finite.mean() - ref["mean"]) / ref["sd"]) if ref.get("sd") and finite.size else None
    shifts = []
    for prod, stats in by_product.items():
        mine = col[(products == prod) & np.isfinite(col)]
        mean, sd = stats["mean"][j], stats["sd"][j]
        if mine.size >= min_units and stats["units"] >= min_units and mean is not None and sd:
            shifts.append((mine.mean() - mean) / sd)
    return float(max(shifts, key=abs)) if shifts else None
