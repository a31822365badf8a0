"""IPC-CFX messages as LineLab records: the envelope checked, each message mapped onto the tables.

A CFX message is a JSON envelope (IPC-2591):

    {"MessageName": "CFX.Production.WorkStarted", "Version": "2.0", "TimeStamp": "...",
     "UniqueID": "...", "Source": "SMTLine1.Coater1", "Target": null, "RequestID": null,
     "MessageBody": {...}}

The machine that sent it is `Source` (its CFX handle); its station is the first of the source's
`cfx.stations` globs that matches the handle, else the handle's last dotted part. Mapped:

- `CFX.Production.WorkStarted`: the start of a work transaction; at the line's first station (the
  profile's station order) a unit per unit position (id, product and line from the source's
  constants, else the recipe and the line's name; work order; start time);
- `CFX.Production.Processing.UnitsProcessed`: every numeric measurement found in a unit's process
  data (`MeasurementName` with `MeasuredValue.Value` or `ActualValue`) as a measurement, and the
  unit's result (`UnitResult`) for its step;
- `CFX.Production.WorkCompleted`: closes the transaction: one step per unit (t_in from its
  WorkStarted, t_out, result: the unit's processing result, else Completed -> pass, Failed or
  Aborted -> fail); a failed unit gets its end and result (`fail`). A transaction whose
  UnitsProcessed has not come when it completes waits a moment for it (messages can arrive out
  of order; `CfxQueue.settle_s`);
- `CFX.Production.ReadingsRecorded`: a reading of a unit as a measurement, one of no unit as a
  signal (`<station>.<ReadingIdentifier>`);
- `CFX.Production.Assembly.MaterialsInstalled` (and `...Application.MaterialsApplied`): the
  unit's material (InternalPartNumber) and lot (BatchId, else the package's UniqueIdentifier);
- `CFX.Materials.Storage.MaterialsLoaded`: an event `material_loaded` per loaded package;
- `CFX.ResourcePerformance.FaultOccurred` / `FaultCleared`: events `fault` / `fault_cleared`.

Other message names are counted and passed over. A message that is not JSON, lacks an envelope
field, or carries a field of the wrong kind is rejected with the field and the reason.
"""

from __future__ import annotations

import fnmatch
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from linelab.connect.opcua_records import naive_utc
from linelab.profile.schema import Profile, Source

ENVELOPE = ("MessageName", "Version", "TimeStamp", "UniqueID", "Source", "MessageBody")
WORK_STARTED = "CFX.Production.WorkStarted"
WORK_COMPLETED = "CFX.Production.WorkCompleted"
UNITS_PROCESSED = "CFX.Production.Processing.UnitsProcessed"
READINGS = "CFX.Production.ReadingsRecorded"
INSTALLED = ("CFX.Production.Assembly.MaterialsInstalled", "CFX.Production.Application.MaterialsApplied")
LOADED = "CFX.Materials.Storage.MaterialsLoaded"
FAULT = "CFX.ResourcePerformance.FaultOccurred"
FAULT_CLEARED = "CFX.ResourcePerformance.FaultCleared"
HANDLED = (WORK_STARTED, WORK_COMPLETED, UNITS_PROCESSED, READINGS, *INSTALLED, LOADED, FAULT, FAULT_CLEARED)

PROCESSING_RESULT = {"Succeeded": "pass", "Failed": "fail", "Error": "fail", "Aborted": "fail"}
WORK_RESULT = {"Completed": "pass", "Failed": "fail", "Aborted": "fail"}
UNITS_KEPT = 100_000  # unit records remembered to give a failed unit its result


