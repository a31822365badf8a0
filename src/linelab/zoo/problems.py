"""The problems a zoo run injects, with their exact ground truth.

A `Problem` is where it strikes (a machine, a lot, a shift...), when (onset and end unit), how
hard (obvious or subtle), what it does (moves a reading's true value, moves what a tester reads,
or fails units at a station), the cause a diagnosis should name and the action that ends it.
`make_problems(kind, type, severity, line)` plans one scenario's problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from linelab.zoo.kinds import LineKind

if TYPE_CHECKING:
    from linelab.zoo.line import ZooLine

# type -> (obvious, subtle) magnitude: sigmas of the reading, a failure probability, or env units.
MAGNITUDE: dict[str, tuple[float, float]] = {
    "machine_step": (2.0, 0.75),
    "machine_drift": (3.0, 1.2),  # reached a fifth of the run after onset
    "tester_drift": (3.0, 1.2),
    "lot_shift": (1.5, 0.6),
    "bad_lot_fails": (0.25, 0.05),
    "aliased_lot": (0.25, 0.06),
    "env_excursion": (10.0, 4.0),
    "shift_handling": (0.05, 0.012),
    "operator_handling": (0.10, 0.03),
    "product_specific": (2.0, 0.8),
    "intermittent": (0.5, 0.15),
}
PROBLEM_TYPES = (*MAGNITUDE, "overlap")
DESCRIPTIONS = {
    "machine_step": "one machine's reading steps off its level",
    "machine_drift": "one machine's reading drifts (wear not cured by tool changes)",
    "tester_drift": "a tester's bias drifts: good units read bad (false failures)",
    "lot_shift": "a material lot moves a reading without failing units",
    "bad_lot_fails": "a bad material lot fails units downstream",
    "aliased_lot": "a bad lot loaded on one machine only: lot and machine see the same units",
    "env_excursion": "the room's climate leaves its band and moves readings",
    "shift_handling": "one shift's handling damages units",
    "operator_handling": "one operator's handling damages units",
    "product_specific": "a problem on one product only (its program or fixture)",
    "intermittent": "a machine fails units in short bursts (a loose contact)",
}
BURST = 25  # units per block of an intermittent fault
BURST_SHARE = 0.15


@dataclass
class Problem:
    id: str
    type: str
    severity: str
    magnitude: float
    onset: int
    end: int | None = None
    fixed_by: str | None = None
    station: str | None = None  # where its machine/tester/operator works, or where units fail
    seen_at: str | None = None  # the station whose records show it (a lathe's diameters: at the CMM)
    machine: str | None = None
    reading: str | None = None
    material: str | None = None
    lot: int | None = None
    product: str | None = None
    shift: str | None = None
    operator: str | None = None
    env: str | None = None
    defect: str | None = None
    ramp_units: float = 1.0  # drifts: units to reach the magnitude
    cause: dict[str, Any] = field(default_factory=dict)
    accept: list[dict[str, Any]] = field(default_factory=list)
    aliased_with: dict[str, Any] | None = None
    fix_actions: list[dict[str, Any]] = field(default_factory=list)
    onset_time: str | None = None
    end_time: str | None = None
    affected: list[np.ndarray] = field(default_factory=list)  # unit indices, per chunk
    extra_failures: int = 0

    def active(self, idx: np.ndarray) -> np.ndarray:
        return (idx >= self.onset) & (idx < (self.end if self.end is not None else np.iinfo(np.int64).max))

    def shape(self, idx: np.ndarray) -> np.ndarray:
        """Severity over units: 1 for steps, a ramp for drifts."""
        if self.type in ("machine_drift", "tester_drift"):
            return np.clip((idx - self.onset) / self.ramp_units, 0.0, None)
        return np.ones(idx.shape)

    def close(self, unit: int, by: str) -> None:
        if self.end is None or unit < self.end:
            self.end, self.fixed_by = unit, by

    def truth(self, produced: int, serial: Any) -> dict[str, Any]:
        ended = self.end is not None and self.end <= produced
        return {
            "id": self.id, "type": self.type, "severity": self.severity, "magnitude": self.magnitude,
            "description": DESCRIPTIONS[self.type],
            "status": "pending" if self.onset >= produced else ("ended" if ended else "active"),
            "onset_unit": self.onset, "onset_serial": serial(self.onset), "onset_time": self.onset_time,
            "end_unit": self.end if ended else None, "end_time": self.end_time if ended else None,
            "fixed_by": self.fixed_by if ended else None,
            "cause": self.cause, "accept": self.accept, "aliased_with": self.aliased_with,
            "fix_actions": self.fix_actions,
            "symptom": {"station": self.seen_at or self.station, "reading": self.reading, "defect": self.defect},
            "affected_units": int(sum(a.size for a in self.affected)),
            "extra_failures": int(self.extra_failures),
        }


def make_problems(kind: LineKind, ptype: str, severity: str, line: ZooLine) -> list[Problem]:
    """Plan a scenario's problems (none for 'clean'); onsets fall 35-50 % into the run."""
    if ptype == "clean":
        return []
    rng = np.random.default_rng([line.seed, 7])
    if ptype == "overlap":  # a machine step, and a bad lot starting while it lasts
        a = _one(kind, "machine_step", severity, line, rng, int(line.run_units * rng.uniform(0.3, 0.4)), "overlap-1")
        b = _one(kind, "bad_lot_fails", severity, line, rng, a.onset + int(0.08 * line.run_units), "overlap-2")
        return [a, b]
    if ptype not in MAGNITUDE:
        raise ValueError(f"unknown problem type {ptype!r}; known: {', '.join(PROBLEM_TYPES)}, clean")
    return [_one(kind, ptype, severity, line, rng, int(line.run_units * rng.uniform(0.35, 0.5)), f"{ptype}-1")]


