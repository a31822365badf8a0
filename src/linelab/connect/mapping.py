"""A line's exports as LineLab records: the profile's `sources` applied to a file, vectorised.

A `Source` of the line profile says how one kind of export maps onto a LineLab table. Applying
it to a file (all columns read as text) is one DuckDB query over the Arrow table:

- wide exports (one column per reading) are melted to long rows (`name`, `value`);
- columns are renamed (LineLab column <- the export's column), constants filled in, values
  mapped (`PASS` -> `pass`), decimal commas turned into points;
- timestamps with an offset (`+02:00`, `Z`) are converted to UTC, those without one are read
  in the source's time zone and converted; all are stored as naive UTC;
- what the export lacks is derived (a unit's first-pass result, start and end from its steps).

The output stays text: the store's validator types it, so a value that cannot be read is
quarantined with its row and field instead of failing the file. A value whose timestamp or number
cannot be converted is passed on unchanged, for the validator to quarantine.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from linelab.errors import UserError
from linelab.profile.schema import Profile, Source
from linelab.profile.sources import DERIVES, Plan, plan, read_text, value_columns
from linelab.store.backend import sql_ident as q
from linelab.store.backend import sql_text as lit
from linelab.store.schema import RECORD_TABLES
from linelab.store.validate import LINE, NAIVE, ZONED

ROW_COLUMN = LINE  # the line of the file each record (each reading of a wide row) came from
_OFFSET = ZONED
TS_TEXT = "%Y-%m-%d %H:%M:%S.%f"


__all__ = ["DERIVES", "Plan", "ROW_COLUMN", "apply", "derive_units", "export_columns", "plan", "read_text",
           "source_for"]




def source_for(profile: Profile | None, path: Path) -> Source | None:
    """The profile source whose file patterns match this file's name (the first one that does)."""
    if profile is None:
        return None
    return next((s for s in profile.sources if s.matches(path.name)), None)


# -- applying a source ------------------------------------------------------------------------
def _timestamp_sql(x: str, source: Source) -> str:
    def local(e: str) -> str:
        return f"timezone('UTC', timezone({lit(source.timezone)}, {e}))" if source.timezone else e

    v = f"trim({x})"
    if source.timestamp_format:
        parsed = f"try_strptime({v}, {lit(source.timestamp_format)})"
        parsed = f"timezone('UTC', {parsed})" if "%z" in source.timestamp_format else local(parsed)
    else:
        parsed = (f"CASE WHEN regexp_matches({v}, {lit(_OFFSET)}) "
                  f"THEN timezone('UTC', TRY_CAST({v} AS TIMESTAMPTZ)) "
                  f"WHEN regexp_matches({v}, {lit(NAIVE)}) THEN {local(f'TRY_CAST({v} AS TIMESTAMP)')} END")
    return f"CASE WHEN {x} IS NULL OR {v} = '' THEN {x} ELSE coalesce(strftime({parsed}, {lit(TS_TEXT)}), {x}) END"


def _column_sql(name: str, typ: pa.DataType, p: Plan, source: Source) -> str:
    col = p.sources.get(name)
    x = f"CAST({q(col)} AS VARCHAR)" if col is not None else "NULL::VARCHAR"
    if name in p.constants:
        c = lit(p.constants[name])
        x = c if col is None else f"coalesce(nullif(trim({x}), ''), {c})"
    mapping = source.values.get(name)
    if mapping:
        cases = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in mapping.items())
        x = f"CASE trim({x}) {cases} ELSE {x} END"
    if pa.types.is_floating(typ) and source.decimal == ",":
        x = f"replace({x}, ',', '.')"
    if pa.types.is_timestamp(typ):
        x = _timestamp_sql(x, source)
    return x


