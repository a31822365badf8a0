"""The monitor's defaults on lines unlike the one it was first written for: products with their own
nominal values, a line of a hundred units a day. Each case runs the engine with its defaults."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from linelab.monitor.engine import MonitorEngine, run_monitor
from linelab.monitor.problems import list_problems
from linelab.profile.io import save_profile
from linelab.profile.schema import Profile
from linelab.store import Workspace

T0 = np.datetime64(datetime(2025, 5, 5, 6, 0), "us")
NOMINAL = {"SHAFT-20": 20.0, "SHAFT-25": 25.0}
SD = 0.004


def shafts(first: int, n: int, seed: int, share_25: float, shift_25: float = 0.0,
           seconds_per_unit: int = 30, lot_level: float = 0.0, l2_step: float = 0.0) -> dict[str, pa.Table]:
    """Units of a two-product cell: TURN (L1/L2) makes the shaft, CMM measures its diameter;
    `lot_level` (sigmas) is where this bar-stock lot puts every shaft; `l2_step` (sigmas) moves
    the shafts lathe L2 turns."""
    rng = np.random.default_rng(seed)
    idx = np.arange(first, first + n)
    t = T0 + idx * np.timedelta64(seconds_per_unit, "s")
    product = np.where(rng.random(n) < share_25, "SHAFT-25", "SHAFT-20")
    nominal = np.where(product == "SHAFT-25", NOMINAL["SHAFT-25"] + shift_25 * SD, NOMINAL["SHAFT-20"])
    nominal = nominal + lot_level * SD + np.where(idx % 2 == 1, l2_step * SD, 0.0)
    diameter = nominal + rng.normal(0, SD, n)
    ids = [f"SH{i:07d}" for i in idx]
    units = pa.table({"unit_id": ids, "product": product.tolist(), "line": ["CELL"] * n, "work_order": ["WO1"] * n,
                      "t_start": pa.array(t), "t_end": pa.array(t + np.timedelta64(20, "s")),
                      "result": ["pass"] * n, "first_pass": [True] * n})
    steps = pa.table({
        "unit_id": ids * 2, "station": ["TURN"] * n + ["CMM"] * n,
        "machine": np.where(idx % 2 == 0, "L1", "L2").tolist() + ["CMM1"] * n, "fixture": [None] * (2 * n),
        "operator": [None] * (2 * n), "shift": ["A"] * (2 * n), "recipe_id": ["R1"] * (2 * n),
        "t_in": pa.array(np.concatenate([t, t + np.timedelta64(10, "s")])),
        "t_out": pa.array(np.concatenate([t + np.timedelta64(5, "s"), t + np.timedelta64(15, "s")])),
        "result": ["pass"] * (2 * n), "defect_code": [None] * (2 * n)})
    meas = pa.table({"unit_id": ids, "station": ["CMM"] * n, "name": ["diameter_mm"] * n, "value": diameter,
                     "t": pa.array(t + np.timedelta64(12, "s"))})
    return {"units": units, "steps": steps, "measurements": meas}


def specs() -> pa.Table:
    return pa.table({"product": list(NOMINAL), "station": ["CMM"] * 2, "name": ["diameter_mm"] * 2,
                     "lsl": [v - 0.02 for v in NOMINAL.values()], "usl": [v + 0.02 for v in NOMINAL.values()],
                     "target": list(NOMINAL.values()), "unit": ["mm"] * 2})


def feed(path: Path, chunks: list[dict[str, pa.Table]], profile: Profile | None = None) -> Workspace:
    ws = Workspace.open(path)
    if profile is not None:
        save_profile(profile, path / "profile.yaml")
    ws.ingest_tables({"specs": specs()}, source="specs")
    for i, tables in enumerate(chunks):
        ws.ingest_tables(tables, source=f"cell:{i}")
        run_monitor(ws)  # online, as the line feeds it
    return ws


def test_a_change_of_product_mix_is_no_problem(tmp_path: Path) -> None:
    # Mostly 20 mm shafts for three days, then mostly 25 mm ones: every shaft is on its nominal.
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.2 if i < 8 else 0.8) for i in range(14)]
    ws = feed(tmp_path / "ws", chunks)
    assert list_problems(ws) == []
    ws.close()


def test_a_shift_of_one_products_units_is_found_in_its_own_units(tmp_path: Path) -> None:
    # From unit 9,000 the 25 mm shafts come out 1.5 sigma large (still within spec); the mix moves too.
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3 if i < 8 else 0.6, shift_25=1.5 if i >= 9 else 0.0)
              for i in range(14)]
    ws = feed(tmp_path / "ws", chunks)
    problems = list_problems(ws)
    assert len(problems) == 1, problems
    p = problems[0]
    assert p["scope"]["measurement"] == "diameter_mm"
    assert " mm (" in p["description"] and "up from" not in p["description"]  # in mm; no unit lost
    onset = int(p["onset"]["unit"][2:])
    assert 8500 <= onset <= 10_000
    ws.close()


def test_lot_to_lot_moves_that_lose_no_unit_are_the_lines_normal(tmp_path: Path) -> None:
    # Bar-stock lots of 5,000 shafts, each a little off the last (up to 0.8 sigma, far within
    # spec). Phase I (40 hours, 4,800 shafts) saw one lot only, so it could not learn this.
    levels = [0.0, 0.8, -0.6, 0.7, -0.8, 0.5]
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, lot_level=levels[i // 5]) for i in range(30)]
    ws = feed(tmp_path / "ws", chunks)
    assert list_problems(ws) == []
    ws.close()


def test_one_unit_out_of_spec_makes_a_lot_to_lot_move_no_loss(tmp_path: Path) -> None:
    # The same lots; one shaft of the second lot is a wild reading beyond its limit. One unit in
    # thousands is no loss: the move stays the line's own lot-to-lot wander (the zoo's assembly line
    # opened a problem on "0.1 % of units now out of spec, up from 0.0 %").
    levels = [0.0, 0.8, -0.6, 0.7, -0.8, 0.5]
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, lot_level=levels[i // 5]) for i in range(30)]
    meas = chunks[6]["measurements"]
    value = meas.column("value").to_numpy().copy()
    value[500] += 6 * SD  # beyond the limit, 5 sigma from either product's nominal
    chunks[6]["measurements"] = meas.set_column(meas.schema.get_field_index("value"), "value", pa.array(value))
    ws = feed(tmp_path / "ws", chunks)
    assert list_problems(ws) == []
    ws.close()


def test_a_lot_a_little_beyond_the_widest_one_seen_is_the_lines_normal(tmp_path: Path) -> None:
    # Lots of 2,000 shafts that spread 0.65 sigma; the eighth sits 1.4 sigma off: beyond every lot
    # before it (0.8 at most), but lots that spread put one that far out about one time in thirty.
    # The widest stray seen so far was the bound, and a new lot passes it one time in (lots seen + 1).
    levels = [0.0, 0.7, -0.7, 0.6, -0.8, 0.7, -0.6, 1.4]
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, lot_level=levels[i // 2]) for i in range(16)]
    ws = feed(tmp_path / "ws", chunks)
    assert list_problems(ws) == []
    ws.close()


def test_a_lot_far_beyond_the_lot_to_lot_moves_is_found(tmp_path: Path) -> None:
    # The same lots, then one that puts every shaft 2.5 sigma large: still within spec (a few in a
    # thousand shafts beyond it), three times as far as any lot before it. (A lot 2 sigma off is no
    # longer raised: four lots that spread 0.6 sigma cannot tell it from the line's own lots.)
    levels = [0.0, 0.8, -0.6, 0.7, 2.5, 0.0]
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, lot_level=levels[i // 5]) for i in range(30)]
    ws = feed(tmp_path / "ws", chunks)
    problems = list_problems(ws)
    assert len(problems) == 1, [p["description"] for p in problems]
    assert problems[0]["scope"]["measurement"] == "diameter_mm"
    # Raised while that lot runs. (Its onset is dated from where the sums began to climb: the
    # lot before it, 0.7 sigma off, which was no problem by itself.)
    first = int(problems[0]["first_evidence"]["unit"][2:])
    assert 20_000 <= first <= 22_000, first
    ws.close()


def test_a_lot_off_the_few_phase_I_saw_is_the_lines_normal(tmp_path: Path) -> None:
    # Phase I (40 hours) saw three bar-stock lots of 1,600 shafts, within 0.5 sigma of each other;
    # the fourth sits 1.4 sigma off, within spec. Three lots bound the next one only loosely: the
    # zoo's assembly line raised such lots as "press depth has risen 1.1 sigma" on its clean runs.
    levels = [0.25, -0.25, 0.2, 1.4, 0.3, 0.0, 0.1, -0.2]
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, lot_level=levels[i * 1000 // 1600]) for i in range(12)]
    ws = feed(tmp_path / "ws", chunks)
    assert [p["description"] for p in list_problems(ws)] == []
    ws.close()


def test_a_lathe_that_steps_is_named_where_its_shafts_are_measured(tmp_path: Path) -> None:
    # Lathes L1 and L2 turn the shafts in turn; the CMM measures them. From unit 9,000 L2's shafts
    # come out 1.5 sigma large: half the CMM's shafts, 0.75 sigma on the CMM's own series. The
    # profile says the CMM's diameters are made at TURN, so each lathe is followed on its own.
    made_at = Profile.model_validate({"line": {"readings": [
        {"name": "diameter_mm", "station": "CMM", "role": "measurement", "made_at": "TURN"}]}})
    chunks = [shafts(i * 1000, 1000, seed=i, share_25=0.3, l2_step=1.5 if i >= 9 else 0.0) for i in range(14)]
    ws = feed(tmp_path / "ws", chunks, made_at)
    problems = list_problems(ws)
    assert len(problems) == 1, [p["description"] for p in problems]
    assert problems[0]["scope"] == {"station": "CMM", "measurement": "diameter_mm", "machine": "L2"}
    assert "on machine L2 (TURN)" in problems[0]["description"]
    assert 8_500 <= int(problems[0]["onset"]["unit"][2:]) <= 10_500
    ws.close()


def small_line(first: int, n: int, seed: int, m2_fail_from: int | None, base_fail: float = 0.01,
               m2_fail: float = 0.27, m2_fail_to: int | None = None, per_day: int = 100) -> dict[str, pa.Table]:
    """A hand-built product, a hundred units a day: ASSY (benches B1/B2), then a functional test."""
    rng = np.random.default_rng(seed)
    idx = np.arange(first, first + n)
    t = T0 + idx * np.timedelta64(86_400 // per_day, "s")
    bench = np.where(rng.random(n) < 0.5, "B1", "B2")
    p_fail = np.full(n, base_fail)
    if m2_fail_from is not None:
        spell = (idx >= m2_fail_from) & (idx < (m2_fail_to if m2_fail_to is not None else idx[-1] + 1))
        p_fail = np.where((bench == "B2") & spell, m2_fail, p_fail)
    fail = rng.random(n) < p_fail
    ids = [f"MD{i:06d}" for i in idx]
    units = pa.table({"unit_id": ids, "product": ["MON-1"] * n, "line": ["MD"] * n, "work_order": ["WO1"] * n,
                      "t_start": pa.array(t), "t_end": pa.array(t + np.timedelta64(600, "s")),
                      "result": np.where(fail, "fail", "pass").tolist(), "first_pass": (~fail).tolist()})
    steps = pa.table({
        "unit_id": ids * 2, "station": ["ASSY"] * n + ["FT"] * n, "machine": bench.tolist() + ["FT1"] * n,
        "fixture": [None] * (2 * n), "operator": [None] * (2 * n), "shift": ["D"] * (2 * n),
        "recipe_id": ["R1"] * (2 * n),
        "t_in": pa.array(np.concatenate([t, t + np.timedelta64(400, "s")])),
        "t_out": pa.array(np.concatenate([t + np.timedelta64(300, "s"), t + np.timedelta64(500, "s")])),
        "result": ["pass"] * n + np.where(fail, "fail", "pass").tolist(),
        "defect_code": [None] * n + np.where(fail, "ASSY_ERROR", None).tolist()})
    return {"units": units, "steps": steps}


def test_a_small_line_learns_its_normal_in_days_and_raises_a_failing_bench(tmp_path: Path) -> None:
    # 100 units a day for a month; from unit 1,500 a quarter of bench B2's units fail.
    chunks = [small_line(i * 100, 100, seed=i, m2_fail_from=1500) for i in range(30)]
    ws = feed(tmp_path / "ws", chunks)
    problems = list_problems(ws)
    assert problems, "a bench failing a quarter of its units was never raised"
    first = min(problems, key=lambda p: int(p["first_evidence"]["unit"][2:]))
    assert first["scope"].get("station") == "FT" or first["scope"].get("machine") == "B2"
    assert int(first["first_evidence"]["unit"][2:]) < 2100  # within a week of the onset
    # how fast it loses units now, for whoever decides how urgent it is (a bench of half the units at +26 %)
    assert 0.08 < first["severity"]["loss_rate"] < 0.4
    ws.close()


def test_a_bench_failing_four_in_a_hundred_instead_of_one_is_raised_within_weeks(tmp_path: Path) -> None:
    """A loose contact on one of two benches takes its failure rate from 1 % to 4 % (about one extra
    failure every two days on a line of a hundred units a day). At a false discovery level of 1e-4 the
    monitor took 22 to 24 days to raise it; the naive fail-rate baseline caught such faults sooner on
    the zoo's lines (an intermittent lathe, tune seeds). At 1e-3 it takes 13 to 17 days, and no clean
    zoo run (tune seeds) opened a failure-rate problem more."""
    for seed in (0, 100):
        ws = feed(tmp_path / f"ws{seed}", [small_line(i * 100, 100, seed=seed + i, m2_fail_from=1500, m2_fail=0.04)
                                           for i in range(40)])
        first = min(int(p["first_evidence"]["unit"][2:]) for p in list_problems(ws))
        assert first < 3300, (seed, first)
        ws.close()


def test_failures_where_there_were_none_are_described_without_a_ratio(tmp_path: Path) -> None:
    """A bench that never failed a unit starts failing a quarter of them: the problem said "up from
    0.0% (27586206.9x)", a ratio to the prior's near-zero reference rate (zoo machining line)."""
    ws = feed(tmp_path / "ws", [small_line(i * 100, 100, seed=i, m2_fail_from=1500, base_fail=0.0)
                                for i in range(25)])
    texts = [p["description"] for p in list_problems(ws) if p["kind"] == "defect_rate"]
    assert texts and all("up from 0.0%;" in t and "x)" not in t for t in texts), texts
    ws.close()


