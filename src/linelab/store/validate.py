"""Schema validation of a record batch, vectorised: every bad row gets its line, field and reason.

One path for every source: text read from a CSV file, a Parquet file's columns turned into text,
and the typed Arrow batches adapters hand over are all checked by the same SQL checks (`CHECKS`).
Bad rows never block good ones: `check` splits a batch into the rows that conform to the table's
schema (typed, ready to store) and a quarantine table naming, for each rejected row, its line in
the source, the first field at fault, why, the raw record, and its natural key (when readable), so
a corrected record arriving later can resolve the entry.

Text rules: only an empty (or blank) field is a missing value, so `NA` or `null` stay text where
text is expected; the whitespace around text is trimmed; timestamps with an offset (`+05:00`, `Z`)
or a zone name are converted to UTC and stored without one; timestamps outside 1900-2200, numbers
that are not finite and text holding a NUL character are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from linelab.errors import UserError
from linelab.store.backend import sql_ident as q
from linelab.store.backend import sql_text as lit
from linelab.store.schema import NATURAL_KEYS, RECORD_TABLES

# Values a categorical field may take; anything else is quarantined.
ALLOWED = {
    ("steps", "result"): {"pass", "fail", "rework"},
    ("units", "result"): {"pass", "fail", "scrap"},
}
# Timestamps a line can have produced (also what every reader of the store can format).
TS_RANGE = ("1900-01-01", "2200-01-01")
# Row-order fields: a record whose end precedes its start is refused.
ORDERED = {"steps": ("t_in", "t_out"), "units": ("t_start", "t_end")}

# The column a batch may carry with the source line (or Parquet row) of each record.
LINE = "__line__"

QUARANTINE_SCHEMA = pa.schema([("row", pa.int64()), ("field", pa.string()), ("reason", pa.string()),
                               ("raw", pa.string()), ("key", pa.string())])

# A timestamp is a date and, optionally, a time of day; nothing else may follow but a zone. (A cast
# alone would drop what it does not know: `06:00 PM` read as 06:00, `EST` or `+05:00:30` ignored.)
_DATE, _TIME = r"^\s*\d{4}[-/]\d{1,2}[-/]\d{1,2}", r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?"
# Without a zone: read as it is (UTC, or the zone its source declares).
NAIVE = _DATE + f"([T ]{_TIME})?" + r"\s*$"
# A time of day followed by an offset (at most 14 hours) or a zone name: read as TIMESTAMPTZ and
# converted to UTC.
ZONED = _DATE + f"[T ]{_TIME}" + r"\s*(Z|z|UTC|GMT|[+-](0\d|1[0-4])(:?[0-5]\d)?|[A-Za-z_]+/[A-Za-z_/+-]+)\s*$"
WHITESPACE = " \t\r\n\f\v"
_SQL_TYPES = {pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN", pa.string(): "VARCHAR"}


@dataclass
class Checked:
    good: pa.Table  # typed rows, with the LINE column when the batch had lines
    quarantine: pa.Table  # QUARANTINE_SCHEMA

    @property
    def n_bad(self) -> int:
        return self.quarantine.num_rows


def timestamp_sql(x: str) -> str:
    """Text `x` as a naive UTC timestamp: offsets and zone names honoured, NULL when unreadable."""
    return (f"CASE WHEN regexp_matches({x}, {lit(ZONED)}) THEN timezone('UTC', TRY_CAST({x} AS TIMESTAMPTZ)) "
            f"WHEN regexp_matches({x}, {lit(NAIVE)}) THEN TRY_CAST({x} AS TIMESTAMP) END")


def blank_sql(x: str) -> str:
    """SQL: `x` is missing (NULL, empty or only whitespace). Only strings starting below '!' are trimmed."""
    return f"(CASE WHEN {x} IS NULL THEN TRUE WHEN {x} < '!' THEN trim({x}, {lit(WHITESPACE)}) = '' ELSE FALSE END)"


def trimmed_sql(x: str) -> str:
    """SQL: text `x` without the whitespace around it. Only strings that start or end below '!' are trimmed."""
    return f"(CASE WHEN {x} < '!' OR right({x}, 1) < '!' THEN trim({x}, {lit(WHITESPACE)}) ELSE {x} END)"


def key_sql(table_name: str, alias: str = "s", prefix: str = "") -> str:
    """A record's natural key as JSON text: how quarantine entries find the record that resolves them."""
    parts = ", ".join(f"CAST({alias}.{q(prefix + k)} AS VARCHAR)" for k in NATURAL_KEYS[table_name])
    return f"to_json([{parts}])"


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "a timestamp"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_integer(t):
        return "an integer"
    return "a number"


