"""Storing record batches: validated, de-duplicated by natural key, with every row accounted for.

Each incoming row ends in exactly one of four counts, so `received = stored + updated +
duplicates + quarantined` always holds:

- quarantined: it fails a check (`linelab.store.validate`), it could not be read at all (a ragged
  CSV line, bytes that are not text), or it conflicts with a record of the same natural key that
  came first (earlier in the same batch: "conflicts with line N"; already stored: "conflicts with
  the stored record");
- duplicate: the same record arrived before (earlier in the batch, or already stored);
- updated: a stored record whose late fields (a unit's final result) this row fills in or changes;
- stored: a new record.

Quarantine entries carry the record's natural key where it could be read; a later batch that
brings a good record with that key marks them resolved. Adapters hand over typed batches: when a
batch is clean (checked by one SQL predicate and one hash of its keys), it is inserted in one
statement with no per-row work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from linelab.errors import UserError
from linelab.store import summary
from linelab.store.backend import duck_type, sql_literal
from linelab.store.backend import sql_ident as q
from linelab.store.schema import NATURAL_KEYS, RECORD_TABLES, UPDATABLE
from linelab.store.validate import LINE, QUARANTINE_SCHEMA, check, conforms, ends_blank, key_sql, surely_valid_sql

if TYPE_CHECKING:
    from linelab.store.workspace import Workspace

# Stored rows are (nearly) ordered by this column, so a range filter on it prunes the duplicate check.
PRUNE_COLUMN = {"units": "unit_id", "steps": "t_in", "measurements": "t", "params": "t",
                "materials": "unit_id", "signals": "t", "events": "t"}
# Tables whose rows belong to a unit: rows whose unit is not stored yet wait for it.
UNIT_TABLES = ("steps", "measurements", "params", "materials")
POS = "__pos__"
SHOWN = 20  # quarantine entries of each batch returned for display


@dataclass
class TableReport:
    table: str
    batch_id: str
    received: int = 0
    stored: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    resolved: int = 0  # earlier quarantine entries this batch's records resolved
    skipped_batch: bool = False  # this exact batch was ingested before
    seq: int | None = None


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


def ingest_tables(ws: Workspace, tables: dict[str, pa.Table], source: str, first_row: int,
                  batch_ids: dict[str, str], rejected: dict[str, pa.Table]) -> IngestReport:
    from linelab.store.workspace import content_id  # here: the workspace module imports this one

    unknown = set(tables) - set(RECORD_TABLES)
    if unknown:
        raise UserError(f"unknown table(s): {', '.join(sorted(unknown))}; known: {', '.join(RECORD_TABLES)}")
    report = IngestReport(source)
    now = datetime.now(UTC).replace(tzinfo=None)
    # The line summary changes in the same transaction, by the difference this call makes (see summary).
    keeper = summary.Keeper(ws, tables)
    with ws.ingest_transaction():
        for name, table in tables.items():
            unreadable = rejected.get(name, QUARANTINE_SCHEMA.empty_table())
            batch_id = batch_ids.get(name) or content_id(table, name)
            rep = TableReport(name, batch_id, received=table.num_rows + unreadable.num_rows)
            report.tables.append(rep)
            if ws.scalar("SELECT count(*) FROM batches WHERE batch_id = ?", [batch_id]):
                rep.skipped_batch = True
                continue
            if name in summary.COUNTED:
                keeper.before()
            rep.seq = seq = int(ws.scalar("SELECT nextval('batch_seq')"))
            bad = [unreadable]
            fast = _store_fresh_typed(ws, rep, name, table, seq, first_row)
            if fast is not None:
                bad.append(fast)
            else:
                checked = check(table, name, first_row)
                bad.append(checked.quarantine)
                bad.append(_store(ws, rep, name, checked.good, seq, first_row))
            quarantine = pa.concat_tables(bad).sort_by("row")
            rep.quarantined = quarantine.num_rows
            if quarantine.num_rows:
                _quarantine(ws, quarantine, batch_id, source, name, now)
                report.quarantine.extend(quarantine.drop_columns(["raw", "key"]).slice(0, SHOWN).to_pylist())
            ws.backend.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, batch_id, source, name, rep.stored, rep.duplicates, rep.quarantined, now],
            )
        keeper.apply(any(t.stored or t.updated for t in report.tables if t.table in summary.COUNTED))
    return report


def _key_hashes(ws: Workspace, name: str) -> np.ndarray:
    keys = ", ".join(q(k) for k in NATURAL_KEYS[name])
    return ws.query(f"SELECT hash({keys}) AS h FROM _incoming AS s").column("h").to_numpy()


def _repeats_keys(hashes: np.ndarray) -> bool:
    """Whether two rows may share a natural key (equal key hashes; the exact check tells)."""
    ordered = np.sort(hashes)
    return ordered.size > 1 and bool((ordered[1:] == ordered[:-1]).any())


def _insert_sql(name: str, rows: pa.Table, seq: int) -> str:
    cols = ", ".join(f's."{f.name}"' if f.name in rows.column_names else f"NULL::{duck_type(f.type)}"
                     for f in RECORD_TABLES[name])
    lineage = "" if name == "specs" else f", {seq}"
    return f"INSERT INTO {name} SELECT {cols}{lineage} FROM _incoming AS s"


_HASHING: list[duckdb.DuckDBPyConnection] = []


def _hashing() -> duckdb.DuckDBPyConnection:
    """An in-memory database, opened once, whose connections (cursors) hash batches' keys."""
    if not _HASHING:
        _HASHING.append(duckdb.connect())
    return _HASHING[0]


