"""Sparkplug B topics and payloads, and the plain-JSON form, as plain Python values.

Topic namespace (Sparkplug 3.0): `spBv1.0/<group>/<type>/<edge node>[/<device>]`, type one of
NBIRTH, NDEATH, DBIRTH, DDEATH, NDATA, DDATA, NCMD, DCMD (and `spBv1.0/STATE/<host id>`).
Payloads are the protobuf `Payload` of sparkplug_b.proto; a metric's value sits in the field
its data type names (Int8..UInt32 in int_value, Int64/UInt64/DateTime in long_value, ...).

The plain-JSON form, for a line that does not speak Sparkplug, is any topic a source names
whose message body is one JSON object (one record: export column -> value) or a list of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from google.protobuf.message import DecodeError

from linelab.connect.sparkplug.sparkplug_b_pb2 import Payload

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD")
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

# Sparkplug data type codes.
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID, BYTES = 9, 10, 11, 12, 13, 14, 15, 17
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_INT_FIELD = {INT8, INT16, INT32, UINT8, UINT16, UINT32}
_LONG_FIELD = {INT64, UINT64, DATETIME}
_STRING_FIELD = {STRING, TEXT, UUID}


class PayloadError(ValueError):
    """A message that cannot be read: the reason goes to the quarantine."""


@dataclass(frozen=True)
class Topic:
    group: str
    kind: str  # NBIRTH, DDATA, ...
    node: str
    device: str | None = None

    @property
    def node_key(self) -> tuple[str, str]:
        return self.group, self.node

    def __str__(self) -> str:
        return "/".join([NAMESPACE, self.group, self.kind, self.node] + ([self.device] if self.device else []))


def parse_topic(topic: str) -> Topic | None:
    """The Sparkplug topic's parts, or None for a topic outside the namespace (or a STATE topic)."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in MESSAGE_TYPES:
        return None
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


@dataclass(slots=True)
class Metric:
    name: str | None
    value: Any
    datatype: int = DOUBLE
    alias: int | None = None
    timestamp: int | None = None  # ms since the Unix epoch

    @property
    def text(self) -> str | None:
        """The value as text, the way the store's validator reads it (timestamps as ISO 8601 UTC)."""
        v = self.value
        if v is None:
            return None
        if self.datatype == DATETIME:
            return ms_to_iso(int(v))
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, bytes):
            return v.hex()
        return repr(v) if isinstance(v, float) else str(v)


@dataclass
class Message:
    """A decoded payload, held as parallel columns (one entry per metric, in order): reading a
    message costs one pass per field over its metrics, not one object per metric."""

    timestamp: int | None
    seq: int | None
    names: list[str | None] = field(default_factory=list)  # None: sent by alias only (until resolved)
    aliases: list[int | None] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    datatypes: list[int] = field(default_factory=list)
    timestamps: list[int | None] = field(default_factory=list)

    @classmethod
    def of(cls, timestamp: int | None, seq: int | None, metrics: list[Metric]) -> Message:
        return cls(timestamp, seq, [m.name for m in metrics], [m.alias for m in metrics],
                   [m.value for m in metrics], [m.datatype for m in metrics], [m.timestamp for m in metrics])

    @property
    def metrics(self) -> list[Metric]:
        return [Metric(*row) for row in zip(self.names, self.values, self.datatypes, self.aliases, self.timestamps,
                                            strict=True)]


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def datatype_of(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, datetime):
        return DATETIME
    if isinstance(value, bytes):
        return BYTES
    return STRING


