"""What the data says about the line: stations in process order, products, readings and how they vary.

Read either from export files through (drafted) profile sources, or from an ingested workspace;
`linelab profile init` drafts the line from these facts and `linelab profile check` compares the
profile with them. Everything is a DuckDB query; files are read as text and typed leniently
(a value that does not parse is left out, not an error: ingest is where bad rows are reported).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from linelab.profile.schema import Source
from linelab.profile.sources import plan, read_text, value_columns
from linelab.store.backend import sql_ident as q
from linelab.store.backend import sql_text as lit
from linelab.store.schema import RECORD_TABLES

Query = Callable[[str], pa.Table]
READING_TABLES = ("measurements", "params", "signals")
ENVIRONMENT = re.compile(r"ambient|humid|room|dew|weather|outdoor|outside|hall|^rh|_rh", re.I)
_SQL_TYPES = {"string": "VARCHAR", "double": "DOUBLE", "bool": "BOOLEAN"}
_OFFSET = r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|UTC|[+-]\d{2}(:?\d{2})?)$"




@dataclass
class ReadingFacts:
    table: str
    station: str | None
    name: str
    n: int
    distinct: int
    changes: int  # value changes in time order: few for a set-point, nearly n for a per-unit reading
    lot_share: float | None = None  # share of the value's variance between material lots (None: no lots)

    @property
    def varies(self) -> str:
        if self.distinct <= 1:
            return "constant"
        if self.changes <= max(3, 0.02 * self.n):
            return "per time"  # steps now and then: a set-point
        if self.lot_share is not None and self.lot_share > 0.8:
            return "per lot"
        return "per unit"


@dataclass
class LineFacts:
    tables: dict[str, int] = field(default_factory=dict)  # rows per table found
    stations: list[dict[str, Any]] = field(default_factory=list)  # in process order
    products: list[str] = field(default_factory=list)
    readings: list[ReadingFacts] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def station_names(self) -> list[str]:
        return [s["station"] for s in self.stations]


def facts(query: Query, tables: dict[str, int]) -> LineFacts:
    """The facts of the tables `query` can read (LineLab names, typed)."""
    out = LineFacts(tables=dict(tables))
    if tables.get("steps"):
        out.stations = query("""
            WITH s AS (SELECT station, machine, epoch(t_in) - min(epoch(t_in)) OVER (PARTITION BY unit_id) AS dt
                       FROM steps WHERE t_in IS NOT NULL AND station IS NOT NULL)
            SELECT station, count(*) AS steps, median(dt) AS median_s_after_first,
                   list_sort(list_distinct(list(machine)))[1:20] AS machines
            FROM s GROUP BY station ORDER BY median_s_after_first, station""").to_pylist()
    if tables.get("units"):
        out.products = [r["product"] for r in query(
            "SELECT DISTINCT product FROM units WHERE product IS NOT NULL ORDER BY product LIMIT 200").to_pylist()]
    lots = bool(tables.get("materials"))
    for table in READING_TABLES:
        if not tables.get(table):
            continue
        station = "NULL::VARCHAR AS station" if table == "signals" else "station"
        by_lot = ""
        if lots and table != "signals":
            # Share of each reading's variance that lies between lots of any one material it met.
            by_lot = f""",
                lot AS (SELECT r.station, r.name, m.material,
                               var_pop(avg(r.value)) OVER w2 AS between_var
                        FROM {table} AS r JOIN materials AS m USING (unit_id)
                        GROUP BY r.station, r.name, m.material, m.lot
                        WINDOW w2 AS (PARTITION BY r.station, r.name, m.material)),
                lots AS (SELECT station, name, max(between_var) AS between_var FROM lot GROUP BY ALL)"""
        rows = query(f"""
            WITH r AS (SELECT {station}, name, value,
                              (value IS DISTINCT FROM lag(value) OVER (PARTITION BY station, name ORDER BY t))::INT
                                  AS changed
                       FROM {table} WHERE value IS NOT NULL),
                 agg AS (SELECT station, name, count(*) AS n, count(DISTINCT value) AS k, sum(changed) - 1 AS changes,
                                var_pop(value) AS total_var
                         FROM r GROUP BY station, name){by_lot}
            SELECT agg.*, {'lots.between_var' if by_lot else 'NULL::DOUBLE AS between_var'}
            FROM agg {'LEFT JOIN lots USING (station, name)' if by_lot else ''}
            ORDER BY station, name""").to_pylist()
        for r in rows:
            share = (r["between_var"] / r["total_var"] if r["between_var"] is not None and r["total_var"]
                     else None)
            out.readings.append(ReadingFacts(table, r["station"], r["name"], int(r["n"]), int(r["k"]),
                                             max(0, int(r["changes"] or 0)), share))
    if tables.get("specs"):
        out.specs = query("SELECT * FROM specs ORDER BY product, station, name").to_pylist()
    return out


def workspace_facts(ws: Any) -> LineFacts:
    """Facts of an ingested workspace (a `linelab.store.Workspace`)."""
    tables = {t: ws.count(t) for t in RECORD_TABLES}
    return facts(lambda sql: ws.query(sql), tables)


# -- export files, read through their sources --------------------------------------------------
def _typed_sql(source: Source, columns: list[str], relation: str) -> str:
    """A lenient typing of an export: LineLab columns, timestamps and numbers that do not parse are null."""
    p = plan(source, columns)
    exprs = []
    for f in RECORD_TABLES[source.table]:
        col = p.sources.get(f.name)
        if col is None and f.name not in p.constants:
            continue
        x = f"CAST({q(col)} AS VARCHAR)" if col is not None else "NULL::VARCHAR"
        if f.name in p.constants:
            x = f"coalesce(nullif(trim({x}), ''), {lit(p.constants[f.name])})"
        mapping = source.values.get(f.name)
        if mapping:
            x = f"CASE trim({x}) " + " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in mapping.items()) + \
                f" ELSE {x} END"
        if pa.types.is_floating(f.type):
            x = f"TRY_CAST(replace(trim({x}), ',', '.') AS DOUBLE)" if source.decimal == "," else \
                f"TRY_CAST(trim({x}) AS DOUBLE)"
        elif pa.types.is_timestamp(f.type):
            v = f"trim({x})"
            if source.timestamp_format:
                x = f"try_strptime({v}, {lit(source.timestamp_format)})::TIMESTAMP"
            else:
                x = (f"CASE WHEN regexp_matches({v}, {lit(_OFFSET)}) THEN timezone('UTC', TRY_CAST({v} AS "
                     f"TIMESTAMPTZ)) ELSE TRY_CAST({v} AS TIMESTAMP) END")
        elif pa.types.is_boolean(f.type):
            x = f"TRY_CAST(trim({x}) AS BOOLEAN)"
        exprs.append(f"{x} AS {q(f.name)}")
    return f"SELECT {', '.join(exprs)} FROM {relation}"


def file_facts(files: list[tuple[Path, Source]], read: dict[Path, pa.Table] | None = None) -> LineFacts:
    """Facts of export files, each read through its source (`read`: files already read as text)."""
    con = duckdb.connect()
    try:
        tables: dict[str, int] = {}
        for i, (path, source) in enumerate(files):
            data = read[path] if read and path in read else read_text(path, source)
            columns = data.column_names
            con.register(f"_raw{i}", data)
            relation = f"_raw{i}"
            if source.wide is not None:
                ids = [c for c in columns if c in source.wide.id_columns]
                vals = value_columns(source, columns)
                if not vals:
                    continue
                keep = ", ".join([*map(q, ids), *(f"CAST({q(v)} AS VARCHAR) AS {q(v)}" for v in vals)])
                relation = f"(UNPIVOT (SELECT {keep} FROM _raw{i}) ON {', '.join(map(q, vals))} " \
                           "INTO NAME name VALUE value)"
                columns = ids + ["name", "value"]
            p = plan(source, columns)
            required = {f.name for f in RECORD_TABLES[source.table] if not f.nullable}
            if p.missing_required or required & set(p.missing_export):
                continue  # `profile check` reports it; the facts come from what can be read
            select = _typed_sql(source, columns, relation)
            if source.table in tables:
                con.execute(f"INSERT INTO {source.table} BY NAME {select}")
            else:
                con.execute(f"CREATE TABLE {source.table} AS {select}")
                tables[source.table] = 0
            tables[source.table] = int(con.sql(f"SELECT count(*) FROM {source.table}").fetchall()[0][0])
        # Columns a table lacks read as nulls, so the fact queries run on whatever the exports hold.
        for name in tables:
            have = {r[0] for r in con.sql(f"DESCRIBE {name}").fetchall()}
            for f in RECORD_TABLES[name]:
                if f.name not in have:
                    sql_type = _SQL_TYPES.get(str(f.type), "TIMESTAMP")
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {q(f.name)} {sql_type}")
        return facts(lambda sql: con.sql(sql).to_arrow_table(), tables)
    finally:
        con.close()