class BadMessage(ValueError):
    """A message that cannot be read as CFX: `field` names where, the text says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def cfx_sources(profile: Profile) -> list[Source]:
    return [s for s in profile.sources if s.cfx is not None]


def _get(body: dict[str, Any], *names: str) -> Any:
    """A body field by any of its spellings (the standard spells TransactionID and TransactionId)."""
    for n in names:
        if n in body:
            return body[n]
    return None


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise BadMessage(where, f"expected an ISO 8601 time, got {value!r}")
    text = value.strip().replace("Z", "+00:00")
    # .NET writes 7 fractional digits; Python reads up to 6.
    head, dot, frac = text.partition(".")
    if dot:
        digits = "".join(c for c in frac if c.isdigit())
        text = f"{head}.{digits[:6]}{frac[len(digits):]}"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise BadMessage(where, f"not an ISO 8601 time: {value!r}") from None
    return naive_utc(t)


def _list(body: dict[str, Any], where: str, *names: str) -> list[Any]:
    v = _get(body, *names)
    if v is None:
        return []
    if not isinstance(v, list):
        raise BadMessage(f"MessageBody.{where}", f"expected a list, got {type(v).__name__}")
    return v


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadMessage(where, f"expected an object, got {type(v).__name__}")
    return v


@dataclass
class Envelope:
    name: str
    unique_id: str
    t: datetime
    source: str
    body: dict[str, Any]


def read_envelope(payload: bytes) -> Envelope:
    """The CFX envelope of a message; raises BadMessage naming the field at fault."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage("payload", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadMessage("payload", f"a CFX envelope is a JSON object, not {type(doc).__name__}")
    missing = [k for k in ENVELOPE if k not in doc]
    if missing:
        raise BadMessage(missing[0], "missing from the CFX envelope")
    for k in ("MessageName", "UniqueID", "Source"):
        if not isinstance(doc[k], str) or not doc[k]:
            raise BadMessage(k, f"expected text, got {doc[k]!r}")
    return Envelope(doc["MessageName"], doc["UniqueID"], _time(doc["TimeStamp"], "TimeStamp"), doc["Source"],
                    _dict(doc["MessageBody"], "MessageBody"))


@dataclass
class Transaction:
    """A unit's work at one station, from WorkStarted to WorkCompleted (in either order)."""

    started: Envelope | None = None
    completed: Envelope | None = None
    results: dict[str, str] = field(default_factory=dict)  # unit id -> processing result (pass/fail)


Row = tuple[str, dict[str, Any]]  # (table, record)


