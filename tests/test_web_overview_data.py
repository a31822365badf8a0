"""The overview's numbers: yield by station counts first visits only, and the trend query gives the
numbers of the `yield` command, edge cases included."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from postgres_service import admin, fresh_schema

from linelab.connect.files import ingest_file
from linelab.errors import UserError
from linelab.store import Workspace, queries
from linelab.store.schema import RECORD_TABLES
from linelab.web import overview_data

UNITS = """unit_id,product,line,work_order,t_start,t_end,result,first_pass
SN1,PCB-A,L1,WO1,2026-01-05 06:00:00,2026-01-05 06:10:00,pass,true
SN2,PCB-A,L1,WO1,2026-01-05 06:01:00,2026-01-05 06:11:00,fail,false
SN3,PCB-A,L1,WO1,2026-01-05 07:02:00,2026-01-05 07:12:00,pass,false
SN4,PCB-A,L1,WO2,2026-01-06 06:03:00,,,
"""
# SN3 fails PLACE and passes on its retest; SN4 has no result yet; SN9's unit record has not arrived.
STEPS = """unit_id,station,machine,fixture,operator,shift,recipe_id,t_in,t_out,result,defect_code
SN1,PLACE,P1,,op1,A,R1,2026-01-05 06:01:00,2026-01-05 06:02:00,pass,
SN2,PLACE,P2,,op1,A,R1,2026-01-05 06:02:00,2026-01-05 06:03:00,fail,MISALIGN
SN3,PLACE,P2,,op1,A,R1,2026-01-05 07:05:00,2026-01-05 07:06:00,pass,
SN3,PLACE,P2,,op1,A,R1,2026-01-05 07:03:00,2026-01-05 07:04:00,fail,MISALIGN
SN4,PLACE,P1,,op2,B,R1,2026-01-06 06:04:00,2026-01-06 06:05:00,pass,
SN1,TEST,T1,,op1,A,R1,2026-01-05 06:05:00,2026-01-05 06:06:00,pass,
SN3,TEST,T1,,op1,A,R1,2026-01-05 07:08:00,2026-01-05 07:09:00,pass,
SN9,TEST,T1,,op1,A,R1,2026-01-05 07:10:00,2026-01-05 07:11:00,fail,OPEN
"""


@pytest.fixture(params=["duckdb", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    if request.param == "duckdb":
        with Workspace.open(tmp_path / "ws") as w:
            yield w
        return
    with fresh_schema(tmp_path / "ws") as (url, _), Workspace.open(url) as w:
        yield w


def test_station_yield_and_trend_agree_with_the_yield_command(ws: Workspace, tmp_path: Path) -> None:
    for name, text in (("units", UNITS), ("steps", STEPS)):
        (tmp_path / f"{name}.csv").write_text(text)
        ingest_file(ws, tmp_path / f"{name}.csv")
    stations = {r["station"]: r for r in queries.yield_by(ws, "station").to_pylist()}
    # SN3's pass is its retest, not its first visit; SN4 has no result yet (not a pass).
    assert stations["PLACE"] == {"station": "PLACE", "units": 4, "first_pass_yield": 0.5, "final_yield": 0.5}
    # SN9 waits for its unit record.
    assert stations["TEST"] == {"station": "TEST", "units": 2, "first_pass_yield": 1.0, "final_yield": 1.0}
    overall, period, trend = overview_data.yield_trend(ws)
    assert overall == queries.overall_yield(ws)
    assert period == "hour"  # two days of data: by hour
    assert trend == queries.yield_by(ws, "hour").to_pylist()


def test_an_empty_workspace_has_no_trend(ws: Workspace) -> None:
    overall, _, trend = overview_data.yield_trend(ws)
    assert overall == queries.overall_yield(ws) and trend == []


# -- the line summary, counted at ingest, against the same numbers counted over the records ----------
def assert_summary_agrees(ws: Workspace) -> None:
    """Every number the overview reads from the line summary equals the one counted over the records."""
    assert queries.yield_by(ws, "station").to_pylist() == queries.station_yield_from_records(ws).to_pylist()
    assert queries.overall_yield(ws) == queries.overall_yield_from_records(ws)
    assert overview_data.yield_trend(ws) == overview_data.yield_trend_from_records(ws)
    assert queries.pareto(ws, top=50).to_pylist() == queries.pareto_from_records(ws, top=50).to_pylist()
    assert queries.pareto(ws, "PLACE", 2).to_pylist() == queries.pareto_from_records(ws, "PLACE", 2).to_pylist()


def _ingest_text(ws: Workspace, folder: Path, name: str, text: str, tag: str) -> None:
    path = folder / tag / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    ingest_file(ws, path)


def _reopened(ws: Workspace) -> Iterator[Workspace]:
    """The workspace opened again (on PostgreSQL: a new replica, read from the database)."""
    with Workspace.open(ws.path) as other:
        yield other


def test_the_summary_follows_late_retests_late_units_late_results_and_repeats(ws: Workspace, tmp_path: Path) -> None:
    header_u, *units = UNITS.splitlines()
    header_s, *steps = STEPS.splitlines()
    late = units[3].replace(",,,", ",2026-01-06 06:20:00,pass,false")
    batches = [
        # Steps first (their units wait), SN3's passing retest before the failed visit it follows.
        ("steps", [header_s, steps[0], steps[1], steps[2], steps[7]]),
        ("units", [header_u, *units[:3]]),
        # The failed visit that came first arrives late: SN3's first visit is now a fail.
        ("steps", [header_s, steps[3], steps[4], steps[5], steps[6]]),
        # SN4 arrives without a result, then its result comes in a later batch (an update of the unit).
        ("units", [header_u, units[3]]),
        ("units", [header_u, late]),
    ]
    place = []
    for i, (name, lines) in enumerate(batches):
        _ingest_text(ws, tmp_path, name, "\n".join(lines) + "\n", str(i))
        assert_summary_agrees(ws)
        row = {r["station"]: r for r in queries.yield_by(ws, "station").to_pylist()}.get("PLACE", {})
        place.append((row.get("first_pass_yield"), row.get("final_yield")))
    # Until its first visit arrives, SN3's retest counts as its first visit; SN4's late result is a pass.
    assert place == [(None, None), (2 / 3, 2 / 3), (1 / 3, 2 / 3), (2 / 4, 2 / 4), (2 / 4, 3 / 4)]
    assert ws.scalar("SELECT result FROM units WHERE unit_id = 'SN4'") == "pass"
    before = queries.yield_by(ws, "station").to_pylist(), queries.pareto(ws).to_pylist()
    # The same files again, then every record again in one new batch each: nothing changes.
    for i, (name, lines) in enumerate(batches):
        _ingest_text(ws, tmp_path, name, "\n".join(lines) + "\n", str(i))
    for name, text in (("units", UNITS), ("steps", STEPS)):
        _ingest_text(ws, tmp_path, name, text, "all")
    assert (queries.yield_by(ws, "station").to_pylist(), queries.pareto(ws).to_pylist()) == before
    assert_summary_agrees(ws)
    for other in _reopened(ws):
        assert_summary_agrees(other)


def test_an_ingest_that_fails_midway_leaves_the_summary_as_it_was(ws: Workspace, tmp_path: Path) -> None:
    for name, text in (("units", UNITS), ("steps", STEPS)):
        _ingest_text(ws, tmp_path, name, text, "a")
    before = queries.yield_by(ws, "station").to_pylist(), overview_data.yield_trend(ws)
    more_units = pa.table({"unit_id": ["SN5"], "product": ["PCB-A"], "line": ["L1"],
                           "t_start": pa.array([datetime(2026, 1, 7, 6)], pa.timestamp("us")),
                           "result": ["pass"], "first_pass": [True]})
    more_steps = pa.table({"unit_id": ["SN5", "SN1"], "station": ["PLACE", "PLACE"],
                           "t_in": pa.array([datetime(2026, 1, 7, 6, 1), datetime(2026, 1, 5, 5)], pa.timestamp("us")),
                           "result": ["pass", "fail"]})
    with pytest.raises(RuntimeError), ws.ingest_transaction():
        ws.ingest_tables({"units": more_units, "steps": more_steps}, source="test")
        assert queries.yield_by(ws, "station").to_pylist() != before[0]  # counted inside the transaction
        raise RuntimeError("the process dies before the commit")
    # A batch whose second table cannot be read fails after its first was stored.
    unreadable = pa.table({"unit_id": ["SN5"], "station": ["PLACE"], "t_in": [[1]], "result": ["pass"]})
    with pytest.raises(UserError):
        ws.ingest_tables({"units": more_units, "steps": unreadable}, source="test")
    assert (queries.yield_by(ws, "station").to_pylist(), overview_data.yield_trend(ws)) == before
    assert_summary_agrees(ws)
    for other in _reopened(ws):
        assert_summary_agrees(other)
    ws.ingest_tables({"units": more_units, "steps": more_steps}, source="test")
    assert_summary_agrees(ws)


def test_the_summary_agrees_over_batches_in_any_order(ws: Workspace) -> None:
    """A generated line sent in shuffled, overlapping batches: after each, the summary agrees."""
    rng = random.Random(7)
    t0 = datetime(2026, 1, 5, 6)
    units, steps = [], []
    for i in range(300):
        start = t0 + timedelta(minutes=7 * i)
        unit = f"SN{i:05d}"
        passed = first = True
        for k, station in enumerate(("SPI", "PLACE", "AOI", "TEST")):
            t = start + timedelta(minutes=k)
            for visit in range(1 + (rng.random() < 0.15)):
                fail = visit == 0 and rng.random() < 0.2
                first &= not (visit == 0 and fail)
                steps.append({"unit_id": unit, "station": station, "t_in": t + timedelta(seconds=30 * visit),
                              "result": "fail" if fail else "pass",
                              "defect_code": rng.choice(["MISALIGN", "SHORT", "OPEN"]) if fail else None})
            passed &= rng.random() < 0.97
        units.append({"unit_id": unit, "product": "PCB-A", "line": "L1", "t_start": start,
                      "result": "pass" if passed else "fail", "first_pass": first})
    rng.shuffle(steps)
    rng.shuffle(units)
    for n in range(10):
        chunk_s = steps[n * len(steps) // 10:(n + 1) * len(steps) // 10 + 20]  # overlapping: repeats are duplicates
        chunk_u = [dict(u, result=None) if n < 3 and rng.random() < 0.5 else u  # some results come late
                   for u in units[n * 30:(n + 1) * 30 + 5] + (units[:10] if n == 5 else [])]
        ws.ingest_tables({"steps": pa.Table.from_pylist(chunk_s, schema=RECORD_TABLES["steps"]),
                          "units": pa.Table.from_pylist(chunk_u, schema=RECORD_TABLES["units"])}, source=f"t{n}")
        assert_summary_agrees(ws)
    assert ws.count("units") == 300 and ws.count("line_summary", "kind = 'station'") == 4
    for other in _reopened(ws):
        assert_summary_agrees(other)


def test_a_workspace_made_before_the_summary_gets_it_filled(tmp_path: Path) -> None:
    """Migration 4 counts the records of a workspace that had no line summary (DuckDB and PostgreSQL)."""
    with Workspace.open(tmp_path / "ws") as ws:
        for name, text in (("units", UNITS), ("steps", STEPS)):
            _ingest_text(ws, tmp_path, name, text, "a")
        expected = queries.station_yield_from_records(ws).to_pylist()
        ws.backend.execute("DROP TABLE line_summary")
        ws.backend.execute("DELETE FROM schema_version WHERE version >= 4")
    with Workspace.open(tmp_path / "ws") as ws:
        assert queries.yield_by(ws, "station").to_pylist() == expected
        assert_summary_agrees(ws)
        ws.backend.execute("DELETE FROM schema_version WHERE version >= 4")  # set back, its table kept
    with Workspace.open(tmp_path / "ws") as ws:
        assert queries.yield_by(ws, "station").to_pylist() == expected
    with fresh_schema(tmp_path / "pg") as (url, schema):
        with Workspace.open(url) as ws:
            for name, text in (("units", UNITS), ("steps", STEPS)):
                _ingest_text(ws, tmp_path, name, text, "a")
        with admin() as con:
            con.execute(f'DROP TABLE "{schema}".line_summary')
            con.execute(f"DELETE FROM \"{schema}\".store_tables WHERE table_name = 'line_summary'")
            con.execute(f'DELETE FROM "{schema}".schema_version WHERE version >= 4')
        with Workspace.open(url) as ws:
            assert queries.yield_by(ws, "station").to_pylist() == expected
            assert_summary_agrees(ws)


def test_quarantined_rows_count_nowhere(ws: Workspace, tmp_path: Path) -> None:
    """A step the store refuses (a bad result, a different result for a stored visit) changes no count."""
    for name, text in (("units", UNITS), ("steps", STEPS)):
        _ingest_text(ws, tmp_path, name, text, "a")
    before = queries.yield_by(ws, "station").to_pylist(), queries.pareto(ws).to_pylist()
    header, *steps = STEPS.splitlines()
    bad = [steps[0].replace(",pass,", ",maybe,"),  # not a result
           steps[1].replace(",fail,MISALIGN", ",pass,")]  # contradicts the stored visit
    _ingest_text(ws, tmp_path, "steps", "\n".join([header, *bad]) + "\n", "b")
    assert ws.count("quarantine", "table_name = 'steps'") == 2
    assert (queries.yield_by(ws, "station").to_pylist(), queries.pareto(ws).to_pylist()) == before
    assert_summary_agrees(ws)
