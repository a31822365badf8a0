"""Diagnosis on tables: planted causes are found, aliasing is admitted, the DAG is respected."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linelab.diagnose import Diagnoser, UserError

SHARED = Path(os.environ.get("LINELAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CASES = SHARED / "causalassembly" / "dev_cases"


def smt_units(n: int, seed: int, *, bad_nozzle: bool = False, aliased_lot: bool = False) -> pd.DataFrame:
    """Units of a two-machine placement cell with a 2 % background defect rate."""
    rng = np.random.default_rng(seed)
    machine = rng.choice(["P1", "P2"], n)
    nozzle = np.char.add(np.char.add(machine, "-N"), rng.integers(1, 5, n).astype(str))
    lot = rng.choice(["L1", "L2", "L3"], n)
    if aliased_lot:  # a new lot that only ever ran on P2, and P2 ran nothing else
        lot = np.where(machine == "P2", "L7", lot)
    p = np.full(n, 0.02)
    if bad_nozzle:
        p = np.where(nozzle == "P2-N3", 0.20, p)
    if aliased_lot:
        p = np.where(lot == "L7", 0.10, p)
    return pd.DataFrame(
        {
            "machine": machine,
            "nozzle": nozzle,
            "lot": lot,
            "shift": rng.choice(["A", "B", "C"], n),
            "reflow_peak_c": rng.normal(245, 2, n),
            "humidity_pct": rng.normal(45, 5, n),
            "aoi_fail": (rng.random(n) < p).astype(int),
        }
    )


def test_planted_categorical_cause_ranks_first_with_its_effect():
    dx = Diagnoser().fit(smt_units(6000, 1), smt_units(4000, 2, bad_nozzle=True), target="aoi_fail")
    top = dx.causes_[0]
    assert (top.factor, top.level) == ("nozzle", "P2-N3")
    assert top.kind == "categorical"
    assert 5 < top.effect < 20  # 20 % vs 2 %: rate ratio about 10
    assert top.share is not None and top.share > 0.8
    assert top.q_value < 1e-10
    assert "nozzle P2-N3" in top.evidence and "accounts for" in top.evidence
    # the machine carrying the nozzle is recognised as explained by it, not as a second cause
    machine = next(c for c in dx.causes_ if c.factor == "machine" and c.level == "P2")
    assert machine.explained_by == "nozzle=P2-N3"
    assert dx.report_.confident and dx.report_.explained


def test_aliased_pair_is_flagged_as_confounded_with_a_separating_experiment():
    dx = Diagnoser().fit(smt_units(6000, 1), smt_units(4000, 3, aliased_lot=True), target="aoi_fail")
    top2 = {c.label for c in dx.causes_[:2]}
    assert top2 == {"machine=P2", "lot=L7"}
    for c in dx.causes_[:2]:
        assert c.confounded_with, c
        assert "cannot be told apart" in c.evidence
    assert not dx.report_.confident
    conf = dx.report_.confounded[0]
    assert set(conf.causes) == top2
    assert conf.units_per_arm and conf.units_per_arm > 0
    assert "P2" in conf.experiment and "L7" in conf.experiment


def test_a_new_lot_is_named_not_confounded_with_its_own_supplier():
    """A bad capacitor lot was the only lot of its supplier in the incident, so lot and supplier
    held the very same units and were flagged as confounded: the loop waited 5,000 units for a
    confident diagnosis before holding the lot (bad_lot scenario, seed 0). A lot lies within its
    supplier; a machine and a lot that happen to coincide stay confounded (the test above)."""
    def units(n: int, seed: int, new_lot: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        supplier = rng.choice(["SANWA", "NORTH"], n)
        lot = np.where(supplier == "SANWA", rng.choice(["S1", "S2"], n), rng.choice(["N1", "N2"], n))
        if new_lot:
            lot = np.where(supplier == "SANWA", "S3", lot)
        p = np.where(lot == "S3", 0.10, 0.02)
        return pd.DataFrame({"lot": lot, "supplier": supplier, "machine": rng.choice(["P1", "P2"], n),
                             "fail": (rng.random(n) < p).astype(int)})

    ref, inc = units(6000, 1, False), units(4000, 2, True)
    plain = Diagnoser().fit(ref, inc, target="fail")
    assert not plain.report_.confident  # lot S3 and supplier SANWA: the same units
    dx = Diagnoser(nested={"lot": "supplier"}).fit(ref, inc, target="fail")
    assert (dx.causes_[0].factor, dx.causes_[0].level) == ("lot", "S3")
    assert dx.report_.confident
    assert next(c for c in dx.causes_ if c.factor == "supplier").explained_by == "lot=S3"


def test_root_cause_ranks_above_its_dag_descendant():
    rng = np.random.default_rng(7)

    def chain(n: int, shift: float) -> pd.DataFrame:
        paste = rng.normal(0, 1, n) + shift  # the root: its own mechanism moves
        height = 0.9 * paste + rng.normal(0, 0.4, n)  # inherits the move
        solder = 0.8 * height + rng.normal(0, 0.5, n)
        other = rng.normal(0, 1, n)
        return pd.DataFrame({"paste": paste, "height": height, "other": other, "solder": solder})

    dag = [("paste", "height"), ("height", "solder"), ("other", "solder")]
    dx = Diagnoser(dag=dag).fit(chain(1500, 0.0), chain(300, 1.5), target="solder")
    ranks = {c.factor: c.rank for c in dx.causes_}
    assert ranks["paste"] == 1
    assert ranks["height"] > ranks["paste"]
    # without the graph the descendant shifts just as visibly; the graph is what separates them
    height = next(c for c in dx.causes_ if c.factor == "height")
    assert height.q_value > 0.05


def test_non_ancestor_never_outranks_an_ancestor():
    rng = np.random.default_rng(3)

    def data(n: int, shift: float) -> pd.DataFrame:
        a = rng.normal(0, 1, n) + shift
        y = a + rng.normal(0, 1, n)
        side = rng.normal(0, 1, n) + 3 * shift  # moves more, but cannot reach y
        return pd.DataFrame({"a": a, "side": side, "y": y})

    dx = Diagnoser(dag=[("a", "y")]).fit(data(1000, 0), data(300, 1.0), target="y")
    assert dx.causes_[0].factor == "a"
    side = next(c for c in dx.causes_ if c.factor == "side")
    assert not side.upstream and "not upstream" in side.evidence


@pytest.mark.skipif(not CASES.exists(), reason="causalAssembly cases not present")
def test_table_mode_finds_causalassembly_root_in_top3():
    from linelab.diagnose.commands import diagnose_files

    suite = CASES / "realdag_randomfcm"
    case = suite / "cases" / "case_002"
    symptom = json.loads((case / "case.json").read_text())["symptom"]["variable"]
    root = json.loads((suite / "answers.json").read_text())["case_002"]["root_cause"]
    result = diagnose_files(case / "normal.csv.gz", case / "faulty.csv.gz", symptom, dag=suite / "dag_edges.csv")
    assert root in [c.factor for c in result.diagnosis.causes[:3]]
    assert json.loads(result.model_dump_json())["diagnosis"]["target"] == symptom


def test_missing_target_column_gives_a_clear_error(tmp_path):
    ref, inc = smt_units(300, 1), smt_units(300, 2)
    ref.to_csv(tmp_path / "normal.csv", index=False)
    inc.drop(columns="aoi_fail").to_parquet(tmp_path / "faulty.parquet")
    from linelab.diagnose.commands import diagnose_files

    with pytest.raises(UserError, match=r"target column 'aoi_fail' is not in the incident table"):
        diagnose_files(tmp_path / "normal.csv", tmp_path / "faulty.parquet", "aoi_fail")
    with pytest.raises(UserError, match="not in the reference table"):
        diagnose_files(tmp_path / "normal.csv", tmp_path / "faulty.parquet", "no_such_column")
    with pytest.raises(UserError, match="file not found"):
        diagnose_files(tmp_path / "missing.csv", tmp_path / "faulty.parquet", "aoi_fail")


def test_continuous_measurement_target_and_onset_with_event():
    rng = np.random.default_rng(11)
    n = 4000
    t = np.datetime64("2026-03-01T06:00") + np.arange(n) * np.timedelta64(30, "s")
    feeder = rng.choice(["F1", "F2", "F3", "F4"], n)
    offset = rng.normal(0, 0.02, n)
    start = 2500
    offset[start:] += np.where(feeder[start:] == "F3", 0.08, 0.0)
    df = pd.DataFrame({"t": t, "feeder": feeder, "offset_mm": offset})
    events = [{"t": t[start - 5], "kind": "lot_change", "machine": "P2", "target": "F3"}]
    dx = Diagnoser(time_column="t", events=events).fit(df.iloc[:2000], df.iloc[2000:], target="offset_mm")
    top = dx.causes_[0]
    assert (top.factor, top.level) == ("feeder", "F3")
    assert dx.report_.symptom_mode == "mean"
    onset = dx.report_.onset
    assert onset is not None and abs(onset.index - start) < 150
    assert top.details.get("events_at_onset"), top.details
    assert "lot_change" in top.evidence
    # The evidence plot is in millimetres, as measured: F3's incident mean sits 0.08 mm above its
    # reference (it was drawn standardised and sign-flipped under the measurement's name).
    plot = top.plot
    f3 = plot["levels"].index("F3")
    assert abs(plot["reference"][f3]) < 0.01 and 0.05 < plot["incident"][f3] - plot["reference"][f3] < 0.11


def test_a_fall_is_plotted_as_a_fall_in_the_measurements_units():
    rng = np.random.default_rng(12)
    n = 4000
    feeder = rng.choice(["F1", "F2"], n)
    vacuum = rng.normal(62.0, 0.5, n)
    vacuum[2000:] -= np.where(feeder[2000:] == "F2", 1.5, 0.0)
    df = pd.DataFrame({"feeder": feeder, "vacuum_kpa": vacuum})
    top = Diagnoser().fit(df.iloc[:2000], df.iloc[2000:], target="vacuum_kpa").causes_[0]
    f2 = top.plot["levels"].index("F2")
    assert (top.factor, top.level) == ("feeder", "F2")
    assert 61.5 < top.plot["reference"][f2] < 62.5 and 59.9 < top.plot["incident"][f2] < 61.1


def test_update_gives_the_same_answer_as_one_fit():
    ref, inc = smt_units(4000, 1), smt_units(3000, 2, bad_nozzle=True)
    whole = Diagnoser().fit(ref, inc, target="aoi_fail")
    parts = Diagnoser().fit(ref, inc.iloc[:1500], target="aoi_fail").update(inc.iloc[1500:])
    assert [c.label for c in whole.causes_[:3]] == [c.label for c in parts.causes_[:3]]
    assert whole.causes_[0].q_value == pytest.approx(parts.causes_[0].q_value)


def reflow_units(n: int, rng: np.random.Generator, *, zone_loss: float = 0.0, clog: float = 0.0) -> pd.DataFrame:
    """Units through print and reflow, after the twin's model: the board's peak temperature follows
    the zone temperatures, the time above liquidus follows the peak, cold joints follow both. A
    cold zone ramps in over the first quarter of the rows; a clogging stencil drains paste."""
    ramp = np.minimum(1.0, np.arange(n) / (0.25 * n))
    zone6 = 217 + rng.normal(0, 0.6, n) - zone_loss * ramp
    zone7 = 232 + rng.normal(0, 0.6, n)
    conveyor = 80 + rng.normal(0, 0.15, n)
    paste = 100 + rng.normal(0, 6, n) - clog * np.arange(n) / n
    peak = 0.25 * (zone6 + 15) + 0.75 * zone7 - 6 - 0.18 * (conveyor - 80) + rng.normal(0, 1, n)
    tal = 70 + 2.2 * (peak - 243) - 0.6 * (conveyor - 80) + rng.normal(0, 2.5, n)

    def hinge(x: np.ndarray) -> np.ndarray:
        return 3 * np.log1p(np.exp(x / 3))

    log_odds = -6.8 + 0.5 * hinge(242 - peak) + 0.12 * hinge(67 - tal)
    return pd.DataFrame(
        {
            "zone6": zone6,
            "zone7": zone7,
            "conveyor": conveyor,
            "paste_volume": paste,
            "peak": peak,
            "tal": tal,
            "shift": rng.choice(["A", "B", "C"], n),
            "cold_joint": (rng.random(n) < 1 / (1 + np.exp(-log_odds))).astype(int),
        }
    )


def test_cold_oven_zone_outranks_the_measurements_it_moves():
    # The oven zone runs 4 degC cold while the stencil clogs (paste falls, harmless to cold joints).
    # Fitted on normal running, where the zone barely varies, the mechanisms of the board's peak and
    # time above liquidus underestimate the zone's pull, so both look as if their own mechanism had
    # changed; they only pass on the zone's shift, and the zone is the root cause.
    rng = np.random.default_rng(3)
    ref, inc = reflow_units(5000, rng), reflow_units(8000, rng, zone_loss=4.0, clog=20.0)
    dag = [(p, m) for p in ("zone6", "zone7", "conveyor", "paste_volume") for m in ("peak", "tal")]
    dx = Diagnoser(dag=dag).fit(ref, inc, target="cold_joint")
    top = dx.causes_[0]
    assert top.factor == "zone6", [(c.label, c.share) for c in dx.causes_[:4]]
    assert top.share is not None and top.share > 0.5  # credited with what its mediators carry
    for name in ("peak", "tal"):
        m = next(c for c in dx.causes_ if c.factor == name)
        assert m.explained_by == "zone6" and m.rank > top.rank
        assert "passes on the shift of zone6" in m.evidence
    paste = next(c for c in dx.causes_ if c.factor == "paste_volume")
    assert paste.explained_by is None and paste.rank > top.rank


def test_a_set_point_compares_without_precision_warnings() -> None:
    """A recipe value read back carries float noise of 1e-13; comparing it between two windows made
    scipy warn of precision loss on the main job's console, once per diagnosis."""
    import warnings

    from linelab.diagnose.stats import spread_p, welch_p

    same = np.full(500, 247.0915715626328) + np.repeat([0.0, 2.8e-14], 250)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert welch_p(same, same[::-1].copy()) == 1.0
        assert welch_p(same, same + 1.0) == 0.0
        # one window at one set-point, the other across a recipe change
        assert welch_p(same, np.concatenate([same, same + 1.0])) < 1e-6
        assert spread_p(same, np.concatenate([same, same + 1.0])) < 1e-6