class CfxMapper:
    """Maps messages of one profile source; holds open work transactions between messages."""

    def __init__(self, source: Source, profile: Profile) -> None:
        assert source.cfx is not None
        self.source = source
        self.stations = source.cfx.stations
        self.product = source.constants.get("product")
        self.line = source.constants.get("line") or profile.line.name
        # A unit is registered by its WorkStarted at the line's first station (a later station's
        # WorkStarted would give it another start time); with no stations in the profile, by the first seen.
        order = profile.line.station_order
        self.unit_station = order[0] if order else None
        self.transactions: dict[tuple[str, str], Transaction] = {}
        self.units: OrderedDict[str, dict[str, Any]] = OrderedDict()  # unit rows sent, for their result
        self.closed: OrderedDict[tuple[str, str], None] = OrderedDict()  # transactions stored

    def station(self, handle: str) -> str:
        for pattern, station in self.stations.items():
            if fnmatch.fnmatchcase(handle, pattern):
                return station
        return handle.rsplit(".", 1)[-1]

    def transaction_key(self, env: Envelope) -> tuple[str, str] | None:
        """The work transaction a message belongs to (None: it stands alone)."""
        if env.name not in (WORK_STARTED, WORK_COMPLETED, UNITS_PROCESSED):
            return None
        tid = _get(env.body, "TransactionID", "TransactionId")
        if not isinstance(tid, str) or not tid:
            raise BadMessage("MessageBody.TransactionID", f"expected a transaction id, got {tid!r}")
        return env.source, tid

    def rows(self, env: Envelope) -> tuple[list[Row], tuple[str, str] | None, bool]:
        """Records of one message; the work transaction it belongs to, and whether that now has its start
        and its end (`finish` gives its steps). Raises BadMessage."""
        key = self.transaction_key(env)
        if key is not None and key in self.closed:
            key = None  # a transaction stored already: this is a message delivered again
        txn = self.transactions.setdefault(key, Transaction()) if key is not None else Transaction()
        station = self.station(env.source)
        out: list[Row] = []
        if env.name == WORK_STARTED:
            out += self._units(env, station)
            txn.started = env
        elif env.name == UNITS_PROCESSED:
            for i, u in enumerate(_list(env.body, "UnitProcessData", "UnitProcessData")):
                u = _dict(u, f"MessageBody.UnitProcessData[{i}]")
                unit = _unit_id(u, f"MessageBody.UnitProcessData[{i}]")
                result = PROCESSING_RESULT.get(str(u.get("UnitResult")))
                if result:
                    txn.results[unit] = result
                for name, value, t in _measurements(u.get("UnitProcessData"), f"UnitProcessData[{i}]"):
                    out.append(("measurements", {"unit_id": unit, "station": station, "name": name,
                                                 "value": value, "t": _time(t, name) if t else env.t}))
        elif env.name == WORK_COMPLETED:
            txn.completed = env
        elif env.name == READINGS:
            out += self._readings(env, station)
        elif env.name in INSTALLED:
            out += self._materials(env, station)
        elif env.name == LOADED:
            out += self._loaded(env, station)
        elif env.name == FAULT:
            f = _dict(env.body.get("Fault"), "MessageBody.Fault")
            detail = {k: f.get(k) for k in ("FaultOccurrenceId", "Cause", "Severity", "Description", "Lane")}
            t = _time(f["OccurredAt"], "MessageBody.Fault.OccurredAt") if f.get("OccurredAt") else env.t
            out.append(("events", _event(t, "fault", station, env.source, f.get("FaultCode"), detail)))
        elif env.name == FAULT_CLEARED:
            occurrence = env.body.get("FaultOccurrenceId")
            target = str(occurrence) if occurrence else None
            out.append(("events", _event(env.t, "fault_cleared", station, env.source, target,
                                         {"Operator": env.body.get("Operator")})))
        done = key is not None and txn.started is not None and txn.completed is not None
        return out, key, done

    def has_results(self, key: tuple[str, str]) -> bool:
        """Whether the transaction's UnitsProcessed came (its units' own results)."""
        txn = self.transactions.get(key)
        return txn is not None and bool(txn.results)

    def finish(self, key: tuple[str, str]) -> list[Row]:
        """The steps of a transaction that has its start and end; it is closed."""
        txn = self.transactions[key]
        assert txn.completed is not None
        rows = self._steps(txn, self.station(txn.completed.source))
        self.close(key)
        return rows

    def close(self, key: tuple[str, str]) -> None:
        """The transaction is stored (or let go): forget it, and know its messages when they come again."""
        self.transactions.pop(key, None)
        self.closed[key] = None
        if len(self.closed) > UNITS_KEPT:
            self.closed.popitem(last=False)

    def _units(self, env: Envelope, station: str) -> Iterator[Row]:
        body = env.body
        wo = _get(body, "WorkOrderIdentifier")
        work_order = wo.get("WorkOrderId") if isinstance(wo, dict) else None
        for unit in _unit_ids(body):
            if self.unit_station is not None and station != self.unit_station:
                continue
            if self.unit_station is None and unit in self.units:
                continue
            row = {"unit_id": unit, "product": self.product or body.get("RecipeName"), "line": self.line,
                   "work_order": work_order, "t_start": env.t}
            self.units[unit] = row
            if len(self.units) > UNITS_KEPT:
                self.units.popitem(last=False)
            yield "units", row

    def _steps(self, txn: Transaction, station: str) -> list[Row]:
        assert txn.started is not None and txn.completed is not None
        done = txn.completed
        default = WORK_RESULT.get(str(done.body.get("Result")))
        rows: list[Row] = []
        units = _unit_ids(txn.started.body) or _unit_ids(done.body)
        for unit in units:
            result = txn.results.get(unit, default)
            if result is None:  # Skipped: the unit was not worked on here
                continue
            rows.append(("steps", {"unit_id": unit, "station": station, "machine": done.source,
                                   "recipe_id": txn.started.body.get("RecipeName"), "t_in": txn.started.t,
                                   "t_out": done.t, "result": result}))
            known = self.units.get(unit)
            if result == "fail" and known is not None:  # the unit's own record, with its end and result
                rows.append(("units", {**known, "t_end": done.t, "result": "fail"}))
        return rows

    def _readings(self, env: Envelope, station: str) -> Iterator[Row]:
        for i, r in enumerate(_list(env.body, "Readings", "Readings")):
            where = f"MessageBody.Readings[{i}]"
            r = _dict(r, where)
            name = r.get("ReadingIdentifier")
            if not isinstance(name, str) or not name:
                raise BadMessage(f"{where}.ReadingIdentifier", f"expected a name, got {name!r}")
            value = _number(r.get("Value"), f"{where}.Value")
            t = _time(r["TimeRecorded"], f"{where}.TimeRecorded") if r.get("TimeRecorded") else env.t
            unit = r.get("UnitIdentifier")
            if unit:
                yield "measurements", {"unit_id": str(unit), "station": station, "name": name, "value": value, "t": t}
            else:
                yield "signals", {"name": f"{station}.{name}", "t": t, "value": value}

    def _materials(self, env: Envelope, station: str) -> Iterator[Row]:
        items = _list(env.body, "InstalledMaterials", "InstalledMaterials", "AppliedMaterials")
        for i, m in enumerate(items):
            where = f"MessageBody.InstalledMaterials[{i}]"
            m = _dict(m, where)
            unit = _unit_id(m, where)
            pkg = _dict(m.get("Material"), f"{where}.Material")
            part = pkg.get("InternalPartNumber")
            lot = pkg.get("BatchId") or pkg.get("UniqueIdentifier")
            if not part or not lot:
                raise BadMessage(f"{where}.Material", "needs InternalPartNumber and BatchId or UniqueIdentifier")
            yield "materials", {"unit_id": unit, "station": station, "material": str(part), "lot": str(lot)}

    def _loaded(self, env: Envelope, station: str) -> Iterator[Row]:
        for i, loc in enumerate(_list(env.body, "Materials", "Materials")):
            loc = _dict(loc, f"MessageBody.Materials[{i}]")
            pkg = loc.get("MaterialPackage") or {}
            detail = {"location": loc.get("LocationName") or loc.get("LocationIdentifier"),
                      "part": pkg.get("InternalPartNumber"), "lot": pkg.get("BatchId"),
                      "package": pkg.get("UniqueIdentifier")}
            yield "events", _event(env.t, "material_loaded", station, env.source,
                                   detail["location"] or detail["package"], detail)


