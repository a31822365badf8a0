"""A real line's exports ingest as they are, through the line profile's sources.

The same small line is written twice: once as LineLab's canonical files, once as an MES would
export it (foreign column names, `;` delimiter, decimal commas, PASS/FAIL, `+02:00` offsets,
local times without an offset, a wide measurement table, no first-pass column). Both must give
the same workspace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from linelab.cli import build_app
from linelab.commands import call
from linelab.store import Workspace

STATIONS = ["PRINT", "SPI", "PLACE", "TEST"]
OFFSET_S = {"PRINT": 0, "SPI": 20, "PLACE": 40, "TEST": 100}
BASE = np.datetime64("2026-01-12T06:00:00", "us")  # winter: Europe/Berlin is UTC+01:00
SEC = np.timedelta64(1_000_000, "us")

PROFILE = """
sources:
  - name: mes_units
    table: units
    files: ["units_*.csv"]
    delimiter: ";"
    columns: {unit_id: serial, product: Product, work_order: Auftrag, t_start: start_ts, t_end: end_ts,
              result: Status}
    constants: {line: L1}
    values: {result: {PASS: pass, FAIL: fail}}
    derive: [first_pass_from_steps]
  - name: mes_steps
    table: steps
    files: ["steps_*.csv"]
    delimiter: ";"
    timezone: Europe/Berlin
    columns: {unit_id: SN, station: Operation, machine: Equipment, t_in: Begin, t_out: End, result: Verdict,
              defect_code: Defect}
    values: {result: {OK: pass, PASS: pass, FAIL: fail, NG: fail}}
  - name: tester
    table: measurements
    files: ["meas_*.csv"]
    delimiter: ";"
    decimal: ","
    columns: {unit_id: serial, station: Station, t: meas_time}
    wide: {id_columns: [serial, Station, meas_time]}
"""


def make_line(n: int = 240, seed: int = 7) -> dict[str, pa.Table]:
    """A small line in LineLab's own tables (times naive UTC)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"SN{i:06d}" for i in range(n)])
    t0 = BASE + np.arange(n) * 60 * SEC
    steps: dict[str, list[np.ndarray]] = {k: [] for k in ("unit_id", "station", "machine", "t_in", "t_out",
                                                           "result", "defect_code")}

    def add(rows: np.ndarray, station: str, t_in: np.ndarray, result: np.ndarray, defect: np.ndarray) -> None:
        steps["unit_id"].append(ids[rows])
        steps["station"].append(np.full(rows.size, station))
        steps["machine"].append(np.where(rng.random(rows.size) < 0.5, f"{station}-1", f"{station}-2"))
        steps["t_in"].append(t_in)
        steps["t_out"].append(t_in + 15 * SEC)
        steps["result"].append(result)
        steps["defect_code"].append(defect)

    every = np.arange(n)
    for s in STATIONS[:3]:
        add(every, s, t0 + OFFSET_S[s] * SEC, np.full(n, "pass"), np.full(n, ""))
    first_fail = rng.random(n) < 0.15
    add(every, "TEST", t0 + OFFSET_S["TEST"] * SEC, np.where(first_fail, "fail", "pass"),
        np.where(first_fail, "VOUT_LOW", ""))
    rt = np.flatnonzero(first_fail)
    retest_fail = rng.random(rt.size) < 0.3
    add(rt, "TEST", t0[rt] + 400 * SEC, np.where(retest_fail, "fail", "pass"), np.where(retest_fail, "VOUT_LOW", ""))
    steps_t = pa.table({k: np.concatenate(v) for k, v in steps.items()})
    final_fail = np.zeros(n, dtype=bool)
    final_fail[rt[retest_fail]] = True
    t_end = t0 + 115 * SEC
    t_end[rt] = t0[rt] + 415 * SEC
    units = pa.table({
        "unit_id": ids, "product": np.where(every % 3 == 0, "PCB-B", "PCB-A"), "line": np.full(n, "L1"),
        "work_order": np.array([f"WO{i // 100}" for i in range(n)]), "t_start": t0, "t_end": t_end,
        "result": np.where(final_fail, "fail", "pass"), "first_pass": ~first_fail,
    })
    spi_t = t0 + (OFFSET_S["SPI"] + 15) * SEC
    test_t = t0 + (OFFSET_S["TEST"] + 15) * SEC
    volume = np.round(100 + 5 * rng.standard_normal(n), 3)
    height = np.round(120 + 8 * rng.standard_normal(n), 2)
    vout = np.round(3.3 + 0.02 * rng.standard_normal(n), 4)
    measurements = pa.table({
        "unit_id": np.concatenate([ids, ids, ids]),
        "station": np.repeat(["SPI", "SPI", "TEST"], n),
        "name": np.repeat(["paste_volume_pct", "paste_height_um", "vout_v"], n),
        "value": np.concatenate([volume, height, vout]),
        "t": np.concatenate([spi_t, spi_t, test_t]),
    })
    return {"units": units, "steps": steps_t, "measurements": measurements}


