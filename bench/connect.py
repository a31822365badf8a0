"""Live connectors, end to end: records per second from publish to stored, latency, fault counts.

    python bench/connect.py [--quick] [--only mqtt]

Each protocol is a section (SECTIONS below); each measures its connector against a plain client
of the same broker receiving the same payloads in the same run, and prints one JSON object.
The last line printed is one JSON line with every section.

mqtt (a mosquitto of its own on loopback, set not to drop what a slower subscriber has not taken
yet; else the broker at $LINELAB_MQTT_URL): the simulated line's
production is encoded once as Sparkplug B DDATA messages (the records of 20 units a message,
metrics by alias) and published at full speed with QoS 1 from a separate process, to
  - a plain paho subscriber (MQTT 5, QoS 1) that parses each payload with protobuf and reads every
    metric's value: the baseline (a subscriber that only parses is reported too, parse_only);
  - LineLab's connector: decode, order by seq, map by the profile, store in a DuckDB workspace,
    acknowledge once stored.
Records per second run from the publisher's first message to the last record received (baseline)
or stored (connector); the ratio is connector / baseline (target >= 0.5). Latency: a paced run
(publish times in the payloads) measures, per message, its publish to the flush that stored it.
Faults: the stream again with 1 % garbage payloads, 2 % of messages sent twice and 2 % swapped
with their successor; then `linelab connect mqtt` killed (-9) mid-stream and started again;
counted: lost, duplicated and quarantined records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from linelab.connect import mqtt as link
from linelab.connect.sparkplug.connector import Batch, Connector, Settings
from linelab.connect.sparkplug.edge import EdgeNode
from linelab.connect.sparkplug.host import Outcome
from linelab.connect.sparkplug.payload import BDSEQ, BOOLEAN, INT64, REBIRTH, Metric, decode, encode, now_ms
from linelab.connect.sparkplug.sparkplug_b_pb2 import Payload
from linelab.store.workspace import Workspace
from linelab.twin.publish import TABLES, datatype, live_profile
from linelab.twin.simulator import TwinLine

Message = tuple[str, bytes, int]  # topic, payload, records it carries


# -- the stream ------------------------------------------------------------------------------------
def stream(group: str, node: str, units: int, per_message: int = 20,
           stamp: Callable[[], int] | None = None) -> tuple[list[Message], TwinLine]:
    """The line's births and DDATA messages, encoded as an edge node sends them."""
    line = TwinLine("default", seed=11)
    edge = EdgeNode(group, node)  # used for its topics and alias table only: never connected
    from linelab.store.schema import RECORD_TABLES

    for name in TABLES:
        edge.define(name, {f.name: datatype(f.type) for f in RECORD_TABLES[name]})
    out: list[Message] = []
    seq = 0

    def add(kind: str, device: str | None, metrics: list[Metric], n: int) -> None:
        nonlocal seq
        out.append((edge.topic(kind, device), encode(metrics, seq=seq), n))
        seq = (seq + 1) % 256

    add("NBIRTH", None, [Metric(BDSEQ, 1, INT64), Metric(REBIRTH, False, BOOLEAN)], 0)
    for name in TABLES:
        add("DBIRTH", name, [Metric(k, None, dt, alias=a) for k, (a, dt) in edge.devices[name].items()], 0)
    while line.units_produced < units:
        chunk = line.produce(min(per_message, units - line.units_produced))
        for name in TABLES:
            t = chunk.tables.get(name)
            if t is None or not t.num_rows:
                continue
            table = edge.devices[name]
            t = t.select([c for c in t.column_names if c in table])
            for batch in t.combine_chunks().to_batches(max_chunksize=2000):
                metrics = [Metric(None, v, table[k][1], alias=table[k][0]) for r in batch.to_pylist()
                           for k, v in r.items()]
                add("DDATA", name, metrics, batch.num_rows)
    return out, line


def write_stream(messages: list[Message], path: Path) -> None:
    with path.open("wb") as f:
        for topic, payload, _ in messages:
            t = topic.encode()
            f.write(struct.pack("<II", len(t), len(payload)) + t + payload)