def _checks(table_name: str, columns: dict[str, pa.DataType]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """SELECT expressions typing each field (`v_<field>`), and the checks as (field, bad predicate, reason SQL).

    The checks run in schema order; a row is reported under the first one it fails. The reason SQL
    quotes the value as given.
    """
    exprs: list[str] = []
    checks: list[tuple[str, str, str]] = []
    for f in RECORD_TABLES[table_name]:
        v, raw = q(f"v_{f.name}"), q(f.name)
        if f.name not in columns:
            exprs.append(f"NULL::{_SQL_TYPES.get(f.type, 'TIMESTAMP')} AS {v}")
            if not f.nullable:
                checks.append((f.name, f"{v} IS NULL", lit("missing value")))
            continue
        have = columns[f.name]
        text = f"CAST({raw} AS VARCHAR)"
        given = f"NOT {blank_sql(text)}"
        got = f"' (got ''' || {text} || ''')'"
        if pa.types.is_string(f.type):
            # Only an empty or blank field is a missing value: `NA`, `null`, `N/A` are text like any other.
            # Spaces around text are not part of it (`U1, ST10`): trimmed, where there are any.
            exprs.append(f"CASE WHEN {given} THEN {trimmed_sql(text)} END AS {v}")
        elif have == f.type:
            exprs.append(f"{raw} AS {v}")
        else:
            if pa.types.is_timestamp(f.type):
                typed = timestamp_sql(text)
            elif pa.types.is_boolean(f.type):
                typed = f"TRY_CAST(trim({text}, {lit(WHITESPACE)}) AS BOOLEAN)"
            else:  # numbers are read with the whitespace around them
                typed = f"TRY_CAST({text} AS {_SQL_TYPES[f.type]})"
            exprs.append(f"CASE WHEN {given} THEN {typed} END AS {v}")
            checks.append((f.name, f"{given} AND {v} IS NULL", f"{lit('cannot read as ' + _kind(f.type))} || {got}"))
        if not f.nullable:
            checks.append((f.name, f"{v} IS NULL", lit("missing value")))
        if pa.types.is_string(f.type):
            # Text holds no NUL character (PostgreSQL cannot store one; no export means one).
            checks.append((f.name, f"strpos({v}, chr(0)) > 0", lit("holds a NUL character (byte 0)")))
        if pa.types.is_floating(f.type):
            checks.append((f.name, f"NOT isfinite({v})", f"'not a finite number' || {got}"))
        if pa.types.is_timestamp(f.type):
            lo, hi = TS_RANGE
            checks.append((f.name, f"({v} < TIMESTAMP '{lo}' OR {v} >= TIMESTAMP '{hi}')",
                           f"'outside {lo[:4]}-{hi[:4]}' || {got}"))
        allowed = ALLOWED.get((table_name, f.name))
        if allowed:
            checks.append((f.name, f"{v} NOT IN ({', '.join(map(lit, sorted(allowed)))})",
                           f"'must be one of {', '.join(sorted(allowed))}' || {got}"))
    if table_name == "specs":  # limits that cross, or a target beyond them, would put every unit out of spec
        def quoted(f: str) -> str:
            return f"' (got ''' || CAST({q(f)} AS VARCHAR) || ''')'"

        lsl, usl, target = q("v_lsl"), q("v_usl"), q("v_target")  # a column the batch lacks is NULL here
        if "usl" in columns:
            checks.append(("usl", f"{usl} < {lsl}", f"'below lsl' || {quoted('usl')}"))
        if "target" in columns:
            checks.append(("target", f"{target} < {lsl} OR {target} > {usl}",
                           f"'outside lsl..usl' || {quoted('target')}"))
    order = ORDERED.get(table_name)
    if order and order[1] in columns:
        start, end = order
        checks.append((end, f"{q('v_' + end)} < {q('v_' + start)}", f"'earlier than {start}' || ' (got ''' || "
                                                                      f"CAST({q(end)} AS VARCHAR) || ''')'"))
    return exprs, checks


def surely_valid_sql(table_name: str, columns: list[str], alias: str = "s") -> str:
    """A predicate over a batch already of its schema types that holds only for rows passing every check.

    The adapters' fast path: a batch where it holds for every row is stored as it is. It is
    conservative for text (a value starting with whitespace or a control character fails it, blank
    or not), so it costs no trimming; the few rows it fails go through `check`. Text that ends with
    one is not looked at: a batch holding any (`ends_blank`) takes the general path.
    """
    schema = RECORD_TABLES[table_name]
    exprs, checks = _checks(table_name, {f.name: f.type for f in schema if f.name in columns})
    # On a typed batch every `v_<field>` is the field itself; text below '!' counts as possibly blank.
    subst = {q(f"v_{f.name}"): f"CASE WHEN {alias}.{q(f.name)} >= '!' THEN {alias}.{q(f.name)} END"
             if pa.types.is_string(f.type) else f"{alias}.{q(f.name)}" for f in schema if f.name in columns}
    terms = []
    for _, bad, _ in checks:
        for v, col in subst.items():
            bad = bad.replace(v, col)
        terms.append(f"NOT coalesce({bad}, FALSE)")
    for f in schema:  # text that starts with no blank (the caller rules out text that ends with one)
        if f.name in columns and pa.types.is_string(f.type):
            terms.append(f"({alias}.{q(f.name)} IS NULL OR {alias}.{q(f.name)} >= '!')")
    return " AND ".join(terms) or "TRUE"


def ends_blank(table: pa.Table) -> bool:
    """Whether a text value of the batch ends with whitespace or a control character (its last byte
    below '!'), read from the Arrow buffers: such text is trimmed by `check`, not stored as it is."""
    for col in table.columns:
        if not pa.types.is_string(col.type):
            continue
        for chunk in col.chunks:
            if len(chunk) == 0:
                continue
            _, offsets, data = chunk.buffers()
            if data is None or data.size == 0:  # every value empty or missing
                continue
            ends = np.frombuffer(offsets, dtype=np.int32)[chunk.offset + 1:chunk.offset + len(chunk) + 1]
            starts = np.frombuffer(offsets, dtype=np.int32)[chunk.offset:chunk.offset + len(chunk)]
            hit = (ends > starts) & (np.frombuffer(data, dtype=np.uint8)[np.maximum(ends - 1, 0)] < ord("!"))
            if chunk.null_count:
                hit &= chunk.is_valid().to_numpy(zero_copy_only=False)
            if hit.any():
                return True
    return False


def conforms(table: pa.Table, table_name: str) -> bool:
    """True when every column the batch has is already of its schema type (adapters)."""
    schema = RECORD_TABLES[table_name]
    have = {f.name: f.type for f in table.schema}
    return all(f.name in have for f in schema if not f.nullable) and all(
        have[f.name] == f.type for f in schema if f.name in have
    )


def _arrow_typed(table: pa.Table, table_name: str) -> pa.Table:
    """Typed columns of another width (int32 values, ns timestamps) cast to the schema's type; text stays text."""
    schema = RECORD_TABLES[table_name]
    for f in schema:
        if f.name not in table.column_names:
            continue
        col = table.column(f.name)
        if col.type == f.type or _is_text(col.type):
            continue
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        try:
            col = col.cast(f.type, safe=False) if pa.types.is_timestamp(col.type) and pa.types.is_timestamp(f.type) \
                else col.cast(f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UserError(f"{table_name}: column {f.name} has type {col.type}, expected {f.type}") from exc
        table = table.set_column(table.column_names.index(f.name), f.name, col)
    return table


def check(table: pa.Table, table_name: str, first_row: int = 1) -> Checked:
    """Split `table` into conforming typed rows and quarantined rows for `table_name`.

    A row's line is its LINE column when the batch has one, else its position plus `first_row`.
    """
    schema = RECORD_TABLES[table_name]
    missing = [f.name for f in schema if not f.nullable and f.name not in table.column_names]
    if missing:
        raise UserError(
            f"{table_name}: required column(s) {', '.join(missing)} missing "
            f"(found: {', '.join(c for c in table.column_names if c != LINE) or 'none'})"
        )
    table = _arrow_typed(table, table_name)
    if LINE not in table.column_names:
        table = table.append_column(LINE, pa.array(np.arange(table.num_rows, dtype=np.int64) + first_row))
    names = [f.name for f in schema if f.name in table.column_names]
    table = table.select([*names, LINE])  # an export's other columns are not read (nor can clash with ours)
    columns = {n: table.schema.field(n).type for n in names}
    exprs, checks = _checks(table_name, columns)
    fault = "CASE " + " ".join(f"WHEN {bad} THEN {i}" for i, (_, bad, _) in enumerate(checks)) + " END" \
        if checks else "NULL"
    reason = "CASE _fault " + " ".join(f"WHEN {i} THEN {r}" for i, (_, _, r) in enumerate(checks)) + " END" \
        if checks else "NULL"
    field = "CASE _fault " + " ".join(f"WHEN {i} THEN {lit(f)}" for i, (f, _, _) in enumerate(checks)) + " END" \
        if checks else "NULL"
    typed = ", ".join(f"{q('v_' + f.name)} AS {q(f.name)}" for f in schema)
    keys = key_sql(table_name, "t", "v_")
    required_keys = [k for k in NATURAL_KEYS[table_name] if not schema.field(k).nullable]
    key_known = " AND ".join(f"t.{q('v_' + k)} IS NOT NULL" for k in required_keys) or "TRUE"
    raw = "to_json(struct_pack(" + ", ".join(f"{q(n)} := CAST({q(n)} AS VARCHAR)" for n in names) + "))"
    con = duckdb.connect()
    try:
        con.register("_batch", table)
        con.execute(f"""CREATE TEMP TABLE _typed AS
            SELECT *, {fault} AS _fault FROM (SELECT *, {', '.join(exprs)} FROM _batch)""")
        good = con.sql(f"SELECT {typed}, {q(LINE)} FROM _typed WHERE _fault IS NULL").to_arrow_table()
        bad = con.sql(f"""
            SELECT {q(LINE)} AS "row", {field} AS field, {reason} AS reason, {raw} AS raw,
                   CASE WHEN {key_known} THEN {keys} END AS "key"
            FROM _typed AS t WHERE _fault IS NOT NULL ORDER BY {q(LINE)}""").to_arrow_table()
    finally:
        con.close()
    good = good.cast(schema.append(pa.field(LINE, pa.int64())))
    return Checked(good, bad.cast(QUARANTINE_SCHEMA))


def quarantine_rows(rows: list[dict[str, object]]) -> pa.Table:
    """Quarantine entries built by hand (unreadable lines: no field values, no key)."""
    return pa.Table.from_pylist([{"key": None, **r} for r in rows], schema=QUARANTINE_SCHEMA)
