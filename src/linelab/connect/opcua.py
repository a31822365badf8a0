"""OPC UA into the store: subscriptions that come back by themselves, gaps recorded and back-filled.

Each profile source with an `opcua` section is one session to its server, subscribed to the
source's variables. A value becomes a record by the source's table:

- `signals`: each variable is a signal series (name, t: the value's source timestamp, value);
- `measurements` / `params`: each value belongs to a unit at the source's station: the unit whose
  id the `unit_node` variable held last at or before the value's source timestamp (values are
  attributed once they are `settle_s` old, so a unit id and its values published together are
  matched whatever order they arrive in).

The session is supervised here, not left to the client library: a server restart, a network cut
or a dead session is noticed (the client's keep-alive probe, the subscription's status), the
connection is retried with back-off, the subscription made anew, and the gap recorded as an
event (kind `gap`, target the source) with what was back-filled: after resubscribing, the server's
history of every variable is read from the last value received, so nothing written during the
gap is lost where the server keeps history. Overlaps are harmless: records are keyed by source
timestamp and stored once. A node id the server does not know (or that is not a node id at all)
is reported (event kind `bad_node`, `OpcUaReport.bad_nodes`), the other variables go on, and it is
tried again on every reconnect and every `retry_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import Client, Node, ua

from linelab.connect.opcua_records import RecordBuffer, naive_utc
from linelab.errors import UserError
from linelab.profile.schema import Profile, Source
from linelab.store.workspace import Workspace

log = logging.getLogger(__name__)

PER_UNIT = ("measurements", "params")
HISTORY_SLACK = timedelta(minutes=1)  # history read up to now plus this: the server's clock may run ahead


def opcua_sources(profile: Profile, names: list[str] | None = None) -> list[Source]:
    """The profile's OPC UA sources (those named, when names are given), checked."""
    found = [s for s in profile.sources if s.opcua is not None and (not names or s.name in names)]
    missing = sorted(set(names or []) - {s.name for s in found})
    if missing:
        raise UserError(f"no OPC UA source named {', '.join(missing)} in the profile "
                        f"(its OPC UA sources: {', '.join(s.name for s in profile.sources if s.opcua) or 'none'})")
    for s in found:
        assert s.opcua is not None
        if s.table not in ("signals", *PER_UNIT):
            raise UserError(f"OPC UA source '{s.name}': table must be signals, measurements or params, not {s.table}")
        if s.table in PER_UNIT and not (s.opcua.unit_node and s.opcua.station):
            raise UserError(f"OPC UA source '{s.name}': per-unit values ({s.table}) need opcua.unit_node "
                            "and opcua.station")
    return found


@dataclass
class SourceReport:
    source: str
    url: str
    connects: int = 0
    gaps: int = 0
    backfilled: int = 0
    bad_nodes: dict[str, str] = field(default_factory=dict)  # node id -> why
    connected: bool = False


