"""The twin as a live line: its production streamed as Sparkplug B, its actions taken back over MQTT.

`linelab twin publish --mqtt` runs the simulated line as an edge node (group `linelab`, node the
line's name): one device per table (units, steps, measurements, params, materials, events), each
DDATA message carrying the records of a few units (a metric per column, repeated per record),
paced in line time (`--speed 1` is real time, `--speed 60` a minute a second, none: as fast as
it goes). Actions arrive as NCMD `Action` metrics (see connect/mqtt_control.py) and are applied
to the line between messages; the answer goes back on NDATA as `Action/Ack`.

`--profile-out` writes the profile a workspace needs to connect to it (`linelab connect mqtt`): the
twin's own, with an MQTT source per table and the control channel set to mqtt.
"""

from __future__ import annotations

import json
import queue
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.connect.mqtt_control import ACK_METRIC, ACTION_METRIC
from linelab.connect.sparkplug.edge import EdgeNode
from linelab.connect.sparkplug.payload import BOOLEAN, DATETIME, DOUBLE, INT64, STRING, Metric, Topic
from linelab.errors import UserError
from linelab.profile import Profile, save_profile
from linelab.profile.schema import Control, MqttTopic, Source, TableName
from linelab.store.schema import RECORD_TABLES
from linelab.twin.simulator import TwinLine

TABLES: tuple[TableName, ...] = ("units", "steps", "measurements", "params", "materials", "events")


def datatype(t: pa.DataType) -> int:
    if pa.types.is_timestamp(t):
        return DATETIME
    if pa.types.is_floating(t):
        return DOUBLE
    if pa.types.is_integer(t):
        return INT64
    if pa.types.is_boolean(t):
        return BOOLEAN
    return STRING


def live_profile(profile: Profile, group: str, node: str, url: str | None = None) -> Profile:
    """The line's profile with an MQTT source per table and actions over MQTT."""
    sources = [Source(name=f"live_{t}", table=t,
                      mqtt=MqttTopic(topic=str(Topic(group, "DDATA", node, t)), broker=url)) for t in TABLES]
    options: dict[str, str | int | float | bool] = {"group": group, "node": node, "timeout_s": 10}
    if url:
        options["url"] = url
    return profile.model_copy(update={"sources": sources, "control": Control(channel="mqtt", options=options)})


class TwinPublisher:
    """Streams a TwinLine's production through an edge node and applies the actions it is sent."""

    def __init__(self, line: TwinLine, group: str = "linelab", node: str | None = None, url: str | None = None,
                 units_per_message: int = 20) -> None:
        self.line = line
        self.node = EdgeNode(group, node or line.profile.line.name, url, bdseq=int(time.time()),
                             on_command=self._on_command)
        self.units_per_message = units_per_message
        self.actions: queue.Queue[dict[str, Any]] = queue.Queue()
        self.applied: list[dict[str, Any]] = []
        self.sent = {t: 0 for t in TABLES}
        self.messages = 0

    def _on_command(self, topic: Topic, metrics: list[Metric]) -> None:
        for m in metrics:
            if m.name == ACTION_METRIC and isinstance(m.value, str):
                try:
                    self.actions.put(json.loads(m.value))
                except json.JSONDecodeError:
                    continue

    def start(self) -> None:
        self.node.define(None, {ACK_METRIC: STRING})
        for name in TABLES:
            self.node.define(name, {f.name: datatype(f.type) for f in RECORD_TABLES[name]})
        self.node.connect()

    def _send(self, tables: dict[str, pa.Table]) -> None:
        for name in TABLES:
            t = tables.get(name)
            if t is None or not t.num_rows:
                continue
            t = t.select([c for c in t.column_names if c in self.node.devices[name]])
            sort = "t_in" if "t_in" in t.column_names else "t" if "t" in t.column_names else None
            if sort:
                t = t.take(pc.sort_indices(t, [(sort, "ascending")]))
            for batch in t.combine_chunks().to_batches(max_chunksize=2000):  # each message well under the broker limit
                self.node.data(name, batch.to_pylist())
                self.messages += 1
            self.sent[name] += t.num_rows

    def apply_pending(self) -> None:
        while True:
            try:
                action = self.actions.get_nowait()
            except queue.Empty:
                return
            ack: dict[str, Any] = {"id": action.get("id")}
            try:
                done = self.line.apply({"kind": action["kind"], **dict(action.get("params") or {})})
                ack.update(status="done", t=done.get("t"), unit=done.get("unit"), fixed=done.get("fixed", []))
            except (ValueError, KeyError, TypeError) as exc:
                ack.update(status="failed", error=str(exc))
            self.node.data(None, [{ACK_METRIC: json.dumps(ack, default=str)}], named=True)
            self.applied.append(ack)

    def run(self, units: int, speed: float | None = None, linger: float = 0.0) -> None:
        """Publish `units` units (paced at `speed` x line time), then keep taking actions for `linger` s."""
        self.start()
        t0_wall = time.monotonic()
        t0_line: datetime | None = None
        while self.line.units_produced < units:
            self.apply_pending()
            chunk = self.line.produce(min(self.units_per_message, units - self.line.units_produced))
            if speed:
                t0_line = t0_line or chunk.t_first
                due = (chunk.t_last - t0_line).total_seconds() / speed
                wait = due - (time.monotonic() - t0_wall)
                if wait > 0:
                    time.sleep(wait)
            self._send(chunk.tables)
        end = time.monotonic() + linger
        while time.monotonic() < end:
            self.apply_pending()
            time.sleep(0.05)
        self.apply_pending()

    def close(self) -> None:
        self.node.close()


