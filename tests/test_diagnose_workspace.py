"""`linelab diagnose` on a workspace filled by the twin, and in table mode."""

from __future__ import annotations

import json

import pytest

from linelab.commands import call
from linelab.errors import NotFound
from linelab.store import Workspace

twin = pytest.importorskip("linelab.twin")


@pytest.fixture(scope="module")
def nozzle_workspace(tmp_path_factory):
    """A line whose nozzle P1-N4 wears from unit 7000, and the problem the monitor would open."""
    path = tmp_path_factory.mktemp("dx") / "ws"
    scenario = twin.parse_scenario(
        {
            "name": "worn_nozzle",
            "units": 14000,
            "problems": [
                {"id": "nozzle-1", "type": "nozzle_wear", "onset": 7000, "machine": "P1", "nozzle": "N4",
                 "magnitude": 0.07, "ramp": 2000}
            ],
        }
    )  # fmt: skip
    line = twin.Line(scenario, seed=5)
    ws = Workspace.open(path)
    for _ in range(2):
        ws.ingest_tables(line.produce(7000).tables, source="twin:worn_nozzle:5")
    onset = line.truth[0]["onset_time"][:19]
    ws.put_artifact(
        "problem",
        "PRB-0001",
        {
            "id": "PRB-0001",
            "status": "open",
            "kind": "defect_rate",
            "entity": "AOI",
            "scope": {"station": "AOI"},
            "onset": {"unit": None, "t": onset},
            "first_evidence": {"t": onset},
            "latest_evidence": {"t": None},
            "description": "first-pass failures at AOI rose",
        },
    )
    ws.close()
    return path


def test_diagnose_problem_names_the_worn_nozzle_and_stores_it(nozzle_workspace):
    result = call("diagnose", workspace=nozzle_workspace, problem_id="PRB-0001")
    top = result.diagnosis.causes[0]
    assert top.entity is not None and top.entity.kind == "fixture"
    assert top.entity.name == "P1-N4" and top.entity.station == "PLACE"
    assert "MISALIGN" in result.diagnosis.target  # the defect code whose rate rose
    assert result.plot and result.plot.endswith(".png")
    with Workspace.open(nozzle_workspace) as ws:
        stored = ws.get_artifact("diagnosis", "PRB-0001")
    assert stored["diagnosis"]["causes"][0]["level"] == "P1-N4"
    assert json.loads(result.model_dump_json())["problem_id"] == "PRB-0001"


def test_unknown_problem_is_a_clear_error(nozzle_workspace):
    with pytest.raises(NotFound, match="no problem 'PRB-9999'"):
        call("diagnose", workspace=nozzle_workspace, problem_id="PRB-9999")


def test_table_mode_through_the_command(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)

    def table(n: int, bad: bool) -> pd.DataFrame:
        fixture = rng.choice(["F1", "F2", "F3"], n)
        p = np.where((fixture == "F2") & bad, 0.25, 0.03)
        return pd.DataFrame({"fixture": fixture, "temp": rng.normal(25, 1, n), "fail": rng.random(n) < p})

    table(3000, False).to_csv(tmp_path / "normal.csv", index=False)
    table(2000, True).to_parquet(tmp_path / "faulty.parquet")
    result = call(
        "diagnose",
        reference=str(tmp_path / "normal.csv"),
        incident=str(tmp_path / "faulty.parquet"),
        target="fail",
        plot=str(tmp_path / "evidence.html"),
    )
    assert result.diagnosis.causes[0].label == "fixture=F2"
    assert (tmp_path / "evidence.html").read_text().startswith("<html>")
