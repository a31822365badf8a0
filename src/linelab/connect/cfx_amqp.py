"""IPC-CFX over AMQP into the store: a durable queue, acknowledged only once stored.

Each profile source with a `cfx` section is a durable queue of LineLab's, bound to the exchange
the line's endpoints publish to. While LineLab is down the broker keeps what arrives there; when
it is up, messages are mapped (`connect.cfx`), buffered and stored in one `ingest_tables` call per
flush, and only then acknowledged. So a connector that dies loses nothing (the broker delivers the
unacknowledged messages again) and stores nothing twice (records are keyed by their natural keys,
and a message already stored maps to the same records).

A work transaction's messages (WorkStarted, UnitsProcessed, WorkCompleted) are acknowledged
together, once the transaction is complete and its steps stored; until then the broker keeps
them, so a restart rebuilds the transaction from them. A transaction left open longer than
`open_timeout_s` is let go (its messages acknowledged, counted as `incomplete`). Messages that
cannot be read are quarantined with the field and reason, then acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from linelab.connect.cfx import HANDLED, BadMessage, CfxMapper, read_envelope
from linelab.connect.opcua_records import RecordBuffer
from linelab.profile.schema import CfxSource, Profile, Source
from linelab.store.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def amqp_url(cfg: CfxSource | None = None) -> str:
    return (cfg.url if cfg is not None and cfg.url else None) or os.environ.get("LINELAB_AMQP_URL") or DEFAULT_URL


async def declare(channel: aio_pika.abc.AbstractChannel, cfg: CfxSource) -> aio_pika.abc.AbstractQueue:
    """LineLab's durable queue, bound to the line's (durable, topic) exchange."""
    exchange = await channel.declare_exchange(cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(cfg.queue, durable=True)
    await queue.bind(exchange, cfg.routing_key)
    return queue


@dataclass
class CfxReport:
    source: str
    queue: str
    messages: int = 0
    by_name: Counter[str] = field(default_factory=Counter)
    bad: int = 0  # rejected messages (quarantined once each, whatever the redeliveries)
    ignored: int = 0  # CFX messages LineLab does not map
    incomplete: int = 0  # work transactions let go unfinished
    open: int = 0  # work transactions waiting for their other messages now


async def acknowledge(messages: list[AbstractIncomingMessage]) -> None:
    """Acknowledge stored messages all at once, in one AMQP transaction per channel. A connector killed
    while acknowledging then leaves every one of them to be delivered again, never part of a work
    transaction: its WorkStarted and WorkCompleted delivered again without their UnitsProcessed would
    make a step without its unit's result, at odds with the step stored."""
    by_channel: dict[int, tuple[Any, list[AbstractIncomingMessage]]] = {}
    for m in messages:
        by_channel.setdefault(id(m.channel), (m.channel, []))[1].append(m)
    for channel, batch in by_channel.values():
        # A channel gone since: its messages are delivered again, and stored once more as nothing.
        with contextlib.suppress(Exception):
            await channel.tx_select()
            for m in batch:
                await m.ack()
            await channel.tx_commit()


