"""The zoo of generated lines: reproducible, truthful, schema-conform, fixable, with valid profiles and exports."""

from __future__ import annotations

import csv
import fnmatch

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from linelab.line import SimulatedLine, open_simulator
from linelab.profile.io import dump_profile, parse_profile
from linelab.store import Workspace
from linelab.store.schema import RECORD_TABLES
from linelab.zoo import KINDS, ZooActionError, open_line, scenarios, write_export
from linelab.zoo.simulator import problem_types


def _concat(chunks: list[dict[str, pa.Table]], name: str) -> pa.Table:
    return pa.concat_tables([c[name] for c in chunks if name in c])


def _by_machine(tables: dict[str, pa.Table], station: str, reading: str) -> pa.Table:
    m = tables["measurements"].filter(pc.and_(pc.equal(tables["measurements"]["station"], station),
                                              pc.equal(tables["measurements"]["name"], reading)))
    s = tables["steps"].filter(pc.equal(tables["steps"]["station"], station)).select(["unit_id", "machine"])
    return m.join(s, "unit_id")


def _index(serials: pa.ChunkedArray) -> np.ndarray:
    return np.array([int(s[2:]) - 1 for s in serials.to_pylist()])


def test_every_kind_has_ten_problem_types_and_clean_runs():
    names = scenarios()
    assert len(KINDS) >= 4
    for kind in KINDS:
        assert len(problem_types(kind)) >= 10
        assert f"{kind}:clean" in names and f"{kind}:overlap:subtle" in names


