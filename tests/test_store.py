"""The workspace keeps every good record, quarantines bad ones with reasons, and never duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from postgres_service import fresh_schema

from linelab.connect.files import ingest_file
from linelab.errors import NotFound, UserError
from linelab.monitor.problems import LISTING_FIELDS, list_problems
from linelab.store import Workspace, queries

UNITS = """unit_id,product,line,work_order,t_start,t_end,result,first_pass
SN1,PCB-A,L1,WO1,2026-01-05 06:00:00,2026-01-05 06:10:00,pass,true
SN2,PCB-A,L1,WO1,2026-01-05 06:01:00,2026-01-05 06:11:00,fail,false
SN3,PCB-A,L1,WO1,2026-01-05 06:02:00,2026-01-05 06:12:00,pass,false
SN4,PCB-A,L1,WO2,2026-01-06 06:03:00,,,
"""
STEPS = """unit_id,station,machine,fixture,operator,shift,recipe_id,t_in,t_out,result,defect_code
SN1,PLACE,P1,,op1,A,R1,2026-01-05 06:01:00,2026-01-05 06:02:00,pass,
SN2,PLACE,P2,,op1,A,R1,2026-01-05 06:02:00,2026-01-05 06:03:00,fail,MISALIGN
SN3,PLACE,P2,,op1,A,R1,2026-01-05 06:03:00,2026-01-05 06:04:00,fail,MISALIGN
SN3,PLACE,P2,,op1,A,R1,2026-01-05 06:05:00,2026-01-05 06:06:00,pass,
SN4,PLACE,P1,,op2,B,R1,2026-01-06 06:04:00,2026-01-06 06:05:00,pass,
"""
MATERIALS = """unit_id,station,material,lot,supplier
SN1,PLACE,IC-U1,LOT-7,SUP-A
SN2,PLACE,IC-U1,LOT-9,SUP-B
SN3,PLACE,IC-U1,LOT-9,SUP-B
SN4,PLACE,IC-U1,LOT-7,SUP-A
"""
# Row 3 (SN2) has a bad value, row 4 a missing serial, row 5 a bad timestamp.
MEASUREMENTS = """unit_id,station,name,value,t
SN1,SPI,paste_volume_pct,101.5,2026-01-05 06:00:30
SN2,SPI,paste_volume_pct,lots,2026-01-05 06:01:30
,SPI,paste_volume_pct,99.0,2026-01-05 06:02:30
SN4,SPI,paste_volume_pct,97.0,yesterday
SN3,SPI,paste_volume_pct,98.2,2026-01-05 06:02:30
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def line_files(tmp_path: Path) -> dict[str, Path]:
    return {
        name: write(tmp_path, f"{name}.csv", text)
        for name, text in [("units", UNITS), ("steps", STEPS), ("materials", MATERIALS),
                           ("measurements", MEASUREMENTS)]
    }