def test_one_spell_of_failures_on_a_slow_line_is_one_problem(tmp_path: Path) -> None:
    """A bench fails a quarter of its units for two days, then never again. The failure-rate test
    runs a hundred records apart, two days on a line of fifty units a day, and each later window
    still held the spell's failures: each judgement opened a new problem (nine for one spell of 15
    failures on the zoo's medical line), as the last evidence was more than a day old every time."""
    ws = feed(tmp_path / "ws", [small_line(i * 100, 100, seed=i, m2_fail_from=1500, m2_fail_to=1600,
                                           base_fail=0.0, per_day=50) for i in range(30)])
    raised = [p for p in list_problems(ws) if p["kind"] == "defect_rate"]
    assert len(raised) == 1, [(p["id"], p["entity"], p["description"]) for p in raised]
    ws.close()


def test_a_small_clean_line_raises_nothing(tmp_path: Path) -> None:
    chunks = [small_line(i * 100, 100, seed=i, m2_fail_from=None) for i in range(30)]
    ws = feed(tmp_path / "ws", chunks)
    assert list_problems(ws) == []
    ws.close()


def _station_stream_alarm_at(onset: int, rate: float, per_day: int, chunk: int, base: float = 0.005,
                             seed: int = 7) -> int | None:
    """Feed one station's first visits (`base` failing, `rate` from `onset`) in chunks, as a line
    would; return the record after which the station's failure-rate stream first alarms."""
    from linelab.monitor.engine import EngineConfig, RateStream

    rng = np.random.default_rng(seed)
    n = onset + 3000
    fails = rng.random(n) < np.where(np.arange(n) < onset, base, rate)
    t = (np.arange(n) * 86_400e6 / per_day).astype(np.int64)
    stream = RateStream("station", "LEAK", EngineConfig())
    ref_end = int(EngineConfig().reference_hours * 3.6e9)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        units = np.array([f"U{i}" for i in range(lo, hi)], dtype=object)
        if stream.process(np.zeros(hi - lo, dtype=np.int64), ["LEAK"], fails[lo:hi], units, t[lo:hi], lo,
                          ref_end):
            return hi
    return None


