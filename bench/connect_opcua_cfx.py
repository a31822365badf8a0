"""OPC UA and IPC-CFX connectors, end to end: records per second from publish to stored.

    python bench/connect_opcua_cfx.py [--quick] [--only cfx|opcua]

cfx (RabbitMQ at $LINELAB_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/): an SMT line's
CFX messages (per unit and station WorkStarted, UnitsProcessed with two measurements,
WorkCompleted; materials at placement) are published with publisher confirms to a topic
exchange, once to a queue read by a plain aio-pika consumer (JSON-decoding and acknowledging each
message: the baseline), once to the connector's durable queue (map, store in a DuckDB workspace,
acknowledge once stored). Rates run from the first publish to the last message consumed
(baseline) or the last record stored (connector); records are those the messages carry.

opcua (an asyncua server started here, in its own process): a controller writes signal values
to variables at full speed, with source timestamps; subscribed to by a plain asyncua client
counting its notifications (the baseline), and by the connector (map, store). Rates run from the
first write to the last value received (baseline) or stored (connector).

The ratio of each is connector / baseline. Counts of lost and duplicated records are reported.
The last line printed is one JSON line with every section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

from linelab.connect.cfx import INSTALLED, UNITS_PROCESSED, WORK_COMPLETED, WORK_STARTED, envelope
from linelab.connect.cfx_amqp import CfxConnector, amqp_url
from linelab.connect.opcua import OpcUaConnector, opcua_sources
from linelab.profile.schema import Profile
from linelab.store.workspace import Workspace

STATIONS = {"PRINT": "L1.Printer1", "PLACE": "L1.Placer1", "TEST": "L1.Tester1"}
TABLES = ("units", "steps", "measurements", "materials", "signals")


# -- cfx ---------------------------------------------------------------------------------------
def cfx_messages(units: int) -> tuple[list[bytes], int]:
    """The line's messages and the number of records they carry."""
    t = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    out: list[bytes] = []
    records = 0
    for k in range(units):
        unit = [{"UnitIdentifier": f"PCB{k:06d}", "PositionNumber": 1}]
        records += 1  # the unit
        for station, handle in STATIONS.items():
            tid = str(uuid.uuid4())
            t += timedelta(milliseconds=5)
            out.append(envelope(WORK_STARTED, {"TransactionID": tid, "Units": unit}, handle, t))
            if station == "PLACE":
                out.append(envelope(INSTALLED[0], {"TransactionId": tid, "InstalledMaterials": [{
                    "UnitIdentifier": unit[0]["UnitIdentifier"],
                    "Material": {"InternalPartNumber": "C0402", "BatchId": f"LOT{k // 100}"}}]}, handle, t))
                records += 1
            readings = [{"MeasurementName": "offset_x", "MeasuredValue": {"Value": (k % 17) / 100}},
                        {"MeasurementName": "volume", "ActualValue": 100 + k % 9}]
            out.append(envelope(UNITS_PROCESSED, {"TransactionId": tid, "UnitProcessData": [{
                "UnitIdentifier": unit[0]["UnitIdentifier"], "UnitResult": "Succeeded",
                "UnitProcessData": {"Readings": readings}}]}, handle, t))
            out.append(envelope(WORK_COMPLETED, {"TransactionID": tid, "Result": "Completed", "Units": unit},
                                handle, t + timedelta(milliseconds=3)))
            records += 3  # two measurements and the step
    return out, records


async def publish(url: str, exchange: str, messages: list[bytes]) -> float:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        started = time.perf_counter()
        for i in range(0, len(messages), 500):  # confirms awaited per window, as a fast endpoint would
            await asyncio.gather(*(ex.publish(aio_pika.Message(m, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                              routing_key="cfx.L1") for m in messages[i:i + 500]))
        return started
    finally:
        await connection.close()


async def plain_consumer(url: str, exchange: str, n: int) -> float:
    """Baseline: a queue read by aio-pika, each message JSON-decoded and acknowledged."""
    connection = await aio_pika.connect(url)
    queue_name = f"bench.plain.{uuid.uuid4().hex[:8]}"
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=5000)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(ex, "#")
        got = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            json.loads(message.body)
            await message.ack()
            got += 1
            if got >= n:
                done.set()

        tag = await queue.consume(on_message)
        started = await publish(url, exchange, MESSAGES)
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return elapsed
    finally:
        await connection.close()


MESSAGES: list[bytes] = []


async def linelab_cfx(url: str, exchange: str, records: int, folder: Path) -> tuple[float, dict[str, int]]:
    queue = f"bench.linelab.{uuid.uuid4().hex[:8]}"
    profile = Profile.model_validate({
        "line": {"name": "L1", "stations": [{"name": s} for s in STATIONS]},
        "sources": [{"name": "smt", "table": "steps", "constants": {"product": "BOARD"},
                     "cfx": {"url": url, "exchange": exchange, "queue": queue,
                             "stations": {h: s for s, h in STATIONS.items()}}}]})
    ws = Workspace.open(folder / "cfx")
    connector = CfxConnector(ws, profile, profile.sources, flush_s=0.1, batch=5000)
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop))
    await asyncio.wait_for(connector.connected.wait(), 30)
    started = await publish(url, exchange, MESSAGES)
    while True:
        async with connector.lock:
            stored = connector.buffer.totals.stored
        if stored >= records or time.perf_counter() - started > 300:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    counts = {t: ws.count(t) for t in TABLES}
    ws.close()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return elapsed, counts