class _Handler:
    """asyncua calls this in the event loop for every notification."""

    def __init__(self, conn: SourceConnector) -> None:
        self.conn = conn

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.conn.receive(node.nodeid.to_string(), data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        # The server closed or lost the subscription: treat it as a lost connection.
        self.conn.lost.set()


def _when(dv: ua.DataValue) -> datetime:
    t = dv.SourceTimestamp or dv.ServerTimestamp
    return naive_utc(t) if t is not None else datetime.now(UTC).replace(tzinfo=None)


class SourceConnector:
    """One OPC UA source: its session, subscription, gaps and records."""

    def __init__(self, source: Source, buffer: RecordBuffer, *, settle_s: float | None = None,
                 retry_s: float = 5.0, backoff_s: tuple[float, float] = (0.2, 5.0), timeout_s: float = 4.0) -> None:
        assert source.opcua is not None
        self.source = source
        self.cfg = source.opcua
        self.buffer = buffer
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.settle_s = settle_s if settle_s is not None else max(0.3, 3 * self.cfg.publishing_ms / 1000)
        self.report = SourceReport(source.name, self.cfg.url)
        self.lost = asyncio.Event()
        self.names: dict[str, str] = {}  # canonical node id -> reading name
        self.invalid: dict[str, str] = {}  # configured text -> why it is not a node id
        for n in self.cfg.nodes:
            self._add_node(n.node, n.name)
        self.unit_node = self._canonical(self.cfg.unit_node) if self.cfg.unit_node else None
        self.last_t: dict[str, datetime] = {}  # node -> source time of the last value received
        self.units: list[tuple[datetime, str]] = []  # (time set, unit id), for per-unit values
        self.pending: list[tuple[str, datetime, float, float]] = []  # (name, t, value, received monotonic)
        self.last_ok = datetime.now(UTC).replace(tzinfo=None)

    # -- node ids -------------------------------------------------------------------------
    def _canonical(self, text: str) -> str | None:
        try:
            return str(ua.NodeId.from_string(text).to_string())
        except Exception as exc:  # asyncua raises several types for text it cannot parse
            self.invalid[text] = f"not a node id: {exc}"
            return None

    def _add_node(self, text: str, name: str) -> None:
        node = self._canonical(text)
        if node is not None:
            self.names[node] = name

    # -- values ---------------------------------------------------------------------------
    def receive(self, node: str, dv: ua.DataValue, received: float | None = None) -> None:
        """One value of a subscribed (or back-filled) variable."""
        now = asyncio.get_running_loop().time() if received is None else received
        t = _when(dv)
        self.last_ok = datetime.now(UTC).replace(tzinfo=None)
        if node == self.unit_node:
            if dv.StatusCode is None or dv.StatusCode.is_good():
                value = dv.Value.Value if dv.Value is not None else None
                if value not in (None, ""):
                    self.units.append((t, str(value)))
            self.last_t[node] = max(t, self.last_t.get(node, t))
            return
        name = self.names.get(node)
        if name is None:
            return
        self.last_t[node] = max(t, self.last_t.get(node, t))
        raw = json.dumps({"node": node, "t": t.isoformat(), "value": repr(dv.Value.Value if dv.Value else None)})
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            self.buffer.reject(self.source.table, f"OPC UA status {dv.StatusCode.name} for {name} ({node})",
                               raw, "value")
            return
        value = dv.Value.Value if dv.Value is not None else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.buffer.reject(self.source.table, f"{name} ({node}): value {value!r} is not a finite number",
                               raw, "value")
            return
        if self.source.table == "signals":
            self.buffer.add("signals", {"name": name, "t": t, "value": float(value)})
        else:
            self.pending.append((name, t, float(value), now))

    def attribute(self, now: float, final: bool = False) -> None:
        """Per-unit values old enough to be matched go to the buffer with their unit (vectorised)."""
        if not self.pending:
            return
        ready = [p for p in self.pending if final or now - p[3] >= self.settle_s]
        if not ready:
            return
        self.pending = [p for p in self.pending if not (final or now - p[3] >= self.settle_s)]
        self.units.sort()
        unit_t = np.array([u[0] for u in self.units], dtype="datetime64[us]")
        value_t = np.array([p[1] for p in ready], dtype="datetime64[us]")
        at = np.searchsorted(unit_t, value_t, side="right") - 1
        station = self.cfg.station
        for (name, t, value, _), i in zip(ready, at.tolist(), strict=True):
            if i < 0:
                raw = json.dumps({"name": name, "t": t.isoformat(), "value": value})
                self.buffer.reject(self.source.table, f"{name}: no unit id ({self.cfg.unit_node}) set at or "
                                   "before this value's time", raw, "unit_id")
            else:
                self.buffer.add(self.source.table, {"unit_id": self.units[i][1], "station": station,
                                                    "name": name, "value": value, "t": t})
        if len(self.units) > 20_000:  # keep what later values may still need
            self.units = self.units[-10_000:]

    # -- session --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Stay subscribed until `stop` is set, reconnecting as often as it takes."""
        delay = self.backoff_s[0]
        gap_from: datetime | None = None
        reason = ""
        for text, why in self.invalid.items():
            self.report.bad_nodes[text] = why
            self._event("bad_node", text, {"source": self.source.name, "why": why})
        while not stop.is_set():
            client = Client(self.cfg.url, timeout=self.timeout_s)
            self.lost = asyncio.Event()

            async def on_lost(exc: Exception, lost: asyncio.Event = self.lost) -> None:
                lost.set()

            client.connection_lost_callback = on_lost
            try:
                await client.connect()
            except Exception as exc:  # refused, timed out, rejected: all mean "try again later"
                await _close(client)
                if gap_from is None:
                    gap_from, reason = self.last_ok, f"cannot connect: {exc!r}"
                self.report.connected = False
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            try:
                await self._session(client, stop, gap_from, reason)
                gap_from, reason, delay = None, "", self.backoff_s[0]
                if not stop.is_set():  # the connection was lost: the gap starts at the last sign of life
                    gap_from, reason = self.last_ok, "connection lost"
            except Exception as exc:
                log.warning("OPC UA source %s: session failed: %r", self.source.name, exc)
                if gap_from is None:
                    gap_from, reason = self.last_ok, f"session failed: {exc!r}"
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.backoff_s[1])
            finally:
                self.report.connected = False
                await _close(client)

    async def _session(self, client: Client, stop: asyncio.Event, gap_from: datetime | None, reason: str) -> None:
        self.report.connects += 1
        # Where each variable's history is to be read from: taken before subscribing, since the first
        # notification (the value now) moves a variable's last time past the gap.
        since = dict(self.last_t)
        sub = await client.create_subscription(self.cfg.publishing_ms, _Handler(self))
        wanted = [*self.names, *([self.unit_node] if self.unit_node else [])]
        handles: dict[str, int] = {}
        await self._subscribe(client, sub, wanted, handles)
        self.report.connected = True
        if gap_from is not None:
            # Subscribed first, then history: a value written in between is in one or the other (or both).
            got, history = await self._backfill(client, gap_from, since, [n for n in wanted if n in handles])
            to = datetime.now(UTC).replace(tzinfo=None)
            self.report.gaps += 1
            self.report.backfilled += got
            self._event("gap", self.source.name, {
                "source": self.source.name, "url": self.cfg.url, "from": gap_from.isoformat(),
                "to": to.isoformat(), "seconds": round((to - gap_from).total_seconds(), 3), "reason": reason,
                "backfilled": got, "history": history}, t=gap_from)
        while not stop.is_set() and not self.lost.is_set():
            await _first(stop, self.lost, timeout=self.retry_s)
            if self.lost.is_set() or stop.is_set():
                break
            self.last_ok = datetime.now(UTC).replace(tzinfo=None)
            missing = [n for n in wanted if n not in handles]
            if missing:
                await self._subscribe(client, sub, missing, handles)

    async def _subscribe(self, client: Client, sub: Any, nodes: list[str], handles: dict[str, int]) -> None:
        if not nodes:
            return
        results = await sub.subscribe_data_change([client.get_node(n) for n in nodes],
                                                  sampling_interval=0.0, queuesize=1000)
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, ua.StatusCode):
                why = f"subscription refused: {res.name}"
                if self.report.bad_nodes.get(node) != why:
                    log.warning("OPC UA source %s: node %s: %s", self.source.name, node, why)
                    self._event("bad_node", node, {"source": self.source.name, "why": why})
                self.report.bad_nodes[node] = why
            else:
                handles[node] = res
                self.report.bad_nodes.pop(node, None)

    async def _backfill(self, client: Client, gap_from: datetime, since: dict[str, datetime],
                        nodes: list[str]) -> tuple[int, str]:
        """Read every node's history from its last value received (or the gap's start) up to now."""
        if not self.cfg.history:
            return 0, "off"
        status = "ok"
        end = datetime.now(UTC) + HISTORY_SLACK
        history: dict[str, list[ua.DataValue]] = {}
        for node in nodes:
            start = since.get(node, gap_from).replace(tzinfo=UTC)
            try:
                history[node] = await client.get_node(node).read_raw_history(start, end)
            except Exception as exc:  # no history kept for this node, or none offered at all
                status = f"not offered: {exc!r}"
        # All read first, then taken in at once, unit ids first: values are never matched to units
        # while the units' own history is still being read.
        received = asyncio.get_running_loop().time() - self.settle_s  # history has settled already
        for node in sorted(history, key=lambda n: n != self.unit_node):
            for dv in history[node]:
                self.receive(node, dv, received)
        return sum(map(len, history.values())), status

    def _event(self, kind: str, target: str, detail: dict[str, Any], t: datetime | None = None) -> None:
        self.buffer.add("events", {"t": t or datetime.now(UTC).replace(tzinfo=None), "kind": kind,
                                   "station": self.cfg.station, "machine": None, "target": target,
                                   "detail": json.dumps(detail)})