def test_a_rise_in_failures_is_raised_within_hours_on_a_slow_line_and_a_fast_one() -> None:
    """The failure-rate test ran every twelve hours of records over a 20,000-record window: on a
    line of 2,000 units a day a rise to 5 % failing was raised 1,350 units after it began, and on a
    line of 100 a day a lot failing 25 % of its units 200 units (two days) after. It now looks back
    over the last few dozen records too, every two hours of the line's records."""
    at = _station_stream_alarm_at(onset=5000, rate=0.05, per_day=2000, chunk=50)
    assert at is not None and at - 5000 <= 500
    at = _station_stream_alarm_at(onset=5000, rate=0.25, per_day=100, chunk=10)
    assert at is not None and at - 5000 <= 100
    # ... and a clean stream of the same length raises nothing
    assert _station_stream_alarm_at(onset=8000, rate=0.005, per_day=2000, chunk=50) is None


def test_a_station_that_never_failed_failing_two_units_in_a_hundred_is_raised_within_days() -> None:
    """A gauge that had failed no unit starts failing about 1.7 % of them (a warm coolant spell on
    a lathe cell of 600 units a day: 15 scrapped shafts in 900). The rate test asked for an excess
    of at least 0.5 % with strong evidence and never raised it, where the naive fail-rate baseline
    did within 212 units (the zoo's machining line, tune seeds). The smallest excess worth a
    problem is now 0.25 %. Over eight draws the delay was 400 to 2,400 units (median 1,400); now
    400 to 1,400 (median 700), at most about two days' production."""
    delays = [_station_stream_alarm_at(onset=2000, rate=0.017, per_day=600, chunk=200, base=0.0, seed=seed)
              for seed in range(7, 15)]
    assert all(d is not None for d in delays), delays
    delays = [d - 2000 for d in delays if d is not None]
    assert max(delays) <= 1500 and float(np.median(delays)) <= 1000, delays
    # ... and a station failing 0.2 % of its units as it always has raises nothing
    for seed in (7, 8, 9):
        assert _station_stream_alarm_at(onset=5000, rate=0.002, per_day=600, chunk=200, base=0.002, seed=seed) is None


