"""The line profile: everything LineLab is told about one line, and nothing it assumes.

A profile is a YAML or TOML file in the workspace (`profile.yaml`). It has five parts:

- `sources`: how each export of the line maps onto LineLab's tables (columns, values,
  delimiter, decimal mark, time zone, what to derive when the export lacks it);
- `line`: stations in process order, products, which readings are settings, product
  measurements or environment, specs per product;
- `actions`: what the line accepts (name, parameters with safe bounds) and which causes each
  one remedies;
- `recipe`: the settings experiments may change, with safe bounds and step sizes;
- `control`: the channel that carries actions to the line (the outbox, or a simulator).

`linelab profile schema` writes the JSON Schema of this model for editors.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TableName = Literal["units", "steps", "measurements", "params", "materials", "signals", "events", "specs"]
# What a diagnosed cause can be about: the kinds of entity the monitor and diagnosis name.
EntityKind = Literal[
    "machine", "fixture", "lot", "supplier", "shift", "operator", "product", "recipe",
    "measurement", "param", "signal", "station", "time",
]
ReadingRole = Literal["setting", "condition", "measurement", "environment"]
DERIVATIONS = ("first_pass_from_steps", "result_from_steps", "t_end_from_steps", "t_start_from_steps")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- sources ----------------------------------------------------------------------------------
class Wide(_Model):
    """An export with one column per reading (wide form), turned into long rows."""

    id_columns: list[str] = Field(description="columns kept on every row (unit id, time, station...)")
    value_columns: list[str] = Field(default_factory=list,
                                     description="columns that are readings (glob patterns); empty: all others")
    station: str | None = Field(None, description="station of every reading, when the export has no such column")


class MqttTopic(_Model):
    """A live source: the MQTT topic a line publishes one kind of record on (see connect/sparkplug)."""

    topic: str = Field(description="MQTT topic filter, e.g. 'spBv1.0/L1/DDATA/+/units' (Sparkplug B) or "
                                   "'line1/units' (plain JSON)")
    format: Literal["sparkplug", "json"] = Field("sparkplug", description="Sparkplug B protobuf payloads, or "
                                                 "plain JSON (one object per record, or a list of them)")
    metrics: str = Field("", description="Sparkplug: only metrics in this folder (e.g. 'unit/'), the folder "
                                         "stripped from their names; empty: all")
    shape: Literal["record", "metric"] = Field(
        "record", description="record: a message's metrics are the columns of one record (the n-th repeat of "
                              "a metric belongs to the n-th record); metric: each metric is one row "
                              "(name, value, t: its timestamp), as signals are")
    broker: str | None = Field(None, description="mqtt://host:port [default: $LINELAB_MQTT_URL or "
                                                 "mqtt://127.0.0.1:1883]")


class OpcUaNode(_Model):
    """One OPC UA variable and the reading it carries."""

    node: str = Field(description="node id, e.g. 'ns=2;s=Oven.Zone1' or 'ns=2;i=1001'")
    name: str = Field(description="reading name as stored (signals.name, measurements.name or params.name)")


class OpcUaSource(_Model):
    """A live source: OPC UA variables subscribed to (see connect/opcua)."""

    url: str = Field(description="server endpoint, e.g. 'opc.tcp://plc1:4840'")
    nodes: list[OpcUaNode] = Field(description="the variables: a signal each (table signals), or a value of "
                                               "the unit at the station (table measurements or params)")
    unit_node: str | None = Field(None, description="for per-unit values: the variable holding the current "
                                                    "unit's id; a value belongs to the unit whose id was set "
                                                    "last at or before the value's source timestamp")
    station: str | None = Field(None, description="station of per-unit values")
    publishing_ms: int = Field(100, gt=0, description="subscription publishing interval")
    history: bool = Field(True, description="back-fill a connection gap from the server's history, where "
                                            "the server keeps it")


class CfxSource(_Model):
    """A live source: IPC-CFX messages read from an AMQP broker (see connect/cfx)."""

    url: str | None = Field(None, description="amqp://user:pass@host:port/vhost [default: $LINELAB_AMQP_URL "
                                              "or amqp://guest:guest@127.0.0.1:5672/]")
    exchange: str = Field("cfx", description="the exchange the line's endpoints publish to (topic)")
    routing_key: str = Field("#", description="routing key the queue is bound with")
    queue: str = Field("linelab.cfx", description="LineLab's durable queue: messages wait there while "
                                                  "LineLab is down")
    stations: dict[str, str] = Field(default_factory=dict,
                                     description="CFX endpoint handle (glob) -> station, e.g. "
                                                 "'*.Coater*': COATING; default: the handle's last part")


class Source(_Model):
    """One kind of export file (or live MQTT topic) and how it maps onto a LineLab table."""

    name: str = Field(description="a name for this export, e.g. 'mes_units'")
    table: TableName
    files: list[str] = Field(default_factory=lambda: ["*"],
                             description="file name patterns (glob) this source reads, e.g. 'units_*.csv'")
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="LineLab column -> the export's column, e.g. unit_id: serial")
    constants: dict[str, str] = Field(default_factory=dict,
                                      description="LineLab column -> a value every row gets (e.g. line: L1)")
    values: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="LineLab column -> {export value: LineLab value}, e.g. result: {PASS: pass, FAIL: fail}")
    delimiter: str = Field(",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = "."
    encoding: str = "utf-8"
    timezone: str | None = Field(None, description="IANA zone of timestamps that carry no offset (e.g. "
                                                   "Europe/Berlin); stored as UTC")
    timestamp_format: str | None = Field(None, description="strptime format when timestamps are not ISO 8601")
    wide: Wide | None = None
    derive: list[str] = Field(default_factory=list, description=f"what to derive: {', '.join(DERIVATIONS)}")
    mqtt: MqttTopic | None = Field(None, description="a live source: records arrive over MQTT, not in files")
    opcua: OpcUaSource | None = Field(None, description="a live source: OPC UA subscriptions (table: signals, "
                                                        "measurements or params)")
    cfx: CfxSource | None = Field(None, description="a live source: IPC-CFX messages over AMQP (they feed "
                                                    "units, steps, measurements, materials and events)")

    @model_validator(mode="after")
    def _known_derivations(self) -> Source:
        live = self.mqtt is not None or self.opcua is not None or self.cfx is not None
        if live and "files" not in self.model_fields_set:
            self.files = []  # a live source reads no file unless it also names some
        unknown = [d for d in self.derive if d not in DERIVATIONS]
        if unknown:
            raise ValueError(f"unknown derivation(s) {unknown}; known: {', '.join(DERIVATIONS)}")
        return self

    def matches(self, file_name: str) -> bool:
        return any(fnmatch.fnmatch(file_name, pattern) for pattern in self.files)


# -- the line ---------------------------------------------------------------------------------
class Station(_Model):
    name: str
    machines: list[str] = Field(default_factory=list)
    description: str = ""


class Reading(_Model):
    """A named value the line records: what it is tells the monitor and diagnosis how to treat it."""

    name: str = Field(description="name as stored (measurements.name, params.name or signals.name); a glob")
    station: str | None = None
    role: ReadingRole = Field(description="setting: a recipe set-point; condition: a process state that fails "
                                          "no unit by itself (an oven zone); measurement: of the product; "
                                          "environment: of the room (per unit, or a signal series)")
    unit: str | None = None
    made_at: str | None = Field(None, description="the station whose machines make what this measurement reads, "
                                                  "where it is read downstream (a CMM measures what the lathes "
                                                  "turned): the monitor follows it per machine of that station")
    description: str = ""

    def matches(self, name: str, station: str | None = None) -> bool:
        return fnmatch.fnmatch(name, self.name) and (self.station is None or station in (None, self.station))


class Spec(_Model):
    product: str
    station: str
    name: str
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    unit: str | None = None


class LineInfo(_Model):
    name: str = "line"
    stations: list[Station] = Field(default_factory=list, description="in process order")
    products: list[str] = Field(default_factory=list)
    readings: list[Reading] = Field(default_factory=list)
    specs: list[Spec] = Field(default_factory=list)

    def role(self, name: str, station: str | None = None) -> ReadingRole | None:
        return next((r.role for r in self.readings if r.matches(name, station)), None)

    @property
    def station_order(self) -> list[str]:
        return [s.name for s in self.stations]


# -- actions ----------------------------------------------------------------------------------
class ActionParam(_Model):
    """One argument of an action, with what makes a value safe."""

    name: str
    type: Literal["string", "number", "mapping"] = "string"
    required: bool = True
    choices: list[str] | None = None
    pattern: str | None = Field(None, description="regular expression a string value must match in full")
    low: float | None = None
    high: float | None = None
    unit: str | None = None
    description: str = ""
    from_cause: Literal["name", "level", "station", "machine", "material"] | None = Field(
        None, description="filled from the diagnosed cause's entity when the loop proposes this action")
    extract: str | None = Field(None, description="regular expression whose first group is kept of the cause's "
                                                  "value (e.g. '^([^-]+)' keeps the machine of 'M1-F2')")

    @model_validator(mode="after")
    def _valid_patterns(self) -> ActionParam:
        for p in (self.pattern, self.extract):
            if p is not None:
                re.compile(p)
        return self


class CauseMatch(_Model):
    """Which causes an action remedies: every field given must match (fields are ANDed; globs)."""

    entity: list[EntityKind] = Field(default_factory=list, description="kinds of entity; empty: any")
    station: list[str] = Field(default_factory=list, description="stations; empty: any")
    name: list[str] = Field(default_factory=list, description="globs on the entity's or factor's name; empty: any")
    role: list[ReadingRole] = Field(default_factory=list, description="roles of the reading (line.readings)")


class Action(_Model):
    name: str = Field(description="the action's name as the line's control channel knows it")
    description: str = ""
    params: list[ActionParam] = Field(default_factory=list)
    remedies: list[CauseMatch] = Field(default_factory=list,
                                       description="causes this action remedies (any one rule may match)")
    event_kind: str = Field("action", description="events.kind it is recorded as on the line")
    resets: bool = Field(False, description="restores the target to new (maintenance, calibration): the monitor "
                                            "re-learns its level afterwards")

    def param(self, name: str) -> ActionParam | None:
        return next((p for p in self.params if p.name == name), None)


# -- recipe -----------------------------------------------------------------------------------
class Setting(_Model):
    name: str
    station: str | None = None
    machine: str | None = None
    unit: str | None = None
    low: float
    high: float
    default: float
    step: float | None = Field(None, gt=0, description="smallest change worth trying")
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Setting:
        if not self.low <= self.default <= self.high:
            raise ValueError(f"setting {self.name}: default {self.default} outside [{self.low}, {self.high}]")
        return self


# -- control channel --------------------------------------------------------------------------
class Control(_Model):
    channel: Literal["outbox", "simulator", "mqtt", "opcua"] = "outbox"
    simulator: str | None = Field(None, description="for channel simulator: which one (a name LineLab knows)")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Profile(_Model):
    """A line as LineLab is given it."""

    version: Literal[1] = 1
    sources: list[Source] = Field(default_factory=list)
    line: LineInfo = Field(default_factory=LineInfo)
    actions: list[Action] = Field(default_factory=list)
    recipe: list[Setting] = Field(default_factory=list)
    control: Control = Field(default_factory=Control)

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        for what, names in (("action", [a.name for a in self.actions]), ("setting", [s.name for s in self.recipe]),
                            ("source", [s.name for s in self.sources]),
                            ("station", [s.name for s in self.line.stations])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what} name(s) given twice: {', '.join(dup)}")
        return self

    def action(self, name: str) -> Action | None:
        return next((a for a in self.actions if a.name == name), None)

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.recipe if s.name == name), None)

    def default_recipe(self) -> dict[str, float]:
        return {s.name: s.default for s in self.recipe}
