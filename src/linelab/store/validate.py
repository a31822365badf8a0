"""Schema validation of a record batch, vectorised: every bad row gets a field and a reason.

Bad rows never block good ones: `validate` splits a batch into the rows that conform to the
table's schema (typed, ready to store) and a quarantine table naming, for each rejected row,
its row number, the first field at fault and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from linelab.errors import UserError
from linelab.store.schema import RECORD_TABLES

# Values a categorical field may take; anything else is quarantined.
ALLOWED = {
    ("steps", "result"): {"pass", "fail", "rework"},
    ("units", "result"): {"pass", "fail", "scrap"},
}

QUARANTINE_SCHEMA = pa.schema(
    [("row", pa.int64()), ("field", pa.string()), ("reason", pa.string()), ("raw", pa.string())]
)


@dataclass
class Validated:
    good: pa.Table
    quarantine: pa.Table  # QUARANTINE_SCHEMA

    @property
    def n_bad(self) -> int:
        return self.quarantine.num_rows


def _try_cast(values: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Cast text to `target`, null where a value does not parse (DuckDB's TRY_CAST, vectorised)."""
    sql_type = {pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN"}.get(target, "TIMESTAMP")
    con = duckdb.connect()
    try:
        con.register("v", pa.table({"x": values.cast(pa.string())}))
        # Blank text means "no value": a missing value, not a parse failure.
        out = con.sql(f"SELECT TRY_CAST(NULLIF(trim(x), '') AS {sql_type}) AS x FROM v").to_arrow_table()
    finally:
        con.close()
    return out.column("x").cast(target)


def conforms(table: pa.Table, table_name: str) -> bool:
    """True when every column the batch has is already of its schema type (adapters, Parquet)."""
    schema = RECORD_TABLES[table_name]
    have = {f.name: f.type for f in table.schema}
    return all(f.name in have for f in schema if not f.nullable) and all(
        have[f.name] == f.type for f in schema if f.name in have
    )


def valid_rows_sql(table_name: str, columns: list[str], alias: str = "s") -> str:
    """The checks of `validate` as one SQL predicate, for typed batches stored in a single pass."""
    terms = []
    for f in RECORD_TABLES[table_name]:
        if f.name not in columns:
            continue
        col = f'{alias}."{f.name}"'
        if not f.nullable:
            terms.append(f"{col} IS NOT NULL")
            if pa.types.is_string(f.type):
                terms.append(f"{col} <> ''")
        if pa.types.is_floating(f.type):
            terms.append(f"({col} IS NULL OR isfinite({col}))")
        allowed = ALLOWED.get((table_name, f.name))
        if allowed:
            terms.append(f"({col} IS NULL OR {col} IN ({', '.join(repr(a) for a in sorted(allowed))}))")
    if table_name == "steps" and "t_out" in columns:
        terms.append(f"({alias}.t_out IS NULL OR {alias}.t_out >= {alias}.t_in)")
    return " AND ".join(terms) or "TRUE"


def validate(table: pa.Table, table_name: str, first_row: int = 1) -> Validated:
    """Split `table` into conforming rows and quarantined rows for `table_name`.

    `first_row` is the row number the first record carries in its source (e.g. 2 for a CSV
    whose line 1 is the header), so a quarantine entry points at the right line.
    """
    schema = RECORD_TABLES[table_name]
    missing = [f.name for f in schema if not f.nullable and f.name not in table.column_names]
    if missing:
        raise UserError(
            f"{table_name}: required column(s) {', '.join(missing)} missing "
            f"(found: {', '.join(table.column_names) or 'none'})"
        )
    n = table.num_rows
    columns: dict[str, pa.ChunkedArray] = {}
    # Per row: index into `reasons` of the first failing check, -1 if the row is good.
    fault = np.full(n, -1, dtype=np.int64)
    reasons: list[tuple[str, str]] = []

    def flag(mask: pa.ChunkedArray | pa.Array, field: str, reason: str) -> None:
        bad = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            fault[(fault < 0) & bad] = len(reasons)
            reasons.append((field, reason))

    for f in schema:
        if f.name not in table.column_names:
            columns[f.name] = pa.chunked_array([pa.nulls(n, f.type)])
            continue
        col = table.column(f.name)
        if col.type != f.type:
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
                cast = col.cast(pa.string())
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type):
                cast = _try_cast(col, f.type)
                given = pc.and_(pc.is_valid(col), pc.not_equal(pc.utf8_trim_whitespace(col.cast(pa.string())), ""))
                flag(pc.and_(given, pc.is_null(cast)), f.name, f"cannot read as {_kind(f.type)}")
            else:
                try:
                    cast = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise UserError(f"{table_name}: column {f.name} has type {col.type}, expected {f.type}") from exc
            col = cast
        if pa.types.is_string(f.type):
            # Empty text is a missing value, the same as a null.
            col = pc.if_else(pc.equal(pc.utf8_trim_whitespace(col), ""), pa.scalar(None, pa.string()), col)
        if not f.nullable:
            flag(pc.is_null(col), f.name, "missing value")
        if pa.types.is_floating(f.type):
            flag(pc.invert(pc.is_finite(col)), f.name, "not a finite number")
        allowed = ALLOWED.get((table_name, f.name))
        if allowed:
            flag(
                pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, pa.array(sorted(allowed))))),
                f.name,
                f"must be one of {', '.join(sorted(allowed))}",
            )
        columns[f.name] = col
    typed = pa.table(columns, schema=schema)
    if table_name == "steps":
        flag(pc.less(typed.column("t_out"), typed.column("t_in")), "t_out", "earlier than t_in")

    bad_rows = np.flatnonzero(fault >= 0)
    if bad_rows.size == 0:
        return Validated(typed, QUARANTINE_SCHEMA.empty_table())
    good = typed.filter(pa.array(fault < 0))
    raw = table.take(pa.array(bad_rows)).to_pylist()
    picked = [reasons[i] for i in fault[bad_rows]]
    quarantine = pa.table(
        {
            "row": pa.array(bad_rows + first_row, pa.int64()),
            "field": [field for field, _ in picked],
            "reason": [
                f"{reason} (got {row.get(field)!r})" if row.get(field) not in (None, "") else reason
                for (field, reason), row in zip(picked, raw, strict=True)
            ],
            "raw": [json.dumps(row, default=str) for row in raw],
        },
        schema=QUARANTINE_SCHEMA,
    )
    return Validated(good, quarantine)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "a timestamp"
    if pa.types.is_boolean(t):
        return "true/false"
    if pa.types.is_integer(t):
        return "an integer"
    return "a number"
