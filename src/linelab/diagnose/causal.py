"""Causal structure: which columns can cause the symptom, and whose own mechanism changed.

A column that merely inherits a shift from its parents is not a root cause. With a DAG we fit
each column's mechanism on the reference data (the column given its DAG parents), and look at
the incident rows' residuals: a shift, or a change of spread, of those residuals means that the
mechanism itself changed. Descendants of the real root see normal residuals once their parents
are accounted for, so the root ranks above them.

The mechanism model is chosen per column by exact leave-one-out error from ridge regressions
on the parents: linear, or additive splines (smooth non-linear effects that extrapolate
linearly, so a parent pushed outside its normal range does not leave garbage residuals
in its children).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import SplineTransformer

from .stats import neglog10, robust_scale, spread_p, welch_p

RIDGE_ALPHAS = np.logspace(-3, 4, 8)
MAX_MECHANISM_ROWS = 3_000  # reference rows a mechanism is fitted on: enough, and fast on big histories
# Splines are tried only for a column with at most this many parents: a process order makes every
# column of the earlier stations a parent, and splines of eighty parents are slow and over-fit.
MAX_SPLINE_PARENTS = 30


def stage_dag(stages: Mapping[str, float], columns: Iterable[str]) -> nx.DiGraph:
    """A process order as a causal graph: a column of an earlier stage may act on any column of a
    later one; columns of one stage are not ordered (none is the parent of another)."""
    cols = [c for c in columns if c in stages]
    graph = nx.DiGraph()
    graph.add_nodes_from(cols)
    graph.add_edges_from((a, b) for a in cols for b in cols if stages[a] < stages[b])
    return graph


def load_stages(source: str | Path | Mapping[str, float]) -> dict[str, float]:
    """Each column's stage along the line, from a mapping or a CSV with `column,stage` columns."""
    if not isinstance(source, (str, Path)):
        return {str(k): float(v) for k, v in source.items()}
    from .data import UserError, read_table

    tbl = read_table(source)
    missing = {"column", "stage"} - set(tbl.column_names)
    if missing:
        need = ", ".join(sorted(missing))
        raise UserError(f"{source}: the stages file needs the columns column,stage (missing: {need})")
    out: dict[str, float] = {}
    for line, (col, stage) in enumerate(zip(tbl["column"].to_pylist(), tbl["stage"].to_pylist(), strict=True), 2):
        if col is None:
            raise UserError(f"{source}, line {line}, field column: empty")
        try:
            out[str(col)] = float(stage)
        except (TypeError, ValueError):
            raise UserError(f"{source}, line {line}, field stage: {stage!r} is not a number") from None
        if not np.isfinite(out[str(col)]):
            raise UserError(f"{source}, line {line}, field stage: {stage!r} is not a finite number")
    return out


def load_dag(source: str | Path | nx.DiGraph | Iterable[tuple[str, str]]) -> nx.DiGraph:
    """A DAG from a networkx graph, an edge list, or a CSV with `source,target` columns."""
    if isinstance(source, nx.DiGraph):
        graph = source.copy()
    elif isinstance(source, (str, Path)):
        import pyarrow.csv as pacsv

        tbl = pacsv.read_csv(str(source))
        cols = tbl.column_names
        src, dst = ("source", "target") if {"source", "target"} <= set(cols) else cols[:2]
        graph = nx.DiGraph()
        graph.add_edges_from(zip(tbl[src].to_pylist(), tbl[dst].to_pylist(), strict=True))
    else:
        graph = nx.DiGraph()
        graph.add_edges_from(source)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise ValueError(f"the causal graph has a cycle: {cycle}")
    return graph


def _design(x: np.ndarray, splines: bool, transformer: SplineTransformer | None = None):
    if not splines or x.shape[1] == 0:
        return x, None
    if transformer is None:
        transformer = SplineTransformer(n_knots=5, degree=3, extrapolation="linear", knots="quantile")
        transformer.fit(x)
    return np.hstack([x, transformer.transform(x)]), transformer


@dataclass
class Mechanism:
    """One column's fitted mechanism: the column given its DAG parents (standardised units)."""

    column: str
    parents: list[str]
    kind: str  # "none" (no parents), "linear", "spline"
    ridge: RidgeCV | None = None
    splines: SplineTransformer | None = None
    scale: float = 1.0  # robust sd of reference residuals, in the column's own units
    loo_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    r2: float = 0.0

    def predict(self, parents_z: np.ndarray) -> np.ndarray:
        if self.ridge is None:
            return np.zeros(parents_z.shape[0])
        design, _ = _design(parents_z, self.kind == "spline", self.splines)
        return self.ridge.predict(design)


