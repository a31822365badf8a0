"""A Sparkplug B edge node: what a line's gateway does, for a simulated line, the tests and the benchmarks.

It births itself (NBIRTH with its bdSeq, then a DBIRTH per device naming each metric, its alias
and data type), publishes device data by alias with a seq that wraps at 256, leaves an NDEATH
as its MQTT will, and answers a host's "Node Control/Rebirth" command by birthing again. Other
commands (NCMD/DCMD metrics) go to `on_command`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from linelab.connect import mqtt as link
from linelab.connect.sparkplug.payload import (
    BDSEQ,
    BOOLEAN,
    INT64,
    NAMESPACE,
    REBIRTH,
    Metric,
    PayloadError,
    Topic,
    decode,
    encode,
    parse_topic,
)

Command = Callable[[Topic, list[Metric]], None]


class EdgeNode:
    def __init__(self, group: str, node: str, url: str | None = None, bdseq: int = 0,
                 on_command: Command | None = None) -> None:
        self.group, self.node, self.url = group, node, url
        self.bdseq = bdseq % 256
        self.seq = 0
        self.devices: dict[str, dict[str, tuple[int, int]]] = {}  # device -> metric name -> (alias, datatype)
        self.node_metrics: dict[str, tuple[int, int]] = {}
        self.on_command = on_command
        self.lock = threading.Lock()  # births (on the network thread) and data must not interleave seqs
        self.client = link.make_client(f"edge-{group}-{node}")
        self.client.on_message = self._on_message
        self.rebirths = 0
        self.dead = False  # closed: a rebirth asked for as it closes must not follow its death certificate
        # QoS 1 publishes the broker has not acknowledged yet (paho resends them after a reconnection).
        self.unacked: set[int] = set()
        self.acked_early: set[int] = set()  # PUBACKs that came before publish() returned
        self.acks_lock = threading.Lock()  # never held while calling into paho
        self.client.on_publish = self._on_publish

    def topic(self, kind: str, device: str | None = None) -> str:
        return str(Topic(self.group, kind, self.node, device))

    # -- definitions ------------------------------------------------------------------------------
    def define(self, device: str | None, metrics: Mapping[str, int]) -> None:
        """Declare metrics (name -> Sparkplug data type) of a device (None: of the node itself)."""
        table = self.node_metrics if device is None else self.devices.setdefault(device, {})
        for name, datatype in metrics.items():
            if name not in table:
                table[name] = (1 + len(self.node_metrics) + sum(map(len, self.devices.values())), datatype)

    # -- session ----------------------------------------------------------------------------------
    def connect(self) -> None:
        death = encode([Metric(BDSEQ, self.bdseq, INT64)], seq=None)
        self.client.will_set(self.topic("NDEATH"), death, qos=1)
        link.start(self.client, self.url, on_connect=self._on_connect)

    def _on_connect(self, client: mqtt.Client) -> None:
        # On every connection: a restarted broker knows neither the subscriptions nor the node.
        client.subscribe([(self.topic("NCMD"), 1), (f"{NAMESPACE}/{self.group}/DCMD/{self.node}/+", 1)])
        self.birth()

    def birth(self) -> None:
        with self.lock:
            if self.dead:
                return
            self.seq = 0
            node = [Metric(BDSEQ, self.bdseq, INT64), Metric(REBIRTH, False, BOOLEAN)]
            node += [Metric(n, None, dt, alias=a) for n, (a, dt) in self.node_metrics.items()]
            self._send("NBIRTH", None, node)
            for device, metrics in self.devices.items():
                self._send("DBIRTH", device, [Metric(n, None, dt, alias=a) for n, (a, dt) in metrics.items()])

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        with self.acks_lock:
            if mid in self.unacked:
                self.unacked.discard(mid)
            else:
                self.acked_early.add(mid)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker has every message published so far (across reconnections)."""
        deadline = time.monotonic() + timeout
        while self.unacked and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, graceful: bool = True) -> None:
        self.flush()
        with self.lock:  # no birth after this (a host's rebirth command answered as the node closes)
            self.dead = True
        self.flush()
        if graceful:  # a clean shutdown says so; a crash leaves it to the broker (the will)
            info = self.client.publish(self.topic("NDEATH"), encode([Metric(BDSEQ, self.bdseq, INT64)], None), qos=1)
            info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    # -- data -------------------------------------------------------------------------------------
    def _send(self, kind: str, device: str | None, metrics: list[Metric]) -> mqtt.MQTTMessageInfo:
        payload = encode(metrics, seq=self.seq)
        self.seq = (self.seq + 1) % 256
        info = self.client.publish(self.topic(kind, device), payload, qos=1)
        with self.acks_lock:
            if info.mid in self.acked_early:
                self.acked_early.discard(info.mid)
            else:
                self.unacked.add(info.mid)
        return info

    def data(self, device: str | None, records: Sequence[Mapping[str, Any]],
             timestamps: Sequence[int | None] | None = None, named: bool = False) -> mqtt.MQTTMessageInfo:
        """One DDATA (NDATA for device None) carrying `records`: each record's metrics by alias, in order
        (`named`: with their names too, for a reader that does not follow births)."""
        table = self.node_metrics if device is None else self.devices[device]
        metrics = []
        for i, rec in enumerate(records):
            ts = timestamps[i] if timestamps else None
            for name, value in rec.items():
                alias, dt = table[name]
                metrics.append(Metric(name if named else None, value, dt, alias=alias, timestamp=ts))
        with self.lock:
            return self._send("NDATA" if device is None else "DDATA", device, metrics)

    def publish_raw(self, kind: str, device: str | None, metrics: list[Metric], seq: int | None) -> None:
        """A message with a seq of the caller's choosing (to test how a host copes with disorder)."""
        self.client.publish(self.topic(kind, device), encode(metrics, seq=seq), qos=1).wait_for_publish(5)

    # -- commands ---------------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        t = parse_topic(msg.topic)
        if t is None:
            return
        try:
            metrics = decode(msg.payload).metrics
        except PayloadError:
            return  # a command that cannot be read is not obeyed
        if t.kind == "NCMD" and any(m.name == REBIRTH and m.value for m in metrics):
            self.rebirths += 1
            self.birth()
            return
        if self.on_command is not None:
            self.on_command(t, metrics)