async def _close(client: Client) -> None:
    """Disconnect, and make sure the socket is gone: a connection attempt that failed half-way leaves
    one open (the server then waits on it, e.g. to shut down, and a long outage would leak them)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2.0)
    transport = getattr(getattr(client.uaclient, "protocol", None), "transport", None)
    if transport is not None and not transport.is_closing():
        transport.abort()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _first(*events: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@dataclass
class OpcUaReport:
    sources: list[SourceReport]
    totals: dict[str, int]


class OpcUaConnector:
    """The profile's OPC UA sources, stored through one buffer flushed every `flush_s`."""

    def __init__(self, ws: Workspace, sources: list[Source], *, flush_s: float = 0.5, **options: Any) -> None:
        self.buffer = RecordBuffer(ws, "opcua")
        self.flush_s = flush_s
        self.connectors = [SourceConnector(s, self.buffer, **options) for s in sources]

    async def flush(self, final: bool = False) -> None:
        now = asyncio.get_running_loop().time()
        for c in self.connectors:
            c.attribute(now, final)
        if len(self.buffer):
            await asyncio.to_thread(self.buffer.store, self.buffer.take())

    async def run(self, stop: asyncio.Event) -> OpcUaReport:
        tasks = [asyncio.create_task(c.run(stop)) for c in self.connectors]
        try:
            while not stop.is_set():
                await _sleep_or_stop(stop, self.flush_s)
                await self.flush()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.flush(final=True)
        return self.report()

    def report(self) -> OpcUaReport:
        return OpcUaReport([c.report for c in self.connectors], self.buffer.totals.as_dict())
