"""Stages per station: shadow → canary → full, every change an event, a rollback a problem.

A station's deployment (artefact kind "deployment", id = the station) names its incumbent (full:
its decisions are applied to every unit outside the canary), at most one canary (its decisions
are applied to `canary_share` of the units, chosen by a stable hash of the serial) and any number
of shadows (they score every unit and act on none). A deployment may require a person's
sign-off before anything becomes full. Every move is an event (artefact kind "model_event"): who
or what moved which version from which stage to which, why, and the evidence.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from linelab.errors import UserError
from linelab.model import Alarm, Evidence
from linelab.monitor.problems import ProblemBook

from . import registry
from .serving import NotHeld

if TYPE_CHECKING:  # loaded by what scores units (`bucket`), not by every model command
    import numpy as np

KIND = "deployment"
EVENT_KIND = "model_event"
Stage = Literal["shadow", "canary", "full", "retired"]


class Guards(BaseModel):
    """When a version is withdrawn by itself, and when it is promoted: effect sizes over enough units."""

    alpha: float = Field(0.05, gt=0, lt=1, description="promotion: the always-valid test's error rate")
    tau: float = Field(0.1, gt=0, description="promotion: the effect (sd of the paired saving) tuned for")
    min_units: int = Field(300, ge=10, description="paired units with known results before any verdict")
    max_escape_factor: float = Field(5.0, gt=1, description="passed units may fail at most this times the "
                                                            "model's escape budget")
    min_passed: int = Field(200, ge=1)
    max_loss: float = Field(0.1, gt=0, description="rollback when the paired saving is this many sds worse "
                                                   "than the incumbent's")
    max_shift: float = Field(1.0, gt=0, description="rollback when a reading's mean moves this many training sds")
    drift_units: int = Field(500, ge=50, description="latest scored units drift is judged on (at least this many)")


class Deployment(BaseModel):
    station: str
    kind: str | None = None
    full: str | None = None
    previous: list[str] = Field(default_factory=list, description="earlier incumbents, latest last")
    canary: str | None = None
    canary_share: float = Field(0.1, gt=0, lt=1)
    shadows: list[str] = Field(default_factory=list)
    require_signoff: bool = False
    awaiting_signoff: str | None = None
    since: dict[str, str] = Field(default_factory=dict, description="version -> when it entered its stage")
    files: dict[str, str] = Field(default_factory=dict, description="version -> its model file's SHA-256")
    scored_seq: int = Field(0, description="ingest batches up to this one have been scored")
    guards: Guards = Field(default_factory=Guards)
    updated: str = ""

    def stage_of(self, version: str) -> Stage:
        if version == self.full:
            return "full"
        if version == self.canary:
            return "canary"
        return "shadow" if version in self.shadows else "retired"

    @property
    def live(self) -> list[str]:
        return [v for v in [self.full, self.canary, *self.shadows] if v]


def now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def get(ws: Any, station: str) -> Deployment:
    raw = ws.get_artifact(KIND, station)
    if raw:
        return Deployment.model_validate(raw)
    # a new deployment scores the units that arrive from now on, not the line's history
    return Deployment(station=station, scored_seq=ws.last_batch_seq())


def save(ws: Any, dep: Deployment) -> None:
    dep.updated = now()
    ws.put_artifact(KIND, dep.station, dep.model_dump(mode="json"), status="live" if dep.live else "empty")
    _RECENT.pop((str(ws.path), dep.station), None)


_RECENT: dict[tuple[str, str], tuple[float, Deployment]] = {}
RECENT_S = 0.5  # how stale a per-unit request's view of the stages may be (a change made by another process)


def recent(ws: Any, station: str, held_only: bool = False) -> Deployment:
    """The deployment as a per-unit request sees it: read at most every `RECENT_S` seconds (changes made
    in this process are seen at once). `held_only`: never read (`NotHeld`)."""
    key = (str(ws.path), station)
    hit = _RECENT.get(key)
    if hit is not None and time.monotonic() - hit[0] < RECENT_S:
        return hit[1]
    if held_only:
        raise NotHeld(station)
    dep = get(ws, station)
    _RECENT[key] = (time.monotonic(), dep)
    return dep


def all_deployments(ws: Any) -> list[Deployment]:
    return [Deployment.model_validate(r) for r in ws.list_artifacts(KIND)]


def events(ws: Any, station: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
    return [e for e in ws.list_artifacts(EVENT_KIND)
            if (station is None or e["station"] == station) and (version is None or e["version"] == version)]


def move(ws: Any, dep: Deployment, version: str, to: Stage, reason: str, by: str = "person",
         evidence: dict[str, Any] | None = None, event: str | None = None) -> dict[str, Any]:
    """Move `version` to stage `to` at its station; the event is recorded and returned."""
    rec = registry.get(ws, version)
    if rec.station != dep.station:
        raise UserError(f"model {version} is for station {rec.station}, not {dep.station}")
    if dep.kind and dep.kind != rec.kind and dep.live:
        raise UserError(f"station {dep.station} runs {dep.kind} models; {version} is a {rec.kind}")
    before = dep.stage_of(version) if version in dep.live else rec.status  # registered, or retired
    if before == to:
        raise UserError(f"model {version} is already {to} at {dep.station}")
    if to == "canary" and dep.canary not in (None, version):
        raise UserError(f"station {dep.station} already has the canary {dep.canary}; roll it back or promote "
                        "it first")
    _remove(dep, version)
    if to == "shadow":
        dep.shadows.append(version)
    elif to == "canary":
        dep.canary = version
    elif to == "full":
        if dep.full:
            dep.previous.append(dep.full)
            dep.since.pop(dep.full, None)
        dep.full = version
    if to == "retired":
        dep.since.pop(version, None)
    else:
        dep.since[version] = now()
    if dep.awaiting_signoff == version:
        dep.awaiting_signoff = None
    dep.kind = rec.kind
    dep.files = {v: dep.files.get(v) or registry.get(ws, v).sha256 for v in dep.live}
    save(ws, dep)
    rec.status = to
    registry.update(ws, rec)
    return record_event(ws, dep.station, version, before, to, event or ("promote" if _rank(to) > _rank(before)
                                                                        else "withdraw"), reason, by, evidence)


def _rank(stage: str) -> int:
    return {"registered": 0, "retired": 0, "shadow": 1, "canary": 2, "full": 3}[stage]


def _remove(dep: Deployment, version: str) -> None:
    if dep.full == version:
        dep.full = dep.previous.pop() if dep.previous else None
        if dep.full:
            dep.since[dep.full] = now()
    if dep.canary == version:
        dep.canary = None
    dep.shadows = [v for v in dep.shadows if v != version]


def record_event(ws: Any, station: str, version: str, before: str, to: str, event: str, reason: str, by: str,
                 evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    eid = ws.next_id(EVENT_KIND, "EVT")
    e = {"id": eid, "t": now(), "station": station, "version": version, "from": before, "to": to, "event": event,
         "reason": reason, "by": by, "evidence": evidence or {}}
    ws.put_artifact(EVENT_KIND, eid, e, status=event)
    return e


def rollback(ws: Any, dep: Deployment, version: str | None, reason: str, by: str = "person",
             evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Withdraw a version (default: the canary, else the incumbent, which its predecessor replaces),
    record the event and open a problem about it."""
    version = version or dep.canary or dep.full
    if version is None or version not in dep.live:
        raise UserError(f"nothing to roll back at {dep.station}" if version is None else
                        f"model {version} is not live at {dep.station} (live: {', '.join(dep.live) or 'none'})")
    was = dep.stage_of(version)
    event = move(ws, dep, version, "retired", reason, by, evidence, event="rollback")
    event["problem"] = open_problem(ws, dep.station, version, was, reason, evidence or {})
    ws.put_artifact(EVENT_KIND, event["id"], event, status="rollback")
    return event


