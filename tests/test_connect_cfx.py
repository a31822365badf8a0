"""IPC-CFX connector against the real RabbitMQ (LINELAB_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import yaml

from linelab.connect.cfx import (
    FAULT,
    FAULT_CLEARED,
    INSTALLED,
    READINGS,
    UNITS_PROCESSED,
    WORK_COMPLETED,
    WORK_STARTED,
    BadMessage,
    CfxMapper,
    envelope,
    read_envelope,
)
from linelab.connect.cfx_amqp import CfxConnector, amqp_url, declare
from linelab.profile.schema import Profile
from linelab.store.workspace import Workspace

STATIONS = ["PRINT", "PLACE", "TEST"]


def broker_or_skip() -> str:
    url = amqp_url()

    async def probe() -> None:
        connection = await asyncio.wait_for(aio_pika.connect(url), 5)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ is not reachable at {url} ({exc!r}); CI needs it")
        pytest.skip(f"RabbitMQ is not reachable at {url} ({exc!r}); set LINELAB_AMQP_URL or start rabbitmq-server")
    return url


def profile_dict(exchange: str, queue: str) -> dict[str, Any]:
    return {"line": {"name": "L1", "stations": [{"name": s} for s in STATIONS]},
            "sources": [{"name": "smt", "table": "steps", "constants": {"product": "BOARD-A"},
                         "cfx": {"exchange": exchange, "queue": queue, "routing_key": "#",
                                 "stations": {"*.Printer*": "PRINT", "*.Placer*": "PLACE", "*.Tester*": "TEST"}}}]}


HANDLES = {"PRINT": "L1.Printer1", "PLACE": "L1.Placer1", "TEST": "L1.Tester1"}


class Line:
    """CFX messages of an SMT line: every unit through print, place and test; some readings and faults."""

    def __init__(self, units: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.t = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        self.messages: list[bytes] = []
        self.expected = {"units": 0, "steps": 0, "measurements": 0, "materials": 0, "events": 0, "signals": 0}
        self.failed: set[str] = set()
        for k in range(units):
            self.unit(f"PCB{k:05d}")
            if k % 10 == 3:
                self.fault(k)
            if k % 7 == 0:
                self.send("CFX.ResourcePerformance.StationStateChanged", "PLACE", {"NewState": 1100})

    def tick(self) -> datetime:
        self.t += timedelta(milliseconds=self.rng.randint(50, 400))
        return self.t

    def send(self, name: str, station: str, body: dict[str, Any]) -> None:
        self.messages.append(envelope(name, body, HANDLES[station], self.tick()))

    def unit(self, unit: str) -> None:
        self.expected["units"] += 1
        for station in STATIONS:
            tid = str(uuid.uuid4())
            units = [{"UnitIdentifier": unit, "PositionNumber": 1}]
            self.send(WORK_STARTED, station, {"TransactionID": tid, "Units": units, "RecipeName": "R1"})
            if station == "PLACE":
                self.send(INSTALLED[0], station, {"TransactionId": tid, "InstalledMaterials": [{
                    "UnitIdentifier": unit, "QuantityInstalled": 1,
                    "Material": {"UniqueIdentifier": f"REEL-{self.rng.randint(1, 4)}", "InternalPartNumber": "C0402",
                                 "BatchId": f"LOT{self.rng.randint(1, 3)}"}}]})
                self.expected["materials"] += 1
            passed = self.rng.random() > 0.05
            if not passed:
                self.failed.add(unit)
            measures = [{"MeasurementName": "offset_x", "MeasuredValue": {"Value": self.rng.gauss(0, 0.02)}},
                        {"MeasurementName": "volume", "ActualValue": self.rng.gauss(100, 5)}]
            self.send(UNITS_PROCESSED, station, {"TransactionId": tid, "OverallResult": "Succeeded",
                                                 "UnitProcessData": [{
                                                     "UnitIdentifier": unit, "UnitPositionNumber": 1,
                                                     "UnitResult": "Succeeded" if passed else "Failed",
                                                     "UnitProcessData": {"$type": "CFX.Structures.Generic",
                                                                         "Readings": measures}}]})
            self.expected["measurements"] += 2
            self.send(WORK_COMPLETED, station, {"TransactionID": tid, "Result": "Completed", "Units": units})
            self.expected["steps"] += 1
            if not passed:
                break  # a failed unit leaves the line
        if self.rng.random() < 0.3:
            self.send(READINGS, "PRINT", {"Readings": [{"ReadingIdentifier": "humidity",
                                                        "Value": str(round(self.rng.uniform(30, 50), 2)),
                                                        "TimeRecorded": self.tick().isoformat()}]})
            self.expected["signals"] += 1

    def fault(self, k: int) -> None:
        occurrence = str(uuid.uuid4())
        self.send(FAULT, "PLACE", {"Fault": {"FaultCode": f"NOZZLE-{k}", "FaultOccurrenceId": occurrence,
                                             "Severity": "Error", "Cause": "MechanicalFailure",
                                             "OccurredAt": self.tick().isoformat()}})
        self.send(FAULT_CLEARED, "PLACE", {"FaultOccurrenceId": occurrence})
        self.expected["events"] += 2

    def delivered(self, garbage_share: float = 0.01) -> tuple[list[bytes], int]:
        """The stream as the broker sees it: some messages twice, out of order, ~1 % garbage."""
        out: list[bytes] = []
        for m in self.messages:
            out.append(m)
            if self.rng.random() < 0.1:
                out.append(m)  # delivered twice
        for i in range(0, len(out) - 6, 6):  # out of order within windows
            window = out[i:i + 6]
            self.rng.shuffle(window)
            out[i:i + 6] = window
        garbage = list(bad_messages(self.rng, max(3, int(len(out) * garbage_share))))
        for g in garbage:
            out.insert(self.rng.randrange(len(out)), g)
        return out, len(set(garbage))


def bad_messages(rng: random.Random, n: int) -> Iterator[bytes]:
    kinds = [
        lambda i: bytes(rng.getrandbits(8) for _ in range(40)),
        lambda i: b'{"MessageName": "CFX.Production.WorkStarted", "Version": ' + str(i).encode(),
        lambda i: json.dumps({"MessageName": WORK_STARTED, "Version": "2.0", "UniqueID": f"x{i}",
                              "Source": "L1.Printer1", "MessageBody": {}}).encode(),  # no TimeStamp
        lambda i: envelope(READINGS, {"Readings": [{"ReadingIdentifier": "humidity", "Value": f"wet{i}"}]},
                           "L1.Printer1"),
        lambda i: envelope(WORK_STARTED, {"TransactionID": f"t{i}", "Units": [{"PositionNumber": 1}]},
                           "L1.Printer1"),
    ]
    for i in range(n):
        yield kinds[i % len(kinds)](i)


async def publish(url: str, exchange: str, messages: list[bytes], delay_every: int = 0) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for i, body in enumerate(messages):
            await ex.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                             routing_key="cfx.L1")
            if delay_every and i % delay_every == 0:
                await asyncio.sleep(0.01)
    finally:
        await connection.close()


async def queue_state(url: str, queue: str) -> tuple[int, int]:
    """(consumers, messages ready to be delivered) of a queue."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True, passive=True)
        return int(q.declaration_result.consumer_count or 0), int(q.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def declare_queue(channel: aio_pika.abc.AbstractChannel, profile: Profile) -> None:
    cfg = profile.sources[0].cfx
    assert cfg is not None
    await declare(channel, cfg)


async def remove(url: str, exchange: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def counts(ws: Workspace) -> dict[str, int]:
    return {t: ws.count(t) for t in ("units", "steps", "measurements", "materials", "events", "signals")}


def test_killed_connector_loses_nothing_stores_once_and_quarantines_garbage(tmp_path: Path) -> None:
    url = broker_or_skip()
    tag = uuid.uuid4().hex[:8]
    exchange, queue = f"linelab.test.cfx.{tag}", f"linelab.test.{tag}"
    profile_file = tmp_path / "profile.yaml"
    profile_file.write_text(yaml.safe_dump(profile_dict(exchange, queue)))
    line = Line(units=120)
    stream, n_bad = line.delivered()
    half = len(stream) // 2
    ws_dir = tmp_path / "ws"
    Workspace.open(ws_dir).close()
    linelab = str(Path(sys.executable).parent / "linelab")
    env = {**os.environ, "LINELAB_AMQP_URL": url}
    first = subprocess.Popen([linelab, "connect", "cfx", "-w", str(ws_dir), "--profile", str(profile_file),
                              "--seconds", "60", "--flush-seconds", "0.1"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def scenario() -> None:
        try:
            for _ in range(300):  # the first connector has declared its queue and consumes
                if first.poll() is not None:
                    raise AssertionError(first.stderr.read().decode() if first.stderr else "connector died")
                try:
                    if (await queue_state(url, queue))[0]:
                        break
                except aio_pika.exceptions.ChannelClosed:
                    pass
                await asyncio.sleep(0.05)
            await publish(url, exchange, stream[:half], delay_every=20)
            while (await queue_state(url, queue))[1]:  # delivered to the connector (not all acknowledged)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            first.send_signal(signal.SIGKILL)  # mid-stream: some stored, some held or in its buffer
            first.wait()
            ws = Workspace.open(ws_dir)
            assert 0 < sum(counts(ws).values()) < sum(line.expected.values())
            ws.close()
            await publish(url, exchange, stream[half:])  # while LineLab is down: the durable queue keeps these
            ws = Workspace.open(ws_dir)
            connector = CfxConnector(ws, Profile.model_validate(profile_dict(exchange, queue)),
                                     [Profile.model_validate(profile_dict(exchange, queue)).sources[0]], flush_s=0.1,
                                     open_timeout_s=1.0)
            stop = asyncio.Event()
            task = asyncio.create_task(connector.run(stop))
            deadline = asyncio.get_running_loop().time() + 20
            while asyncio.get_running_loop().time() < deadline:
                async with connector.lock:  # the workspace is the connector's while it stores
                    if counts(ws) == line.expected:
                        break
                await asyncio.sleep(0.2)
            # Anything delivered twice lands by now; a transaction opened by a message whose transaction
            # the killed connector stored already is let go.
            await asyncio.sleep(1.5)
            stop.set()
            reports = await asyncio.wait_for(task, 10)
            assert counts(ws) == line.expected  # every good record exactly once
            assert reports[0].open == 0
            quarantined = ws.query("SELECT field, reason, raw FROM quarantine WHERE source = 'cfx'").to_pylist()
            assert len(quarantined) == n_bad, quarantined  # every bad message once, with why
            reasons = " | ".join(q["reason"] for q in quarantined)
            assert "not JSON" in reasons and "not a number" in reasons and "missing from the CFX envelope" in reasons
            assert {"payload", "TimeStamp", "MessageBody.Units[0].UnitIdentifier"} <= {q["field"] for q in quarantined}
            failed = {r["unit_id"] for r in ws.query("SELECT unit_id FROM steps WHERE result = 'fail'").to_pylist()}
            assert failed == line.failed
            stations = ws.query("SELECT station, count(*) AS n FROM steps GROUP BY station").to_pylist()
            assert {r["station"] for r in stations} == set(STATIONS)
            ws.close()
        finally:
            if first.poll() is None:
                first.kill()
            await remove(url, exchange, queue)

    asyncio.run(scenario())


def test_a_connector_dying_while_acknowledging_leaves_the_whole_transaction_to_be_delivered_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction's messages are acknowledged together or not at all: a part delivered again alone (its
    start and end without its unit's result) would make a step at odds with the one stored."""
    url = broker_or_skip()
    tag = uuid.uuid4().hex[:8]
    exchange, queue = f"linelab.test.cfx.{tag}", f"linelab.test.{tag}"
    profile = Profile.model_validate(profile_dict(exchange, queue))
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    units = [{"UnitIdentifier": "PCB1", "PositionNumber": 1}]
    readings = [{"MeasurementName": "volume", "ActualValue": 91.0}]
    messages = [
        envelope(WORK_STARTED, {"TransactionID": "T1", "Units": units, "RecipeName": "R1"}, HANDLES["TEST"], t0),
        envelope(UNITS_PROCESSED, {"TransactionId": "T1", "UnitProcessData": [{
            "UnitIdentifier": "PCB1", "UnitResult": "Failed", "UnitProcessData": {"Readings": readings}}]},
            HANDLES["TEST"], t0 + timedelta(seconds=4)),
        envelope(WORK_COMPLETED, {"TransactionID": "T1", "Result": "Completed", "Units": units},
                 HANDLES["TEST"], t0 + timedelta(seconds=5)),
    ]
    real_ack = aio_pika.IncomingMessage.ack
    calls = 0

    async def dying_ack(self: aio_pika.IncomingMessage, multiple: bool = False) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the connection drops after the first acknowledgement went out
            raise ConnectionResetError("connection lost")
        await real_ack(self, multiple)

    async def connect_once(ws: Workspace) -> None:
        connector = CfxConnector(ws, profile, [profile.sources[0]], flush_s=0.1, open_timeout_s=1.0)
        stop = asyncio.Event()
        task = asyncio.create_task(connector.run(stop))
        await asyncio.wait_for(connector.connected.wait(), 10)
        for _ in range(100):
            await asyncio.sleep(0.1)
            async with connector.lock:  # the workspace is the connector's while it stores
                stored = ws.count("steps")
            if stored and not (await queue_state(url, queue))[1]:
                break
        await asyncio.sleep(1.5)  # past the open timeout: anything delivered alone is let go
        stop.set()
        await asyncio.wait_for(task, 10)

    async def scenario() -> None:
        ws = Workspace.open(tmp_path / "ws")
        try:
            connection = await aio_pika.connect(url)
            channel = await connection.channel()
            await declare_queue(channel, profile)
            await connection.close()
            await publish(url, exchange, messages)
            monkeypatch.setattr(aio_pika.IncomingMessage, "ack", dying_ack)
            await connect_once(ws)
            monkeypatch.setattr(aio_pika.IncomingMessage, "ack", real_ack)
            assert calls >= 2
            assert (await queue_state(url, queue))[1] == 3  # none acknowledged: all three wait in the queue
            stored = counts(ws)
            await connect_once(ws)  # they come again: nothing new is stored, nothing is quarantined
            assert counts(ws) == stored and stored["steps"] == 1
            assert ws.query("SELECT result FROM steps").to_pylist() == [{"result": "fail"}]
            assert ws.count("quarantine") == 0
            assert (await queue_state(url, queue))[1] == 0
        finally:
            ws.close()
            await remove(url, exchange, queue)

    asyncio.run(scenario())


def test_messages_map_onto_records_and_bad_ones_name_their_field() -> None:
    p = Profile.model_validate(profile_dict("x", "y"))
    mapper = CfxMapper(p.sources[0], p)
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    units = [{"UnitIdentifier": "U1", "PositionNumber": 1}]
    done = read_envelope(envelope(WORK_COMPLETED, {"TransactionID": "T1", "Result": "Failed", "Units": units},
                                  "L1.Printer1", t0 + timedelta(seconds=5)))
    rows, key, complete = mapper.rows(done)  # before its start: held
    assert rows == [] and key == ("L1.Printer1", "T1") and not complete
    start = read_envelope(envelope(WORK_STARTED, {"TransactionID": "T1", "Units": units}, "L1.Printer1", t0))
    rows, key, complete = mapper.rows(start)
    assert complete and key is not None and not mapper.has_results(key)
    tables = {t: r for t, r in rows + mapper.finish(key)}
    naive = t0.replace(tzinfo=None)
    assert tables["steps"] == {"unit_id": "U1", "station": "PRINT", "machine": "L1.Printer1", "recipe_id": None,
                               "t_in": naive, "t_out": naive + timedelta(seconds=5), "result": "fail"}
    assert tables["units"]["product"] == "BOARD-A" and tables["units"]["line"] == "L1"
    assert tables["units"]["result"] == "fail"
    again, key, _ = mapper.rows(done)  # delivered again after it was stored: stands alone
    assert again == [] and key is None
    with pytest.raises(BadMessage) as bad:
        read_envelope(b'{"MessageName": "CFX.Production.WorkStarted"}')
    assert bad.value.field == "Version"
    with pytest.raises(BadMessage, match="not an ISO 8601 time"):
        read_envelope(envelope(WORK_STARTED, {}, "L1.Printer1").replace(b'"TimeStamp": "', b'"TimeStamp": "x'))
    placed = read_envelope(envelope(READINGS, {"Readings": [{"ReadingIdentifier": "temp", "Value": "21.5",
                                                             "UnitIdentifier": "U1"}]}, "L1.Tester1", t0))
    assert mapper.rows(placed)[0] == [("measurements", {"unit_id": "U1", "station": "TEST", "name": "temp",
                                                        "value": 21.5, "t": t0.replace(tzinfo=None)})]