class CfxQueue:
    """One CFX source: its queue, mapper and the messages waiting to be acknowledged."""

    def __init__(self, source: Source, profile: Profile, buffer: RecordBuffer, open_timeout_s: float,
                 settle_s: float = 0.5) -> None:
        assert source.cfx is not None
        self.source = source
        self.cfg = source.cfx
        self.mapper = CfxMapper(source, profile)
        self.buffer = buffer
        self.open_timeout_s = open_timeout_s
        self.report = CfxReport(source.name, self.cfg.queue)
        self.ready: list[AbstractIncomingMessage] = []  # acknowledged after the next store
        self.held: dict[tuple[str, str], list[AbstractIncomingMessage]] = {}
        self.opened: dict[tuple[str, str], float] = {}
        self.completed: dict[tuple[str, str], float] = {}  # started and ended, waiting for their results
        self.settle_s = settle_s

    def take(self, message: AbstractIncomingMessage) -> None:
        """Map one delivered message into the buffer; decide when it may be acknowledged."""
        self.report.messages += 1
        try:
            env = read_envelope(message.body)
            self.report.by_name[env.name] += 1
            rows, key, done = self.mapper.rows(env)
        except BadMessage as exc:
            self.report.bad += 1
            raw = message.body[:2000].decode("utf-8", errors="replace")
            self.buffer.reject(self.source.table, f"CFX message: {exc.reason}", raw, exc.field)
            self.ready.append(message)
            return
        if env.name not in HANDLED:
            self.report.ignored += 1
        for table, row in rows:
            self.buffer.add(table, row)
        if key is None:
            self.ready.append(message)
            return
        self.held.setdefault(key, []).append(message)
        self.opened.setdefault(key, time.monotonic())
        if done:
            self.completed.setdefault(key, time.monotonic())
            if self.mapper.has_results(key):
                self._finish(key)

    def _finish(self, key: tuple[str, str]) -> None:
        for table, row in self.mapper.finish(key):
            self.buffer.add(table, row)
        self.ready += self.held.pop(key, [])
        self.opened.pop(key, None)
        self.completed.pop(key, None)

    def expire(self) -> None:
        """Finish transactions that waited long enough for their UnitsProcessed; let go of those open too
        long (their records so far are stored, the rest never came)."""
        now = time.monotonic()
        for key, since in list(self.completed.items()):
            if now - since >= self.settle_s:
                self._finish(key)
        for key, since in list(self.opened.items()):
            if now - since > self.open_timeout_s:
                self.ready += self.held.pop(key, [])
                self.opened.pop(key)
                self.mapper.close(key)
                self.report.incomplete += 1
        self.report.open = len(self.opened)

    def acks(self) -> list[AbstractIncomingMessage]:
        out, self.ready = self.ready, []
        return out


class CfxConnector:
    """The profile's CFX sources, stored through one buffer, acknowledged after each store."""

    def __init__(self, ws: Workspace, profile: Profile, sources: list[Source], *, flush_s: float = 0.2,
                 batch: int = 2000, prefetch: int = 5000, open_timeout_s: float = 600.0) -> None:
        self.buffer = RecordBuffer(ws, "cfx")
        self.queues = [CfxQueue(s, profile, self.buffer, open_timeout_s) for s in sources]
        self.flush_s = flush_s
        self.batch = batch
        self.prefetch = prefetch
        self.lock = asyncio.Lock()
        self.connected = asyncio.Event()

    async def flush(self) -> None:
        async with self.lock:
            for q in self.queues:
                q.expire()
            acks = [m for q in self.queues for m in q.acks()]
            if len(self.buffer):
                await asyncio.to_thread(self.buffer.store, self.buffer.take())
            await acknowledge(acks)

    async def _consume(self, q: CfxQueue) -> None:
        """Consume one queue; the broker unreachable (at start, or for good) is retried with back-off,
        a broker that comes back is rejoined by the robust connection itself."""
        delay = 0.5
        while True:
            try:
                connection = await aio_pika.connect_robust(amqp_url(q.cfg))
                break
            except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
                log.warning("CFX source %s: broker unreachable (%r); retrying in %.1f s", q.source.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        try:
            channel = await connection.channel(publisher_confirms=False)  # a confirming channel cannot commit acks
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare(channel, q.cfg)
            self.connected.set()
            async with queue.iterator() as messages:
                async for message in messages:
                    q.take(message)
                    if len(self.buffer) >= self.batch:  # back-pressure: store before taking more
                        await self.flush()
        finally:
            await connection.close()

    async def run(self, stop: asyncio.Event) -> list[CfxReport]:
        consumers = [asyncio.create_task(self._consume(q)) for q in self.queues]
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.flush_s)
                for c in consumers:
                    if c.done() and c.exception() is not None:
                        raise c.exception()  # type: ignore[misc]
                await self.flush()
        finally:
            await self.flush()
            for c in consumers:
                c.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
        return [q.report for q in self.queues]

    def totals(self) -> dict[str, Any]:
        return self.buffer.totals.as_dict()
