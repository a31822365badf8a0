"""PostgreSQL workspaces: one database shared by connectors, the server and analysts at once.

One SQL dialect. Every stage queries the store in DuckDB SQL (QUALIFY, GROUP BY ALL, EXCLUDE,
epoch_us, median, Arrow tables registered by name). Translating that to PostgreSQL would fork
the dialect, and a row store answers the monitor's column scans slower. So PostgreSQL is the
system of record (durable, shared, transactional) and each process answers the SQL from an
in-memory DuckDB *replica* of the workspace's tables:

- Reads: before a query the replica catches up. One round trip reads the store's revision
  (`store_state.rev`, bumped by every committed write); if another process committed since,
  the replica reads the rows appended since its own revision and re-reads whole any table whose
  rows were changed or removed since (`store_tables` says which). Appended rows are found by a
  block-range index: those of a record table by their ingest `batch` (`batch > m`, where m is the
  table's mark, `store_tables.appended_batch`, as the replica last read it), those of the other
  tables by `_rev`, the revision that wrote them (`_rev > n`). Data move as Arrow through ADBC's
  binary COPY, never row by row in Python.
- Why `batch` finds exactly the new rows: a table's mark is never below the batch of any row it
  holds, and rises at each commit to the greatest batch the commit wrote to it. Batch numbers are
  drawn from the sequence inside the write transaction, after its lock (below), so the next
  commit's are above every mark; a commit appending a row whose batch is not above the table's
  mark (none, or an older one, by a hand-written INSERT) says instead that it rewrote the table,
  and other replicas read it whole. Either way no row is missed or read twice, whatever order
  batch numbers were drawn in. (Until schema version 5 the record tables carried `_rev` too.)
- Writes: a transaction first locks the `store_state` row, so writers commit one at a time in
  revision order, and catches the replica up under that lock: DuckDB then evaluates each
  statement against exactly the database's state. An INSERT's rows are computed by DuckDB
  (validation, de-duplication) and sent to PostgreSQL by one binary COPY tagged with the new
  revision (streamed: the server stores the first rows while DuckDB computes the next); an
  UPDATE or DELETE runs in DuckDB with RETURNING, and the rows it touched are
  replaced in PostgreSQL by their natural key (removed by full match for a DELETE). Sequences
  (the batch sequence) live in PostgreSQL.
- Atomicity: PostgreSQL commits first; if it fails (a cut connection, a restarted server) both
  sides roll back, so a batch is stored whole or not at all, and a retry stores it once (its
  content id is not in `batches`). The next use of the workspace reconnects, and a connection
  that died while idle is replaced before a read or a transaction starts, unnoticed.
- Sharing: processes share the database; threads of one process may share one backend (the
  server does: one warm replica for all requests), a lock serialising them.

Costs, measured in bench/store_postgres.py: an append pays DuckDB's validation and
de-duplication (as on a DuckDB workspace), the replica's copy of the rows, and the COPY, which
overlaps them (it is streamed in blocks of `_SEND_ROWS`); the COPY itself pays for the store's
layout, mostly for the block-range index on `batch` (its upkeep is per row): without the index an
append ran 15-20% faster, but a replica's catch-up would then scan the whole table (~0.2 s per 4M
rows, per table, per catch-up) instead of the new rows' pages. Dropping `_rev` from the record
tables (version 5) gained a few percent (on a 2-core machine the client's encoding, DuckDB and
the server share the processors). A new process first reads
the records into its replica (once, then only what is new) and holds it in memory; queries then
run at DuckDB's speed.

DuckDB's own postgres extension would avoid the replica but is downloaded at run time, which a
plant network often forbids; the replica needs only pip-installed packages.

Where a workspace is (its URL, schema and local folder): `linelab.store.pg_address`.
"""

from __future__ import annotations

import contextlib
import queue
import re
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import adbc_driver_manager
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from linelab.errors import UserError
from linelab.store.migrations import BATCH_TABLES, MIGRATIONS, STAGE_TABLES, SUMMARY_TABLES, VERSION_DDL, pending
from linelab.store.pg_address import DATABASE_FILE, DatabaseURL, linked_url
from linelab.store.pg_address import is_database_url as is_database_url  # re-exported for the workspace
from linelab.store.schema import RECORD_TABLES

