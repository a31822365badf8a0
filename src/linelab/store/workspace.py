"""The workspace: every record of the line, validated, kept and queryable.

Ingest itself (validation, de-duplication, quarantine) lives in `linelab.store.ingest`; the
workspace opens the store and offers the calls every stage uses.

Ingest guarantees:
- bad rows go to `quarantine` with row, field and reason; good rows of the same batch land;
- a batch's id is derived from its content, so the same data ingested twice adds nothing, and
  rows already stored (same natural key) are skipped even inside a new, overlapping batch;
- all tables of one ingest call land in one transaction: a crash leaves the workspace as it was;
- arrival order does not matter: late records are stored by their own timestamps, and
  `batches.seq` (arrival order) is what incremental readers track.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from linelab.errors import UserError
from linelab.lazy import lazy_attributes
from linelab.store.backend import Backend, DuckDBBackend
from linelab.store.pg_address import DatabaseURL, is_database_url, linked_url

if TYPE_CHECKING:
    import pyarrow as pa

    from linelab.store.ingest import IngestReport as IngestReport  # re-exported: callers import it from here
    from linelab.store.ingest import TableReport as TableReport
    from linelab.store.schema import NATURAL_KEYS as NATURAL_KEYS  # re-exported
    from linelab.store.schema import UPDATABLE as UPDATABLE

# The re-exported names load on first use: a command that only reads opens the workspace without
# loading Arrow (with NumPy), the ingest machinery or the PostgreSQL driver (commands start fast).
__getattr__ = lazy_attributes(__name__, {
    "IngestReport": "linelab.store.ingest", "TableReport": "linelab.store.ingest",
    "NATURAL_KEYS": "linelab.store.schema", "UPDATABLE": "linelab.store.schema"}, globals())

DEFAULT_WORKSPACE = "linelab-workspace"
DB_FILE = "linelab.duckdb"
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a payload key `list_artifacts` may project to

def content_id(table: pa.Table, table_name: str) -> str:
    """A batch id from the batch's content: same rows, same id (xxh3-128 over the Arrow buffers)."""
    h = xxhash.xxh3_128()
    h.update(table_name.encode())
    h.update(table.schema.to_string().encode())
    for col in table.columns:
        for chunk in col.chunks:
            # A slice shares its parent's buffers: its offset and length tell slices apart.
            h.update(f"{chunk.offset}:{len(chunk)}".encode())
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(memoryview(buf))
    return h.hexdigest()


def resolve_path(path: str | Path | None) -> Path:
    """The workspace's local folder. A PostgreSQL URL names a database; its folder keeps the files
    (profile, monitor state, plots) and records the URL, so the folder opens the same database."""
    location = path or os.environ.get("LINELAB_WORKSPACE") or DEFAULT_WORKSPACE
    if is_database_url(location):
        return DatabaseURL.parse(location).link_folder(location)
    return Path(location)


def workspace_exists(path: str | Path | None) -> bool:
    """True when the workspace holds a store (a DuckDB file, or a link to a PostgreSQL database)."""
    root = resolve_path(path)
    database = linked_url(root)
    if database is None:
        return (root / DB_FILE).exists()
    from linelab.store.postgres import schema_exists  # the driver only for a PostgreSQL workspace

    return schema_exists(database)


