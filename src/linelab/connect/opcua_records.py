"""Records from live connectors (OPC UA, IPC-CFX) into the store: buffered, de-duplicated, quarantined.

Connectors turn each notification or message into typed rows as it arrives; a `RecordBuffer`
collects them and stores what it holds in one `Workspace.ingest_tables` call (one transaction).
Rows with the same natural key inside one batch are kept once (the store itself only skips rows
already stored), so a value delivered twice, within a batch or across batches, is stored once.
What cannot become a record (a message that is not JSON, a reading that is not a number, a value
the server marked bad) is quarantined with its reason, once however often it is delivered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import xxhash

from linelab.store.schema import RECORD_TABLES
from linelab.store.validate import QUARANTINE_SCHEMA
from linelab.store.workspace import NATURAL_KEYS, UPDATABLE, Workspace

# Tables in the order a batch stores them: units before what refers to them.
TABLE_ORDER = ("units", "steps", "measurements", "params", "materials", "signals", "events")


@dataclass
class Rejected:
    """Something delivered that cannot be stored: quarantined with why."""

    table: str
    reason: str
    raw: str
    field: str = "payload"
    row: int = 0

    @property
    def batch_id(self) -> str:
        return "live-" + xxhash.xxh3_128_hexdigest(f"{self.table}\0{self.field}\0{self.raw}".encode())


@dataclass
class Batch:
    rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values()) + len(self.rejected)


@dataclass
class Totals:
    received: int = 0
    stored: int = 0
    updated: int = 0
    quarantined: int = 0
    flushes: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts, with what was received but not stored, updated or quarantined: duplicates
        (whether found in the batch or in the store). Exact once nothing is pending."""
        out = dict(self.__dict__)
        out["duplicates"] = self.received - self.stored - self.updated - self.quarantined
        return out


def _nullable(schema: pa.Schema) -> pa.Schema:
    # Rows missing a required field are typed all the same: the store quarantines them with the field.
    return pa.schema([f.with_nullable(True) for f in schema])


SCHEMAS = {name: _nullable(s) for name, s in RECORD_TABLES.items()}


def naive_utc(t: datetime) -> datetime:
    """The store's clock: naive UTC (an aware time converted, a naive one taken as UTC)."""
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


class RecordBuffer:
    """Typed rows waiting to be stored, one row per natural key."""

    def __init__(self, ws: Workspace, source: str) -> None:
        self.ws = ws
        self.source = source
        self.batch = Batch()
        self.totals = Totals()

    def __len__(self) -> int:
        return len(self.batch)

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        rows = self.batch.rows.setdefault(table, {})
        key = tuple(row.get(k) for k in NATURAL_KEYS[table])
        self.totals.received += 1
        have = rows.get(key)
        if have is None:
            rows[key] = dict(row)
        else:  # the same record again: a later one may fill in what may be updated (a unit's end, result)
            have.update({k: v for k, v in row.items() if k in UPDATABLE.get(table, ()) and v is not None})

    def reject(self, table: str, reason: str, raw: str, field: str = "payload") -> None:
        self.totals.received += 1
        self.batch.rejected.append(Rejected(table, reason, raw[:2000], field))

    def take(self) -> Batch:
        """What is pending, handed over for storing (new rows collect in a fresh batch)."""
        batch, self.batch = self.batch, Batch()
        return batch

    def store(self, batch: Batch) -> Totals:
        """Store a taken batch (safe to run in a worker thread); returns its counts."""
        done = Totals()
        tables = {name: pa.Table.from_pylist(list(batch.rows[name].values()), schema=SCHEMAS[name])
                  for name in TABLE_ORDER if batch.rows.get(name)}
        if tables:
            rep = self.ws.ingest_tables(tables, source=self.source)
            for t in rep.tables:
                done.stored += t.stored
                done.updated += t.updated
                done.quarantined += t.quarantined
        done.quarantined += self._quarantine(batch.rejected)
        done.flushes = 1
        for k in ("stored", "updated", "quarantined", "flushes"):
            setattr(self.totals, k, getattr(self.totals, k) + getattr(done, k))
        return done

    def flush(self) -> Totals:
        return self.store(self.take())

    def _quarantine(self, rejected: list[Rejected]) -> int:
        """Quarantine what was rejected, each entry once however often it is delivered: an entry is
        its own batch, whose id comes from its content, so the store skips it the second time."""
        n = 0
        for r in rejected:
            entry = pa.Table.from_pylist([{"row": r.row, "field": r.field, "reason": r.reason, "raw": r.raw,
                                           "key": None}], schema=QUARANTINE_SCHEMA)
            rep = self.ws.ingest_tables({r.table: SCHEMAS[r.table].empty_table()}, source=self.source,
                                        batch_ids={r.table: r.batch_id}, rejected={r.table: entry})
            n += rep.quarantined
        return n