def fit_mechanism(column: str, parents: list[str], y: np.ndarray, x: np.ndarray) -> Mechanism:
    """Fit y ~ parents (both standardised) and keep leave-one-out residuals of the reference.

    `x` has one column per parent. LOO residuals come exactly and cheaply from RidgeCV's
    generalised cross-validation, so the reference residuals are honest (not over-fitted).
    """
    if not parents:
        resid = y - np.median(y)
        return Mechanism(column, [], "none", scale=robust_scale(resid), loo_residuals=resid)
    best: Mechanism | None = None
    best_err = np.inf
    for splines in (False, True) if len(parents) <= MAX_SPLINE_PARENTS else (False,):
        design, transformer = _design(x, splines)
        ridge = RidgeCV(alphas=RIDGE_ALPHAS, store_cv_results=True).fit(design, y)
        cv = ridge.cv_results_[:, list(ridge.alphas).index(ridge.alpha_)]
        err = float(np.mean(cv))
        if err < best_err * 0.98 or best is None:  # prefer the simpler model unless splines help
            loo = y - ridge.predict(design)
            # cv_results_ holds squared LOO errors; recover signed LOO residuals from the hat
            # matrix relation r_loo = r / (1 - h): sign of the in-sample residual, size from cv.
            loo = np.sign(loo) * np.sqrt(cv)
            best_err = err
            var_y = float(np.var(y)) or 1.0
            best = Mechanism(
                column,
                parents,
                "spline" if splines else "linear",
                ridge=ridge,
                splines=transformer,
                scale=robust_scale(loo),
                loo_residuals=loo,
                r2=max(0.0, 1.0 - err / var_y),
            )
    assert best is not None
    return best


@dataclass
class MechanismShift:
    """How much one column's own mechanism changed between reference and incident."""

    column: str
    parents: list[str]
    mean_shift: float  # incident residual mean, in reference residual sds
    spread_ratio: float  # incident residual spread / reference residual spread
    p_value: float
    score: float  # -log10(p): evidence that the mechanism changed
    model: str
    r2: float


class CausalModel:
    """Per-column mechanisms on a DAG, fitted on reference data (columns as float arrays)."""

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph
        self.mechanisms: dict[str, Mechanism] = {}
        self.center: dict[str, float] = {}
        self.spread: dict[str, float] = {}

    def _z(self, data: dict[str, np.ndarray], col: str) -> np.ndarray:
        return (data[col] - self.center[col]) / self.spread[col]

    def fit(self, reference: dict[str, np.ndarray], columns: Iterable[str]) -> CausalModel:
        cols = [c for c in columns if c in reference]
        n = len(next(iter(reference.values()))) if reference else 0
        if n > MAX_MECHANISM_ROWS:
            keep = np.sort(np.random.default_rng(0).choice(n, MAX_MECHANISM_ROWS, replace=False))
            reference = {k: v[keep] for k, v in reference.items()}
        need: set[str] = set(cols)
        for c in cols:
            if c in self.graph:
                need.update(p for p in self.graph.predecessors(c) if p in reference)
        for c in need:
            v = reference[c]
            self.center[c] = float(np.median(v))
            self.spread[c] = robust_scale(v)
        for c in cols:
            parents = [p for p in self.graph.predecessors(c) if p in reference] if c in self.graph else []
            x = (
                np.column_stack([self._z(reference, p) for p in parents])
                if parents
                else np.zeros((len(reference[c]), 0))
            )
            self.mechanisms[c] = fit_mechanism(c, parents, self._z(reference, c), x)
        return self

    def residuals(self, data: dict[str, np.ndarray], col: str) -> np.ndarray:
        """Residuals of `col` given its parents, in reference residual sds."""
        mech = self.mechanisms[col]
        x = np.column_stack([self._z(data, p) for p in mech.parents]) if mech.parents else np.zeros((len(data[col]), 0))
        z = self._z(data, col)
        out = np.full(z.shape[0], np.nan)
        ok = np.isfinite(z) & np.all(np.isfinite(x), axis=1)
        if not ok.any():
            return out
        # A parentless column is predicted by its reference median, which is 0 in z units.
        pred = mech.predict(x[ok]) if mech.parents else 0.0
        out[ok] = (z[ok] - pred) / mech.scale
        return out

    def shift(self, incident: dict[str, np.ndarray], col: str) -> MechanismShift:
        mech = self.mechanisms[col]
        ref = mech.loo_residuals / mech.scale
        inc = self.residuals(incident, col)
        ref = ref[np.isfinite(ref)]
        inc = inc[np.isfinite(inc)]
        p_mean = welch_p(inc, ref)
        p_spread = spread_p(inc, ref)
        p = min(1.0, 2 * min(p_mean, p_spread))
        spread_ratio = robust_scale(inc) / max(robust_scale(ref), 1e-12)
        return MechanismShift(
            column=col,
            parents=mech.parents,
            mean_shift=float(np.mean(inc) - np.mean(ref)),
            spread_ratio=float(spread_ratio),
            p_value=p,
            score=float(neglog10(p)),
            model=mech.kind,
            r2=mech.r2,
        )


