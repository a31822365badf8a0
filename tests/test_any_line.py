"""Any line: what LineLab knows of a line comes from its profile; the twin is one line among others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import linelab
from linelab.act.remedies import remedy, target_of
from linelab.commands import call
from linelab.diagnose.model import Cause, Entity
from linelab.errors import UserError
from linelab.profile import parse_profile, save_profile
from linelab.profile.actions import check_action
from linelab.store import Workspace
from linelab.twin import Line
from linelab.twin.simulator import twin_profile
from linelab.zoo import KINDS as ZOO_KINDS
from linelab.zoo import write_export
from linelab.zoo.simulator import open_line as open_zoo_line

SRC = Path(linelab.__file__).parent
SIMULATORS = {"twin"}  # the twin knows its own names; no stage, and no other simulated line, does
# Names that are something else where they appear: Hotelling's T² statistic of the multivariate monitor.
NOT_THE_TWIN = {("monitor/commands.py", "T2"), ("monitor/tep.py", "T2"), ("monitor/multivariate.py", "T2")}
# LineLab's own actions, which every line with a recipe understands.
GENERIC = {"set_recipe", "set_param", "mark"}


def _twin_names() -> set[str]:
    """Every station, machine, part, reading, action and recipe setting of the twin."""
    profile = twin_profile()
    names = {s.name for s in profile.line.stations} | {m for s in profile.line.stations for m in s.machines}
    names |= {a.name for a in profile.actions} | {s.name for s in profile.recipe}
    chunk = Line("default", seed=0).produce(500)
    for table, column in (("measurements", "name"), ("params", "name"), ("steps", "fixture"),
                          ("materials", "material"), ("materials", "supplier")):
        names |= {v for v in chunk[table].column(column).unique().to_pylist() if v}
    return names - GENERIC


def test_no_stage_names_the_twin() -> None:
    """The loop, actions, experiments, monitor and diagnosis once knew the twin's stations, action
    kinds and recipe (loop/remedies.py, act/actions.py, experiment/experiments.py): a real line's
    causes could never be acted on. Now nothing outside the simulators names any of them."""
    names = _twin_names()
    pattern = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?!\w)")
    hits = []
    for path in sorted(SRC.rglob("*")):
        rel = path.relative_to(SRC)
        if path.suffix not in (".py", ".html", ".yaml") or rel.parts[0] in SIMULATORS:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits += [f"{rel}:{number}: {m[1]}" for m in pattern.finditer(line)
                     if (rel.as_posix(), m[1]) not in NOT_THE_TWIN]
    assert hits == []


FOREIGN = parse_profile({
    "line": {"name": "valve-assembly", "stations": [{"name": "PRESS"}, {"name": "LEAK", "machines": ["LK1", "LK2"]}],
             "readings": [{"name": "press_force_kn", "station": "PRESS", "role": "setting"},
                          {"name": "room_rh", "role": "environment"}]},
    "actions": [
        {"name": "calibrate_leak_tester", "params": [{"name": "tester", "choices": ["LK1", "LK2"],
                                                       "from_cause": "name", "extract": "^([^/]+)"}],
         "remedies": [{"entity": ["machine", "fixture"], "station": ["LEAK"]}]},
        {"name": "quarantine_lot", "params": [{"name": "lot", "from_cause": "level"}],
         "remedies": [{"entity": ["lot"]}]},
        {"name": "coach_crew", "params": [{"name": "crew", "from_cause": "level"}],
         "remedies": [{"entity": ["shift"]}]},
    ],
    "recipe": [{"name": "press_force_kn", "low": 10, "high": 14, "default": 12}],
    "control": {"channel": "outbox"},
}, "valve-assembly profile")


def _cause(factor: str, level: str | None, **entity: str) -> Cause:
    return Cause(factor=factor, level=level, kind="categorical", effect=3.0, entity=Entity(**entity))


def test_a_foreign_lines_causes_map_onto_its_own_actions() -> None:
    leak = _cause("machine@LEAK", "LK2", kind="machine", name="LK2", station="LEAK")
    assert remedy(FOREIGN, leak) == {"kind": "calibrate_leak_tester", "tester": "LK2"}
    lot = _cause("lot@o-ring", "OR-0042", kind="lot", name="OR-0042", material="o-ring")
    assert remedy(FOREIGN, lot) == {"kind": "quarantine_lot", "lot": "OR-0042"}
    assert remedy(FOREIGN, _cause("shift", "night", kind="shift", name="night")) == {"kind": "coach_crew",
                                                                                     "crew": "night"}
    setting = Cause(factor="press_force_kn@PRESS", kind="continuous", effect=2.0,
                    entity=Entity(kind="param", name="press_force_kn", station="PRESS"))
    assert remedy(FOREIGN, setting) == {"kind": "set_recipe"}  # the loop goes back to the best recipe known
    # A tester the profile does not list, and an operator nothing remedies: left to a person.
    assert remedy(FOREIGN, _cause("machine@LEAK", "LK9", kind="machine", name="LK9", station="LEAK")) is None
    assert remedy(FOREIGN, _cause("operator", "op-7", kind="operator", name="op-7")) is None
    assert target_of(FOREIGN, "quarantine_lot") == "lot"


def test_actions_are_checked_against_the_lines_own_profile() -> None:
    assert check_action(FOREIGN, "set_param", {"name": "press_force_kn", "value": 13}) == {
        "name": "press_force_kn", "value": 13.0}
    with pytest.raises(UserError, match=r"outside its safe bounds \[10.0, 14.0\]"):
        check_action(FOREIGN, "set_param", {"name": "press_force_kn", "value": 20})
    with pytest.raises(UserError, match="must be one of LK1, LK2"):
        check_action(FOREIGN, "calibrate_leak_tester", {"tester": "T1"})
    with pytest.raises(UserError, match="does not accept an action 'replace_nozzle'"):
        check_action(FOREIGN, "replace_nozzle", {"nozzle": "N1"})


def test_the_twins_remedies_come_from_its_profile_file() -> None:
    profile = twin_profile()
    part = _cause("fixture@PLACE", "P2-N3", kind="fixture", name="P2-N3", station="PLACE")
    assert remedy(profile, part) == {"kind": "replace_nozzle", "nozzle": "P2-N3"}
    tester = _cause("fixture@TEST", "T1-F2", kind="fixture", name="T1-F2", station="TEST")
    assert remedy(profile, tester) == {"kind": "recalibrate_tester", "tester": "T1"}


def test_a_simulation_never_overwrites_a_real_lines_data(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    export = tmp_path / "units.csv"
    export.write_text("unit_id,product,line,t_start,result,first_pass\nSN1,V-100,L1,2026-01-05T06:00:00,pass,true\n")
    call("ingest", workspace=ws, paths=[export])
    with pytest.raises(UserError, match="holds data ingested from a line"):
        call("twin run", workspace=ws, units=200, fresh=True)
    with pytest.raises(UserError, match="holds data ingested from a line"):
        call("loop", workspace=ws, units=1000, optimise=False)
    with Workspace.open(ws) as w:
        assert w.query("SELECT unit_id FROM units").column(0).to_pylist() == ["SN1"]


@pytest.mark.parametrize("kind", ["process", "meddev"])
def test_a_lines_own_export_ingests_through_its_profile_as_the_canonical_tables(tmp_path: Path, kind: str) -> None:
    """A generated line writes its exports in its own words (German columns, ';', decimal commas,
    IO/NIO); through the line's profile they land as the same records as the line's own tables."""
    line = open_zoo_line(f"{kind}:bad_lot_fails", 0)
    chunk = dict(line.produce(800))
    write_export(ZOO_KINDS[kind], chunk, tmp_path / "export")
    save_profile(line.profile, tmp_path / "profile.yaml")
    call("ingest", workspace=tmp_path / "mapped", paths=[tmp_path / "export"], profile=tmp_path / "profile.yaml")
    with Workspace.open(tmp_path / "direct") as ws:
        ws.ingest_tables(chunk, source="direct")
    query = ("SELECT count(*) AS n, sum(first_pass::INT) AS fp, min(t_start) AS t0, max(t_start) AS t1 FROM units "
             "UNION ALL SELECT count(*), round(sum(value), 3), NULL, NULL FROM measurements "
             "UNION ALL SELECT count(*), count(DISTINCT lot), NULL, NULL FROM materials")
    with Workspace.open(tmp_path / "mapped") as mapped, Workspace.open(tmp_path / "direct") as direct:
        assert mapped.query(query).to_pylist() == direct.query(query).to_pylist()
        assert mapped.count("quarantine") == 0


def test_a_drafted_profile_ingests_a_german_filling_lines_export_as_its_own_profile_does(tmp_path: Path) -> None:
    """`profile init` left a filling line's export half mapped (container_id, unit_op, zeit_start,
    sku, ugw/ogw were not guessed): the draft now maps it, and ingests it as the line's own profile."""
    line = open_zoo_line("process:clean", 1)
    write_export(ZOO_KINDS["process"], dict(line.produce(600)), tmp_path / "export")
    save_profile(line.profile, tmp_path / "own.yaml")
    call("profile init", workspace=tmp_path / "drafted", paths=[tmp_path / "export"], out=tmp_path / "draft.yaml")
    call("ingest", workspace=tmp_path / "drafted", paths=[tmp_path / "export"], profile=tmp_path / "draft.yaml")
    call("ingest", workspace=tmp_path / "own", paths=[tmp_path / "export"], profile=tmp_path / "own.yaml")
    query = ("SELECT (SELECT count(*) FROM units) AS units, (SELECT sum(first_pass::INT) FROM units) AS fp, "
             "(SELECT count(DISTINCT station) FROM steps) AS stations, (SELECT count(*) FROM steps) AS steps, "
             "(SELECT round(sum(value), 3) FROM measurements) AS total, (SELECT count(*) FROM specs) AS specs")
    with Workspace.open(tmp_path / "drafted") as drafted, Workspace.open(tmp_path / "own") as own:
        assert drafted.query(query).to_pylist() == own.query(query).to_pylist()
        assert drafted.count("quarantine") == 0
