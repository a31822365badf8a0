"""A Sparkplug B payload's metrics read from the protobuf wire format in columns, with NumPy.

A DDATA message carries hundreds of metrics; reading them one by one through the protobuf classes
costs a Python attribute access per field per metric. Here protobuf (in C) only splits the payload
into its top-level fields, each metric as bytes; the metrics' fields are then parsed for all
metrics at once, one field position at a time (a metric has four or five fields): each step reads
every metric's next tag and value with array operations.

It reads the metrics LineLab's edge nodes and most gateways send: name, alias, timestamp, data
type, the flags (historical, transient, null) and a scalar value. A metric with anything else (a
data set, a template, properties, metadata, an unknown field) or bytes that are not well formed
make `metrics` return None, and the caller reads the payload with the protobuf classes instead,
which also say what is wrong with a malformed one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# Field number -> the wire type it must have (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
_WIRE = {1: 2, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 10: 0, 11: 0, 12: 5, 13: 1, 14: 0, 15: 2, 16: 2}
_VALUE_FIELDS = (10, 11, 12, 13, 14, 15, 16)  # int, long, float, double, boolean, string, bytes
_WIRE_OF = np.full(32, -1, np.int64)
for _f, _w in _WIRE.items():
    _WIRE_OF[_f] = _w
_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)
_STEPS = np.arange(10)


def _frame_class() -> Any:
    """A message of the payload's top-level fields with each metric left as bytes (parsed in C)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="linelab_sparkplug_frame.proto", package="linelab.sparkplug",
                                               syntax="proto2")
    msg = proto.message_type.add(name="Frame")
    msg.field.add(name="timestamp", number=1, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    msg.field.add(name="metrics", number=2, type=f.TYPE_BYTES, label=f.LABEL_REPEATED)
    msg.field.add(name="seq", number=3, type=f.TYPE_UINT64, label=f.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("linelab.sparkplug.Frame"))


Frame = _frame_class()


class Malformed(ValueError):
    """Bytes this reader does not take: the protobuf classes read them (or say what is wrong)."""


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint at each position: (values, positions after them). One step per byte, for the
    varints that still continue (tags, aliases and data types take one)."""
    byte = buf[pos]
    value = (byte & 0x7F).astype(np.uint64)
    end = pos + 1
    more = np.nonzero(byte >= 128)[0]
    shift = 7
    while more.size:
        if shift > 63:
            raise Malformed("a varint longer than 10 bytes")
        byte = buf[end[more]]
        value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
        end[more] += 1
        more = more[byte >= 128]
        shift += 7
    return value, end


def _fixed(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """The little-endian fixed32 or fixed64 field at each position, as its bits."""
    chunk = np.ascontiguousarray(buf[pos[:, None] + _STEPS[:width]])
    return chunk.view("<u8" if width == 8 else "<u4").ravel().astype(np.uint64)


class Columns:
    """Every metric's fields, parsed; absent ones flagged."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = {f: np.zeros(n, bool) for f in _WIRE}
        self.num = {f: np.zeros(n, np.uint64) for f in _WIRE}  # a varint's or fixed field's bits
        self.start = {f: np.zeros(n, np.int64) for f in (1, 15, 16)}  # where a length-delimited field is
        self.size = {f: np.zeros(n, np.int64) for f in (1, 15, 16)}
        self.value_field = np.zeros(n, np.int64)  # the value field set last (0: none)


def parse(raw: list[bytes]) -> tuple[bytes, Columns]:
    """Parse every metric (each a Payload.Metric's bytes); raises Malformed for what it does not take."""
    n = len(raw)
    sizes = np.fromiter(map(len, raw), np.int64, n)
    ends = np.cumsum(sizes)
    pos = ends - sizes
    data = b"".join(raw)
    buf = np.frombuffer(data + bytes(16), np.uint8)  # padded: a read past a metric's end stays in bounds
    cols = Columns(n)
    todo = np.nonzero(pos < ends)[0]
    while todo.size:  # one field of every metric that has one left
        tag, p = _varints(buf, pos[todo])
        ends_now = ends[todo]
        after = np.empty_like(p)
        lo, hi = int(tag.min()), int(tag.max())
        groups = [(lo, None)] if lo == hi else [(int(t), tag == t) for t in np.unique(tag).tolist()]
        for t, hit in groups:  # usually one: the metrics of a message are written alike
            f, w = t >> 3, t & 7
            if f >= len(_WIRE_OF) or _WIRE_OF[f] != w:
                raise Malformed(f"field {f} (wire type {w}) is not one this reader takes")
            idx = todo if hit is None else todo[hit]
            q = p if hit is None else p[hit]
            value: np.ndarray | None
            if w == 0:
                value, a = _varints(buf, q)
            elif w == 2:
                length, start = _varints(buf, q)
                room = ends[idx] - start
                if (room < 0).any() or (length > room.astype(np.uint64)).any():
                    raise Malformed("a field runs past its metric")
                a = start + length.astype(np.int64)
                cols.start[f][idx] = start
                cols.size[f][idx] = length
                value = None
            else:
                width = 8 if w == 1 else 4
                value, a = _fixed(buf, q, width), q + width
            if hit is None:
                after = a
            else:
                after[hit] = a
            cols.seen[f][idx] = True
            if value is not None:
                cols.num[f][idx] = value
            if f in _VALUE_FIELDS:
                cols.value_field[idx] = f
        if (after > ends_now).any():
            raise Malformed("a field runs past its metric")
        pos[todo] = after
        todo = todo[after < ends_now]
    return data, cols


# Data type -> the value field it reads (0: whichever is set), and the bits of the signed ones.
_FIELD_OF = np.zeros(64, np.int64)
for _types, _field in (((1, 2, 3, 5, 6, 7), 10), ((4, 8, 13), 11), ((9,), 12), ((10,), 13), ((11,), 14),
                       ((12, 14, 15), 15), ((17,), 16)):
    _FIELD_OF[list(_types)] = _field
_BITS = np.zeros(64, np.int64)
_BITS[[1, 2, 3, 4]] = [8, 16, 32, 64]
_DEFAULT = {10: 0, 11: 0, 12: 0.0, 13: 0.0, 14: False, 15: "", 16: b""}


def _texts(data: bytes, start: np.ndarray, size: np.ndarray, text: bool) -> np.ndarray:
    """The length-delimited fields at (start, size) as an object array of str (or bytes), made in
    Arrow from one gather of their bytes, not one slice per value."""
    offsets = np.zeros(len(size) + 1, np.int64)
    np.cumsum(size, out=offsets[1:])
    gather = np.repeat(start - offsets[:-1], size) + np.arange(int(offsets[-1]), dtype=np.int64)
    chars = np.frombuffer(data, np.uint8)[gather]
    kind = pa.large_string() if text else pa.large_binary()
    arr = pa.Array.from_buffers(kind, len(size), [None, pa.py_buffer(offsets), pa.py_buffer(chars)])
    try:
        arr.validate(full=True)  # text must be UTF-8
    except pa.ArrowInvalid as exc:
        raise Malformed(str(exc)) from None
    return arr.to_numpy(zero_copy_only=False)


def values(data: bytes, cols: Columns) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any]]:
    """names, aliases, values, data types and timestamps, as the protobuf classes give them:
    a value from the field its data type names (that field's default when another one is set),
    signed types from two's complement, None for a null metric, an absent name or timestamp."""
    n = cols.n
    names: list[Any] = [None] * n
    named = np.nonzero(cols.seen[1] & (cols.size[1] > 0))[0]
    if named.size:
        for i, name in zip(named.tolist(), _texts(data, cols.start[1][named], cols.size[1][named], True).tolist(),
                           strict=True):
            names[i] = name
    aliases = cols.num[2].astype(object)
    aliases[~cols.seen[2]] = None
    stamps = cols.num[3].astype(object)
    stamps[cols.num[3] == 0] = None
    datatype = cols.num[4].astype(np.int64)
    known = datatype < len(_FIELD_OF)
    want = np.where(known, _FIELD_OF[np.where(known, datatype, 0)], 0)
    field = np.where(want == 0, cols.value_field, want)
    out = np.full(n, None, object)
    for f in np.unique(field).tolist():
        if f == 0:
            continue
        at = np.nonzero(field == f)[0]
        got = at[cols.value_field[at] == f]
        if got.size < at.size:
            out[at[cols.value_field[at] != f]] = _DEFAULT[f]
        if not got.size:
            continue
        num = cols.num[f][got]
        if f in (15, 16):
            vals: Any = _texts(data, cols.start[f][got], cols.size[f][got], f == 15)
        elif f == 12:
            vals = num.astype(np.uint32).view(np.float32).astype(np.float64)
        elif f == 13:
            vals = num.view(np.float64)
        elif f == 14:
            vals = num != 0
        else:
            if f == 10:
                num = num & np.uint64(0xFFFFFFFF)
            bits = _BITS[np.where(datatype[got] < len(_BITS), datatype[got], 0)]
            vals = num.astype(object)  # Python ints, exact for unsigned 64 bits
            wide = bits == 64
            if wide.any():  # signed types: two's complement of their width
                vals[wide] = num[wide].view(np.int64).astype(object)
            narrow = (bits > 0) & (bits < 64)
            if narrow.any():
                half = np.left_shift(np.int64(1), bits[narrow] - 1)
                v = num[narrow].astype(np.int64) & (2 * half - 1)
                vals[narrow] = np.where(v >= half, v - 2 * half, v).astype(object)
        out[got] = vals
    out[cols.seen[7] & (cols.num[7] != 0)] = None
    return names, aliases.tolist(), out.tolist(), datatype.tolist(), stamps.tolist()
