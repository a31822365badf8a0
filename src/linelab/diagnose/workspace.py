"""Diagnosis of a workspace problem: one row per unit through its genealogy, then the Diagnoser.

For a problem (a defect rate or a measurement that moved) we take the units built since its
onset (incident) and as many units built just before (reference), and give every unit its
whole history in one row, assembled by DuckDB (no Python loops over records):

* at every station, on the unit's first visit: machine, fixture (nozzle, stencil, test
  fixture), operator, recipe; the shift at the symptom's station;
* the lot and supplier of every material it was built with;
* process parameters and environment at every station;
* measurements taken at stations *before* the symptom's station (a defect at test may be
  caused at print; a measurement at the symptom's own station is a symptom, not a cause);
* the symptom itself: first-pass failure (with the defect codes whose rate rose) or the value
  of the measurement.

Events (maintenance, lot changes) are matched against the onset of the symptom and of each cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as scipy_stats

from linelab.errors import NotFound, UserError
from linelab.profile import Profile, workspace_profile
from linelab.store.backend import sql_ident as _q
from linelab.store.backend import sql_text as _lit

from .data import ENVIRONMENT_PATTERN
from .diagnoser import Diagnoser
from .model import Cause, Diagnosis, Entity
from .onset import _fmt_time, step_inside
from .plots import render_evidence
from .text import summary_text

STEP_FIELDS = ("machine", "fixture", "operator", "recipe_id")
MAX_INCIDENT_UNITS = 40_000
MIN_REFERENCE_UNITS = 20_000
GUARD = timedelta(minutes=30)  # units just before the onset estimate may already be affected
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-:]+$")


@dataclass
class SymptomSpec:
    """What went wrong, where and since when."""

    onset: datetime
    end: datetime | None = None
    station: str | None = None  # station whose first-pass failures are the symptom
    defect_codes: list[str] | None = None  # restrict failures to these codes (any station)
    measurement: str | None = None  # or: a measurement (at `station`) whose value moved
    any_failure: bool = False  # the unit failed anywhere (a material lot problem)
    mode: str = "auto"  # how the symptom moved: "mean" where the detector that raised it watches a mean
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)




def station_order(ws: Any) -> list[str]:
    """Stations in process order: by their typical time into a unit's build."""
    tbl = ws.query(
        """SELECT s.station, median(epoch(s.t_in) - epoch(u.t_start)) AS lag
           FROM (SELECT * FROM steps USING SAMPLE 20000 ROWS) s JOIN units u USING (unit_id)
           GROUP BY s.station ORDER BY lag"""
    )
    return [str(s) for s in tbl.column("station").to_pylist()]


def _window(ws: Any, spec: SymptomSpec) -> tuple[datetime, datetime, datetime]:
    """Reference start, onset, incident end (bounded numbers of units either side)."""
    end = spec.end or ws.scalar("SELECT max(t_start) FROM units")
    if end is None:
        raise UserError("the workspace has no units")
    inc_end = ws.scalar(
        "SELECT max(t_start) FROM (SELECT t_start FROM units WHERE t_start >= ? AND t_start <= ? "
        "ORDER BY t_start LIMIT ?)",
        [spec.onset, end, MAX_INCIDENT_UNITS],
    )
    if inc_end is None:
        raise UserError(f"no units were built between the onset {spec.onset} and {end}")
    n_inc = ws.scalar("SELECT count(*) FROM units WHERE t_start >= ? AND t_start <= ?", [spec.onset, inc_end])
    n_ref = max(MIN_REFERENCE_UNITS, int(n_inc))
    ref_start = ws.scalar(
        "SELECT min(t_start) FROM (SELECT t_start FROM units WHERE t_start < ? ORDER BY t_start DESC LIMIT ?)",
        [spec.onset - GUARD, n_ref],
    )
    if ref_start is None:
        raise UserError(f"no units were built before the onset {spec.onset}: nothing to compare with")
    return ref_start, spec.onset, inc_end