class _Repeats(threading.Thread):
    """Hashes a batch's natural keys on a connection of its own: `found` when two rows may share one."""

    def __init__(self, table: pa.Table, name: str) -> None:
        super().__init__(daemon=True)
        self.table, self.name, self.found = table, name, True

    def run(self) -> None:
        con = _hashing().cursor()  # a connection of its own to a database kept for this: opening one costs ~15 ms
        try:
            con.register("_incoming", self.table)
            keys = ", ".join(q(k) for k in NATURAL_KEYS[self.name])
            hashes = con.sql(f"SELECT hash({keys}) AS h FROM _incoming").fetchnumpy()["h"]
            self.found = _repeats_keys(np.asarray(hashes))
        finally:
            con.close()


def _store_fresh_typed(ws: Workspace, rep: TableReport, name: str, table: pa.Table, seq: int,
                       first_row: int) -> pa.Table | None:
    """The adapters' fast path: a typed batch of new records, stored in one statement.

    Applies when the batch is of its schema types, no two rows share a key and no stored row lies in
    its key range; the checks run inside the INSERT (`surely_valid_sql`), and only the rows that
    predicate does not vouch for go through the full check. Returns their quarantine entries, or
    None when the batch needs the general path.
    """
    if LINE in table.column_names or not conforms(table, name) or name not in PRUNE_COLUMN or ends_blank(table):
        return None
    prune = PRUNE_COLUMN[name]
    lo, hi = pc.min_max(table.column(prune)).values()
    in_range = f't."{prune}" BETWEEN {sql_literal(lo)} AND {sql_literal(hi)}'
    ws.backend.register("_incoming", table)
    try:
        # Stored rows in the batch's range (the last minutes of a stream whose records overlap in time)
        # matter only if one shares a key with the batch: none does, nothing to compare with.
        stored = ws.query(f'SELECT count(*) AS n, min(t."{prune}") AS lo, max(t."{prune}") AS hi '
                          f"FROM {name} AS t WHERE {in_range}")
        if stored.column("n")[0].as_py():
            # The prune column is part of the key: only the batch's rows within those stored rows' own range
            # can share a key with one, so the join is built on them alone, not on the whole batch.
            near = (f's."{prune}" BETWEEN {sql_literal(stored.column("lo")[0])} '
                    f'AND {sql_literal(stored.column("hi")[0])}')
            if ws.scalar(f"SELECT count(*) FROM {name} AS t SEMI JOIN (SELECT * FROM _incoming AS s WHERE {near}) "
                         "AS s ON " + " AND ".join(f's."{k}" IS NOT DISTINCT FROM t."{k}"' for k in NATURAL_KEYS[name])
                         + f" WHERE {in_range}"):
                return None
    finally:
        ws.backend.unregister("_incoming")
    # Whether two rows share a key is worked out while the rows are inserted (the insert waits on
    # the disk as much as on the processor); if they do, the insert is undone and the general path runs.
    repeats = _Repeats(table, name)
    repeats.start()
    ws.backend.register("_incoming", table)
    try:
        valid = surely_valid_sql(name, table.column_names)
        before = ws.count(name)
        ws.backend.execute(f"{_insert_sql(name, table, seq)} WHERE {valid}")
        repeats.join()
        if repeats.found:
            ws.backend.execute(f"DELETE FROM {name} WHERE batch = {int(seq)}")
            return None
        rep.stored = ws.count(name) - before
        rep.resolved = _resolve(ws, name, seq, valid)
        if rep.stored == table.num_rows:
            return QUARANTINE_SCHEMA.empty_table()
        # The few rows the fast predicate did not vouch for (bad, or text starting with a blank).
        lines = pa.array(np.arange(table.num_rows, dtype=np.int64) + first_row)
        ws.backend.register("_incoming", table.append_column(LINE, lines))
        unsure = ws.query(f"SELECT * FROM _incoming AS s WHERE NOT ({valid})")
    finally:
        ws.backend.unregister("_incoming")
    checked = check(unsure, name, first_row)
    # Stored like any batch: once checked (text trimmed), a row may repeat one stored a moment ago.
    rest = TableReport(name, rep.batch_id)
    conflicts = _store(ws, rest, name, checked.good, seq, first_row)
    rep.stored += rest.stored
    rep.updated += rest.updated
    rep.duplicates += rest.duplicates
    rep.resolved += rest.resolved
    return pa.concat_tables([checked.quarantine, conflicts])


