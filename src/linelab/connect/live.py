"""Live records into the store: messages routed to the profile's MQTT sources, mapped, stored in batches.

A `LiveSink` collects the rows of delivered messages per source (connect.live_rows), in columns
named as the line names them (metric names, JSON keys) plus what the topic tells:

    $group, $node, $device   the Sparkplug topic's parts (JSON form: $topic)
    $timestamp               the metric's timestamp, else the message's (UTC)

A flush turns each source's rows into the store's typed schema when the source maps nothing, else
maps them as text with the same mapping as file exports (connect.mapping.apply: renames,
constants, value maps, wide readings melted, time zones), and stores every table in one
`Workspace.ingest_tables` call: one transaction, typed and validated by the store, rows already
stored skipped by their natural keys, so a message stored twice (QoS 1 redelivery, a restarted
connector) adds nothing. Payloads that cannot be read go to the quarantine with their reason.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import xxhash
from paho.mqtt.client import topic_matches_sub

from linelab.connect.live_rows import Rows, maps_nothing
from linelab.connect.mapping import apply
from linelab.connect.sparkplug.host import Envelope
from linelab.errors import UserError
from linelab.profile.schema import Profile, Source
from linelab.store.schema import RECORD_TABLES
from linelab.store.workspace import Workspace

STATE_KIND = "mqtt_host"  # artefact: the host's edge node sessions, saved with each flush


@dataclass
class Pending:
    """A batch taken from the sink, ready to store: its tables in the store's order, and the
    payloads (or rows) that cannot be stored, for the quarantine."""

    tables: dict[str, pa.Table]
    bad: list[dict[str, Any]]


def live_sources(profile: Profile) -> list[Source]:
    return [s for s in profile.sources if s.mqtt is not None]


def needed_columns(source: Source) -> list[str]:
    """Export columns the source's mapping names: filled with nulls when a batch lacks them."""
    cols = list(source.columns.values())
    if source.wide is not None:
        cols += source.wide.id_columns
    return cols