def unit_table(
    ws: Any, spec: SymptomSpec, order: list[str] | None = None
) -> tuple[pa.Table, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """One row per unit in the window: period, time, every candidate factor and the symptom."""
    ref_start, onset, inc_end = _window(ws, spec)
    guard_end = onset - GUARD
    order = order if order is not None else station_order(ws)
    rank = {s: i for i, s in enumerate(order)}
    where_units = "u.t_start >= ? AND u.t_start <= ? AND (u.t_start < ? OR u.t_start >= ?)"
    wparams = [ref_start, inc_end, guard_end, onset]
    t_lo, t_hi = ref_start - timedelta(hours=1), inc_end + timedelta(days=2)
    meta: dict[str, dict[str, Any]] = {}

    # which step fields vary, per station (constant columns say nothing)
    counts = ws.query(
        "SELECT station, "
        + ", ".join(f"count(DISTINCT {f}) AS {f}" for f in STEP_FIELDS)
        + " FROM steps WHERE t_in BETWEEN ? AND ? GROUP BY station",
        [t_lo, t_hi],
    ).to_pylist()
    step_cols: list[str] = []
    sym_station = spec.station or (order[-1] if order else None)
    for row in counts:
        st = row["station"]
        if sym_station in rank and rank.get(st, -1) > rank[sym_station]:
            continue  # stations after the symptom cannot cause it (and a failed unit never gets there)
        for f in STEP_FIELDS:
            if row[f] and row[f] > 1:
                name = f"{f}@{st}"
                step_cols.append(f"arg_min({f}, t_in) FILTER (WHERE station = {_lit(st)}) AS {_q(name)}")
                meta[name] = {"type": f if f != "recipe_id" else "recipe", "station": st, "table": "steps"}
    if sym_station:
        step_cols.append(f"arg_min(shift, t_in) FILTER (WHERE station = {_lit(sym_station)}) AS shift")
        meta["shift"] = {"type": "shift", "station": sym_station, "table": "steps"}
    n_products = ws.scalar("SELECT count(DISTINCT product) FROM units WHERE t_start BETWEEN ? AND ?",
                           [ref_start, inc_end])
    if n_products and n_products > 1:
        meta["product"] = {"type": "product", "table": "units"}

    # the symptom
    if spec.measurement:
        # the monitor watches process parameters as well as measurements
        cond = f"name = {_lit(spec.measurement)}" + (f" AND station = {_lit(spec.station)}" if spec.station else "")
        target_sql = (
            f"(SELECT unit_id, avg(value) AS symptom FROM (SELECT unit_id, value FROM measurements "
            f"WHERE t BETWEEN ? AND ? AND {cond} UNION ALL SELECT unit_id, value FROM params "
            f"WHERE t BETWEEN ? AND ? AND {cond}) GROUP BY unit_id)"
        )
    else:
        conds = []
        if spec.station and not spec.any_failure:
            conds.append(f"station = {_lit(spec.station)}")
        first_visit = "arg_min(result, t_in) <> 'pass'"
        if spec.defect_codes:
            codes = ", ".join(_lit(c) for c in spec.defect_codes)
            fail = f"bool_or(coalesce(defect_code IN ({codes}), false))"
        else:
            fail = first_visit if conds else "bool_or(result <> 'pass')"
        target_sql = (
            f"(SELECT unit_id, CAST({fail} AS INTEGER) AS symptom FROM steps WHERE t_in BETWEEN ? AND ?"
            + (f" AND {conds[0]}" if conds else "")
            + " GROUP BY unit_id)"
        )

    # materials: lot and supplier of each material
    mats = [r["material"] for r in ws.query("SELECT DISTINCT material FROM materials ORDER BY 1").to_pylist()]
    mat_cols = []
    for m in mats:
        mat_cols.append(f"max(lot) FILTER (WHERE material = {_lit(m)}) AS {_q('lot@' + m)}")
        mat_cols.append(f"max(supplier) FILTER (WHERE material = {_lit(m)}) AS {_q('supplier@' + m)}")
        meta["lot@" + m] = {"type": "lot", "material": m, "table": "materials"}
        meta["supplier@" + m] = {"type": "supplier", "material": m, "table": "materials"}

    # params at or before the symptom's station; measurements only upstream of it
    def numeric_cols(table: str) -> list[str]:
        names = ws.query(
            f"SELECT station, name FROM {table} WHERE t BETWEEN ? AND ? GROUP BY ALL "
            "HAVING stddev_samp(value) > 0 ORDER BY 1, 2",
            [t_lo, t_hi],
        ).to_pylist()
        out = []
        for r in names:
            st, nm = r["station"], r["name"]
            if spec.measurement and nm == spec.measurement and st == sym_station:
                continue  # the symptom itself
            if sym_station in rank:
                later = rank.get(st, -1) - rank[sym_station]
                # a measurement at or after the symptom's station is a symptom, not a cause; a
                # setting met after it cannot have caused it
                if later > 0 or (later == 0 and table == "measurements"):
                    continue
            col = f"{nm}@{st}"
            out.append(f"avg(value) FILTER (WHERE station = {_lit(st)} AND name = {_lit(nm)}) AS {_q(col)}")
            kind = "param" if table == "params" else "measurement"
            meta[col] = {"type": kind, "name": nm, "station": st, "table": table}
        return out

    par_cols, mea_cols = numeric_cols("params"), numeric_cols("measurements")

    def pivot(table: str, cols: list[str], tcol: str) -> str:
        if not cols:
            return ""
        return (
            f"LEFT JOIN (SELECT unit_id, {', '.join(cols)} FROM {table} WHERE {tcol} BETWEEN ? AND ? "
            f"AND unit_id IN (SELECT unit_id FROM w) GROUP BY unit_id) USING (unit_id)"
        )

    joins, jparams = [], []
    for table, cols, tcol in (
        ("steps", step_cols, "t_in"),
        ("params", par_cols, "t"),
        ("measurements", mea_cols, "t"),
    ):
        if cols:
            joins.append(pivot(table, cols, tcol))
            jparams += [t_lo, t_hi]
    if mat_cols:
        joins.append(
            f"LEFT JOIN (SELECT unit_id, {', '.join(mat_cols)} FROM materials "
            "WHERE unit_id IN (SELECT unit_id FROM w) GROUP BY unit_id) USING (unit_id)"
        )
    sql = (
        f"WITH w AS (SELECT u.unit_id, u.t_start, CAST(u.t_start >= ? AS INTEGER) AS incident, u.product "
        f"FROM units u "
        f"WHERE {where_units}) "
        f"SELECT * FROM w LEFT JOIN {target_sql} tg USING (unit_id) "
        + " ".join(joins)
        + " ORDER BY t_start, unit_id"  # a fixed row order: the same data always give the same answer
    )
    tparams = [t_lo, t_hi] * (2 if spec.measurement else 1)
    tbl = ws.query(sql, [onset, *wparams, *tparams, *jparams])
    events = ws.query(
        "SELECT t, kind, station, machine, target FROM events WHERE t BETWEEN ? AND ? ORDER BY t",
        [ref_start, inc_end],
    ).to_pylist()
    return tbl, events, meta


def process_dag(meta: dict[str, dict[str, Any]], order: list[str]) -> list[tuple[str, str]]:
    """Causal order of the continuous columns along the line: parameters (and the environment)
    act on measurements at their own and later stations; a measurement can act on measurements
    taken later. A measurement whose shift is inherited from upstream then ranks below its source."""
    rank = {s: i for i, s in enumerate(order)}
    cols = [(c, m) for c, m in meta.items() if m["type"] in ("param", "measurement")]
    edges = []
    for child, cm in cols:
        if cm["type"] != "measurement":
            continue
        for parent, pm in cols:
            if parent == child:
                continue
            before = rank.get(pm["station"], 0) < rank.get(cm["station"], 0)
            same = pm["station"] == cm["station"]
            if before or (same and pm["type"] == "param"):
                edges.append((parent, child))
    return edges


def rising_codes(ws: Any, station: str, onset: datetime, end: datetime | None) -> list[str]:
    """Defect codes at a station whose rate rose after the onset (the problem's own codes)."""
    end = end or ws.scalar("SELECT max(t_in) FROM steps")
    tbl = ws.query(
        """
        WITH f AS (
            SELECT unit_id, arg_min(defect_code, t_in) AS code, min(t_in) >= ? AS after
            FROM steps WHERE station = ? AND t_in BETWEEN ? AND ? GROUP BY unit_id)
        SELECT code, sum(CAST(after AS INTEGER)) AS n_after, sum(CAST(NOT after AS INTEGER)) AS n_before,
               (SELECT sum(CAST(after AS INTEGER)) FROM f) AS tot_after,
               (SELECT sum(CAST(NOT after AS INTEGER)) FROM f) AS tot_before
        FROM f WHERE code IS NOT NULL GROUP BY code
        """,
        [onset, station, onset - timedelta(days=3), end],
    ).to_pylist()
    out = []
    for r in tbl:
        if not r["tot_after"] or not r["tot_before"]:
            continue
        p_after = float(r["n_after"]) / float(r["tot_after"])
        p_before = (float(r["n_before"]) + 0.5) / (float(r["tot_before"]) + 1)
        # a code is the problem's when it at least doubled and carries real numbers
        if r["n_after"] >= 5 and p_after >= 2 * p_before:
            out.append(str(r["code"]))
    return sorted(out)


def spec_from_problem(ws: Any, problem: dict[str, Any]) -> SymptomSpec:
    scope = problem.get("scope") or {}
    onset_t = (problem.get("onset") or {}).get("t") or (problem.get("first_evidence") or {}).get("t")
    if not onset_t:
        raise UserError(f"problem {problem.get('id')} has no onset time to split before/after")
    onset = datetime.fromisoformat(onset_t)
    end_t = (problem.get("latest_evidence") or {}).get("t")
    end = datetime.fromisoformat(end_t) if end_t else None
    label = problem.get("description", "")
    if problem.get("kind") == "measurement_shift" and scope.get("measurement"):
        # The monitor raised it on the mean of the reading (on one machine, say): the diagnosis looks for
        # what moved that mean. Pooled with the other machines' units, a shift of one machine's reads
        # as a wider spread, and every level then looks alike.
        mean = any(sig.get("detector") == "measurement_cusum" for sig in problem.get("signals") or [])
        return SymptomSpec(onset, end, station=scope.get("station"), measurement=scope["measurement"], label=label,
                           mode="mean" if mean else "auto")
    station = scope.get("station")
    if station is None:  # a material-level problem: the unit failed anywhere
        return SymptomSpec(onset, end, any_failure=True, label=label)
    codes = rising_codes(ws, station, onset, end)
    return SymptomSpec(onset, end, station=station, defect_codes=codes or None, label=label)


def _is_environment(profile: Profile | None, name: str, station: str | None) -> bool:
    """A reading of the room, not of the process: the profile says so (or, without one, its name)."""
    role = profile.line.role(name, station) if profile is not None else None
    return role == "environment" if role is not None else bool(ENVIRONMENT_PATTERN.search(name))


def _product_targets(ws: Any) -> dict[tuple[str, str], dict[str, float]]:
    """Each product's target (or the middle of its limits) per (station, reading), where the line's specs
    give several products different ones."""
    rows = ws.query("SELECT station, name, product, coalesce(target, (lsl + usl) / 2) AS target FROM specs "
                    "WHERE product IS NOT NULL AND coalesce(target, (lsl + usl) / 2) IS NOT NULL").to_pylist()
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        out.setdefault((r["station"], r["name"]), {})[str(r["product"])] = float(r["target"])
    return {k: v for k, v in out.items() if len(set(v.values())) > 1}


def _products(data: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's product as (labels, a code per row), worked out once for every reading adjusted."""
    return np.unique(np.asarray(data.column("product").to_pylist(), dtype=str), return_inverse=True)


def _per_product(data: pa.Table, reference: np.ndarray, products: tuple[np.ndarray, np.ndarray],
                 column: str = "symptom", targets: dict[str, float] | None = None) -> pa.Table:
    """A reading whose level depends on the product, as each unit's deviation from its product's level
    before the onset (around the overall level): a change of product mix is then no shift, and a shift
    of one product's units shows as that product's. A product not made before the onset takes its level
    from its target, offset as the other products ran from theirs (a new product on its own nominal
    is no shift either)."""
    y = data.column(column).to_numpy(zero_copy_only=False).astype(float)
    labels, codes = products
    ok = reference & ~np.isnan(y)
    n = np.bincount(codes[ok], minlength=len(labels))
    if ok.sum() == 0 or (n > 0).sum() + (targets is not None) < 2:
        return data
    overall = float(y[ok].mean())
    level = np.where(n > 0, np.bincount(codes[ok], weights=y[ok], minlength=len(labels)) / np.maximum(n, 1), overall)
    if targets:
        known = np.array([str(p) in targets for p in labels])
        target = np.array([targets.get(str(p), np.nan) for p in labels])
        seen = known & (n > 0)
        if known.all() and seen.any():
            offset = float(np.average(level[seen] - target[seen], weights=n[seen]))
            level = np.where(n > 0, level, target + offset)
    adjusted = y - level[codes] + overall
    return data.set_column(data.column_names.index(column), column, pa.array(adjusted, mask=np.isnan(adjusted)))


def _product_dependent(data: pa.Table, reference: np.ndarray, products: tuple[np.ndarray, np.ndarray],
                       column: str) -> bool:
    """Whether a reading's level differs between the products made before the onset by more than its
    own spread within a product."""
    y = data.column(column).to_numpy(zero_copy_only=False).astype(float)
    labels, codes = products
    ok = reference & ~np.isnan(y)
    n = np.bincount(codes[ok], minlength=len(labels))
    if (n >= 20).sum() < 2:
        return False
    means = np.bincount(codes[ok], weights=y[ok], minlength=len(labels)) / np.maximum(n, 1)
    within = float(np.sqrt(np.sum((y[ok] - means[codes[ok]]) ** 2) / max(ok.sum() - len(labels), 1)))
    big = n >= 20
    return bool(np.ptp(means[big]) > within)


def _add_only_machine(ws: Any, station: str, report: Diagnosis, ref: pa.Table, inc: pa.Table, alpha: float) -> bool:
    """A station with one machine: that machine never varies, so it is no column to compare, yet the
    symptom arises on it (an intermittent contact, a worn probe). It is listed after the candidates the
    data support, and first where nothing that varied explains the symptom."""
    t = pa.concat_tables([ref.select(["t_start"]), inc.select(["t_start"])]).column("t_start")
    lo, hi = pc.min(t).as_py(), pc.max(t).as_py()
    machines = ws.query("SELECT DISTINCT machine FROM steps WHERE station = ? AND t_in BETWEEN ? AND ? "
                        "AND machine IS NOT NULL", [station, lo, hi + timedelta(days=1)]).column("machine").to_pylist()
    factor = f"machine@{station}"
    if len(machines) != 1 or any(c.factor == factor for c in report.causes):
        return False
    y_ref = ref.column("symptom").to_numpy(zero_copy_only=False).astype(float)
    y_inc = inc.column("symptom").to_numpy(zero_copy_only=False).astype(float)
    y_ref, y_inc = y_ref[np.isfinite(y_ref)], y_inc[np.isfinite(y_inc)]
    sd = float(y_ref.std()) or float(np.concatenate([y_ref, y_inc]).std()) or 1.0
    p = float(scipy_stats.ttest_ind(y_inc, y_ref, equal_var=False).pvalue) if y_ref.size > 1 and y_inc.size > 1 else 1.0
    supported = [c for c in report.causes if c.q_value <= alpha and c.explained_by is None and c.upstream]
    alone = not supported
    cause = Cause(
        factor=factor, level=str(machines[0]), kind="categorical",
        entity=Entity(kind="machine", name=str(machines[0]), station=station),
        effect=abs(float(y_inc.mean() - y_ref.mean())) / sd,
        effect_label="symptom shift (reference sds) on the station's only machine against its own reference",
        p_value=p, q_value=p, confidence=max(0.0, 1.0 - p) * (1.0 if alone else 0.5), share=None,
        evidence=(f"{report.target} arose at {station}, whose only machine is {machines[0]}; "
                  + ("nothing that varied explains it" if alone else "the candidates above explain part of it")),
        details={"only_machine": True, "n_incident": int(y_inc.size), "n_reference": int(y_ref.size)},
    )
    report.causes.insert(len(supported) if not alone else 0, cause)
    for i, c in enumerate(report.causes, 1):
        c.rank = i
    return True


def diagnose_spec(ws: Any, spec: SymptomSpec) -> Diagnosis:
    """Diagnose a symptom in the workspace; every cause names its `entity` (kind, name, station or material)."""
    profile = workspace_profile(ws.path)
    order = station_order(ws)
    tbl, events, meta = unit_table(ws, spec, order)
    if tbl.num_rows == 0:
        raise UserError("no units in the diagnosis window")
    period = tbl.column("incident").to_numpy(zero_copy_only=False)
    keep = [c for c in tbl.column_names if c not in ("unit_id", "incident")]
    data = tbl.select(keep)
    # a unit with no record of the symptom yet (still in progress) cannot be judged
    has = np.asarray(data.column("symptom").is_valid())
    ref_rows = np.flatnonzero((period == 0) & has)
    inc_rows = np.flatnonzero((period == 1) & has)
    if ref_rows.size < 50 or inc_rows.size < 20:
        raise UserError(f"too few units to compare: {ref_rows.size} before and {inc_rows.size} since the onset")
    if "product" in meta:
        targets, products = _product_targets(ws), _products(data)
        if spec.measurement:
            own_targets = targets.get((spec.station or "", spec.measurement))
            data = _per_product(data, period == 0, products, targets=own_targets)
        for name, m in meta.items():  # candidate readings, on their products' levels too
            if m["type"] in ("param", "measurement") and name in data.column_names:
                own = targets.get((m["station"], m["name"]))
                if own is not None or _product_dependent(data, period == 0, products, name):
                    data = _per_product(data, period == 0, products, name, own)
    else:
        data = data.drop_columns(["product"])
    # judged on each product's own level where it has one: a change of mix is no step
    y = data.column("symptom").to_numpy(zero_copy_only=False).astype(float)
    t = data.column("t_start").to_numpy(zero_copy_only=False)
    step = step_inside(t[inc_rows], y[inc_rows], y[ref_rows])
    if step is not None:  # the units before the step are neither the incident nor the reference
        inc_rows = inc_rows[t[inc_rows] >= step]
    ref, inc = data.take(pa.array(ref_rows)), data.take(pa.array(inc_rows))
    kinds = {c: "environment" for c in meta if meta[c]["type"] in ("param", "measurement")
             and _is_environment(profile, str(meta[c].get("name", c)), meta[c].get("station"))}
    dag = process_dag(meta, order)
    label = spec.measurement or (
        "failures"
        + (f" at {spec.station}" if spec.station and not spec.any_failure else "")
        + (f" ({', '.join(spec.defect_codes)})" if spec.defect_codes else "")
    )
    nested = {c: "supplier@" + meta[c]["material"] for c in meta if meta[c]["type"] == "lot"}
    dx = Diagnoser(dag=dag or None, time_column="t_start", events=events, kinds=kinds, nested=nested,
                   max_levels=200, target_label=label, symptom=spec.mode)
    report = dx.fit(ref, inc, "symptom").report_
    for c in report.causes:
        m = meta.get(c.factor, {})
        c.entity = Entity(kind=m.get("type", c.kind), name=c.level if c.level is not None else m.get("name", c.factor),
                          station=m.get("station"), material=m.get("material"))
    if spec.station and not spec.any_failure and _add_only_machine(ws, spec.station, report, ref, inc, dx.alpha):
        report.summary = summary_text(report)
    if step is not None:
        report.incident_from = _fmt_time(step)
        head, _, rest = report.summary.partition("\n")
        note = (f"compared from {report.incident_from}, where the symptom stepped inside the problem's window "
                f"(its units before looked like the reference)")
        report.summary = "\n".join(x for x in (head, note, rest) if x)
    return report


def diagnose_problem(ws: Any, problem_id: str, plot: Path | str | None = None) -> tuple[Diagnosis, str | None, float]:
    """`linelab diagnose PROBLEM_ID`: diagnose, store as artefact "diagnosis", optionally plot."""
    t0 = perf_counter()
    problem = ws.get_artifact("problem", problem_id)
    if problem is None:
        raise NotFound(f"no problem {problem_id!r} (see `linelab problems`)")
    spec = spec_from_problem(ws, problem)
    report = diagnose_spec(ws, spec)
    if plot is None:
        plot = Path(ws.path) / "plots" / f"diagnosis-{problem_id}.png"
    path = str(render_evidence(report, plot))
    seconds = round(perf_counter() - t0, 3)
    payload = {
        "id": problem_id,
        "problem_id": problem_id,
        "status": "confident" if report.confident else ("confounded" if report.confounded else "tentative"),
        "symptom": {
            "station": spec.station,
            "measurement": spec.measurement,
            "defect_codes": spec.defect_codes,
            "onset": spec.onset.isoformat(),
        },
        "plot": path,
        "seconds": seconds,
        "diagnosis": report.model_dump(mode="json"),
    }
    ws.put_artifact("diagnosis", problem_id, payload)
    return report, path, seconds
