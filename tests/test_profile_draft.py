"""`linelab profile init` drafts a profile from a real line's exports; `profile check` says what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml
from test_profile_ingest import make_line, write_export
from typer.testing import CliRunner

from linelab.cli import build_app
from linelab.commands import call
from linelab.profile import load_profile
from linelab.store import Workspace

runner = CliRunner()
app = build_app()


def test_init_drafts_the_column_map_station_order_and_roles_from_an_mes_export(tmp_path: Path) -> None:
    write_export(make_line(), tmp_path / "export")
    ws = tmp_path / "ws"
    res = call("profile init", workspace=ws, paths=[tmp_path / "export"])
    profile = load_profile(ws / "profile.yaml")
    by_table = {s.table: s for s in profile.sources}
    assert by_table["units"].columns == {"unit_id": "serial", "product": "Product", "work_order": "Auftrag",
                                         "t_start": "start_ts", "t_end": "end_ts", "result": "Status"}
    assert by_table["units"].values["result"] == {"PASS": "pass", "FAIL": "fail"}
    assert by_table["units"].derive == ["first_pass_from_steps"] and by_table["units"].delimiter == ";"
    assert by_table["steps"].columns["unit_id"] == "SN" and by_table["steps"].columns["t_in"] == "Begin"
    assert by_table["steps"].values["result"] == {"FAIL": "fail", "NG": "fail", "OK": "pass", "PASS": "pass"}
    meas = by_table["measurements"]
    assert meas.decimal == "," and meas.wide is not None
    assert meas.wide.id_columns == ["serial", "Station", "meas_time"]
    assert profile.line.station_order == ["PRINT", "SPI", "PLACE", "TEST"]
    assert {r.name: r.role for r in profile.line.readings} == {
        "paste_volume_pct": "measurement", "paste_height_um": "measurement", "vout_v": "measurement"}
    assert res.stations == ["PRINT", "SPI", "PLACE", "TEST"]
    # What a person must look at is said: the steps' times have no offset, the units no line.
    assert any("Begin" in c and "timezone" in c for c in res.checks)
    assert any("no line column" in c for c in res.checks)
    # A second init does not overwrite the profile unless told to.
    again = runner.invoke(app, ["profile", "init", str(tmp_path / "export"), "-w", str(ws)])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_the_drafted_profile_ingests_the_export(tmp_path: Path) -> None:
    line = make_line(120)
    write_export(line, tmp_path / "export")
    ws = tmp_path / "ws"
    call("profile init", workspace=ws, paths=[tmp_path / "export"])
    res = call("ingest", workspace=ws, paths=[tmp_path / "export"])
    assert res.quarantined == 0 and {f.source for f in res.files} == {"units", "steps", "measurements"}
    with Workspace.open(ws) as w:
        assert w.count("units") == 120 and w.count("measurements") == line["measurements"].num_rows
        assert w.scalar("SELECT count(*) FROM units WHERE first_pass IS NULL") == 0


def test_init_from_a_workspace_tells_settings_from_conditions(tmp_path: Path) -> None:
    n = 2000
    rng = np.random.default_rng(1)
    ids = np.array([f"U{i:05d}" for i in range(n)])
    t = np.datetime64("2026-02-01T00:00:00", "us") + np.arange(n) * np.timedelta64(30_000_000, "us")
    params = pa.table({
        "unit_id": np.tile(ids, 3), "station": np.repeat(["OVEN", "OVEN", "PRINT"], n),
        "name": np.repeat(["zone_setpoint", "zone_temp", "ambient_humidity_pct"], n),
        "value": np.concatenate([np.where(np.arange(n) < 1000, 240.0, 245.0), 240 + rng.standard_normal(n),
                                 45 + rng.standard_normal(n)]),
        "t": np.tile(t, 3),
    })
    (tmp_path / "in").mkdir()
    pacsv.write_csv(params, tmp_path / "in" / "params.csv")
    ws = tmp_path / "ws"
    call("ingest", workspace=ws, paths=[tmp_path / "in"])
    res = call("profile init", workspace=ws)
    assert res.readings == {"setting": ["zone_setpoint"], "condition": ["zone_temp"],
                            "environment": ["ambient_humidity_pct"]}


def test_check_flags_a_missing_column_and_an_unknown_station_in_plain_words(tmp_path: Path) -> None:
    write_export(make_line(), tmp_path / "export")
    ws = tmp_path / "ws"
    call("profile init", workspace=ws, paths=[tmp_path / "export"])
    ok = runner.invoke(app, ["profile", "check", str(tmp_path / "export"), "-w", str(ws), "--json"])
    assert ok.exit_code == 0, ok.stdout
    assert json.loads(ok.stdout)["errors"] == 0

    # Someone edits the profile: a column the export does not have, and a line without its test station.
    data = yaml.safe_load((ws / "profile.yaml").read_text())
    steps = next(s for s in data["sources"] if s["table"] == "steps")
    steps["columns"]["operator"] = "Werker"
    data["line"]["stations"] = [s for s in data["line"]["stations"] if s["name"] != "TEST"]
    data["line"]["stations"].append({"name": "XRAY"})
    (ws / "profile.yaml").write_text(yaml.safe_dump(data))

    bad = runner.invoke(app, ["profile", "check", str(tmp_path / "export"), "-w", str(ws)])
    assert bad.exit_code == 1
    text = " ".join(bad.stdout.split())
    assert "maps operator to the column 'Werker', which the file does not have" in text
    assert "station TEST appears in the data" in text and "but not in line.stations" in text
    assert "station XRAY is in line.stations but no step in the data names it" in text

    # Against the workspace once ingested (with the good profile), the same unknown station is found.
    steps["columns"].pop("operator")
    (ws / "profile.yaml").write_text(yaml.safe_dump(data))
    call("ingest", workspace=ws, paths=[tmp_path / "export"])
    res = runner.invoke(app, ["profile", "check", "-w", str(ws), "--json"])
    assert res.exit_code == 1, res.output
    assert any("station TEST appears in the data" in f["message"] for f in json.loads(res.stdout)["findings"])


def test_schema_is_written_for_editors(tmp_path: Path) -> None:
    out = tmp_path / "profile.schema.json"
    res = runner.invoke(app, ["profile", "schema", "--out", str(out)])
    assert res.exit_code == 0
    schema = json.loads(out.read_text())
    assert {"sources", "line", "actions", "recipe", "control"} <= set(schema["properties"])
    assert "Source" in schema["$defs"]


def test_init_says_when_times_are_not_what_ingest_reads_as_timestamps(tmp_path: Path) -> None:
    # A 12-hour clock: a plain cast reads "06:15 PM" as 06:15, so the draft promised times that ingest,
    # which refuses what it cannot read whole, then quarantined.
    export = tmp_path / "export"
    export.mkdir()
    rows = ["unit_id,product,line,t_start,t_end,result"]
    rows += [f"U{i:03d},P,L1,2026-02-02 0{1 + i % 9}:15 PM,2026-02-02 0{1 + i % 9}:20 PM,pass" for i in range(30)]
    (export / "units.csv").write_text("\n".join(rows) + "\n")
    res = call("profile init", workspace=tmp_path / "ws", paths=[export])
    assert any("t_start" in c and "timestamp_format" in c for c in res.checks), res.checks