def counterfactual_share(
    model: CausalModel,
    incident: dict[str, np.ndarray],
    root: str,
    target: str,
    transform,
    excess_per_unit: float,
) -> float | None:
    """Share of the symptom's excess that goes away had `root`'s mechanism stayed as in the reference.

    Additive-noise counterfactual: every incident row keeps its own residuals (abduction), except
    `root`, whose residuals are mapped onto the reference residual distribution rank for rank;
    the change is then pushed through the fitted mechanisms of the nodes between root and target.
    """
    g = model.graph
    if abs(excess_per_unit) < 1e-12 or root not in g or target not in g or target not in model.mechanisms:
        return None
    path_nodes = (nx.descendants(g, root) & (nx.ancestors(g, target) | {target})) | {target}
    if root not in nx.ancestors(g, target):
        return 0.0
    if any(n not in model.mechanisms for n in path_nodes | {root}):
        return None
    from .continuous import quantile_map

    z = {c: model._z(incident, c) for c in model.center if c in incident}
    mech = model.mechanisms[root]

    def pred(m: Mechanism, values: dict[str, np.ndarray]) -> np.ndarray:
        if not m.parents:
            return np.zeros(len(next(iter(values.values()))))
        return m.predict(np.column_stack([values[p] for p in m.parents]))

    cf = dict(z)
    e_root = z[root] - pred(mech, z)
    cf[root] = pred(mech, z) + quantile_map(e_root, mech.loo_residuals)
    for node in nx.topological_sort(g.subgraph(path_nodes)):
        m = model.mechanisms[node]
        cf[node] = pred(m, cf) + (z[node] - pred(m, z))
    y_cf = model.center[target] + model.spread[target] * cf[target]
    s_inc = transform(incident[target])
    s_cf = transform(y_cf)
    return float((np.mean(s_inc) - np.mean(s_cf)) / excess_per_unit)


def propagate(
    model: CausalModel, data: dict[str, np.ndarray], root: str, root_reference: np.ndarray
) -> dict[str, np.ndarray]:
    """Counterfactual values (own units) of `root` and its descendants had `root`'s mechanism stayed
    as in the reference: `root`'s residuals are mapped onto the reference ones rank for rank, and
    each descendant keeps its own residual on top of its mechanism's new prediction."""
    from .continuous import quantile_map

    g = model.graph
    z = {c: np.nan_to_num(model._z(data, c)) for c in model.center if c in data}

    def pred(m: Mechanism, values: dict[str, np.ndarray]) -> np.ndarray:
        if not m.parents:
            return np.zeros(len(next(iter(values.values()))))
        return m.predict(np.column_stack([values[p] for p in m.parents]))

    cf = dict(z)
    mech = model.mechanisms.get(root)
    if mech is not None:
        base = pred(mech, z)
        cf[root] = base + quantile_map(z[root] - base, mech.loo_residuals)
    elif root in model.center:
        cf[root] = (quantile_map(data[root], root_reference) - model.center[root]) / model.spread[root]
    else:
        return {root: quantile_map(data[root], root_reference)}
    changed = [root]
    if root in g:
        below = [n for n in nx.topological_sort(g.subgraph(nx.descendants(g, root))) if n in model.mechanisms]
        for node in below:
            m = model.mechanisms[node]
            # only mechanisms that explain their column carry a change downstream; and no
            # counterfactual leaves the range the column was seen in (splines extrapolate)
            if m.r2 < 0.2 or not all(p in cf for p in m.parents):
                continue
            lo, hi = np.percentile(z[node], [0.1, 99.9])
            cf[node] = np.clip(pred(m, cf) + (z[node] - pred(m, z)), lo, hi)
            changed.append(node)
    return {c: model.center[c] + model.spread[c] * cf[c] for c in changed}
