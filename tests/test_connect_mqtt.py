"""Live lines over MQTT (Sparkplug B), against a real Mosquitto broker.

The shared broker is $LINELAB_MQTT_URL (default mqtt://127.0.0.1:1883); the broker-restart test
starts its own mosquitto on a free port. Under CI=true a missing broker fails the tests.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from linelab.connect import mqtt as link
from linelab.connect.mqtt import broker_url, host_port
from linelab.connect.mqtt_control import MqttControl
from linelab.connect.sparkplug.connector import Connector, Settings
from linelab.connect.sparkplug.edge import EdgeNode
from linelab.connect.sparkplug.payload import DATETIME, DOUBLE, INT64, STRING, Metric, encode
from linelab.profile import save_profile
from linelab.profile.schema import Profile
from linelab.store.workspace import Workspace
from linelab.twin.publish import TwinPublisher, live_profile
from linelab.twin.simulator import TwinLine

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
T0 = 1_780_000_000_000  # ms: the records' line time


def _reachable(url: str) -> bool:
    host, port = host_port(url)
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def url() -> str:
    u = broker_url()
    if not _reachable(u):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no MQTT broker at {u} (start mosquitto, or set LINELAB_MQTT_URL)")
        pytest.skip(f"no MQTT broker at {u} (sudo apt-get install -y mosquitto)")
    return u


CLIENT_IDS: list[tuple[str, str]] = []  # (broker, connector client id): their retained STATE is cleared at the end


def new_client_id(url: str) -> str:
    cid = "t-" + uuid.uuid4().hex[:10]
    CLIENT_IDS.append((url, cid))
    return cid


@pytest.fixture(scope="module", autouse=True)
def _clear_host_states() -> Iterator[None]:
    """Leave no retained host STATE message of the tests' connectors on the shared broker."""
    yield
    for url, cid in CLIENT_IDS:
        if not _reachable(url):
            continue
        c = link.make_client()
        link.start(c, url)
        c.publish(f"spBv1.0/STATE/{cid}", b"", qos=1, retain=True).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()


@pytest.fixture
def group() -> str:
    return "t" + uuid.uuid4().hex[:10]  # a Sparkplug group of the test's own on the shared broker


def line_profile(group: str) -> Profile:
    return Profile.model_validate({"sources": [
        {"name": "units", "table": "units", "mqtt": {"topic": f"spBv1.0/{group}/DDATA/+/units"},
         "constants": {"line": "L1"}},
        {"name": "readings", "table": "measurements", "mqtt": {"topic": f"spBv1.0/{group}/DDATA/+/TEST"},
         "columns": {"station": "$device", "t": "$timestamp"},
         "wide": {"id_columns": ["unit_id", "$timestamp", "$device"], "value_columns": ["x*"]}},
        {"name": "json_units", "table": "units", "mqtt": {"topic": f"{group}/json/units", "format": "json"}},
    ]})


def edge(group: str, url: str, node: str = "N1") -> EdgeNode:
    e = EdgeNode(group, node, url, bdseq=3)
    e.define("units", {"unit_id": STRING, "product": STRING, "t_start": DATETIME})
    e.define("TEST", {"unit_id": STRING, "x1": DOUBLE, "x2": DOUBLE})
    return e


def units(first: int, n: int) -> list[dict[str, Any]]:
    return [{"unit_id": f"U{i:05d}", "product": "P1", "t_start": T0 + i * 1000} for i in range(first, first + n)]


def unit_metrics(e: EdgeNode, first: int, n: int) -> list[Metric]:
    """DDATA metrics of units by alias, as EdgeNode.data sends them (for messages sent by hand)."""
    table = e.devices["units"]
    return [Metric(None, v, table[k][1], alias=table[k][0]) for r in units(first, n) for k, v in r.items()]


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@contextmanager
def connector(ws: Workspace, profile: Profile, url: str, **settings: Any) -> Iterator[Connector]:
    c = Connector(ws, profile, Settings(url=url, client_id=new_client_id(url),
                                        batch_seconds=0.05, reorder_timeout=0.4, session_expiry=60, **settings))
    c.start()
    th = threading.Thread(target=c.loop, daemon=True)
    th.start()
    try:
        yield c
    finally:
        c.stop.set()
        th.join(10)
        c.close()


def stored(ws: Workspace, table: str = "units") -> list[int]:
    """[rows, distinct units] of a table."""
    return list(ws.query(f"SELECT count(*), count(DISTINCT unit_id) FROM {table}").to_pylist()[0].values())