def _room_line(first: int, n: int, seed: int, excursion_from: int | None = None) -> dict[str, pa.Table]:
    """The small line's benches, with the room's humidity read at ASSY for every unit: a day's
    cycle, warm and wet spells of two to three days, sensor noise; from `excursion_from` on, the
    room's dehumidifier has failed (+15 %RH)."""
    tables = small_line(first, n, seed, None)
    idx = np.arange(first, first + n)
    hours = idx * 864 / 3600
    rng = np.random.default_rng(1000 + seed)
    rh = (40 + 4 * np.cos(2 * np.pi * (hours - 15) / 24) + 2.5 * np.sin(2 * np.pi * hours / 61 + 1)
          + 1.5 * np.sin(2 * np.pi * hours / 29) + rng.normal(0, 0.3, n))
    if excursion_from is not None:
        rh = rh + np.where(idx >= excursion_from, 15.0, 0.0)
    t = pa.compute.add(tables["units"].column("t_start"), pa.scalar(np.timedelta64(60, "s")))
    tables["params"] = pa.table({"unit_id": tables["units"].column("unit_id"), "station": ["ASSY"] * n,
                                 "name": ["humidity_pct"] * n, "value": np.round(rh, 2), "t": t})
    return tables


def _room_profile() -> Profile:
    return Profile.model_validate({"line": {"readings": [
        {"name": "humidity_pct", "station": "ASSY", "role": "environment", "unit": "%RH"}]}})


