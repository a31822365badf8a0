"""A zoo line: produces a `LineKind`'s records in chunks, takes its profile's actions in between.

Every per-unit quantity is an array over the chunk. Random draws come from pages of 4,096 units
seeded by (seed, stream, page), so a unit's draws do not depend on how the run is chunked, and a
line without its problems (`without_problems()`) sees the very same noise. Time is a function of
the unit index (no downtime), so the truth's onset time is exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from linelab.profile.schema import Profile
from linelab.store.schema import RECORD_TABLES
from linelab.zoo.kinds import KINDS, LineKind, ReadingDef
from linelab.zoo.problems import BURST, BURST_SHARE, Problem, make_problems

US = 1_000_000
START = datetime(2026, 1, 5)  # a Monday; times are UTC
EPOCH = datetime(1970, 1, 1)
START_US = (START - EPOCH) // timedelta(microseconds=1)
PAGE = 4096
GAUGE = 0.4  # share of a reading's sigma that is gauge noise (read again on a retest)
REPAIRED = 0.7  # a reworked unit with a real defect is repaired this often
SIGNAL_EVERY_S = 600
ALIAS_BASE = 90000  # lot numbers of lots loaded on one machine only


class ZooActionError(ValueError):
    """An action the line does not know, or bad arguments."""


def iso(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=int(t_us))).isoformat()


class ZooLine:
    """One generated line running one scenario: `produce(n)`, `apply(action)`, `truth`."""

    def __init__(self, kind: str | LineKind, problem: str = "clean", severity: str = "obvious", seed: int = 0,
                 units: int | None = None) -> None:
        from linelab.zoo.profile import build_profile

        self.kind = KINDS[kind] if isinstance(kind, str) else kind
        if severity not in ("obvious", "subtle"):
            raise ValueError(f"severity must be obvious or subtle, not {severity!r}")
        self.problem_type, self.severity, self.seed = problem, severity, int(seed)
        self.scenario = f"{self.kind.name}:{problem}" + (":subtle" if severity == "subtle" else "")
        self.scenario_name = self.scenario
        self.run_units = int(units or self.kind.run_units)
        self.planned_units: int | None = self.run_units
        self.profile: Profile = build_profile(self.kind)
        self.source = f"sim:zoo:{self.scenario}:seed={self.seed}"
        k = self.kind
        rng = np.random.default_rng([self.seed, 1])
        self._m_off = {r.name: rng.normal(0, r.machine_sd, len(k.station(r.maker).machines)) for r in k.readings}
        self._t_bias = {r.name: rng.normal(0, 0.15, len(k.station(r.station).machines)) for r in k.readings}
        self._env_waves = {e.name: (rng.uniform(3, 72, 4) * 3600, rng.uniform(0, 2 * np.pi, 4)) for e in k.env}
        self._phase: dict[tuple[str, str, str], tuple[int, int]] = {}
        for st in k.stations:
            for m in st.machines:
                for what, every in (("tool", st.tool_change_every), ("service", st.service_every),
                                    ("calibration", st.calibrate_every)):
                    if every:
                        self._phase[(st.name, m, what)] = (int(rng.integers(every)), every)
        self._lot_ends = {m.name: np.cumsum(self._lot_sizes(i, m.lot_size, 0, 64)) for i, m in enumerate(k.materials)}
        self._aliases: list[tuple[str, str, int, int, int]] = []  # material, machine, lot, from, to
        self._lot_table: dict[str, np.ndarray] = {}
        self._resets: dict[tuple[str, str], list[int]] = {}  # action services per machine
        self._fixed_envs: dict[str, int] = {}
        self._recipe = {s.name: s.default for s in k.settings}
        self._recipe_id = 1
        self._pending: list[dict[str, Any]] = []
        self._next = 0
        self._chunks = 0
        self._last_signal_us = -1
        self.problems: list[Problem] = make_problems(k, problem, severity, self)

    # -- the protocol (linelab.line.SimulatedLine) --------------------------------------------
    @property
    def units_produced(self) -> int:
        return self._next

    @property
    def recipe(self) -> dict[str, float]:
        return dict(self._recipe)

    @property
    def truth(self) -> list[dict[str, Any]]:
        return [p.truth(self._next, self.serial) for p in self.problems]

    def clock(self) -> str:
        """The line's time now: just before its next unit starts."""
        return iso(int(self.unit_time(np.array([self._next]))[0]) - US)

    def optimal_recipe(self) -> dict[str, float]:
        return {s.name: s.best for s in self.kind.settings}

    def without_problems(self) -> ZooLine:
        return ZooLine(self.kind, "clean", self.severity, self.seed, self.run_units)

    def serial(self, i: int) -> str:
        return f"{self.kind.serial_prefix}{int(i) + 1:08d}"

    def unit_index(self, serial: str) -> int:
        return int(serial[len(self.kind.serial_prefix):]) - 1

    def affected(self, problem_id: str) -> np.ndarray:
        """Unit indices the problem touched so far (its mask, as indices)."""
        p = next(p for p in self.problems if p.id == problem_id)
        return np.concatenate(p.affected) if p.affected else np.zeros(0, np.int64)

    def specs_table(self) -> pa.Table:
        rows = [s.model_dump() for s in self.profile.line.specs]
        return pa.Table.from_pylist(rows, schema=RECORD_TABLES["specs"])

    # -- planning helpers used by make_problems ------------------------------------------------
    def set_phase(self, station: str, machine: str, what: str, last: int, every: int) -> None:
        self._phase[(station, machine, what)] = (last % every, every)

    def next_planned(self, station: str, machine: str, what: str, after: int) -> int:
        phase, every = self._phase[(station, machine, what)]
        return phase + (max(after - phase, 0) // every + 1) * every

    def lot_at(self, material: str, unit: int) -> int:
        self._cover(material, unit + 1)
        return int(np.searchsorted(self._lot_ends[material], unit, side="right"))

    def lot_span(self, material: str, lot: int) -> tuple[int, int]:
        ends = self._lot_ends[material]
        return (int(ends[lot - 1]) if lot else 0), int(ends[lot])

    def lot_name(self, material: str, lot: int) -> str:
        return f"{material.upper().replace('_', '')}-{lot + 1:05d}"

    def add_alias_lot(self, material: str, machine: str, lo: int, hi: int) -> int:
        lot = ALIAS_BASE + len(self._aliases)
        self._aliases.append((material, machine, lot, lo, hi))
        return lot

    # -- producing -----------------------------------------------------------------------------
    def produce(self, n: int) -> dict[str, pa.Table]:
        """The next `n` units' records, one Arrow table per LineLab table (specs with the first)."""
        i0, i1 = self._next, self._next + int(n)
        idx = np.arange(i0, i1, dtype=np.int64)
        t0 = self.unit_time(idx)
        ctx = self._context(idx, t0)
        active = [p for p in self.problems if p.onset < i1 and (p.end is None or p.end > i0)]
        full = self._evaluate(ctx, active)
        for p in active:  # exact truth: the units it touched and the failures it added
            mask = self._mask(p, ctx)
            if mask.any():
                p.affected.append(idx[mask])
            without = self._evaluate(ctx, [q for q in active if q is not p])
            p.extra_failures += int((full["any_fail"] & ~without["any_fail"]).sum())
            if i0 <= p.onset < i1:
                p.onset_time = iso(int(t0[p.onset - i0]))
            if p.end is not None and i0 <= p.end < i1:
                p.end_time = iso(int(t0[p.end - i0]))
        out = self._tables(ctx, full)
        out["events"] = self._events(i0, i1, t0)
        out["signals"] = self._signals(t0, active)
        if self._chunks == 0:
            out["specs"] = self.specs_table()
        self._next, self._chunks = i1, self._chunks + 1
        self._pending = []
        return {name: out[name] for name in RECORD_TABLES if name in out}

    def unit_time(self, idx: np.ndarray) -> np.ndarray:
        k = self.kind
        per, (h0, h1) = k.units_per_day, k.hours
        spacing = (h1 - h0) * 3600 / per
        jitter = self._u(3, idx[0], idx[-1] + 1, 1)[:, 0] - 0.5
        sec = (idx // per) * 86400 + h0 * 3600 + ((idx % per) + 0.5 + 0.4 * jitter) * spacing
        return START_US + (sec * US).astype(np.int64)

    def _context(self, idx: np.ndarray, t0: np.ndarray) -> dict[str, Any]:
        k = self.kind
        i0, i1 = int(idx[0]), int(idx[-1]) + 1
        wo = idx // k.work_order
        shares = np.cumsum(list(k.products.values()))
        wo_u = self._u(1, int(wo[0]), int(wo[-1]) + 1, 1)[:, 0]
        product = np.searchsorted(shares / shares[-1], wo_u[wo - wo[0]], side="right")
        per = k.units_per_day
        shift = (((idx % per) + 0.5) / per * len(k.shifts)).astype(np.int64)
        route = self._u(2, i0, i1, len(k.stations))
        ops = self._u(4, i0, i1, len(k.stations))
        machine, operator, offset = {}, {}, {}
        acc = 0.0
        for j, st in enumerate(k.stations):
            machine[st.name] = np.minimum((route[:, j] * len(st.machines)).astype(np.int64), len(st.machines) - 1)
            operator[st.name] = shift * k.operators_per_shift + (ops[:, j] * k.operators_per_shift).astype(np.int64)
            offset[st.name] = acc
            acc += st.cycle_s + 30.0
        lots = {}
        for mat in k.materials:
            self._cover(mat.name, i1)
            lot = np.searchsorted(self._lot_ends[mat.name], idx, side="right")
            st = k.station(mat.station)
            for name, mach, alias, lo, hi in self._aliases:
                if name == mat.name:
                    on = (idx >= lo) & (idx < hi) & (machine[st.name] == st.machines.index(mach))
                    lot = np.where(on, alias, lot)
            lots[mat.name] = lot
        return {"idx": idx, "t": t0, "product": product, "shift": shift, "machine": machine, "operator": operator,
                "offset": offset, "lots": lots}

    def _station_time(self, ctx: dict[str, Any], station: str) -> np.ndarray:
        return ctx["t"] + int(ctx["offset"][station] * US)

    def env_at(self, name: str, t_us: np.ndarray, problems: list[Problem]) -> np.ndarray:
        env = next(e for e in self.kind.env if e.name == name)
        h = t_us / (3600 * US)
        periods, phases = self._env_waves[name]
        waves = np.sin(2 * np.pi * (t_us[:, None] / US) / periods + phases).sum(axis=1) / 2.0
        value = env.base + env.daily_amp * np.cos(2 * np.pi * (h - 15.0) / 24.0) + env.noise * waves
        for p in problems:
            if p.type == "env_excursion" and p.env == name:
                a = int(self.unit_time(np.array([p.onset]))[0])
                b = int(self.unit_time(np.array([p.end]))[0]) if p.end is not None else np.iinfo(np.int64).max
                ramp = np.clip((t_us - a) / (3600 * US), 0.0, 1.0)  # an hour to build up
                value = value + p.magnitude * ramp * (t_us < b)
        return value

    def _evaluate(self, ctx: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
        """Readings (true and as read) and each station's first-visit verdict under `problems`."""
        k = self.kind
        idx = ctx["idx"]
        i0, i1, n = int(idx[0]), int(idx[-1]) + 1, idx.size
        z = self._n(5, i0, i1, len(k.readings))
        zg = self._n(6, i0, i1, len(k.readings))
        masks = {p.id: self._mask(p, ctx) for p in problems}
        true, read, gauge, sig = {}, {}, {}, {}
        for j, r in enumerate(k.readings):
            mu, sigma = self._level(r, ctx, problems)
            off = np.zeros(n)
            bias = np.zeros(n)
            for p in problems:
                if p.reading == r.name and p.type in ("machine_step", "machine_drift", "product_specific", "lot_shift"):
                    off += np.where(masks[p.id], p.magnitude * p.shape(idx), 0.0)
                if p.reading == r.name and p.type == "tester_drift":
                    bias += np.where(masks[p.id], p.magnitude * p.shape(idx), 0.0)
            true[r.name] = mu + sigma * (np.sqrt(1 - GAUGE**2) * z[:, j] + off)
            st = k.station(r.station)
            tester_bias = self._t_bias[r.name][ctx["machine"][st.name]] * r.sigma if st.tester else 0.0
            gauge[r.name], sig[r.name] = sigma * GAUGE * zg[:, j], sigma
            read[r.name] = true[r.name] + gauge[r.name] + sigma * bias + tester_bias
        u = self._u(7, i0, i1, len(k.stations))
        fail, code, extra = {}, {}, {}
        any_fail = np.zeros(n, bool)
        for j, st in enumerate(k.stations):
            p_extra = np.full(n, st.base_fail)
            codes = np.full(n, st.defect or "", dtype=object)
            for p in problems:
                if p.station == st.name and p.type in ("bad_lot_fails", "aliased_lot", "shift_handling",
                                                       "operator_handling", "intermittent"):
                    hit = masks[p.id]
                    p_extra = np.where(hit, 1 - (1 - p_extra) * (1 - p.magnitude), p_extra)
                    codes = np.where(hit, p.defect or "", codes)
            extra[st.name] = u[:, j] < p_extra
            bad = extra[st.name].copy()
            for r in k.readings:
                if r.station == st.name:
                    lo, hi = self._limits(r, ctx["product"])
                    out = read[r.name] > hi
                    low = read[r.name] < lo
                    codes = np.where(~bad & out, r.name.upper() + "_HIGH", codes)
                    codes = np.where(~bad & ~out & low, r.name.upper() + "_LOW", codes)
                    bad |= out | low
            fail[st.name], code[st.name] = bad, codes
            any_fail |= bad
        return {"true": true, "read": read, "gauge": gauge, "sigma": sig, "fail": fail, "code": code, "extra": extra,
                "any_fail": any_fail}

    def _level(self, r: ReadingDef, ctx: dict[str, Any], problems: list[Problem]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sigma of a reading per unit before noise and problems."""
        k = self.kind
        prods = list(k.products)
        nominal = np.array([r.nominal[p] for p in prods])[ctx["product"]]
        mach = ctx["machine"][r.maker]
        st = k.station(r.maker)
        mu = nominal + (0.0 if st.tester else self._m_off[r.name][mach] * r.sigma)
        if r.wear:
            since = np.zeros(mach.size)
            for m_i, m in enumerate(st.machines):
                on = mach == m_i
                if on.any():
                    since[on] = ctx["idx"][on] - self._last_reset(st.name, m, ctx["idx"][on])
            mu = mu + r.wear * r.sigma * since / 1000.0
        if r.lot:
            lot = ctx["lots"][r.lot[0]]
            mu = mu + r.lot[1] * r.sigma * self._lot_offset(r.lot[0], lot)
        if r.env:
            st_env = next(e for e in k.env if e.name == r.env[0])
            mu = mu + r.env[1] * r.sigma * (self.env_at(st_env.name, self._station_time(ctx, r.station), problems)
                                            - st_env.base)
        sigma = np.full(mu.size, r.sigma)
        for s in k.settings:
            if s.reading == r.name:
                d = self._recipe[s.name] - s.best
                mu = mu + s.gain * r.sigma * d
                sigma = sigma * (1 + 2.0 * (d / (s.high - s.low)) ** 2)
        return mu, sigma

    def _limits(self, r: ReadingDef, product: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nominal = np.array([r.nominal[p] for p in self.kind.products])[product]
        lo = np.full(nominal.size, -np.inf) if r.upper_only else nominal - r.spec_k * r.sigma
        return lo, nominal + r.spec_k * r.sigma

    def _mask(self, p: Problem, ctx: dict[str, Any]) -> np.ndarray:
        idx = ctx["idx"]
        on = p.active(idx)
        if p.type in ("machine_step", "machine_drift", "intermittent", "tester_drift"):
            st = self.kind.station(p.station or "")
            on &= ctx["machine"][st.name] == st.machines.index(p.machine or "")
            if p.type == "intermittent":
                blocks = idx // BURST
                on &= self._u(8, int(blocks[0]), int(blocks[-1]) + 1, 1)[blocks - blocks[0], 0] < BURST_SHARE
        elif p.type in ("lot_shift", "bad_lot_fails", "aliased_lot"):
            on &= ctx["lots"][p.material] == p.lot
        elif p.type == "shift_handling":
            on &= ctx["shift"] == self.kind.shifts.index(p.shift or "")
        elif p.type == "operator_handling":
            on &= ctx["operator"][p.station] == self._operator_code(p.operator or "")
        elif p.type == "product_specific":
            on &= ctx["product"] == list(self.kind.products).index(p.product or "")
        return on

    def _operator_code(self, name: str) -> int:
        shift, k = name[3:-1], int(name[-1]) - 1
        return self.kind.shifts.index(shift) * self.kind.operators_per_shift + k

    def _last_reset(self, station: str, machine: str, idx: np.ndarray) -> np.ndarray:
        last = np.zeros(idx.size, np.int64)
        for what in ("tool", "service"):
            if (station, machine, what) in self._phase:
                phase, every = self._phase[(station, machine, what)]
                planned = phase + ((idx - phase) // every) * every
                last = np.maximum(last, np.where(idx >= phase, planned, 0))
        marks = np.array(sorted(self._resets.get((station, machine), [])), np.int64)
        if marks.size:
            pos = np.searchsorted(marks, idx, side="right") - 1
            last = np.maximum(last, np.where(pos >= 0, marks[np.maximum(pos, 0)], 0))
        return last

    # -- records -------------------------------------------------------------------------------
    def _tables(self, ctx: dict[str, Any], ev: dict[str, Any]) -> dict[str, pa.Table]:
        k = self.kind
        idx, n = ctx["idx"], ctx["idx"].size
        serial = _codes(k.serial_prefix, idx + 1)
        prods = np.array(list(k.products), dtype=object)
        shifts = np.array(k.shifts, dtype=object)
        ops = np.array([f"OP-{s}{j + 1}" for s in k.shifts for j in range(k.operators_per_shift)], dtype=object)
        rw_u = self._u(9, int(idx[0]), int(idx[-1]) + 1, len(k.stations))
        zr = self._n(10, int(idx[0]), int(idx[-1]) + 1, len(k.readings))
        alive = np.ones(n, bool)
        delay = np.zeros(n, np.int64)  # rework time carried downstream
        first_pass = np.ones(n, bool)
        steps: list[tuple[Any, ...]] = []
        meas: list[tuple[Any, ...]] = []
        params: list[tuple[Any, ...]] = []
        mats: list[tuple[Any, ...]] = []
        recipe_id = f"R{self._recipe_id}"
        t_end = ctx["t"].copy()
        for j, st in enumerate(k.stations):
            v = np.flatnonzero(alive)
            t_in = self._station_time(ctx, st.name)[v] + delay[v]
            t_out = t_in + int(st.cycle_s * US)
            f1 = ev["fail"][st.name][v]
            mach = np.array(st.machines, dtype=object)[ctx["machine"][st.name][v]]
            op = ops[ctx["operator"][st.name][v]]
            sh = shifts[ctx["shift"][v]]
            steps.append((serial[v], st.name, mach, op, sh, recipe_id, t_in, t_out,
                          np.where(f1, "fail", "pass"), np.where(f1, ev["code"][st.name][v], None)))
            for r in k.readings:
                if r.station == st.name:
                    meas.append((serial[v], st.name, r.name, ev["read"][r.name][v], t_out))
            for s in k.settings:
                if s.station == st.name:
                    params.append((serial[v], st.name, s.name, np.full(v.size, self._recipe[s.name]), t_in))
            for e in k.env:
                if e.station == st.name:
                    value = self.env_at(e.name, t_in, self.problems_active(ctx))
                    noise = self._n(20 + k.env.index(e), int(idx[0]), int(idx[-1]) + 1, 1)[v, 0]
                    params.append((serial[v], st.name, e.name, np.round(value + 0.05 * e.noise * noise, 3), t_in))
            for mat in k.materials:
                if mat.station == st.name:
                    lot = ctx["lots"][mat.name][v]
                    names = np.array([self.lot_name(mat.name, int(x)) for x in np.unique(lot)], dtype=object)
                    sup = np.array([self._supplier(mat.name, int(x)) for x in np.unique(lot)], dtype=object)
                    pos = np.searchsorted(np.unique(lot), lot)
                    mats.append((serial[v], st.name, mat.name, names[pos], sup[pos]))
            final = f1
            if st.rework and f1.any():
                w = v[f1]
                rw_in = t_out[f1] + 600 * US
                rw_out = rw_in + 900 * US
                steps.append((serial[w], st.name, f"{st.name}-RW", ops[ctx["operator"][st.name][w]],
                              shifts[ctx["shift"][w]], recipe_id, rw_in, rw_out, "rework", None))
                re_in, re_out = rw_out + 60 * US, rw_out + 60 * US + int(st.cycle_s * US)
                bad = ev["extra"][st.name][w] & (rw_u[w, j] > REPAIRED)
                code = ev["code"][st.name][w].copy()
                code[~bad] = None
                for jr, r in enumerate(k.readings):
                    if r.station == st.name:
                        fresh = GAUGE * ev["sigma"][r.name][w] * zr[w, jr]  # the same unit, read again
                        value = ev["read"][r.name][w] - ev["gauge"][r.name][w] + fresh
                        lo, hi = self._limits(r, ctx["product"][w])
                        oos = (value < lo) | (value > hi)
                        code = np.where(~bad & oos, r.name.upper() + np.where(value > hi, "_HIGH", "_LOW"), code)
                        bad |= oos
                        meas.append((serial[w], st.name, r.name, value, re_out))
                steps.append((serial[w], st.name, mach[f1], ops[ctx["operator"][st.name][w]],
                              shifts[ctx["shift"][w]], recipe_id, re_in, re_out, np.where(bad, "fail", "pass"), code))
                final = np.zeros(v.size, bool)
                final[np.flatnonzero(f1)[bad]] = True
                delay[w] += re_out - t_out[f1]
            first_pass[v[f1]] = False
            t_end[v] = t_out + (delay[v] - (t_in - self._station_time(ctx, st.name)[v]))
            alive[v[final]] = False
        result = np.where(alive, "pass", "fail")
        units = pa.table({
            "unit_id": pa.array(serial, pa.string()), "product": pa.array(prods[ctx["product"]], pa.string()),
            "line": pa.array([k.line] * n, pa.string()),
            "work_order": pa.array(_codes("WO-", idx // k.work_order, 6), pa.string()),
            "t_start": pa.array(ctx["t"], pa.timestamp("us")), "t_end": pa.array(t_end, pa.timestamp("us")),
            "result": pa.array(result, pa.string()), "first_pass": pa.array(first_pass, pa.bool_()),
        }, schema=RECORD_TABLES["units"])
        return {
            "units": units,
            "steps": _concat("steps", steps, ["unit_id", "station", "machine", "operator", "shift", "recipe_id",
                                             "t_in", "t_out", "result", "defect_code"]),
            "measurements": _concat("measurements", meas, ["unit_id", "station", "name", "value", "t"]),
            "params": _concat("params", params, ["unit_id", "station", "name", "value", "t"]),
            "materials": _concat("materials", mats, ["unit_id", "station", "material", "lot", "supplier"]),
        }

    def problems_active(self, ctx: dict[str, Any]) -> list[Problem]:
        i0, i1 = int(ctx["idx"][0]), int(ctx["idx"][-1]) + 1
        return [p for p in self.problems if p.onset < i1 and (p.end is None or p.end > i0)]

    def _events(self, i0: int, i1: int, t0: np.ndarray) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for (station, machine, what), (phase, every) in self._phase.items():
            first = phase + max(0, -(-(i0 - phase) // every)) * every
            for u in range(first, i1, every):
                if u <= 0:
                    continue
                kind = "calibration" if what == "calibration" else "maintenance"
                target = "tool" if what == "tool" else machine
                rows.append({"t": int(t0[u - i0]) - US, "kind": kind, "station": station, "machine": machine,
                             "target": target, "detail": json.dumps({"planned": True, "what": what, "unit": u})})
                if what == "service":
                    self._end(lambda p, m=machine: p.machine == m and p.type in (
                        "machine_step", "machine_drift", "intermittent"), u, "planned maintenance")
                if what == "calibration":
                    self._end(lambda p, m=machine: p.machine == m and p.type == "tester_drift", u,
                              "planned calibration")
        rows += [{**e, "t": e["t"]} for e in self._pending]
        rows.sort(key=lambda r: r["t"])
        return pa.Table.from_pylist(
            [{**r, "t": EPOCH + timedelta(microseconds=int(r["t"]))} for r in rows], schema=RECORD_TABLES["events"])

    def _signals(self, t0: np.ndarray, problems: list[Problem]) -> pa.Table:
        step = SIGNAL_EVERY_S * US
        lo = max(self._last_signal_us + 1, int(t0[0]) - step) if self._chunks else int(t0[0])
        grid = np.arange(-(-lo // step) * step, int(t0[-1]) + 1, step, dtype=np.int64)
        if grid.size:
            self._last_signal_us = int(grid[-1])
        names, ts, values = [], [], []
        for j, e in enumerate(self.kind.env):
            noise = self._n(11 + j, int(grid[0] // step) if grid.size else 0,
                            int(grid[-1] // step) + 1 if grid.size else 1, 1)[: grid.size, 0]
            names += [e.name] * grid.size
            ts.append(grid)
            values.append(np.round(self.env_at(e.name, grid, problems) + 0.05 * e.noise * noise, 3))
        t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        return pa.table({"name": pa.array(names, pa.string()),
                         "t": pa.array(t, pa.timestamp("us")),
                         "value": pa.array(np.concatenate(values) if values else [], pa.float64())},
                        schema=RECORD_TABLES["signals"])

    # -- actions -------------------------------------------------------------------------------
    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one of the profile's actions before the next unit; recorded as an event."""
        kind = str(action.get("kind") or action.get("name") or "")
        spec = self.profile.action(kind)
        if spec is None:
            raise ZooActionError(f"unknown action {kind!r}; known: {', '.join(a.name for a in self.profile.actions)}")
        args = {k: v for k, v in action.items() if k not in ("kind", "name")}
        for prm in spec.params:
            if prm.required and prm.name not in args:
                raise ZooActionError(f"action {kind}: missing {prm.name}")
            if prm.choices and prm.name in args and str(args[prm.name]) not in prm.choices:
                raise ZooActionError(f"action {kind}: {prm.name}={args[prm.name]!r} not one of {prm.choices}")
        i = self._next
        t = int(self.unit_time(np.array([i]))[0]) - US // 2 + 1000 * len(self._pending)
        station = machine = target = None
        fixed: list[str] = []
        if kind == "service_machine":
            machine = str(args["machine"])
            station = self._station_of(machine)
            self._resets.setdefault((station, machine), []).append(i)
            fixed = self._end(lambda p: p.machine == machine and p.type in (
                "machine_step", "machine_drift", "intermittent"), i, f"action:{kind}")
        elif kind == "calibrate_tester":
            machine = str(args["tester"])
            station = self._station_of(machine)
            fixed = self._end(lambda p: p.machine == machine and p.type == "tester_drift", i, f"action:{kind}")
        elif kind == "quarantine_lot":
            target = str(args["lot"])
            fixed = self._hold(target, i)
        elif kind == "retrain_shift":
            target = str(args["shift"])
            fixed = self._end(lambda p: p.shift == target, i, f"action:{kind}")
        elif kind == "retrain_operator":
            target = str(args["operator"])
            fixed = self._end(lambda p: p.operator == target, i, f"action:{kind}")
        elif kind == "adjust_program":
            target = str(args["product"])
            fixed = self._end(lambda p: p.product == target and p.type == "product_specific", i, f"action:{kind}")
        elif kind == "restore_environment":
            target = str(args.get("name") or "")
            fixed = self._end(lambda p: p.type == "env_excursion" and (not target or p.env == target), i,
                              f"action:{kind}")
        elif kind in ("set_recipe", "set_param"):
            new = dict(args.get("params") or {}) if kind == "set_recipe" else {str(args["name"]): args["value"]}
            for name, value in new.items():
                s = self.profile.setting(name)
                if s is None or not s.low <= float(value) <= s.high:
                    raise ZooActionError(f"setting {name}={value} unknown or outside its safe bounds")
            self._recipe.update({k: float(v) for k, v in new.items()})
            self._recipe_id += 1
            target = ",".join(sorted(new))
        detail = {"action": kind, "scheduled": False, **{k: v for k, v in args.items() if k != "params"}}
        if kind == "set_recipe":
            detail["params"] = args.get("params")
        event = {"t": t, "kind": spec.event_kind, "station": station, "machine": machine, "target": target,
                 "detail": json.dumps(detail, default=str)}
        self._pending.append(event)
        return {"t": iso(t), "unit": i, "applied": True, "kind": kind, "fixed": fixed,
                "event": {**event, "t": iso(t)}}

    def _end(self, pred: Any, unit: int, by: str) -> list[str]:
        out = []
        for p in self.problems:
            if p.onset < unit and (p.end is None or p.end > unit) and pred(p):
                p.close(unit, by)
                p.end_time = iso(int(self.unit_time(np.array([unit]))[0]))
                out.append(p.id)
        return out

    def _hold(self, lot_name: str, unit: int) -> list[str]:
        for name, mach, alias, lo, hi in list(self._aliases):
            if self.lot_name(name, alias) == lot_name:
                self._aliases = [a for a in self._aliases if a[2] != alias]
                self._aliases.append((name, mach, alias, lo, min(hi, unit)))
                return self._end(lambda p, a=alias: p.lot == a, unit, "action:quarantine_lot")
        for mat in self.kind.materials:
            ends = self._lot_ends[mat.name]
            for lot in range(ends.size):
                if self.lot_name(mat.name, lot) == lot_name:
                    start, end = self.lot_span(mat.name, lot)
                    cut = max(start, min(end, unit))
                    ends[lot:] -= end - cut
                    return self._end(lambda p, m=mat.name, x=lot: p.material == m and p.lot == x, unit,
                                     "action:quarantine_lot")
        raise ZooActionError(f"no lot {lot_name!r} on this line")

    def _station_of(self, machine: str) -> str:
        for st in self.kind.stations:
            if machine in st.machines:
                return st.name
        raise ZooActionError(f"no machine {machine!r} on this line")

    # -- random draws and lots -----------------------------------------------------------------
    def _page(self, stream: int, page: int, width: int, normal: bool) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 100 + stream, page])
        return rng.standard_normal((PAGE, width)) if normal else rng.random((PAGE, width))

    def _draw(self, stream: int, lo: int, hi: int, width: int, normal: bool) -> np.ndarray:
        p0, p1 = lo // PAGE, (hi - 1) // PAGE
        arr = np.concatenate([self._page(stream, p, width, normal) for p in range(p0, p1 + 1)])
        return arr[lo - p0 * PAGE: hi - p0 * PAGE]

    def _u(self, stream: int, lo: int, hi: int, width: int) -> np.ndarray:
        return self._draw(stream, lo, hi, width, False)

    def _n(self, stream: int, lo: int, hi: int, width: int) -> np.ndarray:
        return self._draw(stream, lo, hi, width, True)

    def _lot_sizes(self, m: int, size: int, first: int, count: int) -> np.ndarray:
        u = np.random.default_rng([self.seed, 50 + m, first]).random(count)
        return np.maximum(1, (size * (0.6 + 0.8 * u)).astype(np.int64))

    def _cover(self, material: str, unit: int) -> None:
        m = [x.name for x in self.kind.materials].index(material)
        ends = self._lot_ends[material]
        while ends[-1] <= unit:
            more = self._lot_sizes(m, self.kind.materials[m].lot_size, ends.size, 64)
            ends = np.concatenate([ends, ends[-1] + np.cumsum(more)])
        self._lot_ends[material] = ends

    def _lot_offset(self, material: str, lot: np.ndarray) -> np.ndarray:
        """Each lot's offset (standard normal), drawn once per material."""
        if material not in self._lot_table:
            m = [x.name for x in self.kind.materials].index(material)
            self._lot_table[material] = np.random.default_rng([self.seed, 60 + m]).standard_normal(ALIAS_BASE + 100)
        return self._lot_table[material][lot]

    def _supplier(self, material: str, lot: int) -> str:
        mat = next(x for x in self.kind.materials if x.name == material)
        return mat.suppliers[(lot * 7 + self.seed) % len(mat.suppliers)]


def _concat(table: str, parts: list[tuple[Any, ...]], cols: list[str]) -> pa.Table:
    schema = RECORD_TABLES[table]
    data: dict[str, list[Any]] = {c: [] for c in cols}
    for part in parts:
        n = len(part[0])
        for c, v in zip(cols, part, strict=True):
            data[c].append(np.asarray(v) if isinstance(v, np.ndarray) else np.full(n, v, dtype=object))
    arrays = {}
    for f in schema:
        if f.name in data:
            v = np.concatenate(data[f.name]) if data[f.name] else np.zeros(0)
            arrays[f.name] = pa.array(v if f.type != pa.string() else v.astype(object), f.type, from_pandas=True)
        else:
            arrays[f.name] = pa.nulls(sum(len(p[0]) for p in parts), f.type)
    return pa.table(arrays, schema=schema)


def _codes(prefix: str, numbers: np.ndarray, width: int = 8) -> np.ndarray:
    """prefix + zero-padded number, for a whole array at once."""
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), width)).astype(object)
