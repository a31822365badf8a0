"""Yield of a recipe predicted through the process: recipe → measurements → defects.

A trial's yield alone is a noisy binomial count, and a search that learns only from it needs many
trials. A recipe moves yield through what it does to the process (paste volume, peak temperature,
time above liquidus...), and every unit measures that. So the model is built from two parts a
process engineer would build by hand:

- how each defect code's rate depends on the unit's own readings: one logistic regression per
  code on spline features of every reading (linear beyond the data, so it extrapolates a
  hinge-like rise sensibly), learned from every unit made so far — the natural spread of
  readings within a recipe already shows where each defect rises;
- how the recipe moves the readings: per-trial means regressed on the recipe, for the readings
  the trials move beyond what the line does on its own (ambient humidity wanders, a recipe does
  not move it).

A recipe's yield is then the mean over a sample of real units, each with its recipe-driven
readings shifted to the new recipe, of the chance that no defect fires. `fit(recipes, tables)`,
`predict(recipes)`; `ready` says whether there were enough distinct trials to map the recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import SplineTransformer

CODE, PASSED = "code", "first_pass"


def unit_readings(ws: Any, t_from: datetime, t_to: datetime) -> pa.Table:
    """One row per unit started in [t_from, t_to]: every reading (station.name, mean of visits),
    whether it passed first time, and the defect code of its first failure."""
    return _readings(ws.query, "t_start BETWEEN ? AND ? AND", [t_from, t_to])


def readings_of(tables: Mapping[str, pa.Table]) -> pa.Table:
    """`unit_readings` of record tables just produced (`units`, `measurements`, `params`, `steps`),
    before or without their landing in a workspace: a recipe search run off the loop learns too."""
    con = duckdb.connect()
    try:
        for name in ("units", "measurements", "params", "steps"):
            con.register(name, tables[name])
        return _readings(lambda sql, params: con.sql(sql, params=params or None).to_arrow_table(), "", [])
    finally:
        con.close()


def _readings(query: Callable[[str, list[Any]], pa.Table], where: str, params: list[Any]) -> pa.Table:
    long = query(
        f"""WITH u AS (SELECT unit_id FROM units WHERE {where} first_pass IS NOT NULL)
           SELECT m.unit_id, m.station || '.' || m.name AS feature, avg(m.value) AS value
           FROM measurements m JOIN u USING (unit_id) GROUP BY ALL
           UNION ALL
           SELECT p.unit_id, p.station || '.' || p.name, avg(p.value)
           FROM params p JOIN u USING (unit_id) GROUP BY ALL""",
        params,
    )
    outcome = query(
        f"""SELECT u.unit_id, u.first_pass, f.code
           FROM units u LEFT JOIN (SELECT unit_id, arg_min(defect_code, t_in) AS code FROM steps
                                   WHERE result <> 'pass' AND defect_code IS NOT NULL GROUP BY unit_id) f
                USING (unit_id)
           WHERE {where} u.first_pass IS NOT NULL ORDER BY u.unit_id""",
        params,
    )
    # Pivot: one column per reading, NaN where a unit has none.
    names = sorted(pc.unique(long.column("feature")).to_pylist())
    row = pc.index_in(long.column("unit_id"), value_set=outcome.column("unit_id")).to_numpy(zero_copy_only=False)
    col = pc.index_in(long.column("feature"), value_set=pa.array(names)).to_numpy(zero_copy_only=False)
    grid = np.full((outcome.num_rows, len(names)), np.nan)
    grid[row.astype(int), col.astype(int)] = long.column("value").to_numpy(zero_copy_only=False)
    columns = {n: grid[:, j] for j, n in enumerate(names)}
    return pa.table({**columns, PASSED: outcome.column(PASSED), CODE: outcome.column(CODE)})


@dataclass
class ProcessModel:
    """Recipe → readings → defects; see the module doc."""

    sample_size: int = 600
    max_rows: int = 40000  # most recent units the defect models learn from
    min_failures: int = 15  # a code seen fewer times keeps its plain rate
    driven_ratio: float = 3.0  # trial-to-trial spread, in within-trial spreads, that a recipe causes
    seed: int = 0
    ready: bool = False
    features: list[str] = field(default_factory=list)
    driven: list[str] = field(default_factory=list)

    def fit(self, recipes: np.ndarray, tables: list[pa.Table]) -> ProcessModel:
        """`recipes`: one normalised recipe per table (trial); `tables`: `unit_readings` of each."""
        recipes = np.atleast_2d(np.asarray(recipes, dtype=float))
        self.ready = False
        tables = [t for t in tables if t.num_rows]
        if len(tables) != len(recipes) or not tables:
            return self
        shared = set.intersection(*(set(t.column_names) for t in tables)) - {CODE, PASSED}
        self.features = sorted(n for n in shared if pa.types.is_floating(tables[0].schema.field(n).type))
        blocks = [self._matrix(t) for t in tables]
        self._fit_recipe_map(recipes, blocks)
        x = np.vstack(blocks)
        u = np.repeat(recipes, [len(b) for b in blocks], axis=0)
        codes = np.concatenate([np.asarray(t.column(CODE).to_pylist(), dtype=object) for t in tables])
        passed = np.concatenate([np.asarray(t.column(PASSED).to_pylist(), dtype=bool) for t in tables])
        no_code = np.array(None, dtype=object)  # what np.where makes of None (numpy's stubs take no bare None)
        codes = np.where(passed, no_code, np.where(codes == None, "OTHER", codes))  # noqa: E711 - elementwise
        x, u, codes = x[-self.max_rows:], u[-self.max_rows:], codes[-self.max_rows:]
        ok = np.isfinite(x).all(axis=1)
        x, u, codes = x[ok], u[ok], codes[ok]
        if len(x) < 200:
            return self
        self._centre, self._scale = x.mean(axis=0), x.std(axis=0) + 1e-12
        # A set-point (and its actual) barely varies within a trial: its few trial-level values
        # would let a spline fit each trial's yield. It enters the defect models linearly; the
        # readings that vary unit to unit get the spline's shape.
        within = np.nanmedian(np.array([np.nanstd(b, axis=0) for b in blocks]), axis=0)
        between = np.nanstd(np.array([np.nanmean(b, axis=0) for b in blocks]), axis=0)
        self._set_like = np.flatnonzero(within < 0.25 * between)
        self._free = np.setdiff1d(np.arange(len(self.features)), self._set_like)
        z = self._z(x)
        # One spline per reading (the knots a joint transformer would place): each reading's share
        # of a defect's logit is its own, so a prediction recomputes only what a recipe moves.
        self._splines = {int(j): SplineTransformer(n_knots=4, degree=2, extrapolation="linear").fit(z[:, [j]])
                         for j in self._free}
        # which reading each basis column belongs to
        self._column_reading = np.concatenate(
            [np.full(self._splines[j].n_features_out_ if j in self._splines else 1, j)
             for j in np.concatenate([self._free, self._set_like]).astype(int)])
        basis = self._basis(x)
        self._models: dict[str, LogisticRegression] = {}
        self._plain = 0.0  # summed log-survival of the rare codes
        for code in sorted({c for c in codes if c is not None}):
            hit = codes == code
            if hit.sum() < self.min_failures:
                self._plain += float(np.log1p(-hit.mean()))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._models[code] = LogisticRegression(C=1.0, max_iter=300).fit(basis, hit)
        rng = np.random.default_rng(self.seed)
        pick = rng.choice(len(x), size=min(self.sample_size, len(x)), replace=False)
        self._sample_x, self._sample_u = x[pick], u[pick]
        self.ready = self._map is not None
        if self.ready and self._models:
            coef = np.array([m.coef_[0] for m in self._models.values()]).T  # basis columns x codes
            moved = np.isin(self._column_reading, self._driven_idx)
            self._coef_moved = coef[moved]
            self._logit_fixed = (self._basis(self._sample_x)[:, ~moved] @ coef[~moved]
                                 + np.array([m.intercept_[0] for m in self._models.values()]))
        return self

    def predict(self, recipes: np.ndarray, block: int = 32) -> np.ndarray:
        """Expected first-pass yield at each normalised recipe (rows)."""
        recipes = np.atleast_2d(np.asarray(recipes, dtype=float))
        if not self.ready:
            raise RuntimeError("the process model has not seen enough distinct trials")
        n = len(self._sample_x)
        out = np.empty(len(recipes))
        for start in range(0, len(recipes), block):  # a block of recipes at a time bounds the memory
            r = recipes[start:start + block]
            x = np.tile(self._sample_x, (len(r), 1))
            if self._driven_idx.size:
                du = np.repeat(r, n, axis=0) - np.tile(self._sample_u, (len(r), 1))
                x[:, self._driven_idx] += du @ self._map
            log_survive = np.full(len(x), self._plain)
            if self._models:
                logit = np.tile(self._logit_fixed, (len(r), 1)) + self._basis(x, self._driven_idx) @ self._coef_moved
                log_survive -= np.logaddexp(0.0, logit).sum(axis=1)  # log(1 - expit(logit)), summed over codes
            out[start:start + len(r)] = np.exp(log_survive).reshape(len(r), n).mean(axis=1)
        return out

    # -- internals ----------------------------------------------------------------------------
    def _matrix(self, t: pa.Table) -> np.ndarray:
        return np.column_stack([t.column(n).to_numpy(zero_copy_only=False).astype(float) for n in self.features])

    def _basis(self, x: np.ndarray, readings: np.ndarray | None = None) -> np.ndarray:
        """Spline columns of each free reading, then the set-point-like readings as they are;
        with `readings`, only those readings' columns."""
        z = self._z(x)
        order = [int(j) for j in np.concatenate([self._free, self._set_like])
                 if readings is None or j in readings]
        return np.hstack([self._splines[j].transform(z[:, [j]]) if j in self._splines else z[:, [j]]
                          for j in order])

    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self._centre) / self._scale, -50, 50)

    def _fit_recipe_map(self, recipes: np.ndarray, blocks: list[np.ndarray]) -> None:
        """Least-squares slopes of each recipe-driven reading's trial mean on the recipe."""
        self._map, self._driven_idx, self.driven = None, np.empty(0, dtype=int), []
        distinct = len({tuple(np.round(r, 6)) for r in recipes})
        if distinct < recipes.shape[1] + 1:
            return  # fewer trials than unknowns: the map is not identified yet
        means = np.array([np.nanmean(b, axis=0) for b in blocks])
        # the line's own wander within a trial: spread of 100-unit block means, pooled
        within = []
        for b in blocks:
            k = len(b) // 100
            if k >= 3:
                within.append(np.nanstd(b[: k * 100].reshape(k, 100, -1).mean(axis=1), axis=0, ddof=1))
        if not within:
            return
        wander = np.nanmedian(np.array(within), axis=0) + 1e-12
        driven = np.flatnonzero(np.nanstd(means, axis=0, ddof=1) >= self.driven_ratio * wander)
        design = np.column_stack([np.ones(len(recipes)), recipes])
        coef, *_ = np.linalg.lstsq(design, means[:, driven], rcond=None)
        self._map, self._driven_idx = coef[1:], driven
        self.driven = [self.features[j] for j in driven]