def _event(t: datetime, kind: str, station: str, machine: str, target: Any, detail: dict[str, Any]) -> dict[str, Any]:
    return {"t": t, "kind": kind, "station": station, "machine": machine,
            "target": None if target is None else str(target), "detail": json.dumps(detail, default=str)}


def _unit_id(item: dict[str, Any], where: str) -> str:
    unit = item.get("UnitIdentifier")
    if not isinstance(unit, str) or not unit:
        raise BadMessage(f"{where}.UnitIdentifier", f"expected a unit id, got {unit!r}")
    return unit


def _unit_ids(body: dict[str, Any]) -> list[str]:
    units = [_unit_id(_dict(u, f"MessageBody.Units[{i}]"), f"MessageBody.Units[{i}]")
             for i, u in enumerate(_list(body, "Units", "Units"))]
    primary = body.get("PrimaryIdentifier")
    return units or ([primary] if isinstance(primary, str) and primary else [])


def _number(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise BadMessage(where, f"not a number: {v!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise BadMessage(where, f"not a finite number: {v!r}")
    return x


def _measurements(data: Any, where: str) -> Iterator[tuple[str, float, Any]]:
    """Numeric measurements anywhere in a unit's process data (its shape depends on the process)."""
    if isinstance(data, list):
        for i, x in enumerate(data):
            yield from _measurements(x, f"{where}[{i}]")
    elif isinstance(data, dict):
        name = data.get("MeasurementName")
        if isinstance(name, str) and name:
            measured = data.get("MeasuredValue")
            value = measured.get("Value") if isinstance(measured, dict) else data.get("ActualValue")
            if value is not None:
                yield name, _number(value, f"{where}.{name}"), data.get("TimeRecorded")
                return
        for k, x in data.items():
            if isinstance(x, dict | list):
                yield from _measurements(x, f"{where}.{k}")


def envelope(name: str, body: dict[str, Any], source: str, t: datetime | None = None,
             unique_id: str | None = None, version: str = "2.0") -> bytes:
    """A CFX message as an endpoint sends it (for the line's publishers, tests and benchmarks)."""
    text = naive_utc(t or datetime.now(UTC)).isoformat() + "Z"
    return json.dumps({"MessageName": name, "Version": version, "TimeStamp": text,
                       "UniqueID": unique_id or str(uuid.uuid4()), "Source": source, "Target": None,
                       "RequestID": None, "MessageBody": body}).encode()