def _seen_at(kind: LineKind, p: Problem) -> str | None:
    if p.reading and p.type not in ("bad_lot_fails", "aliased_lot", "intermittent"):
        return kind.reading(p.reading).station
    return p.station


def _one(kind: LineKind, ptype: str, severity: str, line: ZooLine, rng: np.random.Generator, u0: int,
         pid: str) -> Problem:
    tgt = kind.targets[ptype]
    mag = MAGNITUDE[ptype][0 if severity == "obvious" else 1]
    p = Problem(id=pid, type=ptype, severity=severity, magnitude=mag, onset=u0, defect=tgt.get("defect"))
    if ptype in ("machine_step", "machine_drift", "intermittent", "tester_drift"):
        st = kind.station(tgt["station"])
        p.station, p.reading = st.name, tgt.get("reading")
        p.machine = st.machines[int(rng.integers(len(st.machines)))]
        p.ramp_units = 0.2 * line.run_units
        p.cause = {"kind": "machine", "station": st.name, "name": p.machine}
        if ptype == "tester_drift":
            p.fix_actions = [{"kind": "calibrate_tester", "tester": p.machine}]
        else:
            p.fix_actions = [{"kind": "service_machine", "machine": p.machine}]
        # the machine was last serviced/calibrated shortly before: the next one ends the problem
        every = st.calibrate_every if ptype == "tester_drift" else st.service_every
        if every:
            line.set_phase(st.name, p.machine, "calibration" if ptype == "tester_drift" else "service",
                           u0 - int(rng.uniform(0.05, 0.3) * every), every)
            nxt = line.next_planned(st.name, p.machine, "calibration" if ptype == "tester_drift" else "service", u0)
            p.close(nxt, "planned " + ("calibration" if ptype == "tester_drift" else "maintenance"))
            p.fixed_by = "planned " + ("calibration" if ptype == "tester_drift" else "maintenance")
    elif ptype in ("lot_shift", "bad_lot_fails"):
        mat = next(m for m in kind.materials if m.name == tgt["material"])
        p.material, p.reading = mat.name, tgt.get("reading")
        p.station = tgt.get("station") or kind.reading(tgt["reading"]).station
        p.lot = line.lot_at(mat.name, u0)
        p.onset, end = line.lot_span(mat.name, p.lot)
        p.close(end, "lot used up")
        p.cause = {"kind": "lot", "station": mat.station, "name": line.lot_name(mat.name, p.lot)}
        p.fix_actions = [{"kind": "quarantine_lot", "lot": p.cause["name"]}]
    elif ptype == "aliased_lot":
        mat = next(m for m in kind.materials if m.name == tgt["material"])
        st = kind.station(mat.station)
        p.material, p.station = mat.name, tgt["station"]
        p.machine = st.machines[int(rng.integers(len(st.machines)))]
        p.lot = line.add_alias_lot(mat.name, p.machine, u0, u0 + mat.lot_size * len(st.machines))
        p.close(u0 + mat.lot_size * len(st.machines), "lot used up")
        p.cause = {"kind": "lot", "station": mat.station, "name": line.lot_name(mat.name, p.lot)}
        p.aliased_with = {"kind": "machine", "station": st.name, "name": p.machine}
        p.fix_actions = [{"kind": "quarantine_lot", "lot": p.cause["name"]}]
    elif ptype == "env_excursion":
        env = next(e for e in kind.env if e.name == tgt["env"])
        p.env, p.station = env.name, env.station
        p.reading = next((r.name for r in kind.readings if r.env and r.env[0] == env.name), None)
        p.close(u0 + int(0.15 * line.run_units), "weather")
        p.cause = {"kind": "param", "station": env.station, "name": env.name}
        p.accept = [{"kind": "signal", "station": None, "name": env.name}]
        p.fix_actions = [{"kind": "restore_environment", "name": env.name}]
    elif ptype == "shift_handling":
        p.station, p.shift = tgt["station"], kind.shifts[int(rng.integers(len(kind.shifts)))]
        p.cause = {"kind": "shift", "station": None, "name": p.shift}
        p.fix_actions = [{"kind": "retrain_shift", "shift": p.shift}]
    elif ptype == "operator_handling":
        p.station = tgt["station"]
        shift = kind.shifts[int(rng.integers(len(kind.shifts)))]
        p.operator = f"OP-{shift}{int(rng.integers(kind.operators_per_shift)) + 1}"
        p.cause = {"kind": "operator", "station": p.station, "name": p.operator}
        p.fix_actions = [{"kind": "retrain_operator", "operator": p.operator}]
    elif ptype == "product_specific":
        p.station, p.reading, p.product = tgt["station"], tgt["reading"], tgt["product"]
        p.cause = {"kind": "product", "station": p.station, "name": p.product}
        p.fix_actions = [{"kind": "adjust_program", "product": p.product, "station": p.station}]
    p.seen_at = _seen_at(kind, p)
    return p
