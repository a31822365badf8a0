"""The twin: reproducible, realistic, each micro-problem moves the right data, actions fix them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from linelab.store.schema import RECORD_TABLES
from linelab.twin import (
    ACTION_KINDS,
    PROBLEM_TYPES,
    RECIPE_PARAMS,
    Line,
    ScenarioError,
    list_scenarios,
    load_scenario,
)

RECORDS = ["units", "steps", "measurements", "params", "materials", "events"]


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def frames(chunks: list) -> dict[str, pd.DataFrame]:
    """All chunks' tables concatenated, as DataFrames with the unit index added."""
    out = {}
    for name in RECORDS:
        df = pa.concat_tables([c[name] for c in chunks]).to_pandas()
        if "unit_id" in df:
            df["i"] = df["unit_id"].str[2:].astype(np.int64) - 1
        out[name] = df
    return out


def first_visit(steps: pd.DataFrame, station: str, machine: str | None = None) -> pd.DataFrame:
    s = steps[steps.station == station]
    if machine:
        s = s[s.machine == machine]
    return s.sort_values("t_in", kind="stable").drop_duplicates("unit_id")


def measurement(df: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    m = df["measurements"]
    return m[m.name == name].sort_values("t", kind="stable").drop_duplicates("unit_id")


def problem(line: Line, pid: str) -> dict:
    return next(t for t in line.truth if t["id"] == pid)


# ---- reproducibility, schema, continuity ------------------------------------------------------


def test_same_scenario_seed_and_chunks_give_identical_bytes():
    def run(seed: int) -> list[bytes]:
        line = Line("default", seed=seed)
        chunks = [line.produce(4000), line.produce(6000)]
        return [ipc_bytes(c[name]) for c in chunks for name in RECORDS]

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert first != other


def test_a_unit_is_the_same_however_production_is_chunked():
    # The loop looks at the line as often as it likes: how often must not change the line.
    whole = Line("default", seed=5).produce(9000)
    line = Line("default", seed=5)
    parts = [line.produce(k) for k in (1, 999, 4096, 3904)]
    for name in RECORDS:  # the same rows; a chunk lists its steps station by station
        joined = pa.concat_tables([p[name] for p in parts])
        keys = [(c, "ascending") for c in joined.column_names if not pa.types.is_nested(joined.schema.field(c).type)]
        assert joined.sort_by(keys).equals(whole[name].sort_by(keys)), name


def test_tables_match_the_store_schemas_exactly():
    chunk = Line("default", seed=0).produce(3000)
    for name in RECORDS + ["specs"]:
        assert chunk.tables[name].schema == RECORD_TABLES[name], name
        chunk.tables[name].validate(full=True)
    assert "source" not in chunk["units"].column_names
    specs = chunk["specs"].to_pandas()
    assert {"vout_v", "paste_volume_pct", "peak_temp_c", "squeegee_pressure"} <= set(specs.name)
    steps = chunk["steps"].to_pandas()
    assert set(steps.station) == {"PRINT", "SPI", "PLACE", "REFLOW", "AOI", "TEST", "PACK"}
    assert set(steps["shift"]) <= {"A", "B", "C"} and steps.operator.notna().all()


def test_chunks_continue_serials_and_time():
    line = Line("clean", seed=1)
    a, b = line.produce(2500), line.produce(2500)
    ua, ub = a["units"].to_pandas(), b["units"].to_pandas()
    assert ua.unit_id.iloc[0] == "SN00000001" and ub.unit_id.iloc[0] == "SN00002501"
    assert ub.unit_id.iloc[-1] == "SN00005000" and b.first_unit == 2500
    assert ub.t_start.iloc[0] > ua.t_start.iloc[-1]
    assert ua.t_start.is_monotonic_increasing and ub.t_start.is_monotonic_increasing
    gaps = ua.t_start.diff().dt.total_seconds().dropna()
    assert 10 <= gaps.median() <= 20  # takt
    assert "specs" in a.tables and "specs" not in b.tables


def test_clean_line_has_a_realistic_yield_that_matches_the_oracle():
    line = Line("clean", seed=0)
    df = frames([line.produce(40_000)])
    units = df["units"]
    fpy = units.first_pass.mean()
    assert 0.90 <= fpy <= 0.97
    assert abs(fpy - line.expected_yield()) < 0.01
    assert set(units.result) <= {"pass", "fail", "scrap"} and (units.result == "pass").mean() > 0.98
    steps = df["steps"]
    aoi_codes = set(steps[steps.station == "AOI"].defect_code.dropna())
    assert {"BRIDGE", "COLD_JOINT", "MISALIGN", "TOMBSTONE", "INSUFFICIENT"} <= aoi_codes
    # every AOI failure is reworked (an extra AOI visit by RW1) and re-inspected
    aoi = steps[steps.station == "AOI"]
    first_aoi = first_visit(steps, "AOI", "AOI1")
    assert (aoi.machine == "RW1").sum() == (first_aoi.result == "fail").sum()
    assert (aoi[aoi.machine == "RW1"].result == "rework").all()
    assert not units.first_pass[units.result != "pass"].any()


def test_chunks_and_actions_ingest_cleanly_into_a_workspace(tmp_path):
    from linelab.store import Workspace

    line = Line("bad_lot", seed=2)
    ws = Workspace.open(tmp_path / "ws")
    try:
        first = line.produce(3000)
        rep = ws.ingest_tables(first.tables, source="twin:bad_lot:seed2")
        assert rep.quarantined == 0 and rep.stored == sum(t.num_rows for t in first.tables.values())
        line.apply("set_param", name="print_speed", value=50)
        line.apply("set_param", name="print_speed", value=52)
        line.apply("clean_stencil")
        second = line.produce(3000)
        rep2 = ws.ingest_tables(second.tables, source="twin:bad_lot:seed2")
        assert rep2.quarantined == 0 and rep2.stored == sum(t.num_rows for t in second.tables.values())
        again = ws.ingest_tables(second.tables, source="twin:bad_lot:seed2")
        assert again.stored == 0
        units = ws.query("SELECT count(*) AS n, count(DISTINCT unit_id) AS d FROM units").to_pylist()[0]
        assert units == {"n": 6000, "d": 6000}
        changes = ws.query("SELECT count(*) AS n FROM events WHERE kind = 'recipe_change'").to_pylist()[0]
        assert changes["n"] == 2
    finally:
        ws.close()


# ---- each micro-problem moves the data it should, and only there -----------------------------


def test_nozzle_wear_moves_offsets_on_that_nozzle_only_and_replacement_fixes_it():
    line = Line("nozzle_wear", seed=0)  # P2-N3 from unit 10000, full wear at 15000
    df = frames([line.produce(18_000)])
    place = first_visit(df["steps"], "PLACE")[["unit_id", "fixture"]].rename(columns={"fixture": "nozzle"})
    off = measurement(df, "place_offset_x_mm").merge(place, on="unit_id")
    late = off[off.i >= 15_000].groupby("nozzle").value.mean()
    early = off[off.i < 10_000].groupby("nozzle").value.mean()
    assert late["P2-N3"] - early["P2-N3"] > 0.04
    assert (late.drop("P2-N3") - early.drop("P2-N3")).abs().max() < 0.005
    aoi = first_visit(df["steps"], "AOI", "AOI1").merge(place, on="unit_id")
    mis = aoi[aoi.i >= 12_000].assign(m=lambda d: d.defect_code == "MISALIGN").groupby("nozzle").m.mean()
    assert mis["P2-N3"] > 5 * mis.drop("P2-N3").mean()
    assert problem(line, "nozzle-1")["status"] == "active"
    assert problem(line, "nozzle-1")["cause"] == {
        "factor": "nozzle",
        "level": "P2-N3",
        "station": "PLACE",
        "machine": "P2",
    }

    done = line.apply(problem(line, "nozzle-1")["fix_actions"][0])
    assert done["fixed"] == ["nozzle-1"]
    after = frames([line.produce(4000)])
    place2 = first_visit(after["steps"], "PLACE")[["unit_id", "fixture"]].rename(columns={"fixture": "nozzle"})
    off2 = measurement(after, "place_offset_x_mm").merge(place2, on="unit_id").groupby("nozzle").value.mean()
    assert abs(off2["P2-N3"] - early["P2-N3"]) < 0.01
    truth = problem(line, "nozzle-1")
    assert truth["status"] == "fixed" and truth["fixed_by"] == "action:replace_nozzle" and truth["end_unit"] == 18_000
    ev = after["events"]
    assert ((ev.kind == "maintenance") & (ev.target == "P2-N3")).any()


def test_bad_lot_raises_defects_only_for_units_with_that_lot_and_hold_removes_it():
    line = Line("bad_lot", seed=0)
    df = frames([line.produce(30_000)])
    truth = problem(line, "lot-1")
    lot = truth["cause"]["level"]
    assert truth["cause"]["factor"] == "lot" and lot.startswith("SAN-C22")
    mats = df["materials"][df["materials"].material == "CAP-22UF"][["unit_id", "lot", "supplier"]]
    assert (mats[mats.lot == lot].supplier == "SANWA").all()
    users = set(mats[mats.lot == lot].unit_id)
    assert truth["onset_unit"] >= 10_000 and len(users) > 500
    aoi = first_visit(df["steps"], "AOI", "AOI1")
    aoi = aoi[aoi.i >= truth["onset_unit"]]
    tomb = aoi.assign(t=aoi.defect_code == "TOMBSTONE", bad=aoi.unit_id.isin(users)).groupby("bad").t.mean()
    # magnitude 3 on the logit: about e^3 = 20 times the tombstones of the other units
    assert tomb[True] > 0.01 and tomb[True] > 8 * tomb[False]
    ripple = measurement(df, "ripple_mv")
    assert ripple[ripple.unit_id.isin(users)].value.median() > 1.2 * ripple[~ripple.unit_id.isin(users)].value.median()

    if truth["status"] == "active":
        line.apply("hold_lot", lot=lot)
        after = frames([line.produce(3000)])
        assert lot not in set(after["materials"].lot)
        assert problem(line, "lot-1")["fixed_by"] == "action:hold_lot"
        assert ((after["events"].kind == "hold") & (after["events"].target == lot)).any()
    else:  # the lot ran out on its own
        assert truth["fixed_by"] == "lot_exhausted"


def test_tester_drift_fails_good_units_on_that_tester_only_and_they_pass_retest():
    line = Line("tester_drift", seed=0)  # T2 from unit 10000, full drift at 15000
    df = frames([line.produce(20_000)])
    steps = df["steps"]
    test = steps[steps.station == "TEST"].sort_values("t_in", kind="stable")
    first = test.drop_duplicates("unit_id")
    late = first[first.i >= 15_000].assign(f=lambda d: d.result == "fail").groupby("machine").f.mean()
    early = first[first.i < 10_000].assign(f=lambda d: d.result == "fail").groupby("machine").f.mean()
    assert late["T2"] > 0.05 and late["T2"] > 5 * early["T2"]
    assert late["T1"] < 0.02
    failed_t2 = set(first[(first.i >= 15_000) & (first.machine == "T2") & (first.result == "fail")].unit_id)
    retests = test[test.unit_id.isin(failed_t2)].groupby("unit_id").tail(1)
    assert (retests.machine == "T1").all()
    assert (retests.result == "pass").mean() > 0.9
    units = df["units"].set_index("unit_id").loc[sorted(failed_t2)]
    assert (units.result == "pass").mean() > 0.9 and not units.first_pass.any()
    vout = measurement(df, "vout_v").merge(first[["unit_id", "machine"]], on="unit_id")
    shift = (
        vout[vout.i >= 15_000].groupby("machine").value.mean() - vout[vout.i < 10_000].groupby("machine").value.mean()
    )
    assert shift["T2"] > 0.04 and abs(shift["T1"]) < 0.005

    line.apply({"kind": "recalibrate_tester", "tester": "T2"})
    after = frames([line.produce(5000)])
    t2 = first_visit(after["steps"], "TEST")
    assert (t2[t2.machine == "T2"].result == "fail").mean() < 0.03
    assert problem(line, "tester-1")["status"] == "fixed"


def test_humidity_excursion_raises_humidity_and_solder_balls_in_its_window():
    line = Line("humidity_excursion", seed=0)  # +25 %RH for units 10000..18000
    df = frames([line.produce(25_000)])
    rh = df["params"][df["params"].name == "ambient_humidity_pct"]
    inside = (rh.i >= 10_500) & (rh.i < 18_000)
    assert rh[inside].value.mean() - rh[~inside & (rh.i < 10_000)].value.mean() > 15
    aoi = first_visit(df["steps"], "AOI", "AOI1")
    win = (aoi.i >= 10_500) & (aoi.i < 18_000)
    sb = aoi.defect_code == "SOLDER_BALL"
    assert sb[win].mean() > 0.01 and sb[win].mean() > 5 * sb[~win].mean()
    truth = problem(line, "humidity-1")
    assert truth["status"] == "ended" and truth["end_unit"] == 18_000 and truth["fixed_by"] == "duration"


def test_stencil_clog_lowers_paste_volume_until_the_stencil_is_cleaned():
    line = Line("stencil_clog", seed=0)  # from unit 10000, 4 % per 1000 prints
    df = frames([line.produce(15_000)])
    vol = measurement(df, "paste_volume_pct")
    assert vol[vol.i < 10_000].value.mean() - vol[vol.i >= 14_000].value.mean() > 12
    aoi = first_visit(df["steps"], "AOI", "AOI1")
    ins = aoi.defect_code == "INSUFFICIENT"
    assert ins[aoi.i >= 14_000].mean() > 5 * ins[aoi.i < 10_000].mean()
    assert line.state["stencil_prints_since_clean"] == 15_000
    line.apply("clean_stencil")
    assert line.state["stencil_prints_since_clean"] == 0
    after = measurement(frames([line.produce(2000)]), "paste_volume_pct")
    assert abs(after.value.mean() - vol[vol.i < 5_000].value.mean()) < 2
    assert problem(line, "stencil-1")["fixed_by"] == "action:clean_stencil"


def test_reflow_zone_loss_cools_the_profile_and_service_restores_it():
    line = Line("reflow_zone_loss", seed=0)  # zone 7 loses 4 degC over units 10000..13000
    df = frames([line.produce(16_000)])
    p = df["params"]
    z7, z6 = p[p.name == "zone7_temp_c"], p[p.name == "zone6_temp_c"]
    assert z7[z7.i < 10_000].value.mean() - z7[z7.i >= 13_000].value.mean() > 3.5
    assert abs(z6[z6.i < 10_000].value.mean() - z6[z6.i >= 13_000].value.mean()) < 0.5
    peak = measurement(df, "peak_temp_c")
    assert peak[peak.i < 10_000].value.mean() - peak[peak.i >= 13_000].value.mean() > 2.5
    aoi = first_visit(df["steps"], "AOI", "AOI1")
    cold = aoi.defect_code == "COLD_JOINT"
    assert cold[aoi.i >= 13_000].mean() > 2.5 * cold[aoi.i < 10_000].mean()
    line.apply("service_oven")
    after = frames([line.produce(2000)])["params"]
    assert abs(after[after.name == "zone7_temp_c"].value.mean() - z7[z7.i < 10_000].value.mean()) < 0.5


def test_shift_handling_defects_come_from_that_shift_only_and_retraining_stops_them():
    line = Line("shift_handling", seed=0)  # shift C from unit 10000
    df = frames([line.produce(25_000)])
    aoi = first_visit(df["steps"], "AOI", "AOI1")
    late = aoi[aoi.i >= 10_000].assign(h=lambda d: d.defect_code == "HANDLING").groupby("shift").h.mean()
    assert late["C"] > 0.01 and late["C"] > 8 * max(late["A"], late["B"])
    line.apply("handling_retrain", shift="C")
    after = first_visit(frames([line.produce(6000)])["steps"], "AOI", "AOI1")
    assert (after[after["shift"] == "C"].defect_code == "HANDLING").mean() < 0.005
    assert problem(line, "handling-1")["cause"]["factor"] == "shift"


def test_mixed_scenario_has_two_overlapping_problems_with_distinct_causes():
    line = Line("mixed", seed=0)
    line.produce(22_000)
    truths = line.truth
    assert {t["cause"]["factor"] for t in truths} == {"nozzle", "tester"}
    assert all(t["status"] == "active" for t in truths)
    assert set(line.state["active_problems"]) == {"nozzle-1", "tester-1"}


def test_scheduled_maintenance_fixes_problems_without_the_loop(tmp_path):
    path = tmp_path / "sched.yaml"
    path.write_text(
        "name: sched\nmaintenance: {nozzle_swap_every: 12000, tester_calibration_every: 9000}\n"
        "problems:\n"
        "  - {type: nozzle_wear, onset: 2000, machine: P1, nozzle: N1}\n"
        "  - {type: tester_drift, onset: 3000, tester: T1}\n"
    )
    line = Line(str(path), seed=0)
    chunk = line.produce(13_000)
    by = {t["type"]: t for t in line.truth}
    assert by["nozzle_wear"]["fixed_by"] == "schedule:nozzle_swap" and by["nozzle_wear"]["end_unit"] == 12_000
    assert by["tester_drift"]["fixed_by"] == "schedule:tester_calibration" and by["tester_drift"]["end_unit"] == 9000
    ev = chunk["events"].to_pandas()
    assert {"maintenance", "calibration"} <= set(ev.kind)
    fixed = [json.loads(d)["fixed_problems"] for d in ev.detail if "scheduled" in d]
    assert ["nozzle_wear-1"] in fixed and ["tester_drift-1"] in fixed


# ---- control interface ---------------------------------------------------------------------


def test_set_param_changes_the_params_and_is_recorded():
    line = Line("clean", seed=0)
    before = frames([line.produce(2000)])
    result = line.apply({"kind": "set_param", "name": "squeegee_pressure", "value": 8.0})
    assert result["recipe"]["squeegee_pressure"] == 8.0
    after = frames([line.produce(2000)])
    p0, p1 = before["params"], after["params"]
    assert abs(p0[p0.name == "squeegee_pressure"].value.mean() - 5.5) < 0.05
    assert abs(p1[p1.name == "squeegee_pressure"].value.mean() - 8.0) < 0.05
    assert set(after["steps"].recipe_id) == {"PSU-5V-R002"} and set(before["steps"].recipe_id) == {"PSU-5V-R001"}
    ev = after["events"][after["events"].kind == "recipe_change"]
    assert len(ev) == 1 and ev.target.iloc[0] == "squeegee_pressure"
    assert json.loads(ev.detail.iloc[0])["to"] == {"squeegee_pressure": 8.0}
    # paste volume follows the recipe: more pressure, less paste
    v0, v1 = measurement(before, "paste_volume_pct"), measurement(after, "paste_volume_pct")
    assert v0.value.mean() - v1.value.mean() > 3


def test_bad_actions_raise_clear_value_errors():
    line = Line("clean", seed=0)
    with pytest.raises(ValueError, match="unknown action 'launch'"):
        line.apply({"kind": "launch"})
    with pytest.raises(ValueError, match="outside its safe bounds"):
        line.apply("set_param", name="peak_temp_setpoint", value=300)
    with pytest.raises(ValueError, match="unknown recipe parameter 'speed'"):
        line.apply("set_param", name="speed", value=3)
    with pytest.raises(ValueError, match="machine must be one of"):
        line.apply("replace_nozzle", machine="P9", nozzle="N1")
    with pytest.raises(ValueError, match="missing argument"):
        line.apply("recalibrate_tester")
    with pytest.raises(ValueError, match="no lot 'XYZ'"):
        line.apply("hold_lot", lot="XYZ")
    with pytest.raises(ValueError):
        line.produce(0)
    assert line.recipe["peak_temp_setpoint"] == 247.0  # nothing half-applied
    assert {
        "clean_stencil",
        "replace_nozzle",
        "hold_lot",
        "release_lot",
        "recalibrate_tester",
        "service_oven",
        "handling_retrain",
        "dehumidify",
        "set_param",
    } <= set(ACTION_KINDS)


# ---- the oracle ----------------------------------------------------------------------------


def test_expected_yield_has_an_interior_optimum_inside_the_safe_bounds():
    line = Line("clean", seed=0)
    default, best = line.expected_yield(), line.optimal_recipe()
    top = line.expected_yield(best)
    assert 0.90 <= default <= 0.97
    assert top - default > 0.02
    for name, spec in RECIPE_PARAMS.items():
        assert spec.low < best[name] < spec.high
        for edge in (spec.low, spec.high):
            assert line.expected_yield(best | {name: edge}) < top - 0.005, (name, edge)
        step = 0.05 * (spec.high - spec.low)
        for v in (best[name] - step, best[name] + step):
            assert line.expected_yield(best | {name: v}) < top
    line.apply("set_recipe", params=best)
    assert line.expected_yield() == pytest.approx(top)


# ---- scenarios --------------------------------------------------------------------------------


def test_builtin_scenarios_cover_every_problem_type():
    infos = {s.name: s for s in list_scenarios()}
    assert {"clean", "default", "mixed"} <= set(infos)
    assert set(PROBLEM_TYPES) <= set(infos)
    for t in PROBLEM_TYPES:
        assert [p["type"] for p in infos[t].problems] == [t]
    assert infos["clean"].problems == []
    default = load_scenario("default")
    kinds = [p.type for p in default.problems]
    assert set(kinds) == set(PROBLEM_TYPES)
    recurring = [p for p in default.problems if kinds.count(p.type) > 1]
    assert recurring and len(
        {(p.type, getattr(p, "nozzle", None), getattr(p, "tester", None)) for p in recurring}
    ) < len(recurring)


def test_a_bad_scenario_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nproblems:\n  - {type: nozzle_wear, onset: 10, machine: P7, nozzle: N1}\n")
    with pytest.raises(ScenarioError, match=r"problems\[0\]\.machine"):
        load_scenario(str(bad))
    bad.write_text("name: x\nproblems:\n  - {type: tester_drift, onset: 10, tester: T1, magnitud: 2}\n")
    with pytest.raises(ScenarioError, match=r"problems\[0\]\.magnitud"):
        load_scenario(str(bad))
    bad.write_text("name: x\nrecipe: {print_speed: 500}\n")
    with pytest.raises(ScenarioError, match="recipe.*safe bounds"):
        load_scenario(str(bad))
    with pytest.raises(ScenarioError, match="no built-in scenario"):
        load_scenario("no_such_scenario")
    good = tmp_path / "good.yaml"
    good.write_text("name: mine\nproblems:\n  - {type: humidity_excursion, onset: 100}\n")
    assert Line(str(good)).scenario.name == "mine"