def test_the_rooms_own_wander_is_no_problem(tmp_path: Path) -> None:
    """A room reading drifts for days with the weather. On a clean run of the zoo's medical-device
    line, phase I (two days) fitted a wet spell as "wear" of the assembly station and extrapolated
    it, and the next spell opened a problem on the room's humidity at unit 499 (a tenth of the
    line's clean runs opened one, most of all its false problems)."""
    from linelab.zoo.simulator import open_line

    line = open_line("meddev:clean", 151, None)
    ws = Workspace.open(tmp_path / "ws")
    save_profile(line.profile, tmp_path / "ws" / "profile.yaml")
    for start in range(0, line.run_units, line.kind.chunk):
        ws.ingest_tables(line.produce(line.kind.chunk), source=f"zoo:{start}")
        run_monitor(ws)
    assert list_problems(ws) == []
    ws.close()


def test_a_real_excursion_of_the_room_is_raised_as_the_rooms(tmp_path: Path) -> None:
    ws = feed(tmp_path / "wet", [_room_line(i * 100, 100, i, excursion_from=2000) for i in range(30)],
              _room_profile())
    (found,) = list_problems(ws)
    # one series for the room, whichever bench a unit was built on
    assert found["entity"] == "ASSY/humidity_pct" and found["scope"].get("machine") is None
    assert int(found["first_evidence"]["unit"][2:]) < 2500  # within five days (its spells last two or three)
    ws.close()


