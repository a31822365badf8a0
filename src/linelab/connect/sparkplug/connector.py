"""The live connector: a Sparkplug B host application (and plain-JSON subscriber) storing into a workspace.

Delivery is at least once, storage exactly once:
- a persistent MQTT 5 session (fixed client id, clean_start off, a session expiry): the broker keeps
  the QoS 1 messages that arrive while the connector is down, and resends those it had not
  acknowledged;
- messages are acknowledged only after the flush that stored them (manual acks), so a connector
  killed mid-batch gets them again, and the store's natural keys drop what was stored already;
- the host's edge node sessions are saved with each flush, so a restarted connector knows the
  aliases and the next seq of every node without waiting for a rebirth.

Back-pressure: the network thread hands messages to a bounded queue and blocks when it is full
(the broker then holds the rest); the writer thread decodes, orders and batches them; a flusher
thread stores each batch and then acknowledges its messages, while the writer decodes the next
(the store's work runs in DuckDB or PostgreSQL, outside the GIL). The writer hands a batch over
as soon as the flusher is free; while the flusher stores one, the next is handed over when the
writer has caught up with the queue or its first record has waited `batch_seconds` (or three times
what a flush takes, if that is longer); a batch of `batch_rows` rows waits for the flusher to take
it. So while messages queue up, batches grow to what the writer decodes while the flusher stores
the last one (a flush costs much the same for 1,000 rows as for 20,000). Each batch carries the host's state at
the moment it was cut, and the messages it acknowledges, so what is saved and acknowledged is what
was stored.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from linelab.connect import mqtt as link
from linelab.connect.live import LiveSink, Pending, live_sources
from linelab.connect.sparkplug.host import Envelope, Host, Outcome
from linelab.connect.sparkplug.payload import (
    BOOLEAN,
    NAMESPACE,
    REBIRTH,
    Message,
    Metric,
    PayloadError,
    Topic,
    decode,
    decode_json,
    decode_many,
    encode,
    ms_to_iso,
    now_ms,
    parse_topic,
)
from linelab.errors import UserError
from linelab.profile.schema import Profile
from linelab.store.workspace import Workspace

SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps messages for a connector that is down
READ_TOGETHER = 64  # queued messages the writer takes at once


@dataclass
class Settings:
    url: str | None = None
    client_id: str = "linelab-host"
    batch_rows: int = 50_000
    batch_seconds: float = 0.25
    queue_size: int = 20_000
    reorder_timeout: float = 2.0
    receive_maximum: int = 20_000
    session_expiry: int = SESSION_EXPIRY_S


@dataclass
class Batch:
    """What one flush stores, as the writer cut it."""

    rows: Pending
    state: dict[str, Any]  # the host's sessions at the cut
    acks: list[mqtt.MQTTMessage]  # the messages whose records (or verdict) it holds
    host_counts: dict[str, int]
    nodes_online: list[str]
    notes: dict[str, Any] = field(default_factory=dict)  # for a subclass (the benchmark's timings)


@dataclass
class Status:
    """What the connector has done so far (printed by `linelab connect`, kept in the workspace)."""

    received: int = 0
    records: int = 0
    stored: int = 0
    duplicates: int = 0  # records the store already had (a message delivered again)
    redelivered: int = 0  # Sparkplug messages dropped by seq as already seen
    quarantined: int = 0
    gaps: int = 0
    missing: int = 0
    rebirths_asked: int = 0
    flushes: int = 0
    queue_peak: int = 0
    nodes_online: list[str] = field(default_factory=list)
    last_flush: str | None = None


def subscriptions(profile: Profile) -> list[str]:
    """The topic filters to subscribe: each live source's, and each Sparkplug group's whole namespace."""
    subs: list[str] = []
    for s in live_sources(profile):
        assert s.mqtt is not None
        if s.mqtt.format == "sparkplug":
            parts = s.mqtt.topic.split("/")
            if parts[0] != NAMESPACE or len(parts) < 2:
                raise UserError(f"source '{s.name}': a Sparkplug topic starts with {NAMESPACE}/<group>/, "
                                f"not {s.mqtt.topic!r}")
            f = f"{NAMESPACE}/{parts[1]}/#"
        else:
            f = s.mqtt.topic
        if f not in subs:
            subs.append(f)
    return subs


class Connector:
    def __init__(self, ws: Workspace, profile: Profile, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        sources = live_sources(profile)
        if not sources:
            raise UserError("the line profile has no live source: give a source an `mqtt:` section "
                            "(topic, format) to connect to it")
        urls = {s.mqtt.broker for s in sources if s.mqtt is not None and s.mqtt.broker}
        if len(urls) > 1:
            raise UserError(f"the profile's MQTT sources name several brokers ({', '.join(sorted(urls))}); "
                            "one connector reads one broker")
        self.url = link.broker_url(self.settings.url or (urls.pop() if urls else None))
        self.topics = subscriptions(profile)
        self.json_topics = [s.mqtt.topic for s in sources if s.mqtt is not None and s.mqtt.format == "json"]
        self.sink = LiveSink(ws, sources, name=f"mqtt:{self.settings.client_id}")
        self.host = Host(reorder_timeout=self.settings.reorder_timeout)
        self.host.restore(self.sink.saved_state())
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue(self.settings.queue_size)
        self.to_ack: list[mqtt.MQTTMessage] = []
        self.status = Status()
        self.stop = threading.Event()
        self.on_report: Callable[[Connector], None] | None = None  # once connected, then after each flush
        self.flush_seconds = 0.0  # what a flush takes, smoothed: how long a batch may grow while messages queue
        # The flusher thread and the batches in its hands (at most two: the writer then waits).
        self._batches: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._outstanding = 0
        self._handed = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.client = link.make_client(self.settings.client_id, manual_ack=True)
        self.client.on_message = self._on_message
        self.client.will_set(self._state_topic, json.dumps({"online": False}), qos=1, retain=True)

    @property
    def _state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.settings.client_id}"

    # -- network thread -------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(msg)  # blocks when full: back-pressure onto the broker

    def _on_connect(self, client: mqtt.Client) -> None:
        # Subscribed on every (re)connection: the session normally keeps them, a new broker does not.
        client.subscribe([(t, 1) for t in self.topics])
        client.publish(self._state_topic, json.dumps({"online": True, "timestamp": now_ms()}), qos=1, retain=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        props = link.connect_properties(self.settings.session_expiry, self.settings.receive_maximum)
        connected = link.Connected(self.client, self._on_connect)
        host, port = link.host_port(self.url)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        try:
            self.client.connect(host, port, keepalive=15, clean_start=False, properties=props)
        except OSError as exc:
            raise UserError(f"cannot connect to the MQTT broker at {self.url}: {exc}") from None
        self.client.loop_start()
        connected.wait(self.url)
        if self.on_report is not None:
            self.on_report(self)

    def close(self) -> None:
        try:
            self._flush()
        finally:
            if self._flusher is not None:
                self._batches.put(None)
                self._flusher.join()
                self._flusher = None
        self.client.publish(self._state_topic, json.dumps({"online": False}), qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()

    def run(self, seconds: float | None = None, max_records: int | None = None) -> Status:
        """Store what arrives until stopped (`stop` set), for `seconds`, or after `max_records` records."""
        self.start()
        try:
            self.loop(seconds, max_records)
        finally:
            self.close()
        return self.status

    def loop(self, seconds: float | None = None, max_records: int | None = None) -> None:
        end = time.monotonic() + seconds if seconds is not None else None
        first_pending: float | None = None
        s = self.settings
        while not self.stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            if max_records is not None and self.status.records >= max_records:
                break
            try:
                msg = self.inbox.get(timeout=0.02)
            except queue.Empty:
                msg = None
            now = time.monotonic()
            if msg is not None:
                waiting = self.inbox.qsize()
                self.status.queue_peak = max(self.status.queue_peak, waiting + 1)
                # What has queued up is read together: its payloads are decoded in one pass (decode_many).
                msgs = [msg]
                for _ in range(min(waiting, READ_TOGETHER - 1)):
                    try:
                        msgs.append(self.inbox.get_nowait())
                    except queue.Empty:
                        break
                self.status.received += len(msgs)
                self._handle_all(msgs, now)
                if first_pending is None:
                    first_pending = now
            self._apply(self.host.tick(now))
            if self._failure is not None:
                raise self._failure
            # To the flusher when it is free, when the batch is full (waiting for it if need be), or, while it
            # holds only one batch, when the writer has caught up or the batch's first record has waited long.
            if first_pending is not None and (
                    self._outstanding == 0 or self.sink.rows_pending >= s.batch_rows
                    or (self._outstanding < 2 and ((msg is None and bool(self.to_ack))
                                                   or now - first_pending >= max(s.batch_seconds,
                                                                                 3 * self.flush_seconds)))):
                self._hand_over()
                first_pending = None

    # -- writer thread --------------------------------------------------------------------------
    def _handle_all(self, msgs: list[mqtt.MQTTMessage], now: float) -> None:
        """Messages in their order of arrival; the Sparkplug payloads among them decoded together."""
        topics = [parse_topic(m.topic) for m in msgs]
        data = [i for i, t in enumerate(topics) if t is not None and t.kind not in ("NCMD", "DCMD")]
        decoded = dict(zip(data, decode_many([msgs[i].payload for i in data]), strict=True)) if data else {}
        for i, msg in enumerate(msgs):
            self._handle(msg, now, topics[i], decoded.get(i))

    def _handle(self, msg: mqtt.MQTTMessage, now: float, t: Topic | None = None,
                decoded: Message | PayloadError | None = None) -> None:
        topic = msg.topic
        if t is None:
            t = parse_topic(topic)
        if t is None:
            if topic.startswith(NAMESPACE + "/"):
                self.to_ack.append(msg)  # STATE and the like: not the line's data
                return
            try:
                records = decode_json(msg.payload)
            except PayloadError as exc:
                self.sink.reject(topic, msg.payload, str(exc))
                self.to_ack.append(msg)
                return
            self.status.records += self.sink.add_json(records, topic)
            self.to_ack.append(msg)
            return
        if t.kind in ("NCMD", "DCMD"):
            self.to_ack.append(msg)  # commands to the line, ours or another host's
            return
        if decoded is None:
            try:
                decoded = decode(msg.payload)
            except PayloadError as exc:
                decoded = exc
        if isinstance(decoded, PayloadError):
            self.sink.reject(topic, msg.payload, str(decoded))
            self.to_ack.append(msg)
            return
        self._apply(self.host.receive(Envelope(t, decoded, ref=msg), now))

    def _apply(self, out: Outcome) -> None:
        for env in out.deliver:
            self.status.records += self.sink.add_sparkplug(env, str(env.topic))
            self.to_ack.append(env.ref)
        for env in out.duplicates + out.births:
            self.to_ack.append(env.ref)
        for env, reason in out.rejected:
            self.sink.reject(str(env.topic), env.ref.payload, reason)
            self.to_ack.append(env.ref)
        for env in out.deaths:
            self.sink.add_event(ms_to_iso(env.message.timestamp or now_ms()), "connection",
                                env.topic.node, env.topic.device or "", {"lost": env.topic.kind})
            self.to_ack.append(env.ref)
        for gap in out.gaps:
            self.sink.add_event(ms_to_iso(now_ms()), "data_gap", gap["node"], gap["group"],
                                {"missing_seq": gap["missing"]})
        for group, node in out.rebirth:
            self.request_rebirth(group, node)

    def request_rebirth(self, group: str, node: str) -> None:
        payload = encode([Metric(REBIRTH, True, BOOLEAN)], seq=None)
        self.client.publish(f"{NAMESPACE}/{group}/NCMD/{node}", payload, qos=1)
        self.status.rebirths_asked += 1

    # -- flushing -------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Store what is pending and wait until every batch handed over is stored and acknowledged."""
        self._hand_over()
        with self._handed:
            while self._outstanding and self._failure is None:
                self._handed.wait()
        if self._failure is not None:
            raise self._failure

    def _cut(self) -> Batch:
        """The pending rows, the host's state now and the messages to acknowledge once they are stored."""
        batch = Batch(self.sink.take(), self.host.state(), self.to_ack, dict(self.host.counts),
                      sorted("/".join(k) for k, s in self.host.sessions.items() if s.online))
        self.to_ack = []
        return batch

    def _hand_over(self) -> None:
        """Give the flusher the batch pending (waiting while it holds two)."""
        with self._handed:
            while self._outstanding >= 2 and self._failure is None:
                self._handed.wait()
            if self._failure is not None:
                raise self._failure
            self._outstanding += 1
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flushing, name="linelab-mqtt-flush", daemon=True)
            self._flusher.start()
        self._batches.put(self._cut())

    def _flushing(self) -> None:
        """The flusher thread: stores batches in order; the first failure stops it (the writer raises it,
        and the messages of the batches not stored stay unacknowledged, so the broker sends them again)."""
        while (batch := self._batches.get()) is not None:
            if self._failure is None:
                started = time.monotonic()
                try:
                    self._store(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the writer, which raises it
                    self._failure = exc
                took = time.monotonic() - started
                self.flush_seconds = took if not self.flush_seconds else 0.7 * self.flush_seconds + 0.3 * took
            with self._handed:
                self._outstanding -= 1
                self._handed.notify_all()

    def _store(self, batch: Batch) -> None:
        counts = self.sink.store(batch.rows, batch.state)
        for msg in batch.acks:
            if msg.qos > 0:
                self.client.ack(msg.mid, msg.qos)
        st = self.status
        st.stored += counts["stored"] + counts["updated"]
        st.duplicates += counts["duplicates"]
        st.quarantined += counts["quarantined"] + counts["garbage"]
        st.flushes += 1
        st.redelivered = batch.host_counts["duplicates"]
        st.gaps = batch.host_counts["gaps"]
        st.missing = batch.host_counts["missing"]
        st.nodes_online = batch.nodes_online
        st.last_flush = ms_to_iso(now_ms())
        if self.on_report is not None:
            self.on_report(self)
