"""Injected micro-problems at run time: where each is active, what caused it, what fixes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linelab.twin.scenario import DEFAULT_DURATION, DEFAULT_MAGNITUDE, DEFAULT_RAMP

OPERATORS_PER_SHIFT = 4

# Which scheduled maintenance ends which problem type.
SCHEDULE_FIXES = {
    "stencil_clog": "stencil_clean",
    "nozzle_wear": "nozzle_swap",
    "tester_drift": "tester_calibration",
    "reflow_zone_loss": "oven_service",
}

DESCRIPTIONS = {
    "stencil_clog": "stencil apertures clog: paste volume falls with every print until the stencil is cleaned",
    "nozzle_wear": "a worn placement nozzle places parts off-centre",
    "bad_lot": "a component lot with poor solderability (tombstones) and high ESR (ripple)",
    "reflow_zone_loss": "an oven zone heater loses power: the board profile runs cold",
    "shift_handling": "one shift handles boards badly between reflow and AOI",
    "tester_drift": "a functional tester drifts out of calibration: vout reads high, false fails",
    "humidity_excursion": "ambient humidity rises: paste takes up moisture, solder balls and slump",
}


@dataclass
class Problem:
    """One injected problem and its ground truth. Unit indices count from 0 across all chunks."""

    spec: Any
    id: str
    onset: int | None  # first affected unit; None for a bad lot until the lot is loaded
    end: int | None = None  # first unit no longer affected
    fixed_by: str | None = None  # "action:<kind>" | "schedule:<kind>" | "duration" | "lot_exhausted"
    onset_time: str | None = None
    end_time: str | None = None
    lot: int | None = None  # bad_lot: registry index of the bad lot
    lot_name: str | None = None
    lot_last_unit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def magnitude(self) -> float:
        return self.spec.magnitude if self.spec.magnitude is not None else DEFAULT_MAGNITUDE[self.type]

    @property
    def ramp(self) -> int:
        return self.spec.ramp or DEFAULT_RAMP.get(self.type, 1)

    def status(self, produced: int) -> str:
        """pending | active | fixed (by an action or schedule) | ended (ran its course)."""
        if self.end is not None and self.end <= produced:
            return "fixed" if self.fixed_by and self.fixed_by.startswith(("action", "schedule")) else "ended"
        if self.onset is not None and self.onset < produced:
            return "active"
        return "pending"

    def close(self, at: int, by: str) -> None:
        """End the problem at unit `at` if it is not over before then."""
        if self.end is None or at < self.end:
            self.end = max(at, self.onset) if self.onset is not None else at
            self.fixed_by = by

    def severity(self, idx: np.ndarray) -> np.ndarray:
        """0 outside the active window; inside it the ramped fraction in (0, 1] (clog: per-1000-print count)."""
        if self.onset is None:
            return np.zeros(idx.shape[0])
        end = self.end if self.end is not None else np.iinfo(np.int64).max
        active = (idx >= self.onset) & (idx < end)
        since = (idx - self.onset + 1).astype(np.float64)
        # clogging keeps worsening with every print; the others ramp up to full strength
        frac = since / 1000.0 if self.type == "stencil_clog" else np.minimum(1.0, since / self.ramp)
        return np.where(active, frac, 0.0)

    def cause(self) -> dict[str, Any]:
        s = self.spec
        match self.type:
            case "stencil_clog":
                return {"factor": "stencil", "level": "STENCIL-1", "station": "PRINT", "machine": "SP1"}
            case "nozzle_wear":
                return {
                    "factor": "nozzle",
                    "level": f"{s.machine}-{s.nozzle}",
                    "station": "PLACE",
                    "machine": s.machine,
                }
            case "bad_lot":
                return {
                    "factor": "lot",
                    "level": self.lot_name,
                    "station": "PLACE",
                    "material": s.material,
                    "supplier": s.supplier,
                }
            case "reflow_zone_loss":
                return {"factor": "oven_zone", "level": f"R1-Z{s.zone}", "station": "REFLOW", "machine": "R1"}
            case "shift_handling":
                return {"factor": "shift", "level": s.shift, "station": "AOI"}
            case "tester_drift":
                return {"factor": "tester", "level": s.tester, "station": "TEST", "machine": s.tester}
            case _:
                return {"factor": "humidity", "level": "high", "param": "ambient_humidity_pct", "station": "PRINT"}

    def accept(self) -> list[dict[str, Any]]:
        """Other ways a correct diagnosis may name the same cause (coarser or via a column)."""
        s = self.spec
        match self.type:
            case "stencil_clog":
                return [
                    {"factor": "fixture", "level": "STENCIL-1"},
                    {"factor": "machine", "level": "SP1"},
                    {"factor": "measurement", "level": "paste_volume_pct"},
                ]
            case "nozzle_wear":
                return [{"factor": "fixture", "level": f"{s.machine}-{s.nozzle}"}]
            case "bad_lot":
                return [{"factor": "supplier", "level": s.supplier}]
            case "reflow_zone_loss":
                return [
                    {"factor": "param", "level": f"zone{s.zone}_temp_c"},
                    {"factor": "measurement", "level": "peak_temp_c"},
                    {"factor": "machine", "level": "R1"},
                ]
            case "shift_handling":
                ops = [f"OP-{s.shift}{k}" for k in range(1, OPERATORS_PER_SHIFT + 1)]
                return [{"factor": "operator", "level": op} for op in ops]
            case "tester_drift":
                return [{"factor": "machine", "level": s.tester}]
            case _:
                return [{"factor": "param", "level": "ambient_humidity_pct"}]

    def fix_actions(self) -> list[dict[str, Any]]:
        s = self.spec
        match self.type:
            case "stencil_clog":
                return [{"kind": "clean_stencil"}]
            case "nozzle_wear":
                return [{"kind": "replace_nozzle", "machine": s.machine, "nozzle": s.nozzle}]
            case "bad_lot":
                return [{"kind": "hold_lot", "lot": self.lot_name}]
            case "reflow_zone_loss":
                return [{"kind": "service_oven"}]
            case "shift_handling":
                return [{"kind": "handling_retrain", "shift": s.shift}]
            case "tester_drift":
                return [{"kind": "recalibrate_tester", "tester": s.tester}]
            case _:
                return [{"kind": "dehumidify"}]

    def symptoms(self) -> dict[str, Any]:
        """Where the data moves: stations, measurements/params and defect codes."""
        match self.type:
            case "stencil_clog":
                return {
                    "station": "SPI",
                    "measurements": ["paste_volume_pct", "paste_height_um"],
                    "defect_codes": ["INSUFFICIENT", "PASTE_VOLUME_LOW"],
                }
            case "nozzle_wear":
                return {
                    "station": "PLACE",
                    "measurements": ["place_offset_x_mm", "place_offset_y_mm", "pick_vacuum_kpa"],
                    "defect_codes": ["MISALIGN"],
                }
            case "bad_lot":
                return {"station": "AOI", "measurements": ["ripple_mv"], "defect_codes": ["TOMBSTONE", "RIPPLE_HIGH"]}
            case "reflow_zone_loss":
                return {
                    "station": "REFLOW",
                    "measurements": ["peak_temp_c", "time_above_liquidus_s"],
                    "params": [f"zone{self.spec.zone}_temp_c"],
                    "defect_codes": ["COLD_JOINT"],
                }
            case "shift_handling":
                return {"station": "AOI", "defect_codes": ["HANDLING"]}
            case "tester_drift":
                return {"station": "TEST", "measurements": ["vout_v"], "defect_codes": ["VOUT_HIGH"]}
            case _:
                return {"station": "AOI", "params": ["ambient_humidity_pct"], "defect_codes": ["SOLDER_BALL", "BRIDGE"]}

    def truth(self, produced: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "description": DESCRIPTIONS[self.type],
            "status": self.status(produced),
            "onset_unit": self.onset,
            "onset_time": self.onset_time,
            "magnitude": self.magnitude,
            "duration": self.spec.duration or DEFAULT_DURATION.get(self.type),
            "end_unit": self.end if self.end is not None and self.end <= produced else None,
            "end_time": self.end_time,
            "fixed_by": self.fixed_by if self.end is not None and self.end <= produced else None,
            "cause": self.cause(),
            "accept": self.accept(),
            "fix_actions": self.fix_actions(),
            "symptoms": self.symptoms(),
        }


def make_problems(specs: list[Any]) -> list[Problem]:
    out: list[Problem] = []
    counts: dict[str, int] = {}
    for spec in specs:
        counts[spec.type] = counts.get(spec.type, 0) + 1
        pid = spec.id or f"{spec.type}-{counts[spec.type]}"
        onset = None if spec.type == "bad_lot" else spec.onset
        p = Problem(spec=spec, id=pid, onset=onset)
        duration = spec.duration or DEFAULT_DURATION.get(spec.type)
        if duration and onset is not None:
            p.end, p.fixed_by = onset + duration, "duration"
        out.append(p)
    return out
