"""Pending live rows of one source, kept as columns of Python values and turned into Arrow at a flush.

A message's metrics are appended column by column (the n-th repeat of a metric name is the n-th
record of the message), so a message of k records costs one append per metric and no per-row
dictionaries. At a flush the columns become either

- a typed table in the store's schema, when the source maps nothing (metric names are LineLab's
  column names, at most constants added): the store then skips text validation; or
- text columns for the profile's mapping (connect.mapping.apply), the way a file's are read:
  Sparkplug DateTime metrics become ISO 8601 UTC text, numbers and booleans their text.

Either conversion is one Arrow call per column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from linelab.connect.sparkplug.payload import DATETIME, STRING, Message
from linelab.profile.schema import Source
from linelab.store.schema import RECORD_TABLES


def _plain(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, dict | list) else v


@dataclass
class Rows:
    n: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)
    datetimes: set[str] = field(default_factory=set)  # columns whose values are Sparkplug DateTime (ms)

    def _pad(self) -> None:
        for col in self.columns.values():
            if len(col) < self.n:
                col.extend([None] * (self.n - len(col)))

    def add_message(self, msg: Message, prefix: str, extra: dict[str, Any]) -> int:
        """Record shape: the message's metrics as records; returns how many."""
        names, values = msg.names, msg.values
        if prefix:
            keep = [i for i, n in enumerate(names) if n is not None and n.startswith(prefix)]
            names = [names[i][len(prefix):] for i in keep]  # type: ignore[index]
            values = [values[i] for i in keep]
            datatypes = [msg.datatypes[i] for i in keep]
            stamps = [msg.timestamps[i] for i in keep]
        else:
            datatypes, stamps = msg.datatypes, msg.timestamps
        if not names:
            return 0
        # The usual message repeats one record's metrics in the same order: then each column is a slice.
        k = names.index(names[0], 1) if names.count(names[0]) > 1 else len(names)
        if len(names) % k == 0 and names == names[:k] * (len(names) // k) and len(set(names[:k])) == k:
            r = len(names) // k
            start = self.n
            for j in range(k):
                self._extend(str(names[j]), values[j::k], start, datatypes[j])
            first = stamps[0::k]
            self._extend("$timestamp", [t if t is not None else msg.timestamp for t in first], start, DATETIME)
        else:
            r = self._add_irregular(names, values, datatypes, stamps, msg.timestamp)
            start = self.n
        for name, value in extra.items():
            self._extend(name, [value] * r, start, STRING)
        self.n = start + r
        self._pad()
        return r

    def _add_irregular(self, names: list[Any], values: list[Any], datatypes: list[int], stamps: list[int | None],
                       stamp: int | None) -> int:
        start = self.n
        cols = self.columns
        first: list[int | None] = []
        for name, value, dt, ts in zip(names, values, datatypes, stamps, strict=True):
            col = cols.get(name)
            if col is None:
                col = cols[name] = [None] * start
                if dt == DATETIME:
                    self.datetimes.add(name)
            k = len(col) - start
            col.append(value)
            if k == len(first):
                first.append(ts if ts is not None else stamp)
        self._extend("$timestamp", first, start, DATETIME)
        return len(first)

    def add_rows(self, rows: list[dict[str, Any]], extra: dict[str, Any]) -> int:
        """Whole records (JSON objects, or metric-shape rows): one per element."""
        for row in rows:
            for name, value in {**extra, **row}.items():
                col = self.columns.get(name)
                if col is None:
                    col = self.columns[name] = [None] * self.n
                col.append(_plain(value))
            self.n += 1
            self._pad()
        return len(rows)

    def _extend(self, name: str, values: list[Any], start: int, datatype: int) -> None:
        col = self.columns.get(name)
        if col is None:
            col = self.columns[name] = [None] * start
            if datatype == DATETIME:
                self.datetimes.add(name)
        elif len(col) < start:
            col.extend([None] * (start - len(col)))
        col.extend(values)

    # -- at a flush ------------------------------------------------------------------------------
    def text(self, needed: list[str]) -> pa.Table:
        """Every column as text; what the topic tells ($...) only where the source uses it (a wide
        source would otherwise take it for a reading)."""
        out = {}
        for name in [*self.columns, *(c for c in needed if c not in self.columns)]:
            if name.startswith("$") and name not in needed:
                continue
            out[name] = self._text_column(name)
        return pa.table(out)

    def _text_column(self, name: str) -> pa.Array:
        values = self.columns.get(name)
        if values is None:
            return pa.nulls(self.n, pa.string())
        if name in self.datetimes:
            try:
                ts = pa.array(values, pa.int64()).cast(pa.timestamp("ms"))
                return pc.binary_join_element_wise(ts.cast(pa.string()), "Z", "")
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                pass  # not all numbers: read as given, for the validator to quarantine
        try:
            arr = pa.array(values)
            if pa.types.is_string(arr.type) or pa.types.is_null(arr.type):
                return arr.cast(pa.string())
            return arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
            return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                             for v in values], pa.string())

    def typed(self, source: Source) -> pa.Table | None:
        """The rows in the store's schema, or None when they do not fit it as they are."""
        schema = RECORD_TABLES[source.table]
        out: dict[str, pa.Array] = {}
        try:
            for f in schema:
                if f.name in self.columns:
                    out[f.name] = self._typed_column(f.name, f.type)
                elif f.name in source.constants:
                    out[f.name] = pa.array([source.constants[f.name]] * self.n, pa.string()).cast(f.type)
                elif not f.nullable:
                    return None  # the mapping's check names what is missing
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
            return None
        return pa.table(out)

    def _typed_column(self, name: str, t: pa.DataType) -> pa.Array:
        values = self.columns[name]
        if pa.types.is_timestamp(t):
            if name not in self.datetimes:
                raise TypeError(f"{name}: not a DateTime metric")
            return pa.array(values, pa.int64()).cast(pa.timestamp("ms")).cast(t)
        if pa.types.is_string(t):
            arr = pa.array(values)
            if not (pa.types.is_string(arr.type) or pa.types.is_null(arr.type)):
                raise TypeError(f"{name}: not text")
            return arr.cast(t)
        return pa.array(values, t)


def maps_nothing(source: Source) -> bool:
    """A source whose messages already name LineLab's columns (constants aside)."""
    return not (source.columns or source.values or source.wide or source.derive or source.timezone
                or source.timestamp_format or source.decimal != ".")