def _leak_tests(first: int, n: int, seed: int, level: float | np.ndarray) -> dict[str, pa.Table]:
    """Pumps through one leak tester whose spec has an upper limit only; `level` (sigmas, one for
    all or one per pump) moves the readings (a seal lot that seals better or worse)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(first, first + n)
    t = T0 + idx * np.timedelta64(40, "s")
    ids = [f"PU{i:07d}" for i in idx]
    rate = 1.0 + 0.25 * (level + rng.standard_normal(n))
    units = pa.table({"unit_id": ids, "product": ["PUMP"] * n, "line": ["ASM"] * n, "work_order": ["WO1"] * n,
                      "t_start": pa.array(t), "t_end": pa.array(t + np.timedelta64(30, "s")),
                      "result": ["pass"] * n, "first_pass": [True] * n})
    steps = pa.table({"unit_id": ids, "station": ["LEAK"] * n, "machine": ["LK1"] * n, "fixture": [None] * n,
                      "operator": [None] * n, "shift": ["A"] * n, "recipe_id": ["R1"] * n,
                      "t_in": pa.array(t), "t_out": pa.array(t + np.timedelta64(20, "s")),
                      "result": ["pass"] * n, "defect_code": [None] * n})
    meas = pa.table({"unit_id": ids, "station": ["LEAK"] * n, "name": ["leak_rate_sccm"] * n, "value": rate,
                     "t": pa.array(t + np.timedelta64(10, "s"))})
    return {"units": units, "steps": steps, "measurements": meas}


def _leak_workspace(path: Path, room: bool = False, lsl: float | None = None) -> Workspace:
    """A workspace with the leak rate's spec (upper limit 2 sccm) and, with `room`, a profile that
    says the air temperature read at the test is the room's."""
    ws = Workspace.open(path)
    if room:
        save_profile(Profile.model_validate({"line": {"readings": [
            {"name": "air_temp_c", "station": "LEAK", "role": "environment", "unit": "degC"}]}}), path / "profile.yaml")
    ws.ingest_tables({"specs": pa.table({"product": ["PUMP"], "station": ["LEAK"], "name": ["leak_rate_sccm"],
                                         "lsl": pa.array([lsl], pa.float64()), "usl": [2.0], "target": [1.0],
                                         "unit": ["sccm"]})}, source="specs")
    return ws


