"""A split run on a real line: its lots go out as set_recipe actions through the outbox, the line
acknowledges each switch (`act done --at`), the units that come back are sorted into the arms by
those times, and the same sequential test decides; adoption goes through the outbox too.

The line is a stand-in built here with numpy/pyarrow (one recipe setting; the treatment passes
more units first time), ingested as Parquet like any export. Everything goes through
`linelab.commands.call`, as a script or the REST API would.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from linelab.api import create_app
from linelab.commands import call
from linelab.errors import UserError

T0 = datetime(2025, 6, 2, 6, 0)
SECONDS_PER_UNIT = 20
PROFILE = """\
line: {name: L1, stations: [{name: REFLOW, machines: [R1]}]}
recipe:
  - {name: peak_setpoint, low: 240, high: 255, default: 245, step: 1, unit: degC}
control: {channel: outbox}
"""


def at(unit: int) -> datetime:
    return T0 + timedelta(seconds=SECONDS_PER_UNIT * unit)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "profile.yaml").write_text(PROFILE)
    return path


def ingest_units(ws: Path, first: int, arms: list[str], lot_size: int, yields: dict[str, float], seed: int) -> None:
    """Units `first`.. of the line, lot after lot in the arms given, one every SECONDS_PER_UNIT."""
    rng = np.random.default_rng(seed)
    n = len(arms) * lot_size
    p = np.repeat([yields[a] for a in arms], lot_size)
    ok = rng.random(n) < p
    t = np.datetime64(T0, "us") + np.arange(first, first + n) * np.timedelta64(SECONDS_PER_UNIT, "s")
    table = pa.table({"unit_id": [f"SN{i:06d}" for i in range(first, first + n)], "product": ["BOARD-A"] * n,
                      "line": ["L1"] * n, "work_order": ["WO-1"] * n, "t_start": t,
                      "t_end": t + np.timedelta64(15, "s"), "result": np.where(ok, "pass", "fail"), "first_pass": ok})
    path = ws.parent / "export" / f"units_{first:06d}.parquet"
    path.parent.mkdir(exist_ok=True)
    pq.write_table(table, path)
    call("ingest", ws, paths=[path])


def design_and_send(ws: Path, change: str, lots: int, lot_size: int = 250, max_units: int = 8000) -> dict[str, Any]:
    e = call("experiment design", ws, kind="split", change=change, lot_size=lot_size, max_units=max_units,
             seed=3, problem_id="PRB-0001").experiment
    return call("experiment run", ws, id=e["id"], lots=lots).experiment


def test_split_run_through_the_outbox_decides_from_the_data_and_adopts_through_the_outbox(ws: Path) -> None:
    e = design_and_send(ws, "peak_setpoint=249", lots=14)
    assert e["status"] == "running" and e["line"]["source"] == "outbox"
    schedule = e["schedule"]
    assert [s["lot"] for s in schedule] == list(range(1, 15)) and e["line"]["lots_planned"] == 32
    # arms alternate in pairs whose order is drawn at random (both orders occur)
    pairs = [(schedule[i]["arm"], schedule[i + 1]["arm"]) for i in range(0, 14, 2)]
    assert set(pairs) == {("control", "treatment"), ("treatment", "control")}
    assert {s["arm"]: s["settings"] for s in schedule} == {"control": {"peak_setpoint": 245.0},
                                                           "treatment": {"peak_setpoint": 249.0}}
    sent = call("act list", ws, status="sent").actions
    assert [a.id for a in sent] == [s["action_id"] for s in schedule]
    a = sent[0]
    assert a.kind == "set_recipe" and a.source == "experiment" and a.experiment_id == e["id"]
    assert a.params == {"params": schedule[0]["settings"]} and a.problem_id == "PRB-0001"
    assert f"lot 1: {schedule[0]['arm']} arm" in a.reason

    with pytest.raises(UserError, match="no data for experiment .* 14 lots sent .* 0 acknowledged"):
        call("experiment analyse", ws, id=e["id"])

    # The line runs twelve lots of 250 units; each switch is acknowledged when its lot starts.
    lot_size = 250
    for k, s in enumerate(schedule[:12]):
        call("act done", ws, id=s["action_id"], at=(at(k * lot_size) - timedelta(seconds=5)).isoformat(),
             by="line")
    yields = {"control": 0.86, "treatment": 0.96}
    ingest_units(ws, 0, [s["arm"] for s in schedule[:12]], lot_size, yields, seed=1)

    out = call("experiment analyse", ws, id=e["id"]).experiment
    v = out["verdict"]
    assert out["status"] == "decided" and v["decision"] == "adopt", v
    assert v["interval"][0] > 0 and v["change"] == {"peak_setpoint": 249.0}
    lots = out["results"]["lots"]
    assert [x["arm"] for x in lots] == [s["arm"] for s in schedule[:len(lots)]]
    assert all(x["units"] == lot_size for x in lots) and lots[-1]["cumulative_units"] == len(lots) * lot_size
    assert v["control"]["units"] + v["treatment"]["units"] == v["units"] <= len(lots) * lot_size
    assert out["results"]["units"]["after_failed_switch"] == 0
    # the lots that never ran are withdrawn from the outbox, with why
    withdrawn = out["line"]["withdrawn"]
    assert withdrawn == [s["action_id"] for s in schedule[12:]]
    assert call("act list", ws, status="sent").actions == []
    assert "withdrawn" in call("act list", ws, status="failed").actions[0].history[-1].note
    assert Path(out["plots"]["arms"]).exists()

    verdict = call("experiment verdict", ws, id=e["id"], adopt=True)
    assert verdict.decision == "adopt" and verdict.adoption is not None
    assert verdict.adoption["via"] == "outbox" and verdict.adoption["status"] == "sent"
    adopted = call("act list", ws, status="sent").actions
    assert [x.id for x in adopted] == [verdict.adoption["action_id"]]
    assert adopted[0].kind == "set_recipe" and adopted[0].params == {"params": {"peak_setpoint": 249.0}}
    assert adopted[0].source == "experiment" and adopted[0].expected_effect is not None
    assert call("experiment status", ws).experiments[0]["status"] == "adopted"


def test_units_are_counted_only_under_an_acknowledged_switch(ws: Path) -> None:
    """A failed switch hides the units after it; a lot whose next switch is not acknowledged counts
    only its own size; until the test decides the experiment runs on with the verdict "continue"."""
    lot_size = 100
    e = design_and_send(ws, "peak_setpoint=241", lots=6, lot_size=lot_size)
    schedule = e["schedule"]
    call("act done", ws, id=schedule[0]["action_id"], at=at(0).isoformat())
    call("act done", ws, id=schedule[1]["action_id"], failed=True, note="recipe locked",
         at=at(lot_size).isoformat())
    call("act done", ws, id=schedule[2]["action_id"], at=at(2 * lot_size).isoformat())
    # lot 4 is never acknowledged: lot 3 counts 100 of the 250 units that follow its switch
    ingest_units(ws, 0, [s["arm"] for s in schedule[:5]], lot_size, {"control": 0.9, "treatment": 0.9}, seed=2)
    out = call("experiment analyse", ws, id=e["id"]).experiment
    assert out["status"] == "running" and out["verdict"]["decision"] == "continue"
    assert [(x["lot"], x["units"]) for x in out["results"]["lots"]] == [(1, lot_size), (3, lot_size)]
    assert out["results"]["units"] == {"counted": 2 * lot_size, "after_failed_switch": lot_size,
                                       "past_unacknowledged_switch": 2 * lot_size, "after_verdict": 0}
    assert out["results"]["switches"] == {"acknowledged": 2, "failed": 1, "waiting": 3}
    # the next lots go out on demand, continuing the same schedule
    more = call("experiment run", ws, id=e["id"], lots=2).experiment
    assert [s["lot"] for s in more["schedule"]] == list(range(1, 9)) and more["line"]["lots_sent"] == 8


def test_a_worse_change_is_rejected_and_the_line_sent_back_to_control(ws: Path) -> None:
    lot_size = 250
    e = design_and_send(ws, "peak_setpoint=241", lots=16, lot_size=lot_size)
    schedule = e["schedule"]
    # the line runs lots in the schedule's order and stops after a treatment lot
    ran = schedule[:max(k for k, s in enumerate(schedule) if s["arm"] == "treatment") + 1]
    for k, s in enumerate(ran):
        call("act done", ws, id=s["action_id"], at=at(k * lot_size).isoformat())
    ingest_units(ws, 0, [s["arm"] for s in ran], lot_size, {"control": 0.95, "treatment": 0.80}, seed=3)
    out = call("experiment analyse", ws, id=e["id"]).experiment
    assert out["status"] == "decided" and out["verdict"]["decision"] == "reject"
    with pytest.raises(UserError, match="only an adopted change"):
        call("experiment verdict", ws, id=e["id"], adopt=True)
    # the last lot acknowledged ran the treatment: the control settings go back to the line
    restore = out["line"].get("restore_action")
    assert restore is not None
    back = next(a for a in call("act list", ws, status="sent").actions if a.id == restore)
    assert back.params == {"params": {"peak_setpoint": 245.0}} and "back to the control recipe" in back.reason


def test_refusals_are_plain(ws: Path) -> None:
    with pytest.raises(UserError, match="outside its safe bounds \\[240.0, 255.0\\]"):
        call("experiment design", ws, kind="split", change="peak_setpoint=262")
    with pytest.raises(UserError, match="unknown recipe setting 'speed'"):
        call("experiment design", ws, kind="split", change="speed=60")
    opt = call("experiment design", ws, kind="optimise", factors="peak_setpoint").experiment
    with pytest.raises(UserError, match="only a split run goes through the outbox"):
        call("experiment run", ws, id=opt["id"])
    split = call("experiment design", ws, kind="split", change="peak_setpoint=250").experiment
    with pytest.raises(UserError, match="has not started"):
        call("experiment analyse", ws, id=split["id"])
    assert call("act list", ws).actions == []
    # the same command over REST, from its one definition
    client = TestClient(create_app(ws), base_url="http://localhost")
    bad = client.post("/api/experiment/analyse", json={"id": split["id"]})
    assert bad.status_code == 400 and "has not started" in bad.json()["error"]["message"]
    client.post("/api/experiment/run", json={"id": split["id"], "lots": 2}).raise_for_status()
    bad = client.post("/api/experiment/verdict", json={"id": split["id"]})
    assert bad.status_code == 400 and "experiment analyse" in bad.json()["error"]["message"]
    bad = client.post("/api/experiment/analyse", json={"id": split["id"]})
    assert bad.status_code == 400 and "no data for experiment" in bad.json()["error"]["message"]