def _set_value(m: Payload.Metric, datatype: int, value: Any) -> None:
    if value is None:
        m.is_null = True
    elif datatype in _INT_FIELD:
        m.int_value = int(value) & 0xFFFFFFFF  # signed types travel as two's complement
    elif datatype in _LONG_FIELD:
        if isinstance(value, datetime):
            value = int(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == FLOAT:
        m.float_value = float(value)
    elif datatype == DOUBLE:
        m.double_value = float(value)
    elif datatype == BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype in _STRING_FIELD:
        m.string_value = str(value)
    elif datatype == BYTES:
        m.bytes_value = bytes(value)
    else:
        raise PayloadError(f"metric {m.name or m.alias}: data type {datatype} is not supported")


def encode(metrics: list[Metric], seq: int | None, timestamp: int | None = None) -> bytes:
    p = Payload(timestamp=timestamp if timestamp is not None else now_ms())
    if seq is not None:
        p.seq = seq
    for metric in metrics:
        m = p.metrics.add()
        if metric.name is not None:
            m.name = metric.name
        if metric.alias is not None:
            m.alias = metric.alias
        if metric.timestamp is not None:
            m.timestamp = metric.timestamp
        m.datatype = metric.datatype
        _set_value(m, metric.datatype, metric.value)
    return p.SerializeToString()


_FIELD = {**{d: "int_value" for d in _INT_FIELD}, **{d: "long_value" for d in _LONG_FIELD},
          **{d: "string_value" for d in _STRING_FIELD}, FLOAT: "float_value", DOUBLE: "double_value",
          BOOLEAN: "boolean_value", BYTES: "bytes_value"}


def _oneof(m: Payload.Metric) -> Any:
    which = m.WhichOneof("value")
    return None if which is None else getattr(m, which)


_GETTERS = {d: attrgetter(f) for d, f in _FIELD.items()}


def decode(data: bytes | bytearray) -> Message:
    """A Sparkplug B payload; raises PayloadError for bytes that are not one.

    Its metrics are read in columns (`wire`); a payload with metrics of other kinds (data sets,
    templates, properties) or bytes that are not well formed is read with the protobuf classes."""
    from linelab.connect.sparkplug import wire  # NumPy: loaded by the connector, not by `import payload`

    frame = wire.Frame()
    try:
        frame.ParseFromString(bytes(data))
        raw = list(frame.metrics)
        if raw:
            names, aliases, values, datatypes, timestamps = wire.values(*wire.parse(raw))
        else:
            names, aliases, values, datatypes, timestamps = [], [], [], [], []
    except (DecodeError, RuntimeWarning, wire.Malformed):
        return _decode_objects(data)
    return Message(frame.timestamp if frame.HasField("timestamp") else None,
                   frame.seq if frame.HasField("seq") else None, names, aliases, values, datatypes, timestamps)


def decode_many(payloads: list[bytes | bytearray]) -> list[Message | PayloadError]:
    """Payloads decoded together (their metrics parsed in one pass): each one's Message, or the
    PayloadError that says why it cannot be read."""
    from linelab.connect.sparkplug import wire

    frames = []
    for data in payloads:
        frame = wire.Frame()
        try:
            frame.ParseFromString(bytes(data))
        except (DecodeError, RuntimeWarning):
            frame = None
        frames.append(frame)
    raw = [list(f.metrics) if f is not None else [] for f in frames]
    everything = [m for r in raw for m in r]
    try:
        columns = wire.values(*wire.parse(everything)) if everything else ([], [], [], [], [])
    except wire.Malformed:  # one payload the column reader does not take: each is read on its own
        return [_decode_or_error(data) for data in payloads]
    out: list[Message | PayloadError] = []
    at = 0
    for data, frame, metrics in zip(payloads, frames, raw, strict=True):
        if frame is None:
            out.append(_decode_or_error(data))
            continue
        names, aliases, values, datatypes, timestamps = (c[at:at + len(metrics)] for c in columns)
        at += len(metrics)
        out.append(Message(frame.timestamp if frame.HasField("timestamp") else None,
                           frame.seq if frame.HasField("seq") else None, names, aliases, values, datatypes,
                           timestamps))
    return out


def _decode_or_error(data: bytes | bytearray) -> Message | PayloadError:
    try:
        return decode(data)
    except PayloadError as exc:
        return exc


def _decode_objects(data: bytes | bytearray) -> Message:
    """`decode` through the protobuf classes, metric by metric."""
    p = Payload()
    try:
        p.ParseFromString(bytes(data))
    except (DecodeError, RuntimeWarning) as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    ms = p.metrics
    datatypes = [m.datatype for m in ms]
    # The value's field follows from the data type; a metric whose type LineLab does not know is read
    # from whichever field it set.
    get = [_GETTERS.get(d, _oneof) for d in datatypes]
    values = [g(m) for g, m in zip(get, ms, strict=True)]
    if any(m.is_null for m in ms):
        values = [None if m.is_null else v for m, v in zip(ms, values, strict=True)]
    if any(d in _SIGNED_BITS for d in datatypes):
        for i, d in enumerate(datatypes):
            bits = _SIGNED_BITS.get(d)
            v = values[i]
            if bits and v is not None:  # its width's two's complement (senders extend Int8/Int16 to 32 bits or not)
                v &= (1 << bits) - 1
                values[i] = v - (1 << bits) if v >= 1 << (bits - 1) else v
    names: list[str | None] = [m.name or None for m in ms]
    aliases: list[int | None] = [m.alias for m in ms]
    if 0 in aliases:  # 0 is also what an absent alias reads as
        aliases = [a if a or m.HasField("alias") else None for a, m in zip(aliases, ms, strict=True)]
    timestamps: list[int | None] = [m.timestamp or None for m in ms]
    return Message(p.timestamp if p.HasField("timestamp") else None, p.seq if p.HasField("seq") else None,
                   names, aliases, values, datatypes, timestamps)


def decode_json(data: bytes | bytearray) -> list[dict[str, Any]]:
    """The plain-JSON form: one object (a record) or a list of objects; raises PayloadError otherwise."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    records = body if isinstance(body, list) else [body]
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise PayloadError(f"record {i + 1}: a JSON object was expected, got {type(r).__name__}")
    return records
