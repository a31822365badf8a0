"""The workspace: every record of the line, validated, kept and queryable.

Ingest guarantees:
- bad rows go to `quarantine` with row, field and reason; good rows of the same batch land;
- a batch's id is derived from its content, so the same data ingested twice adds nothing, and
  rows already stored (same natural key) are skipped even inside a new, overlapping batch;
- all tables of one ingest call land in one transaction: a crash leaves the workspace as it was;
- arrival order does not matter: late records are stored by their own timestamps, and
  `batches.seq` (arrival order) is what incremental readers track.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from linelab.errors import UserError
from linelab.store.backend import Backend, DuckDBBackend, duck_type, sql_literal
from linelab.store.postgres import DatabaseURL, PostgresBackend, is_database_url, linked_url
from linelab.store.schema import RECORD_TABLES
from linelab.store.validate import conforms, valid_rows_sql, validate

DEFAULT_WORKSPACE = "linelab-workspace"
DB_FILE = "linelab.duckdb"

# Natural keys: a record whose key is already stored is the same record arriving again.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "units": ("unit_id",),
    "steps": ("unit_id", "station", "t_in"),
    "measurements": ("unit_id", "station", "name", "t"),
    "params": ("unit_id", "station", "name", "t"),
    "materials": ("unit_id", "station", "material", "lot"),
    "signals": ("name", "t"),
    "events": ("t", "kind", "station", "machine", "target"),
    "specs": ("product", "station", "name"),
}
# Fields a later record may fill in or correct (a tester uploading the final result late).
UPDATABLE = {"units": ("t_end", "result", "first_pass"), "specs": ("lsl", "usl", "target", "unit")}
# Stored rows are (nearly) ordered by this column, so a range filter on it prunes the duplicate check.
PRUNE_COLUMN = {"units": "unit_id", "steps": "t_in", "measurements": "t", "params": "t",
                "materials": "unit_id", "signals": "t", "events": "t"}


@dataclass
class TableReport:
    table: str
    batch_id: str
    received: int = 0
    stored: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped_batch: bool = False  # this exact batch was ingested before


@dataclass
class IngestReport:
    source: str
    tables: list[TableReport] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # first entries, for display

    @property
    def stored(self) -> int:
        return sum(t.stored for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)


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
    return (root / DB_FILE).exists() or linked_url(root) is not None


class Workspace:
    """One line's data. Stages use this interface, never the database directly."""

    def __init__(self, path: Path, backend: Backend) -> None:
        self.path = path
        self.backend = backend

    @classmethod
    def open(cls, path: str | Path | None = None, create: bool = True, read_only: bool = False) -> Workspace:
        """`read_only` lets several readers share the file (DuckDB allows one writing process)."""
        root = resolve_path(path)
        if root.exists() and not root.is_dir():
            raise UserError(f"workspace {root} is a file, not a folder")
        database = linked_url(root)
        if database is not None:
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

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self.backend.query(sql, params)

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        t = self.query(sql, params)
        return t.column(0)[0].as_py() if t.num_rows else None

    def count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table}"))

    def last_batch_seq(self) -> int:
        return int(self.scalar("SELECT coalesce(max(seq), 0) FROM batches"))

    # -- writing -------------------------------------------------------------------------
    def ingest_tables(
        self,
        tables: Mapping[str, pa.Table],
        source: str,
        first_row: int = 1,
        batch_ids: Mapping[str, str] | None = None,
    ) -> IngestReport:
        """Validate and store record tables atomically; see the module docstring."""
        unknown = set(tables) - set(RECORD_TABLES)
        if unknown:
            raise UserError(f"unknown table(s): {', '.join(sorted(unknown))}; known: {', '.join(RECORD_TABLES)}")
        report = IngestReport(source)
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.backend.transaction():
            for name, table in tables.items():
                batch_id = (batch_ids or {}).get(name) or content_id(table, name)
                rep = TableReport(name, batch_id, received=table.num_rows)
                report.tables.append(rep)
                if self.scalar("SELECT count(*) FROM batches WHERE batch_id = ?", [batch_id]):
                    rep.skipped_batch = True
                    continue
                seq = int(self.scalar("SELECT nextval('batch_seq')"))
                typed = conforms(table, name)
                bad = None
                if not typed:
                    # Text from files: type it column by column, quarantining the rows that fail.
                    checked = validate(table, name, first_row)
                    table, bad = checked.good, checked.quarantine
                rep.stored, rep.updated = self._store(name, table, seq)
                if typed and rep.stored + rep.updated < table.num_rows:
                    # Typed rows the store refused: find which and why (rare, so done only now).
                    bad = validate(table, name, first_row).quarantine
                if bad is not None and bad.num_rows:
                    rep.quarantined = bad.num_rows
                    self._quarantine(bad, batch_id, source, name, now)
                    report.quarantine.extend(bad.drop_columns(["raw"]).slice(0, 20).to_pylist())
                rep.duplicates = rep.received - rep.stored - rep.updated - rep.quarantined
                self.backend.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [seq, batch_id, source, name, rep.stored, rep.duplicates, rep.quarantined, now],
                )
        return report

    def _store(self, name: str, rows: pa.Table, seq: int) -> tuple[int, int]:
        """Insert the valid, new rows of a typed batch; update the updatable ones. Returns counts."""
        if rows.num_rows == 0:
            return 0, 0
        keys = NATURAL_KEYS[name]
        match = " AND ".join(f's."{k}" IS NOT DISTINCT FROM t."{k}"' for k in keys)
        cols = ", ".join(
            f's."{f.name}"' if f.name in rows.column_names else f"NULL::{duck_type(f.type)}"
            for f in RECORD_TABLES[name]
        )
        lineage = "" if name == "specs" else f", {seq}"
        valid = valid_rows_sql(name, rows.column_names)
        self.backend.register("_incoming", rows)
        try:
            updated = 0
            before = stored_before = self.count(name)
            dedup = ""
            prune = PRUNE_COLUMN.get(name)
            in_range = ""
            if before and prune:
                # Only stored rows in the batch's key range can be duplicates: zone maps skip the rest,
                # and a batch of new records (the common case) skips the duplicate check entirely.
                lo, hi = pc.min_max(rows.column(prune)).values()
                in_range = f' AND t."{prune}" BETWEEN {sql_literal(lo)} AND {sql_literal(hi)}'
                if not self.scalar(f"SELECT count(*) FROM {name} AS t WHERE TRUE{in_range}"):
                    before = 0
            if before:
                dedup = f" AND NOT EXISTS (SELECT 1 FROM {name} AS t WHERE {match}{in_range})"
                sets = ", ".join(
                    f'"{c}" = coalesce(s."{c}", t."{c}")' for c in UPDATABLE.get(name, ()) if c in rows.column_names
                )
                if sets:
                    updated = self.backend.query(
                        f"UPDATE {name} AS t SET {sets} FROM _incoming AS s "
                        f"WHERE {match} AND {valid}{in_range} RETURNING 1"
                    ).num_rows
            self.backend.execute(
                f"INSERT INTO {name} SELECT {cols}{lineage} FROM _incoming AS s WHERE {valid}{dedup}"
            )
            return self.count(name) - stored_before, updated
        finally:
            self.backend.unregister("_incoming")

    def _quarantine(self, q: pa.Table, batch_id: str, source: str, table: str, now: datetime) -> None:
        self.backend.register("_bad", q)
        try:
            self.backend.execute(
                'INSERT INTO quarantine SELECT ?, ?, ?, "row", field, reason, raw, ? FROM _bad',
                [batch_id, source, table, now],
            )
        finally:
            self.backend.unregister("_bad")

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
        text = self.scalar("SELECT payload FROM artifacts WHERE kind = ? AND id = ?", [kind, id])
        return json.loads(text) if text else None

    def list_artifacts(self, kind: str, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT payload FROM artifacts WHERE kind = ?" + (" AND status = ?" if status else "")
        rows = self.query(sql + " ORDER BY created, id", [kind] + ([status] if status else []))
        return [json.loads(v) for v in rows.column("payload").to_pylist()]

    def next_id(self, kind: str, prefix: str) -> str:
        n = self.scalar("SELECT count(*) FROM artifacts WHERE kind = ?", [kind])
        return f"{prefix}-{int(n) + 1:04d}"