class LiveSink:
    """Pending rows per source, flushed into the workspace as one idempotent ingest."""

    def __init__(self, ws: Workspace, sources: list[Source], name: str = "mqtt") -> None:
        self.ws = ws
        self.sources = sources
        self.name = name
        self.pending: dict[str, Rows] = {}
        self.bad: list[dict[str, Any]] = []
        self.events = Rows()  # what the connection itself saw: gaps, nodes going offline
        self.rows_pending = 0
        self._routes: dict[str, list[Source]] = {}
        self.totals = {"stored": 0, "updated": 0, "duplicates": 0, "quarantined": 0, "garbage": 0, "flushes": 0}

    def routes(self, topic: str) -> list[Source]:
        found = self._routes.get(topic)
        if found is None:
            if len(self._routes) > 10_000:  # topics are a line's devices: a few; never let a flood grow it
                self._routes.clear()
            found = self._routes[topic] = [s for s in self.sources
                                           if s.mqtt is not None and topic_matches_sub(s.mqtt.topic, topic)]
        return found

    def add_sparkplug(self, env: Envelope, topic: str) -> int:
        t = env.topic
        extra = {"$group": t.group, "$node": t.node, "$device": t.device}
        msg = env.message
        added = 0
        for source in self.routes(topic):
            assert source.mqtt is not None
            rows = self.pending.setdefault(source.name, Rows())
            prefix = source.mqtt.metrics
            if source.mqtt.shape == "metric":
                rows.datetimes.add("t")
                added += rows.add_rows([{"name": (n or "")[len(prefix):], "value": v,
                                         "t": ts if ts is not None else msg.timestamp}
                                        for n, v, ts in zip(msg.names, msg.values, msg.timestamps, strict=True)
                                        if not prefix or (n or "").startswith(prefix)], extra)
            else:
                added += rows.add_message(msg, prefix, extra)
        self.rows_pending += added
        return added

    def add_json(self, records: list[dict[str, Any]], topic: str) -> int:
        added = 0
        for source in self.routes(topic):
            added += self.pending.setdefault(source.name, Rows()).add_rows(records, {"$topic": topic})
        self.rows_pending += added
        return added

    def add_event(self, t: str, kind: str, machine: str, target: str, detail: dict[str, Any]) -> None:
        self.events.add_rows([{"t": t, "kind": kind, "machine": machine, "target": target,
                               "detail": json.dumps(detail)}], {})

    def reject(self, topic: str, payload: bytes | bytearray, reason: str) -> None:
        """A payload that cannot be read: quarantined (once, however often it is delivered) at the next flush."""
        tables: list[str] = [s.table for s in self.routes(topic)] or ["(none)"]
        self.bad.append({"batch_id": "mqtt-" + xxhash.xxh3_128_hexdigest(topic.encode() + b"\0" + bytes(payload)),
                         "table": tables[0], "reason": reason, "topic": topic,
                         "raw": f"{topic} {bytes(payload[:200]).hex()}"})

    def take(self) -> Pending:
        """What is pending, as the tables one ingest stores (`store`); the sink starts a new batch.
        Turning the rows into tables happens here, on the caller's thread (the connector's writer),
        so the thread that stores does only the storing."""
        tables: dict[str, list[pa.Table]] = defaultdict(list)
        bad = self.bad
        for source in self.sources:
            rows = self.pending.get(source.name)
            if rows is None or not rows.n:
                continue
            typed = rows.typed(source) if maps_nothing(source) else None
            if typed is not None:
                tables[source.table].append(typed)
                continue
            where = f"MQTT source '{source.name}' ({source.mqtt.topic if source.mqtt else ''})"
            try:
                tables[source.table].append(apply(source, rows.text(needed_columns(source)), 1, where))
            except UserError as exc:  # messages that do not fit the source: kept with the reason, not fatal
                bad += self._rejected_rows(source, rows, str(exc))
        if self.events.n:
            tables["events"].append(self.events.text([]))
        self.pending, self.bad, self.events, self.rows_pending = {}, [], Rows(), 0
        # A record delivered twice within one batch is the store's to drop, as a repeat within a file is
        # (the host already drops a Sparkplug message delivered again by its seq).
        return Pending(_ordered({name: _concat(parts) for name, parts in tables.items()}), bad)

    def flush(self, state: dict[str, Any] | None = None) -> dict[str, int]:
        """Store what is pending (and the host's state); returns this flush's counts."""
        return self.store(self.take(), state)

    def store(self, batch: Pending, state: dict[str, Any] | None = None) -> dict[str, int]:
        """Store a batch taken from the sink (and the host's state at that moment) in one ingest."""
        counts = {"stored": 0, "updated": 0, "duplicates": 0, "quarantined": 0, "garbage": 0}
        if batch.tables:
            rep = self.ws.ingest_tables(batch.tables, source=self.name)
            for t in rep.tables:
                counts["stored"] += t.stored
                counts["updated"] += t.updated
                counts["duplicates"] += t.duplicates + (t.received if t.skipped_batch else 0)
                counts["quarantined"] += t.quarantined
        counts["garbage"] = self._quarantine_garbage(batch.bad)
        if state is not None:
            self.ws.put_artifact(STATE_KIND, self.name, {"sessions": state})
        for k, v in counts.items():
            self.totals[k] += v
        self.totals["flushes"] += 1
        return counts

    def saved_state(self) -> dict[str, Any]:
        return (self.ws.get_artifact(STATE_KIND, self.name) or {}).get("sessions", {})

    def _rejected_rows(self, source: Source, rows: Rows, reason: str) -> list[dict[str, Any]]:
        out = []
        table = rows.text([])
        for i, row in enumerate(table.to_pylist()):
            raw = json.dumps(row)
            out.append({"batch_id": "mqtt-" + xxhash.xxh3_128_hexdigest(f"{source.name}\0{raw}".encode()),
                        "table": source.table, "reason": reason, "row": i + 1, "field": "(message)",
                        "raw": raw[:2000]})
        return out

    def _quarantine_garbage(self, bad: list[dict[str, Any]]) -> int:
        n = 0
        now = datetime.now(UTC).replace(tzinfo=None)
        for b in bad:
            if self.ws.scalar("SELECT count(*) FROM quarantine WHERE batch_id = ?", [b["batch_id"]]):
                continue  # the same unreadable message delivered again
            self.ws.backend.execute('INSERT INTO quarantine (batch_id, source, table_name, "row", field, reason, '
                                    "raw, t_ingested) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                    [b["batch_id"], self.name, b["table"], b.get("row", 0), b.get("field", "payload"),
                                     b["reason"], b["raw"], now])
            n += 1
        return n


def _concat(parts: list[pa.Table]) -> pa.Table:
    """One table of a flush from several sources' parts; typed and text parts meet as text."""
    if len(parts) == 1:
        return parts[0]
    if any(pa.types.is_string(f.type) for p in parts for f in p.schema) and not all(
            pa.types.is_string(f.type) for p in parts for f in p.schema):
        parts = [p.cast(pa.schema([pa.field(f.name, pa.string()) for f in p.schema])) for p in parts]
    return pa.concat_tables(parts, promote_options="permissive")


def _ordered(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Tables in the store's order (units before the records about them)."""
    return {name: tables[name] for name in RECORD_TABLES if name in tables}