def apply(source: Source, data: pa.Table, first_row: int = 1, where: str = "") -> pa.Table:
    """The export `data` as LineLab columns of `source.table` (text), per the source's mapping.

    The batch carries LINE, the file line of each record (of each reading, for a wide export) when
    the export has it; a wide export without it gets positions counted from `first_row`. Raises a
    UserError naming the file, the source and the column when the file lacks what the source names.
    """
    if LINE not in data.column_names and source.wide is not None:
        data = data.append_column(LINE, pa.array(np.arange(data.num_rows, dtype=np.int64) + first_row))
    lined = LINE in data.column_names
    columns = [c for c in data.column_names if c != LINE]
    p = plan(source, columns)
    problems = p.problems(source, where)
    if problems:
        raise UserError("\n".join(problems) + f"\n  (the file's columns: {', '.join(columns)})")
    con = duckdb.connect()
    try:
        relation = "_raw"
        if source.wide is not None:
            ids = [c for c in columns if c in source.wide.id_columns]
            vals = value_columns(source, columns)
            # A blank cell is no reading: NULL, which UNPIVOT leaves out.
            keep = ", ".join([*map(q, ids), *(f"NULLIF(trim(CAST({q(v)} AS VARCHAR)), '') AS {q(v)}" for v in vals)])
            relation = (f"(UNPIVOT (SELECT {keep}, {q(LINE)} FROM _raw) "
                        f"ON {', '.join(map(q, vals))} INTO NAME name VALUE value)")
        con.register("_raw", data)
        exprs = [f"{_column_sql(f.name, f.type, p, source)} AS {q(f.name)}"
                 for f in RECORD_TABLES[source.table]
                 if f.name in p.sources or f.name in p.constants or f.name in p.derived]
        if lined:
            exprs.append(q(LINE))
        out = con.sql(f"SELECT {', '.join(exprs)} FROM {relation}").to_arrow_table()
    finally:
        con.close()
    return out


def export_columns(source: Source, columns: list[str]) -> dict[str, str]:
    """LineLab column -> the export's column it comes from (for naming both in the quarantine)."""
    p = plan(source, columns)
    out = dict(p.sources)
    if source.wide is not None:
        out["value"] = "(reading columns)"
        out["name"] = "(reading column names)"
    return out


# -- derivations ------------------------------------------------------------------------------
def steps_summary_sql(steps: str, units: str) -> str:
    """Per unit of `units`: first-pass result, final result, start and end from the steps table."""
    return f"""
        WITH v AS (
            SELECT s.unit_id, s.station, s.result, s.t_in, coalesce(s.t_out, s.t_in) AS t_done,
                   row_number() OVER (PARTITION BY s.unit_id, s.station ORDER BY s.t_in) AS k,
                   row_number() OVER (PARTITION BY s.unit_id, s.station ORDER BY s.t_in DESC) AS last_k
            FROM {steps} AS s WHERE s.unit_id IN (SELECT unit_id FROM {units}))
        SELECT unit_id,
               bool_and(result = 'pass') FILTER (WHERE k = 1) AS first_pass,
               CASE WHEN bool_or(result = 'fail') FILTER (WHERE last_k = 1) THEN 'fail' ELSE 'pass' END AS result,
               min(t_in) AS t_start, max(t_done) AS t_end
        FROM v GROUP BY unit_id"""


def derive_units(source: Source, units: pa.Table, steps: pa.Table) -> pa.Table:
    """Fill the units' missing fields named by `source.derive` from their steps.

    `steps` holds (at least) the steps of these units: unit_id, station, result, t_in, t_out, typed.
    A field the export gives is kept; one it leaves blank is derived. Units with no steps stay blank.
    """
    wanted = [DERIVES[d] for d in source.derive]
    if not wanted or units.num_rows == 0:
        return units
    con = duckdb.connect()
    try:
        con.register("_u", units)
        con.register("_s", steps)
        fmt = {"first_pass": "CAST(d.first_pass AS VARCHAR)", "result": "d.result",
               "t_start": f"strftime(d.t_start, {lit(TS_TEXT)})", "t_end": f"strftime(d.t_end, {lit(TS_TEXT)})"}
        exprs = []
        for name in units.column_names:
            if name in wanted:
                exprs.append(f"coalesce(nullif(trim(u.{q(name)}), ''), {fmt[name]}) AS {q(name)}")
            else:
                exprs.append(f"u.{q(name)}")
        out = con.sql(f"""
            WITH d AS ({steps_summary_sql('_s', '_u')})
            SELECT {', '.join(exprs)} FROM _u AS u LEFT JOIN d USING (unit_id)""").to_arrow_table()
    finally:
        con.close()
    return out


def sniff_offsets(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether text timestamps carry a UTC offset (looked at on a sample)."""
    sample = [v for v in values.slice(0, 200).to_pylist() if v]
    rx = re.compile(_OFFSET)
    return bool(sample) and all(rx.search(v.strip()) for v in sample)