def _lines(rows: pa.Table, first_row: int) -> np.ndarray:
    if LINE in rows.column_names:
        return rows.column(LINE).to_numpy()
    return np.arange(rows.num_rows, dtype=np.int64) + first_row


def _raw_sql(name: str, rows: pa.Table, alias: str = "s") -> str:
    cols = [f.name for f in RECORD_TABLES[name] if f.name in rows.column_names]
    return "to_json(struct_pack(" + ", ".join(f"{q(c)} := CAST({alias}.{q(c)} AS VARCHAR)" for c in cols) + "))"


def _first_difference(fields: list[str], mine: str, other: str, prefix: str = "") -> str:
    """SQL naming the first of `fields` where row `mine` gives a value that row `other` does not have."""
    whens = " ".join(f"WHEN {mine}.{q(f)} IS NOT NULL AND {mine}.{q(f)} IS DISTINCT FROM {other}.{q(prefix + f)} "
                     f"THEN '{f}'" for f in fields)
    return f"CASE {whens} END" if fields else "NULL"


def _entries(found: pa.Table, lines: np.ndarray, reasons: list[str]) -> pa.Table:
    return pa.table({
        "row": pa.array(lines[found.column("pos").to_numpy()], pa.int64()),
        "field": found.column("field"),
        "reason": pa.array(reasons, pa.string()),
        "raw": found.column("raw"),
        "key": found.column("key"),
    }, schema=QUARANTINE_SCHEMA)