@pytest.fixture(params=["duckdb", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """Every store test runs on both backends: a DuckDB folder, and a PostgreSQL schema of its own."""
    if request.param == "duckdb":
        with Workspace.open(tmp_path / "ws") as w:
            yield w
        return
    with fresh_schema(tmp_path / "ws") as (url, _), Workspace.open(url) as w:
        yield w


def test_bad_rows_are_quarantined_with_row_field_and_reason(ws: Workspace, line_files: dict[str, Path]) -> None:
    rep = ingest_file(ws, line_files["measurements"])
    assert rep.stored == 2 and rep.quarantined == 3
    q = ws.query('SELECT "row", field, reason, raw FROM quarantine ORDER BY "row"').to_pylist()
    assert [(r["row"], r["field"]) for r in q] == [(3, "value"), (4, "unit_id"), (5, "t")]
    assert "cannot read as a number" in q[0]["reason"] and "'lots'" in q[0]["reason"]
    assert "missing value" in q[1]["reason"]
    assert "timestamp" in q[2]["reason"]
    assert '"SN2"' in q[0]["raw"]  # the raw record is kept, so nothing is lost
    good = ws.query("SELECT unit_id, value FROM measurements ORDER BY unit_id").to_pylist()
    assert good == [{"unit_id": "SN1", "value": 101.5}, {"unit_id": "SN3", "value": 98.2}]


def test_reingesting_the_same_file_adds_nothing(ws: Workspace, line_files: dict[str, Path]) -> None:
    first = ingest_file(ws, line_files["measurements"])
    again = ingest_file(ws, line_files["measurements"])
    assert again.tables[0].skipped_batch and again.stored == 0 and again.quarantined == 0
    assert ws.count("measurements") == first.stored
    assert ws.count("quarantine") == first.quarantined


def test_overlapping_file_stores_only_new_records(ws: Workspace, line_files: dict[str, Path], tmp_path: Path) -> None:
    ingest_file(ws, line_files["steps"])
    extra = "SN5,PLACE,P1,,op2,B,R1,2026-01-06 06:09:00,2026-01-06 06:10:00,pass,\n"
    rep = ingest_file(ws, write(tmp_path, "steps_day2.csv", STEPS + extra))
    assert rep.stored == 1 and rep.tables[0].duplicates == 5
    assert ws.count("steps") == 6


def test_late_result_updates_the_unit_and_out_of_order_rows_land_by_time(
    ws: Workspace, line_files: dict[str, Path], tmp_path: Path
) -> None:
    ingest_file(ws, line_files["units"])
    assert ws.scalar("SELECT result FROM units WHERE unit_id = 'SN4'") is None
    late = (
        "unit_id,product,line,t_start,t_end,result,first_pass\n"
        "SN4,PCB-A,L1,2026-01-06 06:03:00,2026-01-06 07:00:00,pass,true\n"
    )
    rep = ingest_file(ws, write(tmp_path, "units_late.csv", late))
    assert rep.tables[0].updated == 1 and rep.stored == 0
    assert ws.scalar("SELECT result FROM units WHERE unit_id = 'SN4'") == "pass"
    # A record that arrives last but happened first sorts first.
    early = "unit_id,product,line,t_start\nSN0,PCB-A,L1,2026-01-04 23:00:00\n"
    ingest_file(ws, write(tmp_path, "units_early.csv", early))
    assert ws.query("SELECT unit_id FROM units ORDER BY t_start LIMIT 1").column(0)[0].as_py() == "SN0"
    assert ws.last_batch_seq() == 3


def test_failed_ingest_leaves_the_workspace_unchanged(ws: Workspace) -> None:
    good = pa.table({"unit_id": ["SN1"], "station": ["PLACE"], "material": ["IC"], "lot": ["L1"]})
    broken = pa.table({"unit_id": ["SN1"]})  # steps without its required columns
    with pytest.raises(UserError, match="required column"):
        ws.ingest_tables({"materials": good, "steps": broken}, source="test")
    assert ws.count("materials") == 0 and ws.count("batches") == 0
    ws.ingest_tables({"materials": good}, source="test")
    assert ws.count("materials") == 1


def test_yield_pareto_and_traceability(ws: Workspace, line_files: dict[str, Path]) -> None:
    for path in line_files.values():
        ingest_file(ws, path)
    by_machine = {r["machine"]: r for r in queries.yield_by(ws, "machine").to_pylist()}
    assert by_machine["P1"]["first_pass_yield"] == 1.0
    assert by_machine["P2"]["first_pass_yield"] == 0.0  # both failed their first visit
    assert by_machine["P2"]["final_yield"] == 0.5  # SN3 passed after rework
    by_supplier = {r["supplier"]: r["units"] for r in queries.yield_by(ws, "supplier").to_pylist()}
    assert by_supplier == {"SUP-A": 2, "SUP-B": 2}
    top = queries.pareto(ws).to_pylist()[0]
    assert (top["defect_code"], top["defects"], top["cumulative_share"]) == ("MISALIGN", 2, 1.0)
    genealogy = queries.trace_unit(ws, "SN3")
    assert [s["result"] for s in genealogy["steps"].to_pylist()] == ["fail", "pass"]
    assert genealogy["materials"].column("lot").to_pylist() == ["LOT-9"]
    recall = queries.trace_lot(ws, "LOT-9")
    assert sorted(recall["units"].column("unit_id").to_pylist()) == ["SN2", "SN3"]
    with pytest.raises(NotFound):
        queries.trace_unit(ws, "SN99")
    with pytest.raises(UserError, match="choose one of"):
        queries.yield_by(ws, "colour")


def test_file_of_unknown_shape_names_the_problem(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot tell which table"):
        ingest_file(ws, write(tmp_path, "export.csv", "a,b\n1,2\n"))
    with pytest.raises(UserError, match="no such file"):
        ingest_file(ws, tmp_path / "missing.csv")


def test_artifacts_round_trip(ws: Workspace) -> None:
    ws.put_artifact("problem", "P-0001", {"status": "open", "title": "nozzle wear"})
    ws.put_artifact("problem", "P-0001", {"status": "resolved", "title": "nozzle wear"})
    assert ws.get_artifact("problem", "P-0001")["status"] == "resolved"
    assert [p["title"] for p in ws.list_artifacts("problem", status="resolved")] == ["nozzle wear"]
    assert ws.list_artifacts("problem", status="open") == []


def test_typed_batches_are_validated_too(ws: Workspace) -> None:
    """Adapters (twin, brokers) hand over typed Arrow batches; their bad rows are caught the same way."""
    t = pa.array([1_000_000, 2_000_000, 3_000_000], pa.timestamp("us"))
    batch = pa.table({
        "unit_id": ["SN1", "SN2", ""],
        "station": ["SPI"] * 3,
        "name": ["h"] * 3,
        "value": [1.0, float("nan"), 2.0],
        "t": t,
    })
    rep = ws.ingest_tables({"measurements": batch}, source="adapter")
    assert (rep.stored, rep.quarantined, rep.tables[0].duplicates) == (1, 2, 0)
    assert ws.query('SELECT field FROM quarantine ORDER BY "row"').column(0).to_pylist() == ["value", "unit_id"]
    units = pa.table({"unit_id": ["SN1"], "product": ["A"], "line": ["L1"], "t_start": t.slice(0, 1)})
    ws.ingest_tables({"units": units}, source="adapter")
    bogus = units.append_column("result", pa.array(["maybe"]))
    rep = ws.ingest_tables({"units": bogus}, source="adapter")
    assert rep.quarantined == 1 and rep.tables[0].updated == 0
    assert ws.scalar("SELECT result FROM units") is None


def test_typed_batches_overlapping_in_time_store_new_records_and_catch_repeats(ws: Workspace) -> None:
    """A stream's batches overlap in time (a unit is measured over minutes): a batch whose range holds
    stored rows stores its new records, and one that repeats or contradicts a stored record is caught."""
    def batch(units: list[str], minutes: list[int], values: list[float]) -> pa.Table:
        return pa.table({"unit_id": units, "station": ["SPI"] * len(units), "name": ["h"] * len(units),
                         "value": values,
                         "t": pa.array([m * 60_000_000 + 1_800_000_000_000_000 for m in minutes], pa.timestamp("us"))})

    first = ws.ingest_tables({"measurements": batch(["SN1", "SN2", "SN3"], [0, 5, 10], [1.0, 2.0, 3.0])}, "stream")
    assert first.stored == 3
    # SN4 and SN5 fall inside the stored range [0, 10] minutes with keys of their own: stored.
    rep = ws.ingest_tables({"measurements": batch(["SN4", "SN5", "SN6"], [2, 7, 12], [4.0, 5.0, 6.0])}, "stream")
    assert (rep.stored, rep.tables[0].duplicates, rep.quarantined) == (3, 0, 0)
    # SN2 again (the same record) and SN3 with another value: a duplicate and a conflict.
    rep = ws.ingest_tables({"measurements": batch(["SN2", "SN3", "SN7"], [5, 10, 11], [2.0, 9.0, 7.0])}, "stream")
    assert (rep.stored, rep.tables[0].duplicates, rep.quarantined) == (1, 1, 1)
    assert ws.count("measurements") == 7
    assert ws.scalar("SELECT value FROM measurements WHERE unit_id = 'SN3'") == 3.0


def _problem(n: int, status: str, points: int = 300) -> dict[str, Any]:
    """A problem artefact shaped as the monitor files one: a few small keys beside large charts and signals."""
    chart = {"t": [f"2026-01-05T06:{i % 60:02d}:00" for i in range(points)],
             "value": [0.1 * i + 1 / 3 for i in range(points)], "ucl": 12.345678901234567, "lcl": -1e-7}
    return {
        "id": f"PRB-{n:04d}", "status": status, "kind": "shift", "entity": f"machine:M{n} ünïcode \"quoted\"",
        "scope": {"machine": f"M{n}", "measurement": "height"},
        "onset": {"t": "2026-01-05T06:00:00", "unit": None},
        "severity": {"units_affected": 10 * n, "yield_lost_units": 2.675 * n, "signals": 2},
        "description": f"height on M{n} moved up by 1.2σ",
        "chart": chart, "signals": [{"key": f"k{j}", "chart": chart, "units": [f"SN{i}" for i in range(points)]}
                                    for j in range(2)],
        "history": [{"status": status, "at": "2026-01-05T07:00:00", "note": ""}],
        **({"watch": "W-1"} if n % 2 else {}),
    }


def test_a_listing_of_some_fields_equals_those_fields_of_the_full_records(ws: Workspace) -> None:
    """The store extracts the listed keys itself (the large rest is never parsed): same values, same order."""
    for n, status in [(1, "open"), (2, "resolved"), (3, "open"), (4, "diagnosed")]:
        ws.put_artifact("problem", f"PRB-{n:04d}", _problem(n, status))
    ws.put_artifact("problem", "PRB-0002", {**_problem(2, "open"), "severity": None})  # changed: a null stays
    fields = ["id", "status", "entity", "onset", "severity", "description", "watch"]
    for only in [None, "open", "resolved"]:
        full = ws.list_artifacts("problem", status=only)
        listed = ws.list_artifacts("problem", status=only, fields=fields)
        assert listed == [{k: p[k] for k in fields if k in p} for p in full]
    assert [p["id"] for p in ws.list_artifacts("problem", fields=["id"])] == [f"PRB-{n:04d}" for n in (1, 2, 3, 4)]
    assert [p.get("watch") for p in ws.list_artifacts("problem", fields=["watch"])] == ["W-1", None, "W-1", None]
    assert ws.list_artifacts("problem", status="fixing", fields=fields) == []
    with pytest.raises(ValueError, match="not a payload key"):
        ws.list_artifacts("problem", fields=["id') OR 1=1 --"])


def test_the_problem_listing_shows_what_the_full_problems_say(ws: Workspace) -> None:
    for n, status in [(1, "open"), (2, "false_alarm"), (3, "fixing")]:
        ws.put_artifact("problem", f"PRB-{n:04d}", _problem(n, status))
    for only in [None, "open", "false_alarm"]:
        full = list_problems(ws, only)
        assert list_problems(ws, only, LISTING_FIELDS) == [{k: p[k] for k in LISTING_FIELDS} for p in full]