def publish_file(path: Path, url: str, pace: float) -> None:
    """The publisher process: every message of the file, QoS 1, as fast as it goes (or `pace` per second);
    the payload timestamp is rewritten to the publish time when paced (for latency)."""
    data = path.read_bytes()
    client = link.make_client(f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)  # the broker's Receive Maximum caps it further
    link.start(client, url)
    i, n = 0, 0
    infos = []
    start = time.time()
    print(json.dumps({"start": start}), flush=True)
    while i < len(data):
        lt, lp = struct.unpack_from("<II", data, i)
        i += 8
        topic = data[i:i + lt].decode()
        payload = data[i + lt:i + lt + lp]
        i += lt + lp
        if pace:
            due = start + n / pace
            if due > time.time():
                time.sleep(due - time.time())
            if topic.split("/")[2] == "DDATA":
                msg = decode(payload)
                payload = encode(msg.metrics, seq=msg.seq, timestamp=now_ms())
        infos.append(client.publish(topic, payload, qos=1))
        n += 1
    for info in infos:
        info.wait_for_publish(120)
    print(json.dumps({"end": time.time(), "messages": n}), flush=True)
    client.disconnect()
    client.loop_stop()


def start_publisher(path: Path, url: str, pace: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--publish", str(path), "--url", url, "--pace", str(pace)],
                            stdout=subprocess.PIPE, text=True)


def publisher_start(proc: subprocess.Popen[str]) -> float:
    assert proc.stdout is not None
    return float(json.loads(proc.stdout.readline())["start"])


# -- the two receivers -----------------------------------------------------------------------------
def baseline(messages: list[Message], path: Path, url: str, group: str, read_values: bool = True) -> dict[str, Any]:
    """A plain subscriber: receives (QoS 1) and parses every message, reading each metric's value."""
    total = len(messages)
    got: dict[str, float] = {"n": 0, "values": 0, "last": 0.0}
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        p = Payload()
        p.ParseFromString(bytes(msg.payload))
        got["n"] += 1
        if read_values:  # what a consumer of the data does: every metric's value, as protobuf gives it
            got["values"] += len([getattr(m, m.WhichOneof("value") or "is_null") for m in p.metrics])
        if got["n"] >= total:
            got["last"] = time.time()
            done.set()

    client = link.make_client("bench-plain-" + uuid.uuid4().hex[:8])
    client.on_message = on_message
    # The same window of unacknowledged messages as the connector's: the broker's queue (1000 by
    # default) would otherwise drop what a slower subscriber has not taken yet.
    link.start(client, url, link.connect_properties(0, Settings().receive_maximum),
               on_connect=lambda c: c.subscribe(f"spBv1.0/{group}/#", qos=1))
    time.sleep(0.3)
    pub = start_publisher(path, url)
    t0 = publisher_start(pub)
    pub.wait(600)
    last = -1.0
    while not done.wait(3.0) and got["n"] != last:  # until all came, or nothing more for 3 s
        last = got["n"]
    if got["n"] < total:
        got["last"] = time.time() - 3.0
    client.disconnect()
    client.loop_stop()
    records = sum(m[2] for m in messages)
    seconds = got["last"] - t0
    return {"messages": got["n"], "lost_by_broker": total - got["n"], "records": records,
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds, 1)}