def _in_batch_repeats(ws: Workspace, name: str, rows: pa.Table, lines: np.ndarray) -> tuple[np.ndarray, pa.Table]:
    """Rows whose natural key came earlier in the batch: (their positions, conflict entries).

    An identical repeat (or one that only leaves fields blank) is a duplicate; one that gives a
    different value conflicts with the first and is quarantined.
    """
    keys = ", ".join(q(k) for k in NATURAL_KEYS[name])
    fields = [f.name for f in RECORD_TABLES[name] if f.name in rows.column_names and f.name not in NATURAL_KEYS[name]]
    firsts = "".join(f", first_value({q(f)}) OVER w AS {q('first_' + f)}" for f in fields)
    found = ws.query(f"""
        SELECT {q(POS)} AS pos, first_pos, {_first_difference(fields, 's', 's', 'first_')} AS field,
               {_raw_sql(name, rows)} AS raw, {key_sql(name)} AS "key"
        FROM (SELECT *, row_number() OVER w AS k, first_value({q(POS)}) OVER w AS first_pos{firsts}
              FROM _incoming WINDOW w AS (PARTITION BY {keys} ORDER BY {q(POS)})) AS s
        WHERE k > 1 ORDER BY pos""")
    conflict = found.filter(pc.is_valid(found.column("field")))
    first = lines[conflict.column("first_pos").to_numpy()]
    return found.column("pos").to_numpy(), _entries(conflict, lines, [f"conflicts with line {n}" for n in first])


def _stored_conflicts(ws: Workspace, name: str, rows: pa.Table, lines: np.ndarray, match: str,
                      in_range: str) -> tuple[np.ndarray, pa.Table]:
    """Rows that contradict the stored record of their key (a fixed field given a different value)."""
    fixed = [f.name for f in RECORD_TABLES[name] if f.name in rows.column_names
             and f.name not in NATURAL_KEYS[name] and f.name not in UPDATABLE.get(name, ())]
    if not fixed or name == "specs":
        return np.empty(0, dtype=np.int64), QUARANTINE_SCHEMA.empty_table()
    differs = " OR ".join(f"s.{q(f)} IS NOT NULL AND s.{q(f)} IS DISTINCT FROM t.{q(f)}" for f in fixed)
    found = ws.query(f"""
        SELECT s.{q(POS)} AS pos, {_first_difference(fixed, 's', 't')} AS field, b.source,
               {_raw_sql(name, rows)} AS raw, {key_sql(name)} AS "key"
        FROM _incoming AS s JOIN {name} AS t ON {match}{in_range}
        LEFT JOIN batches AS b ON b.seq = t.batch
        WHERE {differs} ORDER BY pos""")
    reasons = [f"conflicts with the stored record (from {s or 'an earlier batch'})"
               for s in found.column("source").to_pylist()]
    return found.column("pos").to_numpy(), _entries(found, lines, reasons)


def _drop(rows: pa.Table, positions: np.ndarray) -> pa.Table:
    return rows.filter(pa.array(~np.isin(rows.column(POS).to_numpy(), positions)))