def iso(ts: pa.Array | np.ndarray, offset_h: int = 0, suffix: str = "") -> np.ndarray:
    """Timestamps as text, shifted into a local time with the given offset."""
    local = np.asarray(ts, dtype="datetime64[us]") + offset_h * 3600 * SEC
    return np.char.add(np.datetime_as_string(local, unit="s"), suffix)


def decimal_comma(values: np.ndarray) -> np.ndarray:
    return np.char.replace(values.astype(str), ".", ",")


def write_canonical(tables: dict[str, pa.Table], folder: Path) -> None:
    folder.mkdir()
    for name, t in tables.items():
        pacsv.write_csv(t, folder / f"{name}.csv")


def write_export(tables: dict[str, pa.Table], folder: Path) -> dict[str, Path]:
    """The same line as an MES exports it."""
    folder.mkdir()
    u, s, m = tables["units"], tables["steps"], tables["measurements"]
    n = u.num_rows
    units = pa.table({
        "serial": u["unit_id"], "Product": u["product"], "Auftrag": u["work_order"],
        "start_ts": iso(u["t_start"], 2, "+02:00"), "end_ts": iso(u["t_end"], 2, "+02:00"),
        "Status": np.where(np.asarray(u["result"]) == "pass", "PASS", "FAIL"),
        "Comment": np.full(n, "exported by MES 4.2"),
    })
    verdict = np.asarray(s["result"])
    ok_spelling = np.where(np.arange(verdict.size) % 2 == 0, "OK", "PASS")
    steps = pa.table({
        "SN": s["unit_id"], "Operation": s["station"], "Equipment": s["machine"],
        "Begin": iso(s["t_in"], 1), "End": iso(s["t_out"], 1),  # local Berlin time, no offset
        "Verdict": np.where(verdict == "pass", ok_spelling, np.where(np.arange(verdict.size) % 2 == 0, "FAIL", "NG")),
        "Defect": s["defect_code"],
    })
    # Wide: one row per unit and station, one column per reading; readings a station lacks are blank.
    value = np.asarray(m["value"])
    spi = slice(0, n), slice(n, 2 * n)
    blank = np.full(n, "")
    wide = pa.table({
        "serial": np.concatenate([np.asarray(u["unit_id"])] * 2),
        "Station": np.repeat(["SPI", "TEST"], n),
        "meas_time": np.concatenate([iso(m["t"].slice(0, n), 2, "+02:00"), iso(m["t"].slice(2 * n, n), 2, "+02:00")]),
        "paste_volume_pct": np.concatenate([decimal_comma(value[spi[0]]), blank]),
        "paste_height_um": np.concatenate([decimal_comma(value[spi[1]]), blank]),
        "vout_v": np.concatenate([blank, decimal_comma(value[2 * n:])]),
    })
    opts = pacsv.WriteOptions(delimiter=";", quoting_style="none")
    paths = {"units": folder / "units_2026-01-12.csv", "steps": folder / "steps_2026-01-12.csv",
             "measurements": folder / "meas_2026-01-12.csv"}
    pacsv.write_csv(units, paths["units"], opts)
    pacsv.write_csv(steps, paths["steps"], opts)
    pacsv.write_csv(wide, paths["measurements"], opts)
    return paths


KEYS = {"units": "unit_id", "steps": "unit_id, station, t_in", "measurements": "unit_id, station, name, t"}