def _with_air(tables: dict[str, pa.Table], air: np.ndarray) -> dict[str, pa.Table]:
    """The leak tests with the air temperature read at each one (a parameter of the unit)."""
    n = tables["units"].num_rows
    tables["params"] = pa.table({"unit_id": tables["units"].column("unit_id"), "station": ["LEAK"] * n,
                                 "name": ["air_temp_c"] * n, "value": np.round(air, 2),
                                 "t": tables["measurements"].column("t")})
    return tables


def _leak_line(path: Path, later_level: float) -> Workspace:
    ws = _leak_workspace(path)
    for i in range(16):
        ws.ingest_tables(_leak_tests(i * 500, 500, i, later_level if i >= 10 else 0.0), source=f"leak:{i}")
        run_monitor(ws)
    return ws


def test_a_reading_moving_away_from_its_only_limit_is_no_problem(tmp_path: Path) -> None:
    # A leak rate has an upper limit only: seals that leak 1.5 sigma less are better, not a problem
    # (the zoo's machining line opened one on a roughness that fell).
    ws = _leak_line(tmp_path / "better", later_level=-1.5)
    assert list_problems(ws) == []
    ws.close()
    # The same move towards the limit is raised (no unit lost yet: the limit is 4 sigma away).
    ws = _leak_line(tmp_path / "worse", later_level=1.5)
    (found,) = list_problems(ws)
    assert found["scope"]["measurement"] == "leak_rate_sccm" and "risen" in found["description"]
    ws.close()


def _warm_leak_tests(first: int, n: int, seed: int, step_from: int | None = None) -> dict[str, pa.Table]:
    """Leak tests of pumps on one tester, with the air temperature at the test read for every unit:
    a day's cycle and spells of warm days (the leak rate rises 0.26 sd a degree: a decay test reads
    the air's expansion); from `step_from` on, the tester reads 1.5 sd high."""
    idx = np.arange(first, first + n)
    hours = idx * 40 / 3600
    rng = np.random.default_rng(2000 + seed)
    air = (22 + 2 * np.cos(2 * np.pi * (hours - 15) / 24) + 1.5 * np.sin(2 * np.pi * hours / 70 + 2)
           + rng.normal(0, 0.3, n))
    step = np.where(idx >= step_from, 1.5, 0.0) if step_from is not None else 0.0
    return _with_air(_leak_tests(first, n, seed, 0.26 * (air - 22) + step), air)


def _warm_leak_line(path: Path, step_from: int | None = None) -> Workspace:
    ws = _leak_workspace(path, room=True)
    for i in range(24):
        ws.ingest_tables(_warm_leak_tests(i * 500, 500, i, step_from), source=f"leak:{i}")
        run_monitor(ws)
    return ws


def test_a_reading_that_moves_with_the_room_is_watched_net_of_it(tmp_path: Path) -> None:
    """A leak rate rose and fell with the air's temperature (a day's cycle and spells of warm days):
    on the zoo's assembly line, every warm spell after phase I read as 'LK2's leak rate has risen
    1 sigma' (a third of its clean runs). The rate is now watched net of the temperature read with
    each unit, and a tester that really steps is still found, on the leak rate itself."""
    quiet = _warm_leak_line(tmp_path / "quiet")
    assert list_problems(quiet) == []
    quiet.close()
    stepped = _warm_leak_line(tmp_path / "step", step_from=8000)
    found = [p for p in list_problems(stepped) if p["scope"].get("measurement") == "leak_rate_sccm"]
    assert found and int(found[0]["first_evidence"]["unit"][2:]) < 8600
    stepped.close()