# The tables a replica holds: the record tables, the store's own (the line summary too) and the stages' own.
_TABLES = [*RECORD_TABLES, "batches", "quarantine", "artifacts", *SUMMARY_TABLES, *STAGE_TABLES]
# What names one row of the store's own tables, for replacing rows an UPDATE changed.
_STORE_KEYS = {"batches": ("seq",), "quarantine": ("batch_id", "table_name", "row"), "artifacts": ("kind", "id")}


class DatabaseUnavailable(UserError):
    """PostgreSQL could not be reached, or the connection broke mid-transaction (nothing was stored)."""


def _placeholders(sql: str) -> str:
    """DuckDB's `?` parameters as PostgreSQL's `$n`, leaving quoted text alone."""
    out, n = [], 0
    for i, part in enumerate(re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", sql)):
        if i % 2:
            out.append(part)
            continue
        pieces = part.split("?")
        for j, piece in enumerate(pieces):
            if j:
                n += 1
                out.append(f"${n}")
            out.append(piece)
    return "".join(out)


_FIRST_WORD = re.compile(r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(\w+)", re.S)
_SEQUENCE_CALL = re.compile(r"\b(nextval|setval|currval)\s*\(", re.I)
_READS = {"SELECT", "WITH", "FROM", "VALUES", "SHOW", "DESCRIBE", "SUMMARIZE", "EXPLAIN", "PRAGMA", "TABLE"}
_INSERT_SELECT = re.compile(r"^\s*INSERT\s+INTO\s+\w+\s*(\(([^()]*)\))?\s*((?:SELECT|WITH|FROM)\b.*)$", re.I | re.S)
# Rows per block DuckDB hands over and the driver encodes and sends: the server stores one block while
# the next is computed and encoded (a whole batch encoded first would leave one side idle).
_SEND_ROWS = 16_384
_RETURNING = re.compile(r"\s+RETURNING\s+(.*?)\s*;?\s*$", re.I | re.S)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Transaction:
    rev: int  # the revision this transaction commits (tagging the rows of tables found by `_rev`)
    appended: set[str] = field(default_factory=set)
    rewritten: set[str] = field(default_factory=set)
    # Tables found by batch: the greatest batch of the rows this transaction wrote to each.
    top: dict[str, int] = field(default_factory=dict)


class _CopyStream:
    """Blocks handed from the thread computing them to a COPY running on the copying thread: the
    driver reads them from `reader()` as they come. `end()` closes the stream; `fail()` first makes
    the COPY fail (the transaction then rolls back), so a cut computation never ends a COPY cleanly."""

    _END = object()

    def __init__(self, schema: pa.Schema, rev: int | None) -> None:
        """`rev`: the revision each row is tagged with (None: a table found by batch, sent as it is)."""
        self.schema = schema if rev is None else schema.append(pa.field("_rev", pa.int64()))
        self.rev = rev
        self._blocks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._revs = pa.array(np.full(_SEND_ROWS if rev is not None else 0, rev or 0, dtype=np.int64))
        self._ended = False

    def put(self, rows: pa.RecordBatch) -> None:
        if self.rev is None:
            self._blocks.put(rows)
            return
        if len(self._revs) < rows.num_rows:
            self._revs = pa.array(np.full(rows.num_rows, self.rev, dtype=np.int64))
        self._blocks.put(pa.RecordBatch.from_arrays([*rows.columns, self._revs.slice(0, rows.num_rows)],
                                                    schema=self.schema))

    def fail(self, exc: BaseException) -> None:
        if not self._ended:
            self._blocks.put(exc)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._blocks.put(self._END)

    def _items(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._blocks.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise RuntimeError(f"the rows to store could not be computed: {item}")
            yield item

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._items())


class PostgresBackend:
    """The `Backend` of a PostgreSQL workspace (see the module docstring for the design).

    Threads may share one: a lock serialises its calls, and a transaction holds it throughout, so
    no other thread's query runs inside it (the server shares one replica across its requests)."""

    thread_safe = True

    def __init__(self, url: DatabaseURL, keys: Mapping[str, Sequence[str]], *, create: bool = True,
                 read_only: bool = False) -> None:
        self.url = url
        self.keys = {**{t: tuple(k) for t, k in keys.items()}, **_STORE_KEYS}
        self.read_only = read_only
        self._con: Any = None
        self._cur: Any = None
        # COPYs under way on the connection, sent by a thread of their own (see _copy_in).
        self._copier: ThreadPoolExecutor | None = None
        self._copies: list[Future[None]] = []
        self._connect()
        self._migrate(create)
        # The replica is a DuckDB workspace of the same schema version: the same migrations make it.
        self.duck = duckdb.connect()
        for step in MIGRATIONS:
            for ddl in step.duckdb:
                self.duck.execute(ddl)
        self.schemas = {t: self.duck.sql(f"SELECT * FROM {t} LIMIT 0").to_arrow_table().schema for t in _TABLES}
        self.rev = -1  # the replica's revision: -1 until the first full read
        # Per table found by batch: the store's mark at the replica's revision (no row it holds has a greater batch).
        self._marks: dict[str, int] = {}
        self._types: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._tx: _Transaction | None = None
        self._catch_up()

    # -- connection ----------------------------------------------------------------------------------
    def _connect(self) -> None:
        # Imported here: the driver's Python layer loads pandas, which a DuckDB workspace need not pay for.
        from adbc_driver_postgresql import dbapi

        try:
            self._con = dbapi.connect(self.url.uri, autocommit=True)
            self._cur = self._con.cursor()
            self._cur.execute(f"SET search_path TO {_quoted(self.url.schema)}")
        except adbc_driver_manager.Error as exc:
            self._con = self._cur = None
            raise DatabaseUnavailable(f"cannot reach PostgreSQL at {self.url}: {_first_line(exc)}") from exc

    def _pg(self) -> Any:
        """The cursor, once the COPYs under way are done (reconnecting first if a failure closed it)."""
        if self._copies:
            self._settle()
        if self._cur is None:
            self._connect()
        return self._cur

    # -- COPYs under way -------------------------------------------------------------------------------
    # A transaction's COPYs run on a thread of their own (the driver releases the GIL): PostgreSQL
    # stores one table's rows while this thread puts the same rows in the replica and goes on with the
    # ingest's next statements. Any other use of the connection, and the commit, waits for them first,
    # and a COPY's failure is raised there, so a transaction still commits whole or not at all.
    def _copy_later(self, table: str, rows: pa.Table | pa.RecordBatchReader) -> None:
        cur = self._pg()
        if self._copier is None:
            self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linelab-copy")
        self._copies.append(self._copier.submit(cur.adbc_ingest, table, rows, mode="append",
                                                db_schema_name=self.url.schema))

    def _copy_stream(self, table: str) -> _CopyStream:
        """A COPY into `table` started now, fed block by block (`put`, then `end`), each block tagged with
        this transaction's revision."""
        assert self._tx is not None
        stream = _CopyStream(self.schemas[table], None if table in BATCH_TABLES else self._tx.rev)
        self._copy_later(table, stream.reader())
        return stream

    def _settle(self) -> None:
        """Wait for the COPYs under way; raise the first failure (a broken connection as DatabaseUnavailable)."""
        copies, self._copies = self._copies, []
        failure: BaseException | None = None
        for copy in copies:
            try:
                copy.result()
            except BaseException as exc:  # noqa: BLE001 - every COPY is waited for, the first failure raised
                failure = failure or exc
        if failure is None:
            return
        if isinstance(failure, adbc_driver_manager.OperationalError):
            raise self._lost(failure) from failure
        raise failure

    def _settle_quietly(self) -> None:
        """Wait for the COPYs under way, whatever their outcome (before a rollback or a close)."""
        with contextlib.suppress(BaseException):
            self._settle()

    def _lost(self, exc: BaseException) -> DatabaseUnavailable:
        """Forget a broken connection (the next use reconnects) and say what happened."""
        self._drop_connection()
        return DatabaseUnavailable(f"the connection to PostgreSQL at {self.url} broke; nothing of the "
                                   f"interrupted transaction was stored: {_first_line(exc)}")

    def _drop_connection(self) -> None:
        if self._copies:
            self._settle_quietly()
        for handle in (self._cur, self._con):
            with contextlib.suppress(Exception):
                if handle is not None:
                    handle.close()
        self._con = self._cur = None

    def _pg_run(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        cur = self._pg()
        try:
            cur.execute(_placeholders(sql) if params else sql, tuple(params) if params else None)
        except adbc_driver_manager.OperationalError as exc:
            raise self._lost(exc) from exc
        return cur

    def _pg_first(self, sql: str) -> Any:
        """The first statement of a read or a transaction: a connection that died while idle (a
        restarted server, a network cut, an idle timeout) is replaced once, as nothing was under way."""
        try:
            return self._pg_run(sql)
        except DatabaseUnavailable:
            return self._pg_run(sql)

    def _pg_scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self._pg_run(sql, params).fetchone()
        return row[0] if row else None

    # -- schema --------------------------------------------------------------------------------------
    def _migrate(self, create: bool) -> None:
        schema = self.url.schema
        exists = self._pg_scalar("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", [schema])
        if not exists and not create:
            raise UserError(f"no workspace at {self.url} (run `linelab init` first)")
        if exists and self._pg_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = "
                "'schema_version'", [schema]):
            current = int(self._pg_scalar("SELECT coalesce(max(version), 0) FROM schema_version"))
            if not pending(current):
                return
        self._pg_run("BEGIN")
        try:
            # Several processes may open a new workspace at once: one migrates, the others wait and see it done.
            self._pg_run("SELECT pg_advisory_xact_lock(hashtext($1))", [f"linelab schema {schema}"])
            self._pg_run(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}")
            self._pg_run(VERSION_DDL)
            current = int(self._pg_scalar("SELECT coalesce(max(version), 0) FROM schema_version"))
            for step in pending(current):
                for ddl in step.postgres:
                    self._pg_run(ddl)
                self._pg_run("INSERT INTO schema_version VALUES ($1, $2, $3)",
                             [step.version, step.description, datetime.now(UTC).replace(tzinfo=None)])
            self._pg_run("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                self._pg_run("ROLLBACK")
            raise

    # -- keeping the replica current -------------------------------------------------------------------
    def _catch_up(self, locked: int | None = None) -> None:
        """Bring the replica to the database's committed state. Under the write lock (`locked`: the
        revision read with it) the state cannot move; otherwise the reads run in one snapshot
        (REPEATABLE READ)."""
        if locked is None and self.rev >= 0:
            row = self._pg_first("SELECT rev FROM store_state").fetchone()
            if row and row[0] == self.rev:
                return
        if locked is None:
            self._pg_first("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            rev = int(self._pg_scalar("SELECT rev FROM store_state")) if locked is None else locked
            if rev != self.rev:
                changed = self._pg_run(
                    "SELECT table_name, rewritten_rev, appended_batch FROM store_tables "
                    "WHERE appended_rev > $1 OR rewritten_rev > $1", [self.rev]).fetchall()
                self.duck.execute("BEGIN TRANSACTION")
                try:
                    for table, rewritten, _ in changed:
                        by_batch = table in BATCH_TABLES
                        whole = self.rev < 0 or rewritten > self.rev or (by_batch and table not in self._marks)
                        if whole:
                            self.duck.execute(f"DELETE FROM {table}")
                        self._load(table, None if whole else self._marks[table] if by_batch else self.rev)
                    self.duck.execute("COMMIT")
                except BaseException:
                    self.duck.execute("ROLLBACK")
                    raise
                self._marks.update((table, int(mark)) for table, _, mark in changed if table in BATCH_TABLES)
                self.rev = rev
        finally:
            if locked is None and self._cur is not None:
                with contextlib.suppress(adbc_driver_manager.Error):
                    self._pg_run("COMMIT")

    def _load(self, table: str, since: int | None) -> None:
        """Read a table's rows into the replica: all, or those after `since` (the replica's mark for a table
        found by batch, else its revision)."""
        schema = self.schemas[table]
        cols = ", ".join(_quoted(n) for n in schema.names)
        where = "" if since is None else " WHERE batch > $1" if table in BATCH_TABLES else " WHERE _rev > $1"
        cur = self._pg_run(f"SELECT {cols} FROM {table}{where}", None if since is None else [since])
        rows = cur.fetch_arrow_table()
        if rows.num_rows:
            self._replica_append(table, pa.Table.from_arrays([c.cast(f.type) for c, f in zip(rows.columns, schema,
                                                                                             strict=True)],
                                                             schema=schema))

    def _replica_append(self, table: str, rows: pa.Table) -> None:
        self.duck.register("_pg_rows", rows)
        try:
            self.duck.execute(f"INSERT INTO {table} SELECT * FROM _pg_rows")
        finally:
            self.duck.unregister("_pg_rows")

    # -- Backend -------------------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._lock:
            self._run(sql, params)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        with self._lock:
            return self._run(sql, params)

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        return self.query(sql, params).to_pylist()

    def register(self, name: str, table: pa.Table) -> None:
        with self._lock:
            self.duck.register(name, table)

    def unregister(self, name: str) -> None:
        with self._lock:
            self.duck.unregister(name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            yield from self._transaction()

    def _transaction(self) -> Iterator[None]:
        if self._tx is not None:  # joins the transaction already open
            yield
            return
        if self.read_only:
            raise UserError(f"the workspace {self.url} was opened read-only")
        self._pg_first("BEGIN")
        try:
            locked = int(self._pg_scalar("SELECT rev FROM store_state FOR UPDATE"))
            self._catch_up(locked)
            self.rev = locked
        except BaseException:
            self._rollback_pg()
            raise
        self.duck.execute("BEGIN TRANSACTION")
        self._tx = tx = _Transaction(locked + 1)
        try:
            yield
            touched = tx.appended | tx.rewritten
            if touched:  # the new revision and the tables it touched, in one round trip
                def names(tables: set[str]) -> str:
                    return ", ".join(f"'{t}'" for t in sorted(tables)) or "NULL"

                marks = "".join(f" WHEN '{t}' THEN greatest(appended_batch, {int(n)})"
                                for t, n in sorted(tx.top.items()))
                self._pg_run("WITH s AS (UPDATE store_state SET rev = $1) UPDATE store_tables SET "
                             f"appended_rev = CASE WHEN table_name IN ({names(tx.appended)}) THEN $1 "
                             "ELSE appended_rev END, "
                             f"rewritten_rev = CASE WHEN table_name IN ({names(tx.rewritten)}) THEN $1 "
                             "ELSE rewritten_rev END"
                             + (f", appended_batch = CASE table_name{marks} ELSE appended_batch END" if marks else "")
                             + f" WHERE table_name IN ({names(touched)})", [tx.rev])
            self._pg_run("COMMIT")
        except BaseException:
            self._tx = None
            self.duck.execute("ROLLBACK")
            self._rollback_pg()
            raise
        self._tx = None
        self.duck.execute("COMMIT")
        if touched:
            self.rev = tx.rev
            for table, top in tx.top.items():
                self._marks[table] = max(self._marks.get(table, top), top)

    def _rollback_pg(self) -> None:
        self._settle_quietly()
        if self._cur is not None:
            try:
                self._cur.execute("ROLLBACK")
            except adbc_driver_manager.Error:
                self._drop_connection()

    def close(self) -> None:
        with self._lock:
            self._drop_connection()
            if self._copier is not None:
                self._copier.shutdown()
            self.duck.close()

    def __del__(self) -> None:
        # A workspace never closed: close the cursor before its connection (the driver insists).
        with contextlib.suppress(Exception):
            self._drop_connection()

    # -- statements ----------------------------------------------------------------------------------
    def _run(self, sql: str, params: Sequence[Any] | None) -> pa.Table:
        first = _FIRST_WORD.match(sql)
        word = first.group(1).upper() if first else ""
        if not first and sql.lstrip().startswith("("):
            word = "SELECT"  # (SELECT ...) UNION (SELECT ...)
        if _SEQUENCE_CALL.search(sql):
            # The batch sequence must be one for every process: PostgreSQL's.
            return self._pg_run(sql, params).fetch_arrow_table()
        if word in _READS:
            if self._tx is None:
                self._catch_up()
            return self._duck(sql, params)
        if word not in ("INSERT", "UPDATE", "DELETE"):
            raise UserError(f"a PostgreSQL workspace does not run {word or 'this'} statements: its schema changes "
                            "only through migrations")
        if self._tx is None:
            with self.transaction():
                return self._write(word, sql, params)
        return self._write(word, sql, params)

    def _duck(self, sql: str, params: Sequence[Any] | None) -> pa.Table:
        rel = self.duck.sql(sql, params=list(params) if params else None)
        return rel.to_arrow_table() if rel is not None else pa.table({})

    def _write(self, word: str, sql: str, params: Sequence[Any] | None) -> pa.Table:
        assert self._tx is not None
        target = re.match(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", sql, re.I)
        table = target.group(1).lower() if target else ""
        if table not in self.schemas:
            raise UserError(f"a PostgreSQL workspace has no table {table!r} to write to")
        schema = self.schemas[table]
        streamed = _INSERT_SELECT.match(sql)
        if streamed and not _RETURNING.search(sql):
            n = self._insert_streamed(table, streamed.group(2), streamed.group(3), params)
            return pa.table({"Count": [n]})
        body, returning = sql, None
        found = _RETURNING.search(sql)
        if found:
            body, returning = sql[: found.start()], found.group(1)
        extra = f", {returning}" if returning else ""
        rows = self._duck(f"{body} RETURNING *{extra}", params)
        result = rows.select(list(range(len(schema), rows.num_columns))) if returning else pa.table(
            {"Count": [rows.num_rows]})
        if rows.num_rows == 0:
            return result
        rows = pa.Table.from_arrays(rows.columns[: len(schema)], schema=schema)
        if word == "INSERT":
            self._copy_in(table, rows, appended=True)
            self._tx.appended.add(table)
        elif word == "DELETE":
            self._remove(table, rows, schema.names, nullable=True)
            self._tx.rewritten.add(table)
        else:
            key = self.keys.get(table)
            if key is None or self._remove(table, rows, key) != rows.num_rows:
                # Without a key naming each row once, rewrite the table from the replica (exact, but slower).
                self._pg_run(f"DELETE FROM {table}")
                self._copy_in(table, self._duck(f"SELECT * FROM {table}", None), appended=False)
            else:
                self._copy_in(table, rows, appended=False)
            self._tx.rewritten.add(table)
        return result

    def _insert_streamed(self, table: str, listed: str | None, select: str, params: Sequence[Any] | None) -> int:
        """INSERT ... SELECT: DuckDB computes the rows, and one COPY streams them to PostgreSQL as they come
        (on the copying thread: the server stores the first rows while DuckDB computes the next); then the
        replica takes the same rows while the COPY runs. Returns how many."""
        assert self._tx is not None
        schema = self.schemas[table]
        names = [n.strip().strip('"') for n in listed.split(",")] if listed else list(schema.names)
        unknown = [n for n in names if n not in schema.names]
        if unknown:
            raise UserError(f"table {table} has no column {unknown[0]!r}")
        types = self._column_types(table)
        position = {n: i for i, n in enumerate(names)}
        cols = ", ".join(
            f"CAST({f'_s._c{position[f.name]}' if f.name in position else 'NULL'} AS {types[f.name]}) "
            f"AS {_quoted(f.name)}" for f in schema)
        aliases = ", ".join(f"_c{i}" for i in range(len(names)))
        reader = self.duck.sql(f"SELECT {cols} FROM ({select}) AS _s({aliases})",
                               params=list(params) if params else None).to_arrow_reader(_SEND_ROWS)
        kept: list[pa.RecordBatch] = []
        stream: _CopyStream | None = None
        try:
            for chunk in reader:
                if not chunk.num_rows:
                    continue
                rows = pa.RecordBatch.from_arrays(chunk.columns, schema=schema)
                kept.append(rows)
                if stream is None:  # the COPY starts with the first rows (none: no COPY)
                    stream = self._copy_stream(table)
                stream.put(rows)
        except BaseException as exc:
            if stream is not None:
                stream.fail(exc)
            raise
        finally:  # a read cut short must not keep DuckDB's result open (the rollback needs the connection)
            reader.close()
            if stream is not None:
                stream.end()
        n = sum(b.num_rows for b in kept)
        if n:
            rows = pa.Table.from_batches(kept, schema)
            self._replica_append(table, rows)
            self._note_batches(table, rows, appended=True)
            self._tx.appended.add(table)
        return n

    def _column_types(self, table: str) -> dict[str, str]:
        if table not in self._types:
            self._types[table] = {r[0]: r[1] for r in self.duck.execute(f"DESCRIBE {table}").fetchall()}
        return self._types[table]

    def _copy_in(self, table: str, rows: pa.Table, appended: bool) -> None:
        """Append rows to the PostgreSQL table by binary COPY (sent on the copying thread: see _copy_later),
        tagged with this transaction's revision unless the table is found by batch. `appended`: new rows,
        not rows an UPDATE changed."""
        assert self._tx is not None
        if rows.num_rows == 0:
            return
        if table in BATCH_TABLES:
            self._note_batches(table, rows, appended)
            tagged = rows
        else:
            tagged = rows.append_column("_rev", pa.array(np.full(rows.num_rows, self._tx.rev, dtype=np.int64)))
        # In blocks: the driver sends each as it is encoded, so the server stores one while the next is encoded.
        self._copy_later(table, pa.Table.from_batches(tagged.to_batches(max_chunksize=_SEND_ROWS), tagged.schema))

    def _note_batches(self, table: str, rows: pa.Table, appended: bool) -> None:
        """For a table found by batch, keep the greatest batch this transaction writes to it (the table's mark
        rises to it at commit). Appended rows are found by other replicas as `batch > their mark` only if each
        lies above the mark this transaction started from: if one does not (no batch, or one not greater), the
        commit says the table was rewritten instead, and other replicas read it whole."""
        assert self._tx is not None
        if table not in BATCH_TABLES:
            return
        column = rows.column("batch")
        lo, hi = (v.as_py() for v in pc.min_max(column).values())
        mark = self._marks.get(table)
        if appended and (column.null_count or mark is None or lo is None or lo <= mark):
            self._tx.rewritten.add(table)
        if hi is not None:
            self._tx.top[table] = max(self._tx.top.get(table, hi), hi)

    def _remove(self, table: str, rows: pa.Table, key: Sequence[str], nullable: bool = False) -> int:
        """Delete the PostgreSQL rows whose `key` columns equal those of `rows`; returns how many.
        A key that must not be null is matched with `=`, which lets PostgreSQL use its index."""
        cur = self._pg()
        try:
            cur.adbc_ingest("_linelab_keys", rows.select(list(key)), mode="replace", temporary=True)
        except adbc_driver_manager.OperationalError as exc:
            raise self._lost(exc) from exc
        same = "IS NOT DISTINCT FROM" if nullable else "="
        match = " AND ".join(f"t.{_quoted(k)} {same} k.{_quoted(k)}" for k in key)
        cur = self._pg_run(f"DELETE FROM {table} AS t USING _linelab_keys AS k WHERE {match}")
        removed = int(cur.rowcount)
        self._pg_run("DROP TABLE _linelab_keys")
        return removed


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def empty_linked_folder(folder: Path) -> None:
    """Empty a PostgreSQL workspace (its schema, and its folder's files), keeping the folder's link to it."""
    url = linked_url(folder)
    if url is None:
        raise UserError(f"{folder} is not a PostgreSQL workspace's folder")
    address = DatabaseURL.parse(url)
    from adbc_driver_postgresql import dbapi

    try:
        with dbapi.connect(address.uri, autocommit=True) as con, con.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {_quoted(address.schema)} CASCADE")
    except adbc_driver_manager.Error as exc:
        raise DatabaseUnavailable(f"cannot empty the workspace {address}: {_first_line(exc)}") from exc
    for entry in folder.iterdir():
        if entry.name != DATABASE_FILE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def schema_exists(url: str) -> bool:
    """True when the database holds this workspace's schema (a folder's link alone says nothing of that)."""
    address = DatabaseURL.parse(url)
    from adbc_driver_postgresql import dbapi

    try:
        with dbapi.connect(address.uri, autocommit=True) as con, con.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 "
                        "AND table_name = 'schema_version'", (address.schema,))
            row = cur.fetchone()
    except adbc_driver_manager.Error as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {address}: {_first_line(exc)}") from exc
    return bool(row and row[0])
