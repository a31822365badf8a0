"""The simulated SMT line: produces record tables in chunks and takes actions in between.

Route of a unit (stations and machines):
PRINT (SP1, STENCIL-1) -> SPI (SPI1) [fail: wash + reprint, re-inspect; second fail = scrap]
-> PLACE (P1 or P2, nozzle N1..N4) -> REFLOW (R1) -> AOI (AOI1) [fail: rework at RW1, re-inspect;
rework fails = scrap] -> TEST (T1 or T2, fixture F1/F2) [fail: retest on the other tester; fails
again = fail] -> PACK (PK1).

Everything per unit is computed with array operations over the whole chunk; the only Python
loops run over problems, maintenance events and reel changes (a handful per chunk).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.optimize import minimize
from scipy.signal import lfilter
from scipy.special import expit

from linelab.twin import physics as ph
from linelab.twin import tables as tb
from linelab.twin.actions import ACTION_KINDS, MACHINES, NOZZLES, TESTERS, parse_action
from linelab.twin.errors import ActionError
from linelab.twin.materials import MATERIALS, Feed, LotRegistry, MaterialStream
from linelab.twin.noise import UnitNoise
from linelab.twin.problems import OPERATORS_PER_SHIFT, SCHEDULE_FIXES, Problem, make_problems
from linelab.twin.recipe import RECIPE_PARAMS, check_param, default_recipe, merge_recipe
from linelab.twin.scenario import Scenario, load_scenario

US = 1_000_000
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1)

SHIFT_NAMES = ("A", "B", "C")
OPERATOR_NAMES = [f"OP-{s}{k}" for s in SHIFT_NAMES for k in range(1, OPERATORS_PER_SHIFT + 1)]
NOZZLE_NAMES = [f"{m}-{n}" for m in MACHINES for n in NOZZLES]
FIXTURE_NAMES = [f"{t}-F{k}" for t in TESTERS for k in (1, 2)]
STEP_RESULTS = ("pass", "fail", "rework")
UNIT_RESULTS = ("pass", "fail", "scrap")
SPI_CODES = ("PASTE_VOLUME_LOW", "PASTE_VOLUME_HIGH")
DEFECT_CODES = ph.AOI_CODES + ph.TEST_CODES + SPI_CODES
_AOI0, _TEST0, _SPI0 = 0, len(ph.AOI_CODES), len(ph.AOI_CODES) + len(ph.TEST_CODES)

MAINTENANCE_KINDS = {  # schedule key -> (scenario field, station, machine, target, downtime s)
    "stencil_clean": ("stencil_clean_every", "PRINT", "SP1", "STENCIL-1", 300),
    "nozzle_swap": ("nozzle_swap_every", "PLACE", None, "all nozzles", 900),
    "tester_calibration": ("tester_calibration_every", "TEST", None, "T1,T2", 0),
    "oven_service": ("oven_service_every", "REFLOW", "R1", "R1", 3600),
}
ACTION_DOWNTIME_S = {"clean_stencil": 300, "replace_nozzle": 240, "service_oven": 3600}

_S = {  # string builders, made once
    "shift": tb.StringCodes(SHIFT_NAMES),
    "operator": tb.StringCodes(OPERATOR_NAMES),
    "nozzle": tb.StringCodes(NOZZLE_NAMES),
    "placer": tb.StringCodes(MACHINES),
    "tester": tb.StringCodes(TESTERS),
    "fixture": tb.StringCodes(FIXTURE_NAMES),
    "step_result": tb.StringCodes(STEP_RESULTS),
    "unit_result": tb.StringCodes(UNIT_RESULTS),
    "defect": tb.StringCodes(DEFECT_CODES),
}


def iso(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=int(t_us))).isoformat()


@dataclass(frozen=True, eq=False)
class Chunk(Mapping[str, pa.Table]):
    """One call's production: record tables keyed by name, and where it sits in the run.

    Tables: units, steps, measurements, params, materials, events (+ specs in the first chunk).
    Rows come grouped by station visit (all SPI readings, then all placements ...), each group in
    unit order, as chunked columns; sort by t / t_in where arrival order matters.
    """

    tables: dict[str, pa.Table]
    first_unit: int  # index of the first unit (its serial is first_unit + 1)
    n_units: int
    t_first: datetime
    t_last: datetime

    def __getitem__(self, key: str) -> pa.Table:
        return self.tables[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)


def _since(idx: np.ndarray, last: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit: units since the latest event at or before it, and that event's unit index."""
    marks = np.concatenate([[last], positions]).astype(np.int64)
    at = marks[np.searchsorted(marks, idx, side="right") - 1]
    return idx - at, at