def bench_cfx(units: int, folder: Path) -> dict[str, Any]:
    url = amqp_url()
    messages, records = cfx_messages(units)
    MESSAGES[:] = messages
    exchange = f"bench.cfx.{uuid.uuid4().hex[:8]}"
    base_s = asyncio.run(plain_consumer(url, exchange, len(messages)))
    ll_s, counts = asyncio.run(linelab_cfx(url, exchange, records, folder))
    stored = sum(counts.values())
    return {"messages": len(messages), "records": records,
            "baseline_records_per_s": round(records / base_s), "baseline_messages_per_s": round(len(messages) / base_s),
            "linelab_records_per_s": round(records / ll_s), "linelab_messages_per_s": round(len(messages) / ll_s),
            "ratio": round(base_s / ll_s, 3), "lost": max(0, records - stored), "duplicated": max(0, stored - records),
            "stored": counts}


# -- opcua -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plc_process(port: int, variables: int, writes: int, ready: Any, go: Any, done: Any) -> None:
    """A controller in its own process: waits for `go`, then writes `writes` values to each variable."""
    from asyncua import Server, ua

    async def main() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
        ns = await server.register_namespace("urn:bench")
        obj = await server.nodes.objects.add_object(ua.NodeId("Line", ns), "Line")
        ids = [ua.NodeId(1000 + i, ns) for i in range(variables)]
        for i, nid in enumerate(ids):
            await obj.add_variable(nid, f"v{i}", -1.0)
        await server.start()
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.01)
        t = datetime.now(UTC)
        for k in range(writes):
            t = max(t + timedelta(microseconds=10), datetime.now(UTC))
            for nid in ids:
                await server.write_attribute_value(nid, ua.DataValue(ua.Variant(float(k)), SourceTimestamp=t))
            if k % 20 == 0:
                await asyncio.sleep(0)  # let the server publish
        while not done.is_set():
            await asyncio.sleep(0.05)
        await server.stop()

    asyncio.run(main())


def opcua_profile(port: int, variables: int) -> Profile:
    return Profile.model_validate({"sources": [{"name": "plc", "table": "signals", "opcua": {
        "url": f"opc.tcp://127.0.0.1:{port}/", "publishing_ms": 50, "history": False,
        "nodes": [{"node": f"ns=2;i={1000 + i}", "name": f"v{i}"} for i in range(variables)]}}]})


async def plain_subscriber(url: str, nodes: list[str], n: int, go: Any) -> float:
    from asyncua import Client

    class Handler:
        got = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if val >= 0:
                Handler.got += 1

    client = Client(url)
    await client.connect()
    try:
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change([client.get_node(x) for x in nodes], sampling_interval=0.0, queuesize=100000)
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        go.set()
        while Handler.got < n and time.perf_counter() - started < 300:
            await asyncio.sleep(0.005)
        return time.perf_counter() - started
    finally:
        await client.disconnect()


async def linelab_subscriber(profile: Profile, n: int, go: Any, folder: Path) -> tuple[float, int]:
    ws = Workspace.open(folder / "opcua")
    connector = OpcUaConnector(ws, opcua_sources(profile), flush_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(connector.run(stop))
    while not connector.connectors[0].report.connected:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    go.set()
    while time.perf_counter() - started < 300:
        if connector.buffer.totals.stored >= n:
            break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    stored = int(ws.scalar("SELECT count(*) FROM signals WHERE value >= 0"))
    ws.close()
    return elapsed, stored


def run_plc(variables: int, writes: int, consumer: Any) -> Any:
    ctx = mp.get_context("spawn")
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    port = free_port()
    proc = ctx.Process(target=plc_process, args=(port, variables, writes, ready, go, done), daemon=True)
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the OPC UA server did not start")
        return consumer(port, go)
    finally:
        done.set()
        proc.join(10)


def bench_opcua(variables: int, writes: int, folder: Path) -> dict[str, Any]:
    n = variables * writes
    profile = opcua_profile(0, variables)
    nodes = [x.node for x in profile.sources[0].opcua.nodes] if profile.sources[0].opcua else []
    base_s = run_plc(variables, writes, lambda port, go: asyncio.run(
        plain_subscriber(f"opc.tcp://127.0.0.1:{port}/", nodes, n, go)))
    ll_s, stored = run_plc(variables, writes, lambda port, go: asyncio.run(
        linelab_subscriber(opcua_profile(port, variables), n, go, folder)))
    return {"variables": variables, "values": n, "baseline_records_per_s": round(n / base_s),
            "linelab_records_per_s": round(n / ll_s), "ratio": round(base_s / ll_s, 3),
            "lost": max(0, n - stored), "duplicated": max(0, stored - n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (seconds)")
    ap.add_argument("--only", choices=["cfx", "opcua"], help="one section only")
    args = ap.parse_args()
    out: dict[str, Any] = {"bench": "connect_opcua_cfx", "quick": args.quick, "cpus": os.cpu_count(),
                           "load_avg": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.only in (None, "cfx"):
            try:
                out["cfx"] = bench_cfx(300 if args.quick else 5000, folder)
            except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:  # no broker: say so, go on
                out["cfx"] = {"error": f"RabbitMQ not reachable at {amqp_url()}: {exc!r}"}
            print(json.dumps({"cfx": out["cfx"]}), file=sys.stderr)
        if args.only in (None, "opcua"):
            out["opcua"] = bench_opcua(10, 200 if args.quick else 2000, folder)
            print(json.dumps({"opcua": out["opcua"]}), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
