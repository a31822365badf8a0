"""OPC UA connector and control channel against a real asyncua server started in the test."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from asyncua import Server, ua, uamethod
from asyncua.server.history_sql import HistorySQLite

from linelab.act import actions as act
from linelab.act.commands import ApplyParams, act_apply
from linelab.commands import Context
from linelab.connect.opcua import OpcUaConnector, opcua_sources
from linelab.connect.opcua_commands import LiveParams, connect_opcua
from linelab.connect.opcua_control import OpcUaControl
from linelab.errors import UserError
from linelab.profile.schema import Profile
from linelab.store.workspace import Workspace

NS = 2  # the first namespace a server registers
TEMP, PRESSURE, SERIAL, TORQUE, SPEED = 1001, 1002, 1003, 1004, 1005
INITIAL = -1.0  # what a variable holds when the server starts: not a value the line wrote
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Plc:
    """A line controller: variables whose every write it logs to history in SQLite (which survives a
    restart, as a historian's would), and methods."""

    def __init__(self, port: int, history: Path) -> None:
        self.url = f"opc.tcp://127.0.0.1:{port}/"
        self.history = history
        self.server: Server | None = None
        self.calls: list[tuple[Any, ...]] = []
        # The server has its own event loop in its own thread, as a controller is its own machine.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _on_server(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wait_for(asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop)), 60)

    def close(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def start(self) -> None:
        await self._on_server(self._start())

    async def stop(self) -> None:
        await self._on_server(self._stop())

    async def write(self, node: int, value: Any, t: datetime) -> None:
        await self._on_server(self._write(node, value, t))

    async def _start(self) -> None:
        server = Server()
        server.iserver.history_manager.set_storage(HistorySQLite(str(self.history)))
        await server.init()
        server.set_endpoint(self.url)
        ns = await server.register_namespace("urn:linelab:test-plc")
        assert ns == NS
        line = await server.nodes.objects.add_object(ua.NodeId("Line", NS), "Line")
        variables = [await line.add_variable(ua.NodeId(i, NS), f"v{i}", INITIAL) for i in (TEMP, PRESSURE, TORQUE)]
        variables.append(await line.add_variable(ua.NodeId(SERIAL, NS), "serial", ""))
        speed = await line.add_variable(ua.NodeId(SPEED, NS), "speed", 1.0)
        await speed.set_writable()

        @uamethod
        def change_setpoint(parent: Any, name: str, value: float) -> str:
            self.calls.append((name, value))
            return f"{name}={value}"

        @uamethod
        async def slow(parent: Any) -> str:
            await asyncio.sleep(3)
            return "late"

        def refuse(parent: ua.NodeId, lot: ua.Variant) -> ua.StatusCode:  # the server says no
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)

        await line.add_method(ua.NodeId("ChangeSetpoint", NS), "ChangeSetpoint", change_setpoint,
                              [ua.VariantType.String, ua.VariantType.Double], [ua.VariantType.String])
        await line.add_method(ua.NodeId("Slow", NS), "Slow", slow, [], [ua.VariantType.String])
        await line.add_method(ua.NodeId("Refuse", NS), "Refuse", refuse, [ua.VariantType.String], [])
        await server.start()
        self.storage = server.iserver.history_manager.storage
        for v in variables:
            await self.storage.new_historized_node(v.nodeid, period=None)
        self.server = server

    async def _stop(self) -> None:
        assert self.server is not None
        server = self.server
        # A controller that restarts stops listening and drops every link at once. asyncua's stop
        # drops its links first and stops listening later, then waits for every link to close, so a
        # client reconnecting in between (as the connector does, within 0.1 s) kept it waiting forever.
        listening = server.bserver._server if server.bserver is not None else None
        if listening is not None:
            listening.close()
        await server.stop()
        self.server = None

    async def _write(self, node: int, value: Any, t: datetime) -> None:
        assert self.server is not None
        dv = ua.DataValue(ua.Variant(value), SourceTimestamp=t, ServerTimestamp=datetime.now(UTC))
        await self.server.write_attribute_value(ua.NodeId(node, NS), dv)
        await self.storage.save_node_value(ua.NodeId(node, NS), dv)

    def read(self, node: int) -> Any:
        assert self.server is not None
        return self.server.read_attribute_value(ua.NodeId(node, NS)).Value.Value


class Proxy:
    """A TCP link between the connector and the server that the test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.up = False

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]
        if not self.up:  # cut while this link was being made
            for w in (writer, up_writer):
                w.transport.abort()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def restore(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
        self.up = True

    async def cut(self) -> None:
        assert self.server is not None
        self.up = False
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()
        await asyncio.wait_for(self.server.wait_closed(), 5)

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"


@pytest.fixture(scope="module")
def plc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plc]:
    """One controller for the tests that do not restart it (a server takes seconds to start)."""
    shared = Plc(free_port(), tmp_path_factory.mktemp("plc") / "history.sqlite")
    asyncio.run(shared.start())
    yield shared
    shared.close()


def profile(url: str, extra_nodes: list[dict[str, str]] | None = None) -> Profile:
    return Profile.model_validate({
        "sources": [
            {"name": "oven", "table": "signals",
             "opcua": {"url": url, "publishing_ms": 50,
                       "nodes": [{"node": f"ns={NS};i={TEMP}", "name": "zone1_temp"},
                                 {"node": f"ns={NS};i={PRESSURE}", "name": "n2_pressure"}, *(extra_nodes or [])]}},
            {"name": "tester", "table": "measurements",
             "opcua": {"url": url, "publishing_ms": 50, "station": "ICT", "unit_node": f"ns={NS};i={SERIAL}",
                       "nodes": [{"node": f"ns={NS};i={TORQUE}", "name": "torque"}]}},
        ],
        "actions": [{"name": "change_setpoint", "params": [{"name": "name"}, {"name": "value", "type": "number"}]}],
        "control": {"channel": "opcua", "options": {
            "url": url, "object": f"ns={NS};s=Line", "timeout_s": 1.5,
            "method:change_setpoint": f"ns={NS};s=ChangeSetpoint", "method:slow": f"ns={NS};s=Slow",
            "method:refuse": f"ns={NS};s=Refuse", "write:set_speed": f"ns={NS};i={SPEED}"}},
    })


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


class Line:
    """Writes what a line would: signal values, and per unit its serial then its torque."""

    def __init__(self, plc: Plc) -> None:
        self.plc = plc
        self.t = self.started = datetime.now(UTC)
        self.signals: set[tuple[str, datetime, float]] = set()
        self.units: dict[str, float] = {}

    async def produce(self, n: int) -> None:
        for _ in range(n):
            k = len(self.units)
            self.t = max(self.t + timedelta(milliseconds=10), datetime.now(UTC))  # a clock that only goes on
            temp, pressure = 240.0 + k / 10, 3.0 + k / 100
            await self.plc.write(TEMP, temp, self.t)
            await self.plc.write(PRESSURE, pressure, self.t)
            self.signals |= {("zone1_temp", self.t, temp), ("n2_pressure", self.t, pressure)}
            serial = f"U{k:04d}"
            await self.plc.write(SERIAL, serial, self.t)
            self.t += timedelta(milliseconds=10)
            torque = 1.0 + k / 1000
            await self.plc.write(TORQUE, torque, self.t)
            self.units[serial] = torque
            await asyncio.sleep(0.02)  # the server's history samples each change


def naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


async def run_connector(ws: Workspace, p: Profile, body: Callable[[OpcUaConnector], Awaitable[None]]) -> Any:
    conn = OpcUaConnector(ws, opcua_sources(p), flush_s=0.1, retry_s=0.3, backoff_s=(0.1, 0.4), timeout_s=2.0)
    stop = asyncio.Event()
    task = asyncio.create_task(conn.run(stop))
    try:
        await body(conn)
    finally:
        stop.set()
        report = await asyncio.wait_for(task, 15)
    return report


def test_network_cut_and_server_restart_lose_nothing_and_store_nothing_twice(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        plc = Plc(port, tmp_path / "history.sqlite")
        await plc.start()
        proxy = Proxy(port)
        await proxy.restore()
        line = Line(plc)
        ws = Workspace.open(tmp_path / "ws")

        def connected(conn: OpcUaConnector) -> bool:
            return all(c.report.connected for c in conn.connectors)

        async def body(conn: OpcUaConnector) -> None:
            await until(lambda: connected(conn))
            await line.produce(10)
            await asyncio.sleep(0.3)
            await proxy.cut()  # the network goes; the server goes on, keeping history
            await until(lambda: not any(c.report.connected for c in conn.connectors))
            await line.produce(10)
            await proxy.restore()
            await until(lambda: connected(conn))
            await line.produce(10)
            await asyncio.sleep(0.3)
            await plc.stop()  # the server restarts
            await until(lambda: not any(c.report.connected for c in conn.connectors))
            await plc.start()
            await line.produce(10)  # perhaps before the connector is back: then only history has these
            await until(lambda: connected(conn))
            await line.produce(10)
            await asyncio.sleep(0.8)

        report = await run_connector(ws, profile(proxy.url), body)
        await plc.stop()
        await proxy.cut()
        for src in report.sources:
            assert src.connects == 3 and src.gaps == 2, src
        signals = ws.query(f"SELECT name, t, value FROM signals WHERE value <> {INITIAL}").to_pylist()
        stored = [(r["name"], r["t"], r["value"]) for r in signals]
        assert len(stored) == len(set(stored))  # nothing twice
        assert set(stored) == {(n, naive(t), v) for n, t, v in line.signals}  # nothing lost, nothing else
        rows = ws.query(f"SELECT unit_id, station, value FROM measurements WHERE value <> {INITIAL}").to_pylist()
        assert len(rows) == len(line.units) == 50
        assert {r["unit_id"]: r["value"] for r in rows} == line.units  # each torque with its own unit
        assert {r["station"] for r in rows} == {"ICT"}
        gaps = ws.query("SELECT target, t, detail FROM events WHERE kind = 'gap' ORDER BY target, t").to_pylist()
        assert [g["target"] for g in gaps] == ["oven", "oven", "tester", "tester"]
        cut = {g["target"]: json.loads(g["detail"]) for g in gaps[::2]}
        # What the line wrote during the cut came from the server's history: 10 units' values.
        assert cut["oven"]["backfilled"] >= 20 and cut["tester"]["backfilled"] >= 20
        for g in gaps:
            assert json.loads(g["detail"])["history"] == "ok"
        ws.close()

    asyncio.run(main())


def test_a_bad_node_is_reported_and_the_others_go_on(plc: Plc, tmp_path: Path) -> None:
    async def main() -> None:
        line = Line(plc)
        ws = Workspace.open(tmp_path / "ws")
        extra = [{"node": f"ns={NS};i=9999", "name": "ghost"}, {"node": "ns=2;q=what", "name": "typo"}]

        async def body(conn: OpcUaConnector) -> None:
            await until(lambda: all(c.report.connected for c in conn.connectors))
            await line.produce(10)
            await asyncio.sleep(0.5)

        report = await run_connector(ws, profile(plc.url, extra), body)
        oven = report.sources[0]
        assert set(oven.bad_nodes) == {f"ns={NS};i=9999", "ns=2;q=what"}
        assert "BadNodeIdUnknown" in oven.bad_nodes[f"ns={NS};i=9999"]
        assert "not a node id" in oven.bad_nodes["ns=2;q=what"]
        stored = {(r["name"], r["t"], r["value"]) for r in ws.query("SELECT name, t, value FROM signals").to_pylist()}
        written = {(n, naive(t), v) for n, t, v in line.signals}
        # Besides what it wrote: the values the variables held when subscribed to (from before).
        assert {x for x in stored if x[1] >= naive(line.started)} == written and len(written) == 20
        assert ws.scalar("SELECT count(DISTINCT target) FROM events WHERE kind = 'bad_node'") == 2
        ws.close()

    asyncio.run(main())


def test_actions_by_method_call_and_write_are_acknowledged_timed_out_or_failed(plc: Plc, tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    control = OpcUaControl.from_profile(profile(plc.url), ws)

    def send(kind: str, **params: Any) -> dict[str, Any]:
        return control.apply({"id": f"A-{kind}", "kind": kind, "params": params})

    plc.calls.clear()
    ok = send("change_setpoint", value=2.5, name="speed")
    assert ok["status"] == "acknowledged" and ok["applied"] is True and ok["output"] == "speed=2.5"
    assert plc.calls == [("speed", 2.5)]  # the parameters in the order the profile declares them
    wrote = send("set_speed", value=1.75)
    assert wrote["status"] == "acknowledged" and plc.read(SPEED) == 1.75
    late = send("slow")
    assert late["status"] == "timed_out" and late["applied"] is False
    refused = send("refuse", lot="L7")
    assert refused["status"] == "failed" and "BadUserAccessDenied" in refused["error"]
    unknown = send("reboot")
    assert unknown["status"] == "failed" and "method:reboot" in unknown["error"]
    down = OpcUaControl({**profile(plc.url).control.options, "url": f"opc.tcp://127.0.0.1:{free_port()}/"},
                        ws=ws).apply({"id": "A-down", "kind": "set_speed", "params": {"value": 3.0}})
    assert down["status"] in ("failed", "timed_out") and down["applied"] is False  # no server there
    # Every answer is recorded in the workspace with what was sent.
    recorded = {a["action"]["kind"]: a for a in ws.list_artifacts("opcua_action")}
    assert {k: a["status"] for k, a in recorded.items()} == {
        "change_setpoint": "acknowledged", "set_speed": down["status"], "slow": "timed_out", "refuse": "failed",
        "reboot": "failed"}
    assert recorded["change_setpoint"]["action"]["params"] == {"value": 2.5, "name": "speed"}
    assert recorded["change_setpoint"]["answered"]
    ws.close()


def test_opcua_sources_are_checked() -> None:
    p = Profile.model_validate({"sources": [
        {"name": "t", "table": "measurements", "opcua": {"url": "opc.tcp://x:4840", "nodes": []}}]})
    with pytest.raises(UserError, match="unit_node"):
        opcua_sources(p)
    with pytest.raises(UserError, match="no OPC UA source named nope"):
        opcua_sources(p, ["nope"])
    assert p.sources[0].files == [] and not p.sources[0].matches("anything.csv")


def test_act_apply_sends_an_approved_action_over_the_profiles_opcua_channel(plc: Plc, tmp_path: Path) -> None:
    ws_dir = tmp_path / "ws"
    (ws_dir).mkdir()
    (ws_dir / "profile.yaml").write_text(yaml.safe_dump(profile(plc.url).model_dump(mode="json")))
    with Workspace.open(ws_dir) as ws:
        a = act.propose(ws, "change_setpoint", {"name": "speed", "value": 2.5})
        act.approve(ws, a["id"])
    plc.calls.clear()
    ctx = Context(workspace_path=ws_dir, show_progress=False)
    try:
        action = act_apply(ApplyParams(id=a["id"]), ctx).model_dump()["action"]  # blocks until the line answers
    finally:
        ctx.close()
    assert plc.calls == [("speed", 2.5)]
    assert action["status"] == "applied" and action["applied"]["via"] == "opcua"
    assert action["applied"]["status"] == "acknowledged"
    with Workspace.open(ws_dir) as ws:
        assert [x["status"] for x in ws.list_artifacts("opcua_action")] == ["acknowledged"]


def test_connect_opcua_command_runs_for_the_seconds_given(plc: Plc, tmp_path: Path) -> None:
    ws_dir = tmp_path / "ws"
    ws_dir.mkdir()
    (ws_dir / "profile.yaml").write_text(yaml.safe_dump(profile(plc.url).model_dump(mode="json")))
    ctx = Context(workspace_path=ws_dir, show_progress=False)
    try:
        result = connect_opcua(LiveParams(seconds=1.5, sources=["oven"]), ctx)
    finally:
        ctx.close()
    assert [s["source"] for s in result.sources] == ["oven"] and result.sources[0]["connects"] == 1
    with Workspace.open(ws_dir) as ws:  # the values the variables held when subscribed to
        assert ws.scalar("SELECT count(DISTINCT name) FROM signals") == 2 == result.totals["stored"]