class Line:
    """The twin: `produce(n)` units, `apply(action)`, read `truth` and `state`.

    >>> line = Line("nozzle_wear", seed=0)
    >>> chunk = line.produce(10_000)          # chunk.tables["units"], ["steps"], ...
    >>> line.apply({"kind": "replace_nozzle", "machine": "P2", "nozzle": "N3"})
    """

    def __init__(self, scenario: Scenario | str | Path = "default", seed: int = 0) -> None:
        self.scenario = load_scenario(scenario)
        self.seed = int(seed)
        sc = self.scenario
        self._recipe = merge_recipe(default_recipe(), sc.recipe)
        self._recipe_version = 1
        self._next = 0
        self._start_us = int((sc.start - EPOCH).total_seconds()) * US
        self._clock_us = self._start_us
        self._day0 = self._start_us // DAY_US
        weather = np.random.default_rng([self.seed, 1])
        shocks = weather.standard_normal(4096) * ph.RH_DAY_SD * np.sqrt(1 - 0.7**2)
        self._day_offsets = lfilter([1.0], [1.0, -0.7], shocks)
        self._nozzle_bias = np.random.default_rng([self.seed, 2]).normal(0.0, 0.004, (len(NOZZLE_NAMES), 2))
        self._schedule = {k: getattr(sc.maintenance, v[0]) for k, v in MAINTENANCE_KINDS.items()}
        self._maint_last = dict.fromkeys(MAINTENANCE_KINDS, 0)
        self._nozzle_replaced = np.zeros(len(NOZZLE_NAMES), dtype=np.int64)
        self.lots = LotRegistry()
        self._streams = {
            name: MaterialStream(m, self.lots, np.random.default_rng([self.seed, 100 + k]))
            for k, (name, m) in enumerate(MATERIALS.items())
        }
        self._feeds: dict[tuple[str, str], Feed] = {}
        for m in MATERIALS.values():
            for machine in ("SP1",) if m.station == "PRINT" else MACHINES:
                self._feeds[(m.name, machine)] = Feed(m, machine)
        self._held: set[int] = set()
        self._issued: set[int] = set()
        self.problems: list[Problem] = make_problems(list(sc.problems))
        self._pending_events: list[dict[str, Any]] = []
        self._pending_downtime_s = 0.0
        self._chunks = 0

    def __repr__(self) -> str:
        return f"Line(scenario={self.scenario.name!r}, seed={self.seed}, units_produced={self._next})"

    # ---- public read-outs --------------------------------------------------------------------
    @property
    def units_produced(self) -> int:
        return self._next

    @property
    def recipe(self) -> dict[str, float]:
        return dict(self._recipe)

    @property
    def recipe_id(self) -> str:
        return f"{self.scenario.product}-R{self._recipe_version:03d}"

    @property
    def truth(self) -> list[dict[str, Any]]:
        """Ground truth of every injected problem (pending, active, fixed or ended)."""
        return [p.truth(self._next) for p in self.problems]

    @property
    def state(self) -> dict[str, Any]:
        """What the line looks like now, before the next unit."""
        i = np.array([self._next])
        wear = {name: 0.0 for name in NOZZLE_NAMES}
        bias = {t: ph.TESTER_BASE_BIAS[t] for t in TESTERS}
        zone_loss = {"R1-Z6": 0.0, "R1-Z7": 0.0}
        rh_extra, handling = 0.0, {s: ph.SHIFT_HANDLING_BASE[s] for s in SHIFT_NAMES}
        for p in self.problems:
            sev = float(p.severity(i)[0]) * p.magnitude
            if p.type == "nozzle_wear":
                wear[f"{p.spec.machine}-{p.spec.nozzle}"] += sev
            elif p.type == "tester_drift":
                bias[p.spec.tester] += sev
            elif p.type == "reflow_zone_loss":
                zone_loss[f"R1-Z{p.spec.zone}"] += sev
            elif p.type == "humidity_excursion":
                rh_extra += sev
            elif p.type == "shift_handling":
                handling[p.spec.shift] += sev
        return {
            "units_produced": self._next,
            "next_serial": f"SN{self._next + 1:08d}",
            "clock": iso(self._clock_us),
            "recipe": self.recipe,
            "recipe_id": self.recipe_id,
            "stencil_prints_since_clean": self._next - self._maint_last["stencil_clean"],
            "nozzle_wear_mm": wear,
            "tester_bias_v": bias,
            "oven_zone_loss_c": zone_loss,
            "humidity_excursion_rh": rh_extra,
            "handling_logit": handling,
            "loaded_lots": {
                f"{machine}/{mat}": self.lots.names[f.reel.lot] if f.reel else None
                for (mat, machine), f in self._feeds.items()
            },
            "held_lots": sorted(self.lots.names[k] for k in self._held),
            "active_problems": [p.id for p in self.problems if p.status(self._next) == "active"],
            "maintenance": {
                k: {
                    "every": every,
                    "last_unit": self._maint_last[k],
                    "next_unit": None if every is None else self._maint_last[k] + every,
                }
                for k, every in self._schedule.items()
            },
        }

    def specs_table(self) -> pa.Table:
        return tb.specs_table(self.scenario.product)

    # ---- the oracle --------------------------------------------------------------------------
    def expected_yield(self, recipe: Mapping[str, float] | None = None) -> float:
        """Noise-free first-pass yield for `recipe` (current recipe updated with it) with no problem."""
        full = merge_recipe(self._recipe, recipe or {})
        return ph.expected_first_pass_yield(full, self._schedule["stencil_clean"])

    def optimal_recipe(self) -> dict[str, float]:
        """The recipe within the safe bounds that maximises `expected_yield`."""
        return dict(_optimal_recipe(self._schedule["stencil_clean"] or 0))

    # ---- control interface -------------------------------------------------------------------
    def apply(self, action: Any, **kwargs: Any) -> dict[str, Any]:
        """Apply an action before the next unit; it is recorded as an event in the next chunk.

        `action` is {"kind": ..., args...}, or a kind name with keyword arguments. Returns what was
        done: the event and the ids of problems it fixed. Raises ActionError (a ValueError) for an
        unknown action, bad arguments or a parameter outside its safe bounds.
        """
        kind, args = parse_action(action, kwargs)
        i = self._next
        # a millisecond apart, so actions applied together stay distinct, ordered events
        t = self._clock_us + US + 1000 * len(self._pending_events)
        spec = ACTION_KINDS[kind]
        station = machine = target = None
        detail: dict[str, Any] = {"action": kind, "scheduled": False}
        fixed: list[Problem] = []

        def fix(pred: Any) -> None:
            for p in self.problems:
                if p.onset is not None and p.onset < i and p.status(i) == "active" and pred(p):
                    p.close(i, f"action:{kind}")
                    p.end_time = iso(t)
                    fixed.append(p)

        match kind:
            case "clean_stencil":
                station, machine, target = "PRINT", "SP1", "STENCIL-1"
                self._maint_last["stencil_clean"] = i
                fix(lambda p: p.type == "stencil_clog")
            case "replace_nozzle":
                station, machine = "PLACE", args["machine"]
                target = f"{args['machine']}-{args['nozzle']}"
                self._nozzle_replaced[NOZZLE_NAMES.index(target)] = i
                fix(lambda p: p.type == "nozzle_wear" and f"{p.spec.machine}-{p.spec.nozzle}" == target)
            case "hold_lot" | "release_lot":
                target = args["lot"]
                lot = self.lots.index.get(target)
                if lot is None or lot not in self._issued:
                    raise ActionError(f"{kind}: no lot {target!r} has been issued to this line")
                detail |= {"material": self.lots.materials[lot], "supplier": self.lots.suppliers[lot]}
                station = MATERIALS[self.lots.materials[lot]].station
                if kind == "hold_lot":
                    self._held.add(lot)
                    fix(lambda p: p.type == "bad_lot" and p.lot == lot)
                else:
                    if lot not in self._held:
                        raise ActionError(f"release_lot: lot {target!r} is not on hold")
                    self._held.discard(lot)
                    stream = self._streams[self.lots.materials[lot]]
                    for p in self.problems:
                        if p.type == "bad_lot" and p.lot == lot and not stream.exhausted(lot):
                            p.end = p.fixed_by = p.end_time = None  # its remaining reels come back
            case "recalibrate_tester":
                station, machine, target = "TEST", args["tester"], args["tester"]
                fix(lambda p: p.type == "tester_drift" and p.spec.tester == target)
            case "service_oven":
                station, machine, target = "REFLOW", "R1", "R1"
                self._maint_last["oven_service"] = i
                fix(lambda p: p.type == "reflow_zone_loss")
            case "handling_retrain":
                station, target = "AOI", f"shift {args['shift']}"
                fix(lambda p: p.type == "shift_handling" and p.spec.shift == args["shift"])
            case "dehumidify":
                station, target = "PRINT", "environment"
                fix(lambda p: p.type == "humidity_excursion")
            case "set_param" | "set_recipe":
                changes = {args["name"]: args["value"]} if kind == "set_param" else dict(args["params"])
                new = merge_recipe(self._recipe, changes)
                names = sorted(changes)
                stations = {RECIPE_PARAMS[n].station for n in names}
                station = stations.pop() if len(stations) == 1 else None
                machine = RECIPE_PARAMS[names[0]].machine if station else None
                target = ",".join(names)
                detail |= {"from": {n: self._recipe[n] for n in names}, "to": {n: new[n] for n in names}}
                if new != self._recipe:
                    self._recipe = new
                    self._recipe_version += 1
                detail["recipe_id"] = self.recipe_id
            case "mark":
                target = str(args["label"])
                detail |= dict(args.get("detail") or {})
        self._pending_downtime_s += ACTION_DOWNTIME_S.get(kind, 0)
        detail["fixed_problems"] = [p.id for p in fixed]
        event = {
            "t": t,
            "kind": spec.event_kind,
            "station": station,
            "machine": machine,
            "target": target,
            "detail": detail,
        }
        self._pending_events.append(event)
        return {
            "kind": kind,
            "unit": i,
            "t": iso(t),
            "event_kind": spec.event_kind,
            "target": target,
            "fixed": [p.id for p in fixed],
            "recipe": self.recipe,
        }

    # ---- production --------------------------------------------------------------------------
    def produce(self, n: int) -> Chunk:
        """Build the next `n` units; serials, time, wear and lots continue from the last chunk."""
        if not isinstance(n, int | np.integer) or n <= 0:
            raise ValueError(f"produce: n must be a positive integer, got {n!r}")
        n = int(n)
        sc = self.scenario
        i0, i1 = self._next, self._next + n
        idx = np.arange(i0, i1, dtype=np.int64)
        noise = UnitNoise(self.seed, i0, n)
        events = self._pending_events
        self._pending_events = []

        # -- scheduled maintenance and the problems it ends
        sched: dict[str, np.ndarray] = {}
        for kind, every in self._schedule.items():
            if every is None:
                sched[kind] = np.zeros(0, dtype=np.int64)
            else:
                sched[kind] = np.arange(self._maint_last[kind] + every, i1, every, dtype=np.int64)
        for p in self.problems:
            fix = SCHEDULE_FIXES.get(p.type)
            if fix and p.onset is not None:
                q = sched[fix][sched[fix] > p.onset]
                if q.size:
                    p.close(int(q[0]), f"schedule:{fix}")

        # -- time: takt with jitter, downtime before maintenance
        gaps = np.zeros(n)
        gaps[0] += self._pending_downtime_s
        self._pending_downtime_s = 0.0
        for kind, q in sched.items():
            gaps[q - i0] += MAINTENANCE_KINDS[kind][4]
        step_s = sc.takt_s * noise.uniform("takt", 0.8, 1.2) + gaps
        # Whole microseconds per step before summing: the clock is the same however the units are chunked.
        t0 = self._clock_us + np.cumsum(np.rint(step_s * US).astype(np.int64))
        for kind, q in sched.items():
            _, station, machine, target, downtime = MAINTENANCE_KINDS[kind]
            for u in q:
                detail = {"action": kind, "scheduled": True}
                detail["fixed_problems"] = [
                    p.id for p in self.problems if p.end == u and p.fixed_by == f"schedule:{kind}"
                ]
                events.append(
                    {
                        "t": int(t0[u - i0]) - downtime * US - US,
                        "kind": "calibration" if kind == "tester_calibration" else "maintenance",
                        "station": station,
                        "machine": machine,
                        "target": target,
                        "detail": detail,
                    }
                )

        def dur(name: str, lo: float, hi: float, at: np.ndarray | None = None) -> np.ndarray:
            return np.rint(noise.uniform(name, lo, hi, at) * US).astype(np.int64)

        # -- environment at print time
        hour = (t0 % DAY_US) / HOUR_US
        day_offset = self._day_offsets[(t0 // DAY_US - self._day0) % self._day_offsets.shape[0]]
        rh = ph.humidity_baseline(hour, day_offset) + ph.RH_NOISE * noise.normal("rh")
        for p in self._of("humidity_excursion"):
            rh += p.magnitude * p.severity(idx)
        temp = ph.temperature_baseline(hour) + ph.TEMP_NOISE * noise.normal("temp")

        # -- recipe actuals
        r = self._recipe
        pressure = r["squeegee_pressure"] + 0.05 * noise.normal("pressure")
        speed = r["print_speed"] + 0.3 * noise.normal("speed")
        conveyor = r["conveyor_speed"] + 0.15 * noise.normal("conveyor")
        setpoint = r["peak_temp_setpoint"]
        loss = {6: np.zeros(n), 7: np.zeros(n)}
        for p in self._of("reflow_zone_loss"):
            loss[p.spec.zone] += p.magnitude * p.severity(idx)
        zone6 = setpoint - ph.ZONE6_OFFSET - loss[6] + ph.ZONE_SD * noise.normal("zone6")
        zone7 = setpoint - loss[7] + ph.ZONE_SD * noise.normal("zone7")

        # -- print + SPI (a failing board is washed and printed once more)
        since_clean, _ = _since(idx, self._maint_last["stencil_clean"], sched["stencil_clean"])
        drift = ph.STENCIL_DRIFT_PER_1000 * since_clean / 1000.0
        for p in self._of("stencil_clog"):
            drift += p.magnitude * p.severity(idx)
        mean, sd = ph.paste_volume_mean_sd(pressure, speed)
        volume = mean - drift + sd * noise.normal("volume")
        spi_vol, spi_h, spi_a = self._spi_readings(volume, noise, "spi")
        spi_fail = (spi_vol < ph.SPI_LSL) | (spi_vol > ph.SPI_USL)
        rp = np.flatnonzero(spi_fail)
        vol2 = mean[rp] - drift[rp] + sd[rp] * noise.normal("volume2", rp)
        spi2_vol, spi2_h, spi2_a = self._spi_readings(vol2, noise, "spi2", rp)
        spi2_fail = (spi2_vol < ph.SPI_LSL) | (spi2_vol > ph.SPI_USL)
        volume[rp] = vol2
        scrap = np.zeros(n, dtype=bool)
        scrap[rp[spi2_fail]] = True
        alive = ~scrap

        print_out = t0 + dur("print_s", 10, 12)
        spi_in = print_out + 3 * US
        spi_out = spi_in + dur("spi_s", 6, 8)
        rp_in = spi_out[rp] + dur("reprint_wait_s", 180, 420, rp)
        rp_out = rp_in + dur("reprint_s", 10, 12, rp)
        spi2_in = rp_out + 3 * US
        spi2_out = spi2_in + dur("spi2_s", 6, 8, rp)
        ready = spi_out.copy()
        ready[rp] = spi2_out

        # -- placement: one of two placers, one of its four nozzles for the critical part
        placer = (noise.random("placer") < 0.5).astype(np.int64)
        nozzle = placer * 4 + noise.integers("nozzle", 4)
        _, swapped_at = _since(idx, self._maint_last["nozzle_swap"], sched["nozzle_swap"])
        since_nozzle = idx - np.maximum(swapped_at, self._nozzle_replaced[nozzle])
        swap_every = self._schedule["nozzle_swap"] or 60000
        normal_wear = ph.PLACE_WEAR_GROWTH * np.minimum(1.0, since_nozzle / swap_every)
        wear_mm, wear_rel = np.zeros(n), np.zeros(n)
        for p in self._of("nozzle_wear"):
            hit = (nozzle == NOZZLE_NAMES.index(f"{p.spec.machine}-{p.spec.nozzle}")) * p.severity(idx)
            wear_mm += p.magnitude * hit
            wear_rel += hit
        place_sd = (
            np.where(placer == 1, ph.PLACE_SD["P2"], ph.PLACE_SD["P1"]) * (1 + normal_wear) * (1 + 0.8 * wear_rel)
        )
        off_x = self._nozzle_bias[nozzle, 0] + 0.866 * wear_mm + place_sd * noise.normal("off_x")
        off_y = self._nozzle_bias[nozzle, 1] + 0.5 * wear_mm + place_sd * noise.normal("off_y")
        vacuum = ph.VACUUM_NOMINAL - 8.0 * normal_wear - 10.0 * wear_rel + 0.6 * noise.normal("vacuum")
        place_in = ready + 5 * US
        place_out = place_in + dur("place_s", 24, 30)

        # -- materials: which lot each unit consumed
        alive_pos = np.flatnonzero(alive)
        consumers = {
            "SP1": np.arange(n),
            "P1": alive_pos[placer[alive_pos] == 0],
            "P2": alive_pos[placer[alive_pos] == 1],
        }
        lots = self._assign_lots(consumers, i0, t0, events)
        tomb_boost, ripple_factor = np.zeros(n), np.ones(n)
        for p in self._of("bad_lot"):
            if p.lot is None or (p.end is not None and p.end <= i0):
                continue
            hit = lots[p.spec.material] == p.lot
            if hit.any():
                p.lot_last_unit = i0 + int(np.flatnonzero(hit)[-1])
            tomb_boost += p.magnitude * hit
            ripple_factor *= np.where(hit, 1.0 + ph.RIPPLE_PER_BAD_LOT_LOGIT * p.magnitude, 1.0)

        # -- reflow
        peak, tal = ph.board_profile(zone6, zone7, conveyor, noise.normal("peak"), noise.normal("tal"))
        reflow_in = place_out + 10 * US
        reflow_out = reflow_in + np.rint(ph.OVEN_LENGTH_CM / conveyor * 60 * US).astype(np.int64)

        # -- AOI, rework, re-inspection
        aoi_in = reflow_out + 20 * US
        aoi_out = aoi_in + dur("aoi_s", 8, 10)
        aoi_shift = self._shift(aoi_in)
        handling = np.array([ph.SHIFT_HANDLING_BASE[s] for s in SHIFT_NAMES])[aoi_shift]
        for p in self._of("shift_handling"):
            handling += p.magnitude * p.severity(idx) * (aoi_shift == SHIFT_NAMES.index(p.spec.shift))
        offset_r = np.hypot(off_x, off_y)
        prob = expit(ph.aoi_logits(volume, rh, offset_r, peak, tal, conveyor, tomb_boost, handling))
        draws = noise.random("aoi_draw", prob.shape[1])
        fired = draws < prob
        aoi_fail = fired.any(axis=1) & alive
        aoi_code = np.argmin(np.where(fired, draws / prob, np.inf), axis=1)
        rw = np.flatnonzero(aoi_fail)
        rw_in = aoi_out[rw] + dur("rework_wait_s", 300, 1800, rw)
        rw_out = rw_in + dur("rework_s", 120, 400, rw)
        re_in = rw_out + 60 * US
        re_out = re_in + dur("reinspect_s", 8, 10, rw)
        rework_ok = noise.random("rework_ok", at=rw) < ph.REWORK_SUCCESS_P
        scrap[rw[~rework_ok]] = True
        ready2 = aoi_out.copy()
        ready2[rw] = re_out

        # -- functional test, retest on the other tester
        tested = np.flatnonzero(~scrap)
        tester = noise.integers("tester", 2)
        fixture = tester * 2 + noise.integers("fixture", 2)
        vout_true = ph.VOUT_NOMINAL + ph.VOUT_SD * noise.normal("vout")
        ripple_true = ph.RIPPLE_MEDIAN * ripple_factor * np.exp(ph.RIPPLE_SDLOG * noise.normal("ripple"))
        icc_true = ph.ICC_MEAN + ph.ICC_SD * noise.normal("icc")
        test_in = ready2 + 30 * US
        test_out = test_in + dur("test_s", 30, 40)
        t1 = self._test_visit(idx, tester, vout_true, ripple_true, icc_true, noise, "test1")
        test_fail = (t1["code"] >= 0) & ~scrap
        rt = np.flatnonzero(test_fail)
        other = 1 - tester[rt]
        rt_fixture = other * 2 + noise.integers("retest_fixture", 2, rt)
        t2 = self._test_visit(idx[rt], other, vout_true[rt], ripple_true[rt], icc_true[rt], noise, "test2", rt)
        rt_in = test_out[rt] + dur("retest_wait_s", 60, 600, rt)
        rt_out = rt_in + dur("retest_s", 30, 40, rt)
        final_fail = np.zeros(n, dtype=bool)
        final_fail[rt[t2["code"] >= 0]] = True
        packed = np.flatnonzero(~scrap & ~final_fail)
        test_done = test_out.copy()
        test_done[rt] = rt_out
        pack_in = test_done[packed] + 15 * US
        pack_out = pack_in + dur("pack_s", 5, 7, packed)

        # -- unit outcome
        t_end = np.where(alive, ready2, ready)
        t_end[rw[~rework_ok]] = re_out[~rework_ok]
        t_end[tested] = test_done[tested]
        t_end[packed] = pack_out
        unit_result = np.where(scrap, 2, np.where(final_fail, 1, 0))
        first_pass = ~spi_fail & ~aoi_fail & ~test_fail & ~scrap

        # -- tables
        ids = tb.serial_numbers(i0, n)
        id_rows = tb.fixed_width_rows(ids)
        recipe_id = self.recipe_id
        b = _Blocks(ids, id_rows, n, recipe_id, self._operators)
        wo = (idx // sc.work_order_size).astype(np.int64)
        wo_names = [f"WO-{k + 1:06d}" for k in range(int(wo[0]), int(wo[-1]) + 1)]
        units = {
            "unit_id": ids,
            "product": tb.constant(sc.product, n),
            "line": tb.constant(sc.line, n),
            "work_order": tb.strings(wo - wo[0], wo_names),
            "t_start": tb.timestamps(t0),
            "t_end": tb.timestamps(t_end),
            "result": _S["unit_result"](unit_result),
            "first_pass": pa.array(first_pass),
        }
        spi_code = np.where(spi_vol < ph.SPI_LSL, _SPI0, _SPI0 + 1)
        spi2_code = np.where(spi2_vol < ph.SPI_LSL, _SPI0, _SPI0 + 1)
        al = np.flatnonzero(alive)
        aoi_codes = np.where(aoi_fail, aoi_code + _AOI0, -1)
        steps = [
            b.step(None, "PRINT", "SP1", "STENCIL-1", 0, t0, print_out, 0, -1),
            b.step(
                None, "SPI", "SPI1", None, 0, spi_in, spi_out, spi_fail.astype(int), np.where(spi_fail, spi_code, -1)
            ),
            b.step(rp, "PRINT", "SP1", "STENCIL-1", 0, rp_in, rp_out, 2, spi_code[rp]),
            b.step(
                rp, "SPI", "SPI1", None, 0, spi2_in, spi2_out, spi2_fail.astype(int), np.where(spi2_fail, spi2_code, -1)
            ),
            b.step(
                al, "PLACE", _S["placer"](placer[al]), _S["nozzle"](nozzle[al]), 0, place_in[al], place_out[al], 0, -1
            ),
            b.step(al, "REFLOW", "R1", None, 1, reflow_in[al], reflow_out[al], 0, -1),
            b.step(al, "AOI", "AOI1", None, 1, aoi_in[al], aoi_out[al], aoi_fail[al].astype(int), aoi_codes[al]),
            b.step(rw, "AOI", "RW1", None, 1, rw_in, rw_out, 2, aoi_codes[rw]),
            b.step(
                rw,
                "AOI",
                "AOI1",
                None,
                1,
                re_in,
                re_out,
                (~rework_ok).astype(int),
                np.where(rework_ok, -1, aoi_codes[rw]),
            ),
            b.step(
                tested,
                "TEST",
                _S["tester"](tester[tested]),
                _S["fixture"](fixture[tested]),
                2,
                test_in[tested],
                test_out[tested],
                test_fail[tested].astype(int),
                np.where(t1["code"][tested] >= 0, t1["code"][tested] + _TEST0, -1),
            ),
            b.step(
                rt,
                "TEST",
                _S["tester"](other),
                _S["fixture"](rt_fixture),
                2,
                rt_in,
                rt_out,
                (t2["code"] >= 0).astype(int),
                np.where(t2["code"] >= 0, t2["code"] + _TEST0, -1),
            ),
            b.step(packed, "PACK", "PK1", None, 2, pack_in, pack_out, 0, -1),
        ]
        measurements = [
            b.values(None, "SPI", "paste_volume_pct", spi_vol, spi_out),
            b.values(None, "SPI", "paste_height_um", spi_h, spi_out),
            b.values(None, "SPI", "paste_area_pct", spi_a, spi_out),
            b.values(rp, "SPI", "paste_volume_pct", spi2_vol, spi2_out),
            b.values(rp, "SPI", "paste_height_um", spi2_h, spi2_out),
            b.values(rp, "SPI", "paste_area_pct", spi2_a, spi2_out),
            b.values(al, "PLACE", "place_offset_x_mm", off_x[al], place_out[al]),
            b.values(al, "PLACE", "place_offset_y_mm", off_y[al], place_out[al]),
            b.values(al, "PLACE", "pick_vacuum_kpa", vacuum[al], place_out[al]),
            b.values(al, "REFLOW", "peak_temp_c", peak[al], reflow_out[al]),
            b.values(al, "REFLOW", "time_above_liquidus_s", tal[al], reflow_out[al]),
        ]
        for visit, rows, t_meas in ((t1, tested, test_out[tested]), (t2, None, rt_out)):
            sel = rows if rows is not None else np.arange(rt.size)
            who = rows if rows is not None else rt
            measurements += [
                b.values(who, "TEST", "vout_v", visit["vout"][sel], t_meas),
                b.values(who, "TEST", "ripple_mv", visit["ripple"][sel], t_meas),
                b.values(who, "TEST", "icc_ma", visit["icc"][sel], t_meas),
            ]
        params = [
            b.values(None, "PRINT", "squeegee_pressure", pressure, t0),
            b.values(None, "PRINT", "print_speed", speed, t0),
            b.values(None, "PRINT", "ambient_humidity_pct", rh, t0),
            b.values(None, "PRINT", "ambient_temp_c", temp, t0),
            b.values(al, "REFLOW", "peak_temp_setpoint", np.full(al.size, setpoint), reflow_in[al]),
            b.values(al, "REFLOW", "conveyor_speed", conveyor[al], reflow_in[al]),
            b.values(al, "REFLOW", "zone6_temp_c", zone6[al], reflow_in[al]),
            b.values(al, "REFLOW", "zone7_temp_c", zone7[al], reflow_in[al]),
        ]
        materials = []
        for name, m in MATERIALS.items():
            at_rows = None if m.station == "PRINT" else al
            lot = lots[name] if at_rows is None else lots[name][al]
            materials.append(b.material(at_rows, m.station, name, lot, self.lots))

        # -- bookkeeping for the next chunk and for the truth
        self._next = i1
        self._clock_us = int(t0[-1])
        for kind, q in sched.items():
            if q.size:
                self._maint_last[kind] = int(q[-1])
        self._close_exhausted_lots(i0, t0)
        for p in self.problems:
            if p.onset is not None and p.onset_time is None and i0 <= p.onset < i1:
                p.onset_time = iso(t0[p.onset - i0])
            if p.end is not None and p.end_time is None and i0 <= p.end < i1:
                p.end_time = iso(t0[p.end - i0])

        out = {
            "units": tb.table("units", [units]),
            "steps": tb.table("steps", steps),
            "measurements": tb.table("measurements", measurements),
            "params": tb.table("params", params),
            "materials": tb.table("materials", materials),
            "events": _events_table(events),
        }
        if self._chunks == 0:
            out["specs"] = self.specs_table()
        self._chunks += 1
        return Chunk(
            out, i0, n, EPOCH + timedelta(microseconds=int(t0[0])), EPOCH + timedelta(microseconds=int(t0[-1]))
        )

    # ---- helpers -----------------------------------------------------------------------------
    def _of(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.type == kind]

    @staticmethod
    def _shift_and_day(t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shift code (0 = A from 06:00, 1 = B from 14:00, 2 = C from 22:00) and the shift-day number."""
        since = t_us - 6 * HOUR_US
        day = since // DAY_US
        return (since - day * DAY_US) // (8 * HOUR_US), day

    def _shift(self, t_us: np.ndarray) -> np.ndarray:
        return self._shift_and_day(t_us)[0]

    def _operators(self, t_us: np.ndarray, role: int) -> tuple[np.ndarray, np.ndarray]:
        """Shift code and operator code per visit; crews rotate through the roles day by day."""
        shift, day = self._shift_and_day(t_us)
        return shift, shift * OPERATORS_PER_SHIFT + (day + role) % OPERATORS_PER_SHIFT

    @staticmethod
    def _spi_readings(volume: np.ndarray, noise: UnitNoise, visit: str,
                      at: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        measured = volume + ph.SPI_NOISE * noise.normal(f"{visit}_noise", at)
        height = 120.0 + 0.6 * (volume - 100.0) + 2.5 * noise.normal(f"{visit}_height", at)
        area = 100.0 + 0.6 * (volume - 100.0) + 2.0 * noise.normal(f"{visit}_area", at)
        return measured, height, area

    def _test_visit(
        self,
        idx: np.ndarray,
        tester: np.ndarray,
        vout_true: np.ndarray,
        ripple_true: np.ndarray,
        icc_true: np.ndarray,
        noise: UnitNoise,
        visit: str,
        at: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        k = idx.shape[0]
        bias = np.where(tester == 1, ph.TESTER_BASE_BIAS["T2"], ph.TESTER_BASE_BIAS["T1"])
        for p in self._of("tester_drift"):
            bias = bias + p.magnitude * p.severity(idx) * (tester == TESTERS.index(p.spec.tester))
        vout = vout_true + bias + ph.VOUT_TESTER_SD * noise.normal(f"{visit}_vout", at)
        ripple = ripple_true * np.exp(ph.RIPPLE_MEAS_SDLOG * noise.normal(f"{visit}_ripple", at))
        icc = icc_true + ph.ICC_MEAS_SD * noise.normal(f"{visit}_icc", at)
        contact = noise.random(f"{visit}_contact", at=at) < ph.CONTACT_FAIL_P
        code = np.full(k, -1, dtype=np.int64)
        # later assignments win, so go from least to most important (TEST_CODES order)
        code[icc > ph.ICC_USL] = 4
        code[ripple > ph.RIPPLE_USL] = 3
        code[vout > ph.VOUT_USL] = 2
        code[vout < ph.VOUT_LSL] = 1
        code[contact] = 0
        return {"vout": vout, "ripple": ripple, "icc": icc, "code": code}

    def _assign_lots(
        self, consumers: dict[str, np.ndarray], i0: int, t0: np.ndarray, events: list[dict[str, Any]]
    ) -> dict[str, np.ndarray]:
        """Per material, the registry index of the lot each unit consumed (-1 where none)."""
        n = t0.shape[0]
        out: dict[str, np.ndarray] = {}
        for name, m in MATERIALS.items():
            stream = self._streams[name]
            machines = ["SP1"] if m.station == "PRINT" else list(MACHINES)
            plan = []
            changes: list[tuple[int, int, int]] = []
            for fi, machine in enumerate(machines):
                feed, pos = self._feeds[(name, machine)], consumers[machine]
                loaded = feed.reel is not None and feed.reel.lot not in self._held
                first = feed.remaining if loaded else 0
                ords = np.arange(first, pos.size, m.boards_per_reel)
                plan.append((feed, pos, ords, feed.reel.lot if loaded and feed.reel else -1))
                changes += [(int(pos[o]), fi, int(o)) for o in ords]
            changes.sort()
            pulled: list[list[int]] = [[] for _ in machines]
            for p_local, fi, _ in changes:
                feed = plan[fi][0]
                previous = feed.reel.lot if feed.reel else None
                reel = stream.pull(self._held)
                self._issued.add(reel.lot)
                self._designate_bad_lot(name, reel, i0 + p_local)
                feed.reel = reel
                pulled[fi].append(reel.lot)
                if reel.lot != previous:
                    events.append(
                        {
                            "t": int(t0[p_local]) - US,
                            "kind": "lot_change",
                            "station": m.station,
                            "machine": feed.machine,
                            "target": self.lots.names[reel.lot],
                            "detail": {
                                "material": name,
                                "supplier": self.lots.suppliers[reel.lot],
                                "previous_lot": None if previous is None else self.lots.names[previous],
                            },
                        }
                    )
            lot_of_unit = np.full(n, -1, dtype=np.int64)
            for fi, (feed, pos, ords, current) in enumerate(plan):
                seq = np.array([current, *pulled[fi]], dtype=np.int64)
                lot_of_unit[pos] = seq[np.searchsorted(ords, np.arange(pos.size), side="right")]
                if ords.size:
                    feed.remaining = m.boards_per_reel - (pos.size - int(ords[-1]))
                else:
                    feed.remaining -= pos.size
            out[name] = lot_of_unit
        return out

    def _designate_bad_lot(self, material: str, reel: Any, unit: int) -> None:
        """A bad_lot problem becomes the first lot of its supplier whose first reel loads after onset."""
        for p in self._of("bad_lot"):
            if (
                p.lot is None
                and p.spec.material == material
                and unit >= p.spec.onset
                and reel.reel_in_lot == 0
                and self.lots.suppliers[reel.lot] == p.spec.supplier
            ):
                p.lot, p.lot_name, p.onset = reel.lot, self.lots.names[reel.lot], unit
                if p.spec.duration:
                    p.end, p.fixed_by = unit + p.spec.duration, "duration"
                return

    def _close_exhausted_lots(self, i0: int, t0: np.ndarray) -> None:
        for p in self._of("bad_lot"):
            if p.lot is None or p.end is not None:
                continue
            loaded = any(f.reel is not None and f.reel.lot == p.lot for f in self._feeds.values())
            if not loaded and self._streams[p.spec.material].exhausted(p.lot):
                last = p.lot_last_unit if p.lot_last_unit is not None else p.onset
                assert last is not None  # a bad lot's onset is set when its lot is loaded
                end = last + 1
                p.close(end, "lot_exhausted")
                if end - i0 < t0.shape[0]:
                    p.end_time = iso(t0[end - i0])
                else:
                    p.end_time = iso(t0[-1])


class _Blocks:
    """Column blocks for one chunk; `rows` are local unit positions (None = every unit in order)."""

    def __init__(self, ids: pa.StringArray, id_rows: np.ndarray, n: int, recipe_id: str, operators: Any):
        self.ids, self.id_rows, self.n, self.recipe_id, self.operators = ids, id_rows, n, recipe_id, operators
        # blocks over the same units share one unit_id array, blocks of one size one constant
        self._id_cache: dict[int, tuple[np.ndarray, pa.Array]] = {}
        self._const_cache: dict[tuple[str | None, int], pa.Array] = {}

    def _ids(self, rows: np.ndarray | None) -> pa.Array:
        if rows is None:
            return self.ids
        hit = self._id_cache.get(id(rows))
        if hit is None:
            hit = self._id_cache[id(rows)] = (rows, tb.gather_fixed(self.id_rows, rows))
        return hit[1]

    def _col(self, value: Any, k: int) -> pa.Array:
        if value is None or isinstance(value, str):
            key = (value, k)
            if key not in self._const_cache:
                self._const_cache[key] = tb.constant(value, k)
            return self._const_cache[key]
        return value

    def step(
        self,
        rows: np.ndarray | None,
        station: str,
        machine: Any,
        fixture: Any,
        role: int,
        t_in: np.ndarray,
        t_out: np.ndarray,
        result: Any,
        defect: Any,
    ) -> dict[str, pa.Array]:
        k = self.n if rows is None else rows.shape[0]
        shift, op = self.operators(t_in, role)
        result_codes = np.broadcast_to(np.asarray(result, dtype=np.int64), (k,))
        defect_codes = np.broadcast_to(np.asarray(defect, dtype=np.int64), (k,))
        return {
            "unit_id": self._ids(rows),
            "station": self._col(station, k),
            "machine": self._col(machine, k),
            "fixture": self._col(fixture, k),
            "operator": _S["operator"](op),
            "shift": _S["shift"](shift),
            "recipe_id": self._col(self.recipe_id, k),
            "t_in": tb.timestamps(t_in),
            "t_out": tb.timestamps(t_out),
            "result": _S["step_result"](result_codes),
            "defect_code": _S["defect"](defect_codes),
        }

    def values(
        self, rows: np.ndarray | None, station: str, name: str, value: np.ndarray, t: np.ndarray
    ) -> dict[str, pa.Array]:
        k = self.n if rows is None else rows.shape[0]
        return {
            "unit_id": self._ids(rows),
            "station": self._col(station, k),
            "name": self._col(name, k),
            "value": pa.array(np.asarray(value, dtype=np.float64)),
            "t": tb.timestamps(t),
        }

    def material(
        self, rows: np.ndarray | None, station: str, material: str, lot: np.ndarray, registry: LotRegistry
    ) -> dict[str, pa.Array]:
        k = self.n if rows is None else rows.shape[0]
        distinct = np.flatnonzero(np.bincount(lot, minlength=1))
        local = np.full(int(distinct.max()) + 1 if distinct.size else 1, -1, dtype=np.int64)
        local[distinct] = np.arange(distinct.size)
        names = [registry.names[j] for j in distinct]
        suppliers = sorted({registry.suppliers[j] for j in distinct})
        sup_local = np.array([suppliers.index(registry.suppliers[j]) for j in distinct], dtype=np.int64)
        codes = local[lot]
        return {
            "unit_id": self._ids(rows),
            "station": self._col(station, k),
            "material": self._col(material, k),
            "lot": tb.strings(codes, names),
            "supplier": tb.strings(sup_local[codes], suppliers),
        }


def _events_table(events: list[dict[str, Any]]) -> pa.Table:
    events = sorted(events, key=lambda e: e["t"])
    schema = tb.RECORD_TABLES["events"]
    return pa.Table.from_arrays(
        [
            pa.array([e["t"] for e in events], type=tb.TS),
            pa.array([e["kind"] for e in events], pa.string()),
            pa.array([e["station"] for e in events], pa.string()),
            pa.array([e["machine"] for e in events], pa.string()),
            pa.array([e["target"] for e in events], pa.string()),
            pa.array([json.dumps(e["detail"], sort_keys=True) for e in events], pa.string()),
        ],
        schema=schema,
    )


_OPTIMA: dict[int, dict[str, float]] = {}


def _optimal_recipe(stencil_clean_every: int) -> dict[str, float]:
    """Maximise the oracle over the safe box (normalised coordinates, a few starts, cached)."""
    if stencil_clean_every in _OPTIMA:
        return _OPTIMA[stencil_clean_every]
    specs = list(RECIPE_PARAMS.values())
    lo = np.array([s.low for s in specs])
    span = np.array([s.high - s.low for s in specs])

    def recipe_of(x: np.ndarray) -> dict[str, float]:
        return {s.name: float(v) for s, v in zip(specs, lo + np.clip(x, 0, 1) * span, strict=True)}

    def search(x0: np.ndarray, n: int) -> np.ndarray:
        def loss(x: np.ndarray) -> float:
            return -ph.expected_first_pass_yield(recipe_of(x), stencil_clean_every or None, n=n)

        res = minimize(
            loss, x0, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(specs), options={"eps": 1e-4, "ftol": 1e-10}
        )
        return res.x

    # a smaller fixed sample of the same conditions: the optimum moves by far less than the
    # yield resolution anyone can measure, and the search takes about a second
    start = np.array([(s.default - s.low) / (s.high - s.low) for s in specs])
    best_x = search(start, 30_000)
    out = {k: round(v, 3) for k, v in recipe_of(best_x).items()}
    out = {k: check_param(k, v) for k, v in out.items()}
    _OPTIMA[stencil_clean_every] = out
    return out