def _new_lot_at_a_turn(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three shifts in turns for three days; on the fourth, a new lot arrives as shift B starts
    and fails a quarter of its units. Found six hours in: every incident unit is shift B's and
    the new lot's, and the hours before the onset were shift A's."""
    rng = np.random.default_rng(seed)
    per_h, n = 12, 4 * 24 * 12
    t = np.datetime64("2026-03-02T06:00") + (np.arange(n) * 300).astype("timedelta64[s]")
    hour = ((np.arange(n) // per_h) + 6) % 24
    shift = np.where(hour < 6, "C", np.where(hour < 14, "A", np.where(hour < 22, "B", "C")))
    onset = int(np.flatnonzero((np.arange(n) >= 3 * 24 * per_h) & (shift == "B"))[0])
    lot = np.array([f"L{k}" for k in np.arange(n) // 300], dtype=object)
    lot[onset:] = "L9"
    operator = np.array([f"{s}{k}" for s, k in zip(shift, rng.integers(1, 3, n), strict=True)], dtype=object)
    fail = (rng.random(n) < np.where(np.arange(n) >= onset, 0.25, 0.02)).astype(int)
    df = pd.DataFrame({"t": t, "shift": shift, "lot": lot, "operator": operator, "fail": fail})
    return df.iloc[:onset], df.iloc[onset : onset + 6 * per_h]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_shift_that_worked_the_days_before_yields_to_a_lot_that_never_ran(seed: int) -> None:
    # The shift was judged "old" only on the hours just before the onset, when it was not
    # working: 7 of 10 seeds ranked shift B above the new lot, and nothing explained it.
    dx = Diagnoser(time_column="t").fit(*_new_lot_at_a_turn(seed), target="fail")
    top = dx.causes_[0]
    assert (top.factor, top.level) == ("lot", "L9")
    shift = next(c for c in dx.causes_ if c.factor == "shift" and c.level == "B")
    assert shift.explained_by == "lot=L9" and "before the onset" in shift.details["explained_by_evidence"]


def test_explanations_never_run_in_a_circle() -> None:
    # The twin's mixed scenario (seed 0) as the loop saw it at unit 17,377: nozzle P1-N2 wore while
    # the recipe the loop had just adopted (R009) ran. Placement offsets of P1's units only, all of
    # them R009's since the onset. The nozzle explained its machine, the machine explained the
    # recipe, and the recipe (new at the onset) explained the nozzle: no cause was left, and lots
    # that happened to run came first.
    import pyarrow.parquet as pq

    units = pq.read_table(Path(__file__).parent / "data" / "worn_nozzle_under_a_new_recipe.parquet").to_pandas()
    ref = units[units.incident == 0].drop(columns="incident")
    inc = units[units.incident == 1].drop(columns="incident")
    dx = Diagnoser(time_column="t_start").fit(ref, inc, "symptom")
    top = dx.causes_[0]
    assert (top.factor, top.level, top.explained_by) == ("fixture@PLACE", "P1-N2", None)
    by_label = {c.label: c for c in dx.causes_}
    for c in dx.causes_:  # every chain of explanations ends at a cause
        seen, link = set(), c
        while link.explained_by is not None:
            assert link.label not in seen, f"{c.label} is explained in a circle"
            seen.add(link.label)
            link = by_label[link.explained_by]


def test_a_tester_carrying_most_of_the_excess_is_not_explained_by_a_lots_small_offset() -> None:
    # Two leak testers share the line's seal lots; each lot moves the reading a little (up to 0.6
    # sd, the line's normal). A new lot arrives as tester LK2 starts reading 0.8 sd high: every LK2
    # unit since is the new lot's, and the lot's units on LK1 show its own small offset. The lot was
    # taken to explain LK2 ("LK2 without the lot (0 units) shows no excess, while the lot without
    # LK2 still does"), though alone it carries about a third of the excess the two share.
    rng = np.random.default_rng(5)
    n_ref, n_inc = 3000, 1200
    tester = rng.choice(["LK1", "LK2"], n_ref + n_inc)
    lot = np.concatenate([np.repeat(["S1", "S2", "S3"], n_ref // 3), np.full(n_inc, "S9")])
    offset = {"S1": 0.0, "S2": 0.3, "S3": -0.2, "S9": 0.6}
    leak = 1.0 + 0.1 * (rng.normal(0, 1, n_ref + n_inc) + np.vectorize(offset.get)(lot))
    leak[n_ref:] += np.where(tester[n_ref:] == "LK2", 0.08, 0.0)
    df = pd.DataFrame({"tester": tester, "seal_lot": lot, "leak_sccm": leak})
    dx = Diagnoser().fit(df.iloc[:n_ref], df.iloc[n_ref:], target="leak_sccm")
    lk2 = next(c for c in dx.causes_ if c.label == "tester=LK2")
    assert lk2.explained_by is None, lk2.details.get("explained_by_evidence")
    # Nor does the lot, which holds more of the incident's units, outrank the tester: most of the
    # excess sits on LK2's units (a tester drift on a line of other industry was put second so).
    assert dx.causes_[0] is lk2
    lot = next(c for c in dx.causes_ if c.label == "seal_lot=S9")
    assert lot.explained_by == "tester=LK2"


def _press_line(n: int, seed: int, force_shift: float) -> pd.DataFrame:
    """Four stations: the press force (station 1) drives the press depth (2); the leak rate (3)
    follows the depth and the screw torque; the end-of-line flow (4) follows the leak rate."""
    rng = np.random.default_rng(seed)
    force = rng.normal(0, 1, n) + force_shift
    torque = rng.normal(0, 1, n)
    depth = 1.5 * force + 0.5 * rng.normal(0, 1, n)
    leak = depth + torque + rng.normal(0, 1, n)
    return pd.DataFrame({"press_force": force, "press_depth": depth, "torque": torque, "leak_rate": leak,
                         "eol_flow": leak + 0.3 * rng.normal(0, 1, n)})


def test_stages_order_the_columns_when_no_causal_graph_is_known(tmp_path: Path) -> None:
    # Without a graph every column that moved was a candidate: the end-of-line flow measured after
    # the leak test ranked as a cause of the leak rate, and the press depth beside the force that
    # drives it. The stations' order is known on any line: a later station's reading is no cause,
    # and a reading is judged by the change of its own mechanism given the earlier stations'.
    from linelab.commands import call

    _press_line(1000, 1, 0.0).to_csv(tmp_path / "normal.csv", index=False)
    _press_line(200, 2, 1.5).to_csv(tmp_path / "faulty.csv", index=False)
    stages = {"press_force": 1, "press_depth": 2, "torque": 2, "leak_rate": 3, "eol_flow": 4}
    (tmp_path / "stages.csv").write_text("column,stage\n" + "".join(f"{c},{s}\n" for c, s in stages.items()))
    files = {"reference": str(tmp_path / "normal.csv"), "incident": str(tmp_path / "faulty.csv"), "target": "leak_rate"}

    plain = {c.factor: c for c in call("diagnose", **files).diagnosis.causes}
    assert plain["eol_flow"].upstream and plain["eol_flow"].explained_by is None

    ordered = call("diagnose", stages=str(tmp_path / "stages.csv"), **files).diagnosis.causes
    assert ordered[0].factor == "press_force"
    by = {c.factor: c for c in ordered}
    assert not by["eol_flow"].upstream and "later stage (4)" in by["eol_flow"].evidence
    assert by["press_depth"].explained_by == "press_force"


def test_a_stages_file_with_a_stage_that_is_no_number_is_a_clear_error(tmp_path: Path) -> None:
    from linelab.commands import call

    _press_line(300, 1, 0.0).to_csv(tmp_path / "normal.csv", index=False)
    _press_line(100, 2, 1.5).to_csv(tmp_path / "faulty.csv", index=False)
    (tmp_path / "stages.csv").write_text("column,stage\npress_force,1\nleak_rate,third\n")
    with pytest.raises(UserError, match=r"stages.csv, line 3, field stage: 'third' is not a number"):
        call("diagnose", reference=str(tmp_path / "normal.csv"), incident=str(tmp_path / "faulty.csv"),
             target="leak_rate", stages=str(tmp_path / "stages.csv"))


def test_an_events_time_is_written_to_the_second() -> None:
    # Events come from the store as datetimes with microseconds; the evidence printed them whole
    # ("near the event maintenance ... at 2025-01-07 23:43:16.658782").
    from datetime import datetime, timedelta

    rng = np.random.default_rng(11)
    n, start = 4000, 2500
    t0 = datetime(2026, 3, 1, 6, 0)
    t = np.datetime64(t0) + np.arange(n) * np.timedelta64(30, "s")
    nest = rng.choice(["N1", "N2", "N3", "N4"], n)
    offset = rng.normal(0, 0.02, n)
    offset[start:] += np.where(nest[start:] == "N3", 0.08, 0.0)
    df = pd.DataFrame({"t": t, "nest": nest, "offset_mm": offset})
    when = t0 + timedelta(seconds=30 * (start - 5), microseconds=658782)
    events = [{"t": when, "kind": "maintenance", "machine": "P2", "target": "N3"}]
    dx = Diagnoser(time_column="t", events=events).fit(df.iloc[:2000], df.iloc[2000:], target="offset_mm")
    stamp = when.strftime("%Y-%m-%d %H:%M:%S")
    assert f"maintenance P2 N3 at {stamp};" in dx.causes_[0].evidence + ";"
    assert ".658782" not in dx.causes_[0].evidence and ".658782" not in dx.report_.onset.text


def test_a_spread_is_plotted_in_the_measurements_units() -> None:
    # A symptom whose spread grew was drawn in reference sds under the measurement's name.
    rng = np.random.default_rng(13)
    n = 4000
    nest = rng.choice(["N1", "N2"], n)
    offset = rng.normal(0.0, 0.02, n)
    offset[2000:] = np.where(nest[2000:] == "N2", rng.normal(0.0, 0.06, n - 2000), offset[2000:])
    df = pd.DataFrame({"nest": nest, "offset_mm": offset})
    dx = Diagnoser().fit(df.iloc[:2000], df.iloc[2000:], target="offset_mm")
    assert dx.report_.symptom_mode == "spread"
    top = dx.causes_[0]
    assert (top.factor, top.level) == ("nest", "N2")
    n2 = top.plot["levels"].index("N2")
    # mean distance from the usual level: 0.8 sd of 0.02 mm before, of 0.06 mm after
    assert 0.012 < top.plot["reference"][n2] < 0.020 and 0.040 < top.plot["incident"][n2] < 0.056