class Workspace:
    """One line's data. Stages use this interface, never the database directly."""

    def __init__(self, path: Path, backend: Backend) -> None:
        self.path = path
        self.backend = backend
        # Per thread: another thread's open ingest is no transaction of this one's (threads share a workspace).
        self._ingest = threading.local()

    @classmethod
    def open(cls, path: str | Path | None = None, create: bool = True, read_only: bool = False) -> Workspace:
        """`read_only` lets several readers share the file (DuckDB allows one writing process)."""
        root = resolve_path(path)
        if root.exists() and not root.is_dir():
            raise UserError(f"workspace {root} is a file, not a folder")
        database = linked_url(root)
        if database is not None:
            from linelab.store.postgres import PostgresBackend  # the driver only for a PostgreSQL workspace
            from linelab.store.schema import NATURAL_KEYS

            try:
                return cls(root, PostgresBackend(DatabaseURL.parse(database), NATURAL_KEYS, create=create,
                                                 read_only=read_only))
            except UserError:
                raise
            except Exception as exc:  # permissions, a schema made by something else...
                raise UserError(f"cannot open workspace {DatabaseURL.parse(database)}: {exc}") from exc
        if not (root / DB_FILE).exists() and not create:
            raise UserError(f"no workspace at {root} (run `linelab init` first)")
        root.mkdir(parents=True, exist_ok=True)
        try:
            return cls(root, DuckDBBackend(root / DB_FILE, read_only=read_only and (root / DB_FILE).exists()))
        except Exception as exc:  # a lock held by another process, a corrupt file...
            raise UserError(f"cannot open workspace {root}: {exc}") from exc

    @property
    def location(self) -> str:
        """Where the records are, for people: the folder, or the PostgreSQL database and schema."""
        url = getattr(self.backend, "url", None)
        return str(url) if url is not None else str(self.path)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self.backend.query(sql, params)

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """A small answer as Python rows (what `query(...).to_pylist()` gives), without loading Arrow."""
        return self.backend.rows(sql, params)

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        t = self.query(sql, params)
        return t.column(0)[0].as_py() if t.num_rows else None

    def count(self, table: str, where: str = "") -> int:
        """Rows of `table` (those matching the SQL condition `where`, if given)."""
        found = self.rows(f"SELECT count(*) AS n FROM {table}" + (f" WHERE {where}" if where else ""))
        return int(found[0]["n"])

    def last_batch_seq(self) -> int:
        return int(self.scalar("SELECT coalesce(max(seq), 0) FROM batches"))

    # -- writing -------------------------------------------------------------------------
    def ingest_tables(
        self,
        tables: Mapping[str, pa.Table],
        source: str,
        first_row: int = 1,
        batch_ids: Mapping[str, str] | None = None,
        rejected: Mapping[str, pa.Table] | None = None,
    ) -> IngestReport:
        """Validate and store record tables atomically (see `linelab.store.ingest`)."""
        from linelab.store import ingest  # Arrow compute and NumPy: only commands that ingest pay for them

        return ingest.ingest_tables(self, dict(tables), source, first_row, dict(batch_ids or {}),
                                    dict(rejected or {}))

    @contextlib.contextmanager
    def ingest_transaction(self) -> Iterator[None]:
        """One transaction around several ingest calls (all files of one `linelab ingest`)."""
        if getattr(self._ingest, "open", False):
            yield
            return
        with self.backend.transaction():
            self._ingest.open = True
            try:
                yield
            finally:
                self._ingest.open = False

    # -- artefacts: problems, diagnoses, actions, experiments, know-how -------------------
    def put_artifact(self, kind: str, id: str, payload: Mapping[str, Any], status: str | None = None) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        text = json.dumps(payload, default=str)
        status = status or payload.get("status")
        with self.backend.transaction():
            created = self.scalar("SELECT created FROM artifacts WHERE kind = ? AND id = ?", [kind, id])
            self.backend.execute("DELETE FROM artifacts WHERE kind = ? AND id = ?", [kind, id])
            self.backend.execute(
                "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)", [kind, id, status, created or now, now, text]
            )

    def get_artifact(self, kind: str, id: str) -> dict[str, Any] | None:
        found = self.rows("SELECT payload FROM artifacts WHERE kind = ? AND id = ?", [kind, id])
        text = found[0]["payload"] if found else None
        return json.loads(text) if text else None

    def list_artifacts(self, kind: str, status: str | None = None,
                       fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The artefacts of `kind` (in `status`, if given), oldest first.

        `fields` projects each to those top-level keys of its payload (a key it lacks stays out, as
        in the full record): the database extracts them, so a listing never parses the rest of a
        large payload (a problem's charts, units and signals) in Python. The values equal the full
        record's: DuckDB re-serialises JSON numbers exactly (shortest round trip) and NaN as NaN.
        Measured on a 260,000-unit twin workspace (16 problems, 1.27 MB of payload): listing them
        costs 3.6 ms of CPU, 14.7 ms whole; most of what is left is reading the payload column
        (only a column of its own for the listed keys would avoid that).
        """
        where = " WHERE kind = ?" + (" AND status = ?" if status else "")
        params: list[Any] = [kind] + ([status] if status else [])
        if fields is None:
            rows = self.rows("SELECT payload FROM artifacts" + where + " ORDER BY created, id", params)
            return [json.loads(r["payload"]) for r in rows]
        names = list(fields)
        for name in names:
            if not _FIELD.match(name):
                raise ValueError(f"not a payload key to list: {name!r}")
        if not names:
            return [{} for _ in self.rows("SELECT id FROM artifacts" + where + " ORDER BY created, id", params)]
        # One parse per payload (a list of paths), each value as JSON text: NULL where the key is absent.
        paths = "[" + ", ".join(f"'$.\"{name}\"'" for name in names) + "]"
        rows = self.rows(f"SELECT json_extract(payload, {paths}) AS v FROM artifacts" + where
                         + " ORDER BY created, id", params)
        return [{name: json.loads(text) for name, text in zip(names, r["v"], strict=True) if text is not None}
                for r in rows]

    def next_id(self, kind: str, prefix: str) -> str:
        n = self.scalar("SELECT count(*) FROM artifacts WHERE kind = ?", [kind])
        return f"{prefix}-{int(n) + 1:04d}"