class TimedConnector(Connector):
    """The connector, noting when each delivered message is stored (for the benchmark only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_ms: list[int] = []
        self.latencies_ms: list[float] = []
        self.last_stored = 0.0

    def _apply(self, out: Outcome) -> None:
        self.sent_ms += [e.message.timestamp or 0 for e in out.deliver]
        super()._apply(out)

    def _cut(self) -> Batch:
        batch = super()._cut()
        batch.notes["sent_ms"], self.sent_ms = self.sent_ms, []
        return batch

    def _store(self, batch: Batch) -> None:
        before = self.status.stored
        super()._store(batch)
        now = now_ms()
        self.latencies_ms += [now - t for t in batch.notes["sent_ms"]]
        if self.status.stored > before:
            self.last_stored = time.time()


def run_connector(path: Path, url: str, profile: Any, folder: Path, expect_records: int,
                  pace: float = 0.0, client_id: str | None = None) -> tuple[TimedConnector, float, Workspace]:
    ws = Workspace.open(folder)
    c = TimedConnector(ws, profile, Settings(url=url, client_id=client_id or "bench-" + uuid.uuid4().hex[:8],
                                             session_expiry=60, reorder_timeout=0.5))
    c.start()
    th = threading.Thread(target=c.loop, daemon=True)
    th.start()
    pub = start_publisher(path, url, pace)
    t0 = publisher_start(pub)
    pub.wait(600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (c.status.records < expect_records or c.sink.rows_pending):
        time.sleep(0.01)
    time.sleep(1.0)  # the reorder timeout: anything held is delivered and stored
    c.stop.set()
    th.join(30)
    c.close()
    return c, t0, ws


def faulty(messages: list[Message], seed: int = 3) -> tuple[list[Message], int]:
    """The stream with 1 % garbage, 2 % sent twice, 2 % swapped with their successor (births untouched)."""
    rng = np.random.default_rng(seed)
    head = [m for m in messages if "BIRTH" in m[0]]
    data = [m for m in messages if "BIRTH" not in m[0]]
    out: list[Message] = []
    garbage = 0
    for m in data:
        if rng.random() < 0.01:
            out.append((m[0], b"\xff\xfe" + rng.bytes(30), 0))
            garbage += 1
        out.append(m)
        if rng.random() < 0.02:
            out.append(m)
    for i in range(0, len(out) - 1):
        if rng.random() < 0.02:
            out[i], out[i + 1] = out[i + 1], out[i]
    return head + out, garbage


def own_broker(folder: Path) -> tuple[subprocess.Popen[bytes] | None, str, str]:
    """A mosquitto of the benchmark's own, configured as a line's broker should be: no cap on the QoS 1
    messages it queues for a subscriber (mosquitto's default drops beyond 1000 for a client that lags).
    Without mosquitto on PATH: the broker at $LINELAB_MQTT_URL, as it is configured."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        return None, link.broker_url(), "shared (its own limits)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"mqtt://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, url, "own mosquitto, max_queued_messages 0"


def mqtt_section(quick: bool, folder: Path) -> dict[str, Any]:
    broker, url, which = own_broker(folder)
    try:
        out = _mqtt_section(quick, folder, url)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    return {"broker": which, **out}


def _mqtt_section(quick: bool, folder: Path, url: str) -> dict[str, Any]:
    units = 2_000 if quick else 20_000
    group = "bench" + uuid.uuid4().hex[:8]
    messages, line = stream(group, "LINE", units)
    path = folder / "stream.bin"
    write_stream(messages, path)
    records = sum(m[2] for m in messages)
    profile = live_profile(line.profile, group, "LINE", url)

    base = baseline(messages, path, url, group)
    parse_only = baseline(messages, path, url, group, read_values=False)
    c, t0, ws = run_connector(path, url, profile, folder / "ws", records)
    seconds = c.last_stored - t0
    stored = sum(ws.count(t) for t in TABLES)
    ws.close()
    connector = {"records": records, "stored": stored, "seconds": round(seconds, 3),
                 "records_per_s": round(records / seconds, 1), "flushes": c.status.flushes,
                 "queue_peak": c.status.queue_peak}

    # latency: the same stream paced at a line's rate, publish time in each payload
    pace = 20.0  # messages a second: a line's rate (20 units a message)
    n_paced = min(len(messages), 400 if quick else 2000)
    group2 = "bench" + uuid.uuid4().hex[:8]
    paced, line2 = stream(group2, "LINE", units)
    paced = paced[:n_paced]
    write_stream(paced, folder / "paced.bin")
    c2, _, ws2 = run_connector(folder / "paced.bin", url, live_profile(line2.profile, group2, "LINE", url),
                               folder / "ws-paced", sum(m[2] for m in paced), pace=pace)
    ws2.close()
    lat = np.array(c2.latencies_ms[len(c2.latencies_ms) // 10:] or [np.nan])  # past the warm-up

    # faults
    group3 = "bench" + uuid.uuid4().hex[:8]
    clean, line3 = stream(group3, "LINE", units // 4)
    bad, garbage = faulty(clean)
    write_stream(bad, folder / "faulty.bin")
    expected = TwinLine("default", seed=11)
    expect_rows = 0
    while expected.units_produced < units // 4:
        ch = expected.produce(min(20, units // 4 - expected.units_produced))
        expect_rows += sum(ch.tables[t].num_rows for t in TABLES if t in ch.tables)
    c3, _, ws3 = run_connector(folder / "faulty.bin", url, live_profile(line3.profile, group3, "LINE", url),
                               folder / "ws-faulty", expect_rows)
    own = ws3.scalar("SELECT count(*) FROM events WHERE kind IN ('data_gap', 'connection')")  # the connector's
    stored3 = sum(ws3.count(t) for t in TABLES) - int(own)
    quarantined = ws3.count("quarantine")
    ws3.close()
    faults: dict[str, Any] = {"messages": len(bad), "garbage_sent": garbage, "quarantined": quarantined,
              "expected_records": expect_rows, "stored_records": stored3,
              "lost": max(0, expect_rows - stored3), "duplicated": max(0, stored3 - expect_rows),
              "redelivered_dropped": c3.status.redelivered, "gaps": c3.status.gaps}

    faults["killed"] = killed_connector(folder, url, units // 4)

    return {"units": units, "messages": len(messages), "baseline": base, "connector": connector,
            "parse_only_records_per_s": parse_only["records_per_s"],
            "ratio": round(connector["records_per_s"] / base["records_per_s"], 3),
            "latency_ms": {"pace_msgs_per_s": pace, "p50": round(float(np.nanmedian(lat)), 1),
                           "p95": round(float(np.nanpercentile(lat, 95)), 1), "n": int(lat.size)},
            "faults": faults}


def _cli(root: Path, url: str, client_id: str) -> subprocess.Popen[bytes]:
    code = "import sys; from linelab.cli import main; sys.argv[0] = 'linelab'; main()"
    return subprocess.Popen([sys.executable, "-c", code, "connect", "mqtt", "-w", str(root), "--broker", url,
                             "--client-id", client_id, "--session-expiry", "120", "--batch-seconds", "0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _status(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / "connect-status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _until(cond: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.05)


def killed_connector(folder: Path, url: str, units: int) -> dict[str, Any]:
    """`linelab connect mqtt` killed (-9) mid-stream and started again: records lost and duplicated."""
    group = "bench" + uuid.uuid4().hex[:8]
    messages, line = stream(group, "LINE", units)
    write_stream(messages, folder / "killed.bin")
    root = folder / "ws-killed"
    root.mkdir()
    from linelab.profile import save_profile

    save_profile(live_profile(line.profile, group, "LINE", url), root / "profile.yaml")
    client_id = "bench-" + uuid.uuid4().hex[:8]
    proc = _cli(root, url, client_id)
    _until(lambda: _status(root).get("running") is True, 60)
    pub = start_publisher(folder / "killed.bin", url, pace=len(messages) / 4.0)  # over about 4 s
    publisher_start(pub)
    _until(lambda: _status(root).get("stored", 0) > 0, 30)
    proc.kill()  # SIGKILL: mid-batch, nothing flushed or acknowledged after the last flush
    proc.wait()
    pub.wait(120)
    proc = _cli(root, url, client_id)
    records = sum(m[2] for m in messages)
    seen: list[int] = []

    def settled() -> bool:  # the new process has flushed, and nothing more arrived for 2 s
        st = _status(root)
        if st.get("pid") != proc.pid or not st.get("flushes"):
            return False
        seen.append(int(st.get("received", 0)))
        return len(seen) > 40 and seen[-1] == seen[-41]

    _until(settled, 90)
    proc.terminate()
    proc.wait(60)
    with Workspace.open(root) as ws:
        stored = sum(ws.count(t) for t in TABLES) - int(
            ws.scalar("SELECT count(*) FROM events WHERE kind IN ('data_gap', 'connection')"))
        distinct_units = int(ws.scalar("SELECT count(DISTINCT unit_id) FROM units"))
        unit_rows = ws.count("units")
    return {"records": records, "stored": stored, "lost": max(0, records - stored),
            "duplicated": max(0, stored - records) + (unit_rows - distinct_units)}


SECTIONS: dict[str, Callable[[bool, Path], dict[str, Any]]] = {"mqtt": mqtt_section}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=list(SECTIONS), action="append")
    ap.add_argument("--publish", type=Path, help=argparse.SUPPRESS)  # the publisher process
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--pace", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        publish_file(args.publish, args.url, args.pace)
        return
    out: dict[str, Any] = {"bench": "connect", "quick": args.quick}
    for name in args.only or list(SECTIONS):
        with tempfile.TemporaryDirectory() as tmp:
            result = SECTIONS[name](args.quick, Path(tmp))
        print(json.dumps({name: result}, indent=1), file=sys.stderr)
        out[name] = result
    print(json.dumps(out))


if __name__ == "__main__":
    main()