def test_same_seed_same_records_however_chunked():
    a = open_line("assembly:bad_lot_fails", seed=3, units=1200)
    b = open_line("assembly:bad_lot_fails", seed=3, units=1200)
    whole = a.produce(1200)
    parts = [b.produce(500), b.produce(700)]
    assert whole["units"].equals(_concat(parts, "units"))
    key = [("unit_id", "ascending"), ("station", "ascending"), ("name", "ascending"), ("t", "ascending")]
    assert whole["measurements"].sort_by(key).equals(_concat(parts, "measurements").sort_by(key))
    assert a.truth == b.truth
    c = open_line("assembly:bad_lot_fails", seed=4, units=1200).produce(1200)
    assert not whole["measurements"].equals(c["measurements"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_tables_conform_and_ingest_without_quarantine(kind, tmp_path):
    line = open_line(f"{kind}:overlap", seed=0)
    ws = Workspace.open(tmp_path / "ws")
    for i in range(2):
        tables = line.produce(min(line.kind.chunk, 400))
        for name, t in tables.items():
            assert t.schema.equals(RECORD_TABLES[name]), name
        assert {"units", "steps", "measurements", "params", "materials", "signals", "events"} <= set(tables)
        rep = ws.ingest_tables(tables, source=f"{line.source}:{i}")
        assert rep.quarantined == 0, rep.quarantine[:3]
        assert rep.stored > 0
    ws.close()


def test_truth_onset_matches_the_data_on_the_machine():
    line = open_line("assembly:machine_step", seed=0)
    t = line.truth[0]
    tables = line.produce(t["onset_unit"] + 3000)
    t = line.truth[0]
    name, station, machine = t["symptom"]["reading"], t["cause"]["station"], t["cause"]["name"]
    rows = _by_machine(tables, station, name).join(tables["units"].select(["unit_id", "product"]), "unit_id")
    idx = _index(rows["unit_id"])
    nominal = KINDS["assembly"].reading(name).nominal  # the level depends on the product
    value = rows["value"].to_numpy() - np.array([nominal[p] for p in rows["product"].to_pylist()])
    mine = (rows["machine"].to_numpy(zero_copy_only=False) == machine)
    after = (idx >= t["onset_unit"]) & (idx < (t["end_unit"] or 10**9))
    sigma = KINDS["assembly"].reading(name).sigma
    step = value[mine & after].mean() - value[mine & ~after].mean()
    assert 1.5 * sigma < step < 2.5 * sigma  # the obvious step is 2 sigma
    other = value[~mine & after].mean() - value[~mine & ~after].mean()
    assert abs(other) < 0.3 * sigma
    assert t["affected_units"] == int((mine & after).sum())
    assert t["onset_time"] is not None


def test_truth_onset_matches_failures_of_an_intermittent_machine():
    line = open_line("machining:intermittent", seed=1)
    tables = line.produce(line.run_units)
    t = line.truth[0]
    steps = tables["steps"].filter(pc.and_(pc.equal(tables["steps"]["station"], t["cause"]["station"]),
                                           pc.equal(tables["steps"]["machine"], t["cause"]["name"])))
    idx = _index(steps["unit_id"])
    fail = pc.equal(steps["result"], "fail").to_numpy(zero_copy_only=False)
    end = t["end_unit"] or line.run_units
    assert fail[idx < t["onset_unit"]].mean() < 0.01
    assert fail[(idx >= t["onset_unit"]) & (idx < end)].mean() > 0.03
    assert t["extra_failures"] > 10
    assert set(line.affected(t["id"]).tolist()) <= set(idx[(idx >= t["onset_unit"]) & (idx < end)].tolist())


def test_bad_lot_fails_units_and_its_hold_ends_it():
    line = open_line("assembly:bad_lot_fails", seed=2)
    t = line.truth[0]
    tables = line.produce(t["onset_unit"] + 300)
    lot = t["cause"]["name"]
    used = tables["materials"].filter(pc.equal(tables["materials"]["lot"], lot))
    assert used.num_rows > 0 and line.truth[0]["extra_failures"] > 20
    done = line.apply(t["fix_actions"][0])
    assert done["applied"] and done["unit"] == line.units_produced and "t" in done
    assert line.truth[0]["end_unit"] == line.units_produced and line.truth[0]["status"] == "ended"
    affected = line.truth[0]["affected_units"]
    more = line.produce(2000)
    assert not pc.any(pc.equal(more["materials"]["lot"], lot)).as_py()
    assert line.truth[0]["affected_units"] == affected
    assert pc.any(pc.equal(more["events"]["kind"], "hold")).as_py()


@pytest.mark.parametrize("scenario", ["machining:machine_drift", "meddev:tester_drift", "process:shift_handling",
                                      "assembly:product_specific", "meddev:operator_handling",
                                      "process:env_excursion", "assembly:aliased_lot"])
def test_each_fix_action_ends_its_problem(scenario):
    line = open_line(scenario, seed=0)
    t = line.truth[0]
    line.produce(t["onset_unit"] + 150)
    for action in t["fix_actions"]:
        assert line.profile.action(action["kind"]) is not None
        line.apply(action)
    assert line.truth[0]["end_unit"] == line.units_produced
    before = line.truth[0]["affected_units"]
    line.produce(300)
    assert line.truth[0]["affected_units"] == before


def test_unknown_action_is_refused():
    line = open_line("meddev:clean", seed=0)
    with pytest.raises(ZooActionError):
        line.apply({"kind": "reboot_everything"})
    with pytest.raises(ZooActionError):
        line.apply({"kind": "service_machine", "machine": "NOPE"})


def test_without_problems_sees_the_same_noise():
    line = open_line("process:machine_step", seed=0, units=6000)
    oracle = line.without_problems()
    assert oracle.truth == [] and oracle.optimal_recipe() == line.optimal_recipe()
    a, b = line.produce(1000), oracle.produce(1000)  # before the onset: identical
    assert line.truth[0]["onset_unit"] > 1000
    assert a["measurements"].equals(b["measurements"])


@pytest.mark.parametrize("kind", list(KINDS))
def test_profile_validates_and_names_what_the_line_records(kind):
    line = open_line(f"{kind}:clean", seed=0)
    profile = parse_profile(__import__("yaml").safe_load(dump_profile(line.profile)))
    assert profile == line.profile
    assert profile.control.channel == "simulator" and profile.control.simulator == "zoo"
    tables = line.produce(200)
    stations = set(profile.line.station_order)
    assert set(tables["steps"]["station"].to_pylist()) <= stations
    machines = {m for s in profile.line.stations for m in s.machines}
    assert set(tables["steps"]["machine"].to_pylist()) <= machines
    for t in ("measurements", "params"):
        for name, station in {(r["name"], r["station"]) for r in tables[t].select(["name", "station"]).to_pylist()}:
            assert profile.line.role(name, station) is not None, (name, station)
    for name in set(tables["signals"]["name"].to_pylist()):
        assert profile.line.role(name) == "environment"
    assert profile.default_recipe() == line.recipe
    assert {"service_machine", "calibrate_tester", "quarantine_lot"} <= {a.name for a in profile.actions}


@pytest.mark.parametrize("kind", list(KINDS))
def test_export_files_carry_the_columns_the_profile_sources_name(kind, tmp_path):
    line = open_line(f"{kind}:clean", seed=0)
    paths = write_export(line.kind, line.produce(150), tmp_path)
    for source in line.profile.sources:
        files = [p for p in paths if source.matches(p.name)]
        assert len(files) == 1, source.name
        with files[0].open(encoding=source.encoding) as f:
            reader = csv.reader(f, delimiter=source.delimiter)
            header = next(reader)
            first = next(reader, None)
        assert set(source.columns.values()) <= set(header), (source.name, header)
        assert all(fnmatch.fnmatch(files[0].name, pat) for pat in source.files)
        for col, mapping in source.values.items() if first else ():
            pos = header.index(source.columns[col])
            assert first[pos] in mapping, (source.name, first[pos])


def test_open_through_the_simulator_registry():
    line = open_simulator("zoo", "meddev:bad_lot_fails:subtle", 5)
    assert isinstance(line, SimulatedLine)
    assert line.source == "sim:zoo:meddev:bad_lot_fails:subtle:seed=5"
    assert line.truth[0]["severity"] == "subtle"
    with pytest.raises(ValueError):
        open_line("meddev:shift_handling", 0)  # one shift: no such problem on this line