def snapshot(ws_path: Path) -> dict[str, list[dict]]:
    with Workspace.open(ws_path) as ws:
        return {t: ws.query(f"SELECT * EXCLUDE (batch) FROM {t} ORDER BY {k}").to_pylist() for t, k in KEYS.items()}


@pytest.fixture
def line(tmp_path: Path) -> dict[str, pa.Table]:
    return make_line()


def test_an_mes_export_ingests_through_the_profile_like_the_canonical_files(tmp_path: Path, line) -> None:
    write_canonical(line, tmp_path / "canonical")
    res = call("ingest", workspace=tmp_path / "ws_canonical", paths=[tmp_path / "canonical"])
    assert res.quarantined == 0
    write_export(line, tmp_path / "export")
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    res = call("ingest", workspace=tmp_path / "ws_export", paths=[tmp_path / "export"], profile=profile)
    assert res.quarantined == 0, res.quarantine
    assert {f.source for f in res.files} == {"mes_units", "mes_steps", "tester"}

    canonical, mapped = snapshot(tmp_path / "ws_canonical"), snapshot(tmp_path / "ws_export")
    for table in KEYS:
        assert len(mapped[table]) == len(canonical[table]) > 0, table
        assert mapped[table] == canonical[table], table

    # The same export again adds nothing, and says so.
    again = call("ingest", workspace=tmp_path / "ws_export", paths=[tmp_path / "export"], profile=profile)
    assert again.stored == 0 and all(f.already_ingested for f in again.files)
    assert snapshot(tmp_path / "ws_export") == mapped


def test_the_workspace_profile_is_used_by_plain_ingest(tmp_path: Path, line) -> None:
    paths = write_export(line, tmp_path / "export")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "profile.yaml").write_text(PROFILE)
    res = CliRunner().invoke(build_app(), ["ingest", str(paths["steps"]), "--json", "-w", str(tmp_path / "ws")])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["files"][0]["source"] == "mes_steps" and body["stored"] == line["steps"].num_rows


def test_a_bad_value_is_quarantined_naming_file_row_field_and_export_column(tmp_path: Path, line) -> None:
    paths = write_export(line, tmp_path / "export")
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    lines = paths["steps"].read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(";")[3], "gestern")  # line 6 of the file: a bad Begin
    paths["steps"].write_text("\n".join(lines) + "\n")
    wide = paths["measurements"].read_text().splitlines()
    wide[3] = wide[3].replace(wide[3].split(";")[3], "zwölf")  # line 4: a bad paste volume
    paths["measurements"].write_text("\n".join(wide) + "\n")

    res = CliRunner().invoke(build_app(), ["ingest", str(paths["steps"]), str(paths["measurements"]), "--json",
                                           "--profile", str(profile), "-w", str(tmp_path / "ws")])
    assert res.exit_code == 1  # something was quarantined
    body = json.loads(res.stdout)
    assert body["quarantined"] == 2
    by_file = {Path(q["file"]).name: q for q in body["quarantine"]}
    step = by_file[paths["steps"].name]
    assert (step["row"], step["field"], step["column"]) == (6, "t_in", "Begin")
    assert "timestamp" in step["reason"] and "gestern" in step["reason"]
    meas = by_file[paths["measurements"].name]
    assert (meas["row"], meas["field"]) == (4, "value") and "zwölf" in meas["reason"]
    # The good rows of both files landed; the workspace's quarantine names the file and the field.
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.count("steps") == line["steps"].num_rows - 1
        stored = ws.query("SELECT source, \"row\", field FROM quarantine WHERE table_name = 'steps'").to_pylist()
    assert stored == [{"source": f"file:{paths['steps'].resolve()}", "row": 6, "field": "t_in"}]


def test_a_source_naming_a_column_the_file_lacks_stops_before_storing_anything(tmp_path: Path, line) -> None:
    paths = write_export(line, tmp_path / "export")
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE.replace("machine: Equipment", "machine: Maschine"))
    res = CliRunner().invoke(build_app(), ["ingest", str(tmp_path / "export"), "--profile", str(profile),
                                           "-w", str(tmp_path / "ws")])
    assert res.exit_code == 2
    assert "maps machine to the column 'Maschine', which the file does not have" in res.stderr
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.count("units") == ws.count("steps") == 0
    assert paths["steps"].exists()