def test_birth_data_death_stored_once(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with connector(ws, line_profile(group), url) as c:
        e = edge(group, url)
        e.connect()
        for k in range(5):
            e.data("units", units(k * 10, 10))
            e.data("TEST", [{"unit_id": r["unit_id"], "x1": 1.5, "x2": 2.5} for r in units(k * 10, 10)],
                   timestamps=[T0 + (k * 10 + i) * 1000 for i in range(10)])
        e.close()
        wait_for(lambda: c.host.counts["deaths"] == 1 and c.status.flushes > 0 and not c.sink.rows_pending)
    assert stored(ws) == [50, 50]
    rows = ws.query("SELECT station, name, count(*) AS n FROM measurements GROUP BY ALL ORDER BY name").to_pylist()
    assert rows == [{"station": "TEST", "name": "x1", "n": 50}, {"station": "TEST", "name": "x2", "n": 50}]
    assert ws.scalar("SELECT min(t_start) FROM units").isoformat() == "2026-05-28T20:26:40"
    ev = ws.query("SELECT kind, machine, detail FROM events").to_pylist()
    assert ev == [{"kind": "connection", "machine": "N1", "detail": '{"lost": "NDEATH"}'}]
    assert c.status.gaps == 0 and c.status.quarantined == 0
    assert c.host.sessions[(group, "N1")].online is False


def test_message_delivered_twice_is_stored_once(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with connector(ws, line_profile(group), url) as c:
        e = edge(group, url)
        e.connect()  # births: seq 0 .. 2
        e.publish_raw("DDATA", "units", unit_metrics(e, 0, 5), seq=3)
        e.publish_raw("DDATA", "units", unit_metrics(e, 0, 5), seq=3)  # QoS 1 redelivery: same seq
        e.publish_raw("DDATA", "units", unit_metrics(e, 3, 5), seq=4)  # overlapping records, new message
        e.seq = 5
        e.close()
        wait_for(lambda: c.host.counts["deaths"] == 1 and not c.sink.rows_pending)
    assert stored(ws) == [8, 8]
    assert c.host.counts["duplicates"] == 1  # dropped by its seq
    assert c.status.duplicates == 2  # U00003, U00004 sent again in a new message: the store kept one each
    assert c.status.gaps == 0


def test_reordering_is_absorbed_and_a_gap_asks_for_a_rebirth(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    with connector(ws, line_profile(group), url) as c:
        e = edge(group, url)
        e.connect()  # births: seq 0 .. 2
        for seq, first in ((3, 0), (5, 20), (4, 10)):  # 5 before 4: held, then both in order
            e.publish_raw("DDATA", "units", unit_metrics(e, first, 10), seq=seq)
        wait_for(lambda: c.status.records == 30)
        assert c.status.gaps == 0 and e.rebirths == 0
        e.publish_raw("DDATA", "units", unit_metrics(e, 40, 10), seq=7)  # 6 never comes
        wait_for(lambda: c.status.gaps == 1 and e.rebirths == 1)
        wait_for(lambda: c.status.records == 40 and not c.sink.rows_pending)
        e.seq = 3  # the rebirth restarted the node's seq at 0; births took 0 .. 2
        e.data("units", units(50, 10))  # the new session goes on in order
        wait_for(lambda: c.status.records == 50 and not c.sink.rows_pending)
        e.close()
        wait_for(lambda: c.host.counts["deaths"] == 1 and not c.sink.rows_pending)
    assert stored(ws) == [50, 50]
    gap = ws.query("SELECT kind, machine, detail FROM events WHERE kind = 'data_gap'").to_pylist()
    assert gap == [{"kind": "data_gap", "machine": "N1", "detail": '{"missing_seq": [6]}'}]
    assert c.status.missing == 1 and c.status.rebirths_asked == 1


def test_garbage_payloads_are_quarantined_with_their_reason(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    good = encode(unit_metrics(edge(group, url), 0, 1), seq=0)
    garbage = [b"\xff\xfe not protobuf", good[: len(good) // 2], b'{"unit_id": "U1"}']
    with connector(ws, line_profile(group), url) as c:
        e = edge(group, url)
        e.connect()
        seq = 3
        n_bad = 0
        for i in range(300):  # 1 % garbage, spread through the stream
            if i % 100 == 50:
                e.client.publish(e.topic("DDATA", "units"), garbage[n_bad], qos=1)
                n_bad += 1
                continue
            e.publish_raw("DDATA", "units", unit_metrics(e, i, 1), seq=seq % 256)
            seq += 1
        e.client.publish(f"{group}/json/units", b"[{not json", qos=1)
        e.client.publish(f"{group}/json/units", json.dumps([{"unit_id": "J1", "product": "P", "line": "L",
                                                             "t_start": "2026-01-02T03:04:05Z"},
                                                            {"unit_id": "J2", "product": "P", "line": "L",
                                                             "t_start": "yesterday"}]), qos=1)
        e.seq = seq % 256
        e.close()
        wait_for(lambda: c.host.counts["deaths"] == 1 and not c.sink.rows_pending)
    assert stored(ws) == [298, 298]
    q = ws.query("SELECT table_name, field, reason FROM quarantine ORDER BY reason").to_pylist()
    reasons = [r["reason"] for r in q]
    assert len(q) == 5, q
    assert sum(r.startswith("not a Sparkplug B payload") for r in reasons) == 3
    assert any(r.startswith("not JSON") for r in reasons)
    assert any(r["field"] == "t_start" and "yesterday" in r["reason"] for r in q)
    assert ws.scalar("SELECT count(*) FROM units WHERE unit_id = 'J1'") == 1
    assert c.status.gaps == 0  # a garbage message carries no seq: it leaves no hole


def _cli(ws: Path, url: str, client_id: str, *args: str) -> subprocess.Popen[bytes]:
    code = "import sys; from linelab.cli import main; sys.argv[0] = 'linelab'; main()"
    return subprocess.Popen([sys.executable, "-c", code, "connect", "mqtt", "-w", str(ws), "--broker", url,
                             "--client-id", client_id, "--batch-seconds", "0.05", "--session-expiry", "60",
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _status(ws: Path) -> dict[str, Any]:
    p = ws / "connect-status.json"
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except json.JSONDecodeError:
        return {}


def test_connector_killed_and_restarted_loses_and_duplicates_nothing(url: str, group: str, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    save_profile(line_profile(group), root / "profile.yaml")
    cid = new_client_id(url)
    proc = _cli(root, url, cid)
    try:
        wait_for(lambda: _status(root).get("running") or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        e = edge(group, url)
        e.connect()
        for k in range(20):
            e.data("units", units(k * 5, 5))
            if k == 8:
                e.flush()
                wait_for(lambda: _status(root).get("stored", 0) > 0, 30)
                proc.send_signal(signal.SIGKILL)  # mid-stream: stored, unacknowledged and unsent messages
                proc.wait()
            time.sleep(0.02)
        e.close()
        proc = _cli(root, url, cid)
        wait_for(lambda: _status(root).get("nodes_online") == [] and _status(root).get("records", 0) > 0, 60)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    with Workspace.open(root) as ws:
        assert stored(ws) == [100, 100]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(port: int, folder: Path) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    # `user`: mosquitto started as root would switch to its own user, which cannot write the test's folder
    # (its sessions would then not survive the restart).
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {folder}/\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _reachable(f"mqtt://127.0.0.1:{port}"), 10)
    return proc


def test_broker_restart_mid_stream(url: str, group: str, tmp_path: Path) -> None:
    if not Path(MOSQUITTO).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto is not installed")
        pytest.skip("mosquitto is not installed (sudo apt-get install -y mosquitto)")
    port = _free_port()
    own = f"mqtt://127.0.0.1:{port}"
    broker = _mosquitto(port, tmp_path)
    ws = Workspace.open(tmp_path / "ws")
    try:
        with connector(ws, line_profile(group), own) as c:
            e = edge(group, own)
            e.connect()
            for k in range(10):
                e.data("units", units(k * 5, 5))
            wait_for(lambda: c.status.records == 50)
            broker.send_signal(signal.SIGTERM)  # mosquitto saves its sessions as it stops
            broker.wait(10)
            for k in range(10, 20):  # while the broker is down: kept by the edge node's client
                e.data("units", units(k * 5, 5))
            broker = _mosquitto(port, tmp_path)
            for k in range(20, 30):
                e.data("units", units(k * 5, 5))
            wait_for(lambda: c.status.records >= 150 and not c.sink.rows_pending, 30)
            e.close()
            wait_for(lambda: not c.host.sessions[(group, "N1")].online and not c.sink.rows_pending)
        assert stored(ws) == [150, 150]
        assert c.status.gaps == 0
        assert (tmp_path / "mosquitto.db").exists()  # the broker kept the sessions across its restart
    finally:
        broker.terminate()
        broker.wait(10)


def test_twin_published_over_mqtt_is_stored_as_the_line_made_it(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    pub = TwinPublisher(TwinLine("default", seed=5), group, "LINE", url, units_per_message=10)
    profile = live_profile(pub.line.profile, group, "LINE", url)
    with connector(ws, profile, url) as c:
        pub.run(60)
        pub.close()
        wait_for(lambda: c.host.counts["deaths"] == 1 and not c.sink.rows_pending, 30)
    same = TwinLine("default", seed=5)  # the same line, produced in the same chunks as it was published
    chunks = [same.produce(10).tables for _ in range(6)]
    for table in ("units", "steps", "measurements", "params", "materials"):
        assert ws.count(table) == sum(c[table].num_rows for c in chunks), table
    got = ws.query("SELECT unit_id, result, first_pass FROM units ORDER BY unit_id").to_pylist()
    ref = pa.concat_tables([c["units"] for c in chunks]).select(["unit_id", "result", "first_pass"]) \
        .sort_by("unit_id").to_pylist()
    assert got == ref
    assert c.status.gaps == 0 and c.status.quarantined == 0


def test_actions_over_mqtt_are_acknowledged_failed_or_timed_out(url: str, group: str, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    line = TwinLine("default", seed=1)
    pub = TwinPublisher(line, group, "LINE", url)
    profile = live_profile(line.profile, group, "LINE", url)
    assert profile.control.channel == "mqtt"
    runner = threading.Thread(target=pub.run, args=(20, None, 3.0), daemon=True)
    runner.start()
    wait_for(lambda: pub.node.client.is_connected())
    control = MqttControl.from_options(profile.control.options, ws=ws)
    kind = line.profile.actions[0].name
    params = {"params": {line.profile.recipe[0].name: line.profile.recipe[0].default}}
    try:
        ok = control.apply({"id": "A-1", "kind": kind, "params": params})
        bad = control.apply({"id": "A-2", "kind": "no_such_action", "params": {}})
    finally:
        runner.join(10)
        pub.close()
        control.close()
    assert ok["status"] == "acknowledged" and ok["applied"] is True and ok["t"]
    assert bad["status"] == "failed" and bad["applied"] is False and "no_such_action" in bad["error"]
    assert [a["id"] for a in pub.applied] == ["A-1", "A-2"]
    silent = MqttControl(group, "NOBODY", url=url, timeout=0.3, ws=ws)
    try:
        late = silent.apply({"id": "A-3", "kind": kind, "params": {}})
    finally:
        silent.close()
    assert late["status"] == "timed_out" and late["applied"] is False
    recorded = {a["action"]["id"]: a["status"] for a in ws.list_artifacts("mqtt_action")}
    assert recorded == {"A-1": "acknowledged", "A-2": "failed", "A-3": "timed_out"}


def test_a_profile_with_mqtt_sources_reads_no_files_and_names_one_broker(group: str) -> None:
    p = line_profile(group)
    assert all(s.files == [] for s in p.sources)
    bad = Profile.model_validate({"sources": [
        {"name": "a", "table": "units", "mqtt": {"topic": "spBv1.0/g/DDATA/+/a", "broker": "mqtt://h1:1883"}},
        {"name": "b", "table": "units", "mqtt": {"topic": "spBv1.0/g/DDATA/+/b", "broker": "mqtt://h2:1883"}}]})
    from linelab.errors import UserError
    with pytest.raises(UserError, match="several brokers"):
        Connector(None, bad)  # type: ignore[arg-type]


def test_host_orders_sequences_across_the_wrap(group: str) -> None:
    from linelab.connect.sparkplug.host import Envelope, Host
    from linelab.connect.sparkplug.payload import Message, Topic

    h = Host(reorder_timeout=1.0)
    t = Topic(group, "NBIRTH", "N")
    h.receive(Envelope(t, Message.of(0, 250, [Metric("bdSeq", 1, INT64)])), 0.0)
    d = Topic(group, "NDATA", "N")
    order = []
    for seq in (251, 253, 252, 254, 255, 1, 0, 2):
        out = h.receive(Envelope(d, Message.of(0, seq, [Metric("x", 1.0, DOUBLE)])), 0.0)
        order += [e.message.seq for e in out.deliver]
    assert order == [251, 252, 253, 254, 255, 0, 1, 2]
    assert h.counts["gaps"] == 0 and not h.tick(5.0).gaps


def test_run_stores_the_live_line_and_monitors_what_arrives(url: str, group: str, tmp_path: Path) -> None:
    from linelab.commands import call

    root = tmp_path / "ws"
    pub = TwinPublisher(TwinLine("default", seed=2), group, "LINE", url, units_per_message=25)
    save_profile(live_profile(pub.line.profile, group, "LINE", url), root / "profile.yaml")
    out: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: out.update(result=call(
        "run", workspace=root, seconds=12, monitor_every=1, client_id=new_client_id(url),
        session_expiry=60, batch_seconds=0.05)), daemon=True)
    runner.start()
    wait_for(lambda: _status(root).get("running") is True, 60)
    pub.run(300)
    pub.close()
    runner.join(60)
    res = out["result"]
    assert res.connector["stored"] >= res.connector["records"] > 0  # (and the node's death, an event)
    assert res.monitor_runs >= 1
    status = _status(root)
    assert status["running"] is False and status["monitor_runs"] == res.monitor_runs
    with Workspace.open(root) as ws:
        assert ws.count("units") == 300


def test_payloads_read_in_columns_give_what_the_protobuf_classes_give() -> None:
    """The connector reads a message's metrics in columns; every data type, null, name, alias and
    timestamp comes out as the protobuf classes read them, and other payloads still read (or fail) alike."""
    from linelab.connect.sparkplug.payload import (
        BOOLEAN,
        BYTES,
        FLOAT,
        INT8,
        INT32,
        UINT64,
        PayloadError,
        decode,
        decode_many,
    )
    from linelab.connect.sparkplug.payload import _decode_objects as by_objects
    from linelab.connect.sparkplug.sparkplug_b_pb2 import Payload

    metrics = [Metric("a", -5, INT8, alias=1), Metric(None, -70_000, INT32, alias=2, timestamp=1_700_000_000_000),
               Metric(None, -(2**62), INT64, alias=3), Metric(None, 2**64 - 1, UINT64, alias=4),
               Metric("ünï/code", 0.1, FLOAT), Metric(None, float("inf"), DOUBLE, alias=0),
               Metric(None, True, BOOLEAN, alias=6), Metric(None, "漢字 and text", STRING, alias=7),
               Metric(None, b"\x00\xff", BYTES, alias=8), Metric(None, 1_767_225_600_000, DATETIME, alias=9),
               Metric(None, None, DOUBLE, alias=10)] * 3
    payloads = [encode(metrics, seq=7), encode([], seq=0)]
    odd = Payload()
    odd.ParseFromString(payloads[0])
    odd.metrics[4].int_value = 3  # a value in a field its data type does not name: that field's default
    odd.metrics[5].ClearField("datatype")  # no data type: whichever field is set
    payloads.append(odd.SerializeToString())
    payloads.append(payloads[0] + b"\x12\x03\xa2\x06\x00")  # a metric with an unknown field (100): read by the classes
    for data in payloads:
        got, want = decode(data), by_objects(data)
        assert (got.timestamp, got.seq, got.names, got.aliases, got.datatypes, got.timestamps) == \
            (want.timestamp, want.seq, want.names, want.aliases, want.datatypes, want.timestamps)
        assert [repr(v) for v in got.values] == [repr(v) for v in want.values]
    assert decode(payloads[0]).values[:4] == [-5, -70_000, -(2**62), 2**64 - 1]
    # Read together (as the connector reads what has queued up): the same, and a bad one fails alone.
    together = decode_many([payloads[0], b"\xff\xfe garbage", payloads[2], payloads[1]])
    assert isinstance(together[1], PayloadError)
    for got, data in zip([together[0], together[2], together[3]], [payloads[0], payloads[2], payloads[1]], strict=True):
        assert not isinstance(got, PayloadError)
        assert (got.names, got.aliases, [repr(v) for v in got.values]) == \
            (decode(data).names, decode(data).aliases, [repr(v) for v in decode(data).values])
    assert len(decode_many([payloads[3], payloads[0]])) == 2  # one the column reader leaves to the classes
    for bad in (b"\xff\xfe garbage", payloads[0][:-3], b"\x12\x05\x08\x01"):
        with pytest.raises(PayloadError):
            by_objects(bad)
        with pytest.raises(PayloadError):
            decode(bad)