def open_problem(ws: Any, station: str, version: str, stage: str, reason: str, evidence: dict[str, Any]) -> str:
    """A rollback is a problem on the line: the monitor's problem book files it (one per station while open)."""
    t = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    seen = Evidence(unit=evidence.get("last_unit"), t=t)
    alarm = Alarm(
        detector="model_rollout", kind="model_rollback", entity=f"model@{station}",
        scope={"station": station, "model": version, "stage": stage}, onset=seen, first=seen, latest=seen,
        units_affected=int(evidence.get("misrouted", 0)), yield_lost_units=0.0,
        effect={k: v for k, v in evidence.items() if isinstance(v, (int, float, str))},
        description=f"Model {version} ({stage} at {station}) was rolled back: {reason}.",
    )
    return ProblemBook(ws).add(alarm)


def canary_units(serials: Any, station: str, share: float) -> np.ndarray:
    """Which units a canary acts on: a stable hash of station and serial below `share` (same unit, same answer)."""
    return bucket(serials, station) < share


def bucket(serials: Any, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per serial, stable across processes and versions: 64-bit FNV-1a over
    the salt and the serial's UTF-8 bytes, then MurmurHash3's finaliser; vectorised over units (the
    loop runs over character positions)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = serials if isinstance(serials, pa.Array) else pa.array(list(serials), pa.string())
    arr = pc.cast(arr, pa.large_string())
    n = len(arr)
    if n == 0:
        return np.empty(0)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        h = np.full(n, _fnv(_FNV_OFFSET, salt.encode() + b"/"), dtype=np.uint64)
        for j in range(int(lengths.max(initial=0))):
            live = lengths > j
            byte = data[np.minimum(offsets[:-1] + j, len(data) - 1)].astype(np.uint64)
            h = np.where(live, (h ^ byte) * np.uint64(_FNV_PRIME), h)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def _fnv(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h