class PublishParams(BaseModel):
    mqtt: bool = Field(False, description="publish over MQTT as a Sparkplug B edge node")
    scenario: str = Field("default", description="built-in scenario name or a scenario YAML file",
                          json_schema_extra={"path": "name"})
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    units: int = Field(1000, gt=0, description="units to produce")
    speed: float | None = Field(None, gt=0, description="line time per wall-clock time (1: real time); "
                                                       "default: as fast as possible")
    broker: str | None = Field(None, description="mqtt://host:port [default: $LINELAB_MQTT_URL or "
                                                 "mqtt://127.0.0.1:1883]")
    group: str = Field("linelab", description="Sparkplug group id")
    node: str | None = Field(None, description="Sparkplug edge node id [default: the line's name]")
    units_per_message: int = Field(20, gt=0, description="units whose records travel in one message")
    linger: float = Field(0.0, ge=0, description="seconds to keep taking actions after the last unit")
    profile_out: Path | None = Field(None, description="write the profile that connects a workspace to this "
                                                       "line (MQTT sources, control over MQTT)",
                                     json_schema_extra={"path": "output"})


class PublishResult(Result):
    node: str
    units: int
    messages: int
    records: dict[str, int]
    actions: list[dict[str, Any]]
    seconds: float
    profile: str | None

    def render(self, console: Console) -> None:
        console.print(f"published {self.units:,} units as {self.node} in {self.messages:,} messages "
                      f"({self.seconds:.1f} s); {len(self.actions)} action(s) applied")


@command("twin publish", PublishParams, workspace=False, rest=False)
def twin_publish(p: PublishParams, ctx: Context) -> PublishResult:
    """Run the simulated line as a live line: its production over MQTT Sparkplug B, its actions taken back."""
    if not p.mqtt:
        raise UserError("say how to publish: --mqtt (Sparkplug B over MQTT)")
    line = TwinLine(p.scenario, seed=p.seed)
    pub = TwinPublisher(line, p.group, p.node, p.broker, p.units_per_message)
    if p.profile_out is not None:
        save_profile(live_profile(line.profile, p.group, pub.node.node, p.broker), p.profile_out)
    start = time.perf_counter()
    try:
        pub.run(p.units, p.speed, p.linger)
    finally:
        pub.close()
    return PublishResult(node=f"{p.group}/{pub.node.node}", units=line.units_produced, messages=pub.messages,
                         records=pub.sent, actions=pub.applied, seconds=round(time.perf_counter() - start, 2),
                         profile=str(p.profile_out) if p.profile_out else None)


__all__ = ["TwinPublisher", "live_profile", "twin_publish"]