def _store(ws: Workspace, rep: TableReport, name: str, rows: pa.Table, seq: int, first_row: int) -> pa.Table:
    """Store a checked batch: in-batch repeats, then stored records, then new rows. Returns conflict entries."""
    conflicts = [QUARANTINE_SCHEMA.empty_table()]
    if rows.num_rows == 0:
        return conflicts[0]
    lines = _lines(rows, first_row)
    rows = rows.append_column(POS, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    ws.backend.register("_incoming", rows)
    try:
        if _repeats_keys(_key_hashes(ws, name)):
            repeats, found = _in_batch_repeats(ws, name, rows, lines)
            conflicts.append(found)
            rep.duplicates += repeats.size - found.num_rows
            rows = _drop(rows, repeats)
            ws.backend.register("_incoming", rows)
        keys = NATURAL_KEYS[name]
        match = " AND ".join(f's."{k}" IS NOT DISTINCT FROM t."{k}"' for k in keys)
        in_range = ""
        overlap = ws.count(name) > 0
        prune = PRUNE_COLUMN.get(name)
        if overlap and prune:
            # Only stored rows in the batch's key range can match: zone maps skip the rest, and a batch
            # of new records (the common case) skips the comparison with stored records entirely.
            lo, hi = pc.min_max(rows.column(prune)).values()
            in_range = f' AND t."{prune}" BETWEEN {sql_literal(lo)} AND {sql_literal(hi)}'
            overlap = bool(ws.scalar(f"SELECT count(*) FROM {name} AS t WHERE TRUE{in_range}"))
        before = ws.count(name)
        if overlap:
            positions, found = _stored_conflicts(ws, name, rows, lines, match, in_range)
            if positions.size:
                conflicts.append(found)
                rows = _drop(rows, positions)
                ws.backend.register("_incoming", rows)
            changed = [c for c in UPDATABLE.get(name, ()) if c in rows.column_names]
            if changed:
                sets = ", ".join(f'"{c}" = coalesce(s."{c}", t."{c}")' for c in changed)
                differs = " OR ".join(f's."{c}" IS NOT NULL AND s."{c}" IS DISTINCT FROM t."{c}"' for c in changed)
                rep.updated = ws.query(f"UPDATE {name} AS t SET {sets} FROM _incoming AS s "
                                       f"WHERE {match}{in_range} AND ({differs}) RETURNING 1").num_rows
            ws.backend.execute(f"{_insert_sql(name, rows, seq)} "
                               f"WHERE NOT EXISTS (SELECT 1 FROM {name} AS t WHERE {match}{in_range})")
        else:
            ws.backend.execute(_insert_sql(name, rows, seq))
        rep.stored = ws.count(name) - before
        rep.duplicates += rows.num_rows - rep.stored - rep.updated
        rep.resolved = _resolve(ws, name, seq)
    finally:
        ws.backend.unregister("_incoming")
    return pa.concat_tables(conflicts)


def _resolve(ws: Workspace, name: str, seq: int, where: str = "TRUE") -> int:
    """Mark earlier quarantine entries resolved whose natural key this batch now brings as a good record.

    `where` picks the good rows of `_incoming` when it holds others too.
    """
    if not ws.scalar('SELECT count(*) FROM quarantine WHERE table_name = ? AND resolved_batch IS NULL '
                     'AND "key" IS NOT NULL', [name]):
        return 0
    return ws.query(f"""UPDATE quarantine SET resolved_batch = ? WHERE table_name = ? AND resolved_batch IS NULL
                        AND "key" IN (SELECT {key_sql(name)} FROM _incoming AS s WHERE {where}) RETURNING 1""",
                    [seq, name]).num_rows


def _printable(entries: pa.Table) -> pa.Table:
    """Entries with any NUL character in their text shown as `\\0` (a text column cannot hold one)."""
    for name in ("field", "reason", "raw"):
        i = entries.column_names.index(name)
        entries = entries.set_column(i, name, pc.replace_substring(entries.column(i), "\x00", "\\0"))
    return entries


def _quarantine(ws: Workspace, entries: pa.Table, batch_id: str, source: str, table: str, now: datetime) -> None:
    entries = _printable(entries)
    ws.backend.register("_bad", entries)
    try:
        ws.backend.execute(
            'INSERT INTO quarantine (batch_id, source, table_name, "row", field, reason, raw, t_ingested, "key") '
            'SELECT ?, ?, ?, "row", field, reason, raw, ?, "key" FROM _bad',
            [batch_id, source, table, now],
        )
    finally:
        ws.backend.unregister("_bad")


def awaiting_unit(ws: Workspace, seqs: dict[str, list[int]] | None = None) -> int:
    """Stored rows whose unit is not (yet) in `units`: of the given batches, or of the whole workspace."""
    total = 0
    for table in UNIT_TABLES:
        where = ""
        if seqs is not None:
            wanted = seqs.get(table)
            if not wanted:
                continue
            where = f" AND r.batch IN ({', '.join(str(int(s)) for s in wanted)})"
        total += int(ws.scalar(f"SELECT count(*) FROM {table} AS r WHERE NOT EXISTS "
                               f"(SELECT 1 FROM units AS u WHERE u.unit_id = r.unit_id){where}"))
    return total
