"""Storage backends: the small surface every stage relies on.

Stages never call DuckDB directly; they go through `Workspace`, which needs only what a
`Backend` offers. Every backend speaks one SQL dialect, DuckDB's: `DuckDBBackend` is a DuckDB
file, `linelab.store.postgres.PostgresBackend` keeps the records in PostgreSQL and answers the
same SQL from a DuckDB replica of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from linelab.store.migrations import VERSION_DDL, pending

if TYPE_CHECKING:
    import pyarrow as pa

# Arrow (with NumPy) and the record schema load only where a table is made or read as Arrow: a
# command that reads a few rows opens the workspace without them (commands start fast).


@cache
def _duck_types() -> dict[pa.DataType, str]:
    import pyarrow as pa

    from linelab.store.schema import TS

    return {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
            TS: "TIMESTAMP"}


# Tables the store keeps about itself.
SYSTEM_DDL = [
    """CREATE TABLE IF NOT EXISTS batches (
        seq BIGINT, batch_id VARCHAR, source VARCHAR, table_name VARCHAR,
        n_rows BIGINT, n_duplicates BIGINT, n_quarantined BIGINT, t_ingested TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        batch_id VARCHAR, source VARCHAR, table_name VARCHAR, "row" BIGINT,
        field VARCHAR, reason VARCHAR, raw VARCHAR, t_ingested TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS artifacts (
        kind VARCHAR, id VARCHAR, status VARCHAR, created TIMESTAMP, updated TIMESTAMP,
        payload VARCHAR)""",
    "CREATE SEQUENCE IF NOT EXISTS batch_seq START 1",
]


def duck_type(t: pa.DataType) -> str:
    return _duck_types()[t]


def sql_ident(name: str) -> str:
    """A quoted SQL identifier (an export's own column name may hold anything)."""
    return '"' + name.replace('"', '""') + '"'


def sql_text(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_literal(value: pa.Scalar) -> str:
    """A scalar as SQL text, for the few places where a constant must be inlined (zone-map pruning)."""
    v = value.as_py()
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return sql_text(v)
    import pyarrow as pa

    if pa.types.is_timestamp(value.type):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    return repr(v)


def table_ddl(name: str) -> str:
    from linelab.store.schema import RECORD_TABLES, stored_schema

    schema = stored_schema(name) if name != "specs" else RECORD_TABLES["specs"]
    cols = ", ".join(f'"{f.name}" {duck_type(f.type)}' for f in schema)
    return f"CREATE TABLE IF NOT EXISTS {name} ({cols})"


class Backend(Protocol):
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None: ...
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table: ...
    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]: ...
    def register(self, name: str, table: pa.Table) -> None: ...
    def unregister(self, name: str) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


class DuckDBBackend:
    """The embedded default: one DuckDB file per workspace."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.con = duckdb.connect(str(path), read_only=read_only)
        if not read_only:
            self._migrate()

    def _migrate(self) -> None:
        """Bring the file to the current schema version (see `linelab.store.migrations`)."""
        self.con.execute(VERSION_DDL)
        current = self.con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]
        for step in pending(int(current)):
            with self.transaction():
                for ddl in step.duckdb:
                    self.con.execute(ddl)
                self.con.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                                 [step.version, step.description, datetime.now(UTC).replace(tzinfo=None)])

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        self.con.execute(sql, params or [])

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        rel = self.con.sql(sql, params=list(params) if params else None)
        if rel is not None:
            return rel.to_arrow_table()
        import pyarrow as pa

        return pa.table({})

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """A small answer as Python rows, without Arrow: quick reads need not load it."""
        rel = self.con.sql(sql, params=list(params) if params else None)
        if rel is None:
            return []
        names = rel.columns
        return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]

    def register(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.close()
