"""The overview's numbers: yield by station counts first visits only, and the trend query gives the
numbers of the `yield` command, edge cases included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_service import fresh_schema

from linelab.connect.files import ingest_file
from linelab.store import Workspace, queries
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