def _lots_through_the_days(first: int, n: int, seed: int) -> dict[str, pa.Table]:
    """Leak tests that do not move with the air at all, while the air follows its day (3 degrees
    either way, warmest at three in the afternoon); the seal lots differ by up to a sd: the
    first (10 hours, from midnight) low, the second (30 hours) high, so that it came in as the
    day warmed."""
    idx = np.arange(first, first + n)
    hours = idx * 40 / 3600
    rng = np.random.default_rng(3000 + seed)
    air = 22 + 3 * np.cos(2 * np.pi * (hours - 15) / 24) + rng.normal(0, 0.3, n)
    lot = np.where(idx < 900, 0, 1 + (idx - 900) // 2700)
    return _with_air(_leak_tests(first, n, seed, np.array([-0.5, 0.5, 0.0, -0.3, 0.4, -0.2, 0.3, 0.1])[lot % 8]), air)


def test_a_lot_that_came_in_as_the_room_warmed_is_no_room_effect(tmp_path: Path) -> None:
    """Phase I saw a seal lot come in as the day warmed: a fit of the leak rate on the air
    temperature found a 'room effect' with a t of 9 on records' worth of evidence, and the rate
    was then watched net of a room it does not follow (the zoo's assembly line: press depth
    'risen 1.1 sigma' on clean runs, once the room cooled). An effect must hold across phase I's
    spans of time, not in one run of it; a real one still does (the test above)."""
    ws = _leak_workspace(tmp_path / "ws", room=True)
    engine = MonitorEngine()
    for i in range(16):
        ws.ingest_tables(_lots_through_the_days(i * 500, 500, i), source=f"leak:{i}")
        engine.run(ws)
    assert engine.series[("LEAK", "leak_rate_sccm", "LK1")].env_effect == {}
    assert list_problems(ws) == []
    ws.close()


def _lots_in_sequence(first: int, n: int, seed: int) -> dict[str, pa.Table]:
    """Leak tests of seal lots (1,200 pumps each) that climb through phase I (-0.6, 0, +0.6 sd) and
    stay at +0.6 sd after it: no wear at all."""
    return _leak_tests(first, n, seed, np.r_[[-0.6, 0.0, 0.6], np.full(40, 0.6)][np.arange(first, first + n) // 1200])


def test_a_slope_the_first_service_does_not_renew_is_no_wear(tmp_path: Path) -> None:
    """Phase I fits the lots' climb as wear of the tester (no service in phase I to tell). Its first
    service, 150 hours in, shows no step: the records on either side sit at one level. Judged
    against the slope's own extrapolation to 150 hours (a drop of 4 sd that never built up), the
    records after the service sat 'near enough the predicted level' and the slope was confirmed."""
    ws = _leak_workspace(tmp_path / "ws", lsl=0.0)
    engine = MonitorEngine()
    service_at = T0 + np.timedelta64(150 * 3600, "s")
    for i in range(36):
        tables = _lots_in_sequence(i * 500, 500, i)
        if i == 27:  # the chunk that holds hour 150
            tables["events"] = pa.table({"t": pa.array([service_at]), "kind": ["maintenance"], "station": ["LEAK"],
                                         "machine": ["LK1"], "target": ["LK1"], "detail": ['{"planned": true}']})
        ws.ingest_tables(tables, source=f"leak:{i}")
        engine.run(ws)
        if i == 20:  # phase I took the climb for wear
            assert engine.series[("LEAK", "leak_rate_sccm", "LK1")].trend_key == "station:LEAK"
    assert engine.series[("LEAK", "leak_rate_sccm", "LK1")].trend_key is None
    ws.close()
