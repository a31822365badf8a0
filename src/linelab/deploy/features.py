"""One row per unit for a model: upstream readings, settings and genealogy, named by the line's profile.

A feature spec is chosen once, at training, from what the workspace holds for the stations before
the model's station (in the profile's process order): every reading (params and measurements)
that varies, the machine, fixture and operator of each upstream station's first visit, and the
lot and supplier of every material. It is plain data (kept in the model's registry record), so a
model scores exactly the columns it was trained on; categories are coded by a vocabulary kept
with it (unknown levels score as missing). DuckDB assembles the rows; nothing loops over records.

Names: a reading is `STATION.name` (as `linelab.model.Entity.reading`), a step field is
`machine@STATION`, a material's lot and supplier are `lot@MATERIAL` and `supplier@MATERIAL`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from linelab.errors import UserError
from linelab.profile import Profile
from linelab.store.backend import sql_ident as _q
from linelab.store.backend import sql_text as _lit

if TYPE_CHECKING:  # NumPy and Arrow are loaded by what builds rows, not by every command that names a spec
    import numpy as np
    import pyarrow as pa

STEP_FIELDS = ("machine", "fixture", "operator")
MAX_LEVELS = 250  # histogram gradient boosting codes categories in at most 255 bins


class Numeric(BaseModel):
    name: str
    station: str
    reading: str
    table: str  # params | measurements


class Categorical(BaseModel):
    name: str
    field: str  # machine | fixture | operator | lot | supplier
    station: str | None = None
    material: str | None = None
    levels: list[str] = Field(default_factory=list, description="the vocabulary: code = position")


class FeatureSpec(BaseModel):
    """The columns a model reads, and how to code them."""

    station: str = Field(description="the model's station: features come from the stations before it "
                                     "(an anomaly detector reads its own station's readings)")
    upstream: list[str] = Field(default_factory=list)
    numeric: list[Numeric] = Field(default_factory=list)
    categorical: list[Categorical] = Field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.numeric] + [c.name for c in self.categorical]

    @property
    def is_categorical(self) -> list[bool]:
        return [False] * len(self.numeric) + [True] * len(self.categorical)


def station_order(ws: Any, profile: Profile | None) -> list[str]:
    """Stations in process order: the profile's, else by their typical time into a unit's build."""
    if profile is not None and profile.line.stations:
        return profile.line.station_order
    rows = ws.query("SELECT s.station, median(epoch(s.t_in) - epoch(u.t_start)) AS lag FROM steps s "
                    "JOIN units u USING (unit_id) GROUP BY s.station ORDER BY lag")
    return [str(s) for s in rows.column("station").to_pylist()]


def discover(ws: Any, profile: Profile | None, station: str, own_station: bool = False,
             where_units: str = "TRUE", environment: bool = False) -> FeatureSpec:
    """The features for a model at `station`: upstream of it, or (`own_station`) its own readings.

    Readings the profile calls environment (the room's temperature, humidity) are left out unless
    `environment`: they say when a unit was built more than how, so a model learns from them when
    failures happened to occur, and fails as soon as the weather changes."""
    order = station_order(ws, profile)
    if station not in order:
        raise UserError(f"station {station!r} is not one of the line's stations ({', '.join(order)})")
    upstream = [station] if own_station else order[: order.index(station)]
    if not upstream:
        raise UserError(f"station {station!r} is the line's first: no station before it to predict from")
    spec = FeatureSpec(station=station, upstream=upstream)
    stations = ", ".join(_lit(s) for s in upstream)
    units = f"(SELECT unit_id FROM units WHERE {where_units})"
    for table in ("params", "measurements"):
        rows = ws.query(f"SELECT station, name FROM {table} WHERE station IN ({stations}) "
                        f"AND unit_id IN {units} GROUP BY ALL HAVING stddev_samp(value) > 0 ORDER BY 1, 2")
        for r in rows.to_pylist():
            if not environment and profile is not None and profile.line.role(r["name"], r["station"]) == "environment":
                continue
            spec.numeric.append(Numeric(name=f"{r['station']}.{r['name']}", station=r["station"],
                                        reading=r["name"], table=table))
    if own_station:
        return spec
    for f in STEP_FIELDS:
        rows = ws.query(f"SELECT station, {f} AS level, count(*) AS n FROM steps WHERE station IN ({stations}) "
                        f"AND {f} IS NOT NULL AND unit_id IN {units} GROUP BY ALL ORDER BY station, n DESC, level")
        _add_levels(spec, rows.to_pylist(), f, "station")
    for f in ("lot", "supplier"):
        rows = ws.query(f"SELECT material, {f} AS level, count(*) AS n FROM materials WHERE {f} IS NOT NULL "
                        f"AND unit_id IN {units} GROUP BY ALL ORDER BY material, n DESC, level")
        _add_levels(spec, rows.to_pylist(), f, "material")
    return spec


def _add_levels(spec: FeatureSpec, rows: list[dict[str, Any]], field: str, by: str) -> None:
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(str(r[by]), []).append(str(r["level"]))
    for key, levels in groups.items():
        if len(levels) > 1:  # a constant says nothing
            spec.categorical.append(Categorical(name=f"{field}@{key}", field=field, levels=levels[:MAX_LEVELS],
                                                **{by: key}))


def unit_frame(ws: Any, spec: FeatureSpec, where_units: str = "TRUE", params: Sequence[Any] = ()) -> pa.Table:
    """unit_id, t_start, batch, product and every feature (raw values, text for categories), in build order."""
    mine_only = "unit_id IN (SELECT unit_id FROM w)"
    cols, joins = [], []
    for table in ("params", "measurements"):
        mine = [f for f in spec.numeric if f.table == table]
        if mine:
            sel = ", ".join(f"avg(value) FILTER (WHERE station = {_lit(f.station)} AND name = {_lit(f.reading)}) "
                            f"AS {_q(f.name)}" for f in mine)
            joins.append(f"LEFT JOIN (SELECT unit_id, {sel} FROM {table} WHERE {mine_only} "
                         "GROUP BY unit_id) USING (unit_id)")
            cols += [_q(f.name) for f in mine]
    steps = [c for c in spec.categorical if c.station is not None]
    if steps:
        sel = ", ".join(f"arg_min({c.field}, t_in) FILTER (WHERE station = {_lit(c.station or '')}) AS {_q(c.name)}"
                        for c in steps)
        joins.append(f"LEFT JOIN (SELECT unit_id, {sel} FROM steps WHERE {mine_only} "
                     "GROUP BY unit_id) USING (unit_id)")
    mats = [c for c in spec.categorical if c.material is not None]
    if mats:
        sel = ", ".join(f"max({c.field}) FILTER (WHERE material = {_lit(c.material or '')}) AS {_q(c.name)}"
                        for c in mats)
        joins.append(f"LEFT JOIN (SELECT unit_id, {sel} FROM materials WHERE {mine_only} "
                     "GROUP BY unit_id) USING (unit_id)")
    names = ", ".join(["unit_id", "t_start", "batch", "product"] + [_q(n) for n in spec.names])
    sql = (f"WITH w AS (SELECT unit_id, t_start, batch, product FROM units WHERE {where_units}) "
           f"SELECT {names} FROM w {' '.join(joins)} ORDER BY t_start, unit_id")
    return ws.query(sql, list(params))


def matrix(frame: pa.Table, spec: FeatureSpec) -> np.ndarray:
    """The model's input: numeric columns as floats, categories as vocabulary codes (NaN: missing/unknown)."""
    import numpy as np

    n = frame.num_rows
    out = np.full((n, len(spec.names)), np.nan)
    for j, f in enumerate(spec.numeric):
        if f.name in frame.column_names:
            out[:, j] = frame.column(f.name).to_numpy(zero_copy_only=False).astype(float)
    k = len(spec.numeric)
    for j, c in enumerate(spec.categorical):
        if c.name in frame.column_names:
            out[:, k + j] = _codes(frame.column(c.name), c.levels)
    return out


def _codes(col: pa.ChunkedArray, levels: list[str]) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    idx = pc.index_in(col.cast(pa.string()), value_set=pa.array(levels, pa.string()))
    return idx.to_numpy(zero_copy_only=False).astype(float)  # nulls (missing, unknown) become NaN


def frame_from_records(records: Sequence[Mapping[str, Any]], spec: FeatureSpec) -> pa.Table:
    """Features handed in by a caller (a station scoring a unit): names as in the spec; others refused."""
    import pyarrow as pa

    known = set(spec.names)
    for i, r in enumerate(records):
        unknown = sorted(set(r) - known)
        if unknown:
            raise UserError(f"unit {i}: unknown feature(s) {', '.join(unknown[:5])}; the model reads "
                            f"{', '.join(spec.names[:12])}{'…' if len(spec.names) > 12 else ''}")
    data: dict[str, Any] = {}
    for f in spec.numeric:
        vals = [r.get(f.name) for r in records]
        try:
            data[f.name] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        except (TypeError, ValueError) as exc:
            raise UserError(f"feature {f.name}: expected a number ({exc})") from exc
    for c in spec.categorical:
        data[c.name] = pa.array([None if r.get(c.name) is None else str(r.get(c.name)) for r in records], pa.string())
    return pa.table(data) if data else pa.table({"_": pa.nulls(len(records))})


def unit_records(ws: Any, where: str, params: Sequence[Any] = ()) -> dict[str, dict[str, Any]]:
    """Units' raw records by serial, in one query, named as features are: readings `STATION.name`
    (mean value), each station's first visit `machine@STATION` (fixture, operator) and each
    material's `lot@MATERIAL` (supplier). `where` selects rows of the record tables (`unit_id = ?`
    for one unit: the zone maps find the serial's rows without scanning the tables); `params` are
    its parameters, once. Names and levels are interned: many units share them (a server keeps them)."""
    table = ws.query(
        "SELECT unit_id, 'r' AS k, station AS a, name AS b, avg(value) AS v, NULL AS x, NULL AS y, NULL AS z "
        f"FROM (SELECT unit_id, station, name, value FROM params WHERE {where} UNION ALL "
        f"SELECT unit_id, station, name, value FROM measurements WHERE {where}) GROUP BY ALL "
        "UNION ALL SELECT unit_id, 's', station, NULL, NULL, arg_min(machine, t_in), arg_min(fixture, t_in), "
        f"arg_min(operator, t_in) FROM steps WHERE {where} GROUP BY unit_id, station "
        "UNION ALL SELECT unit_id, 'm', material, NULL, NULL, max(lot), max(supplier), NULL FROM materials "
        f"WHERE {where} GROUP BY unit_id, material", list(params) * 4)
    out: dict[str, dict[str, Any]] = {}
    fields = {"s": (*STEP_FIELDS,), "m": ("lot", "supplier")}
    columns = [table.column(c).to_pylist() for c in ("unit_id", "k", "a", "b", "v", "x", "y", "z")]
    for unit, k, a, b, v, *levels in zip(*columns, strict=True):  # columns, not row dicts: less memory
        raw = out.setdefault(unit, {})
        if k == "r":
            raw[sys.intern(f"{a}.{b}")] = v
            continue
        for field, level in zip(fields[k], levels, strict=False):
            raw[sys.intern(f"{field}@{a}")] = None if level is None else sys.intern(str(level))
    return out


def features_of(raw: Mapping[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """A unit's features by name, from its raw records (`unit_records`)."""
    return {name: raw.get(name) for name in spec.names}


def unit_features(ws: Any, spec: FeatureSpec, unit: str) -> dict[str, Any] | None:
    """One unit's features by name, read in one query on its serial. None: nothing of that unit."""
    raw = unit_records(ws, "unit_id = ?", [unit]).get(unit)
    return None if raw is None else features_of(raw, spec)


_PLANS: dict[int, tuple[FeatureSpec, frozenset[str], list[dict[str, int]]]] = {}


def vector(features: Mapping[str, Any], spec: FeatureSpec) -> np.ndarray:
    """One unit's model input (1 x features) from its features by name: what `matrix` gives for
    `frame_from_records([features], spec)`, without building a table (a station waits for it)."""
    import numpy as np

    plan = _PLANS.get(id(spec))
    if plan is None or plan[0] is not spec:  # (an id is reused only once its spec is gone)
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = (spec, frozenset(spec.names), [{lv: i for i, lv in enumerate(c.levels)} for c in spec.categorical])
        _PLANS[id(spec)] = plan
    if not plan[1].issuperset(features):
        frame_from_records([features], spec)  # refuses the unknown names, naming them
    row = np.full((1, len(spec.numeric) + len(spec.categorical)), np.nan)
    for j, f in enumerate(spec.numeric):
        v = features.get(f.name)
        if v is not None:
            try:
                row[0, j] = float(v)
            except (TypeError, ValueError) as exc:
                raise UserError(f"feature {f.name}: expected a number ({exc})") from exc
    k = len(spec.numeric)
    for j, (c, codes) in enumerate(zip(spec.categorical, plan[2], strict=True)):
        v = features.get(c.name)
        code = codes.get(str(v)) if v is not None else None
        if code is not None:
            row[0, k + j] = code
    return row
