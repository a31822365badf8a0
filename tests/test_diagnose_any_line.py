"""Diagnosis on lines LineLab was not written for (the zoo): the right cause first, not what merely ran then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from linelab.commands import call
from linelab.profile.io import save_profile
from linelab.store import Workspace
from linelab.zoo import open_line

FAILS = {"bad_lot_fails", "aliased_lot", "shift_handling", "operator_handling", "intermittent"}


def diagnose_zoo(tmp_path: Path, scenario: str, seed: int, affected: int = 300) -> tuple[Any, dict[str, Any]]:
    """Run a zoo line until its problem has touched `affected` units (or ended), open the problem a
    monitor would open from its symptom, and diagnose it with `linelab diagnose`."""
    line = open_line(scenario, seed)
    ws = Workspace.open(tmp_path / "ws")
    save_profile(line.profile, tmp_path / "ws" / "profile.yaml")
    truth = line.truth[0]
    ws.ingest_tables(line.produce(truth["onset_unit"]), source=line.source)
    while True:
        ws.ingest_tables(line.produce(50), source=line.source)
        truth = line.truth[0]
        if truth["affected_units"] >= affected or truth["status"] == "ended":
            break
    sym = truth["symptom"]
    measured = truth["type"] not in FAILS
    scope = {"station": sym["station"], **({"measurement": sym["reading"]} if measured else {})}
    ws.put_artifact("problem", "PRB-0001", {
        "id": "PRB-0001", "status": "open", "kind": "measurement_shift" if measured else "defect_rate",
        "entity": sym["station"], "scope": scope, "onset": {"t": truth["onset_time"]},
        "first_evidence": {"t": truth["onset_time"]}, "latest_evidence": {"t": None},
        "description": f"{sym['reading'] or 'failures'} at {sym['station']}",
    })
    ws.close()
    return call("diagnose", workspace=tmp_path / "ws", problem_id="PRB-0001").diagnosis, truth


def names(diagnosis: Any) -> list[tuple[str, str]]:
    return [(c.entity.kind, str(c.entity.name)) for c in diagnosis.causes]


def test_a_bad_lot_is_named_before_the_room_readings_that_wandered_meanwhile(tmp_path):
    dx, truth = diagnose_zoo(tmp_path, "meddev:bad_lot_fails", 104)
    assert names(dx)[0] == ("lot", truth["cause"]["name"])


def test_a_new_lot_is_named_before_the_product_and_shift_that_ran_through_it(tmp_path):
    # the incident is a few hours: one product, one shift, one housing lot and the bad seal lot
    # hold all of it; only the seal lot began with the failures
    dx, truth = diagnose_zoo(tmp_path, "assembly:bad_lot_fails", 104)
    assert names(dx)[0] == ("lot", truth["cause"]["name"])
    product = next(c for c in dx.causes if c.entity.kind == "product")
    assert product.explained_by and truth["cause"]["name"] in product.explained_by


def test_a_lot_loaded_on_one_machine_is_named_before_the_machine_that_ran_cleanly_before(tmp_path):
    dx, truth = diagnose_zoo(tmp_path, "assembly:aliased_lot:subtle", 105)
    ranked = names(dx)
    assert ranked[0] == ("lot", truth["cause"]["name"])
    assert ("machine", truth["aliased_with"]["name"]) in ranked[1:]


def test_an_operator_of_the_shift_at_fault_does_not_outrank_the_shift(tmp_path):
    dx, truth = diagnose_zoo(tmp_path, "machining:shift_handling", 107)
    ranked = names(dx)
    assert ranked[0] == ("shift", truth["cause"]["name"])
    shift_ops = [i for i, (kind, name) in enumerate(ranked) if kind == "operator" and name.startswith(
        f"OP-{truth['cause']['name']}")]
    assert all(i > 0 for i in shift_ops)


@pytest.mark.parametrize("scenario, seed", [("assembly:env_excursion", 106)])
def test_the_room_reading_that_moved_the_measurement_comes_before_one_that_only_wandered(tmp_path, scenario, seed):
    dx, truth = diagnose_zoo(tmp_path, scenario, seed)
    top = dx.causes[0]
    assert top.entity.name == truth["cause"]["name"]
    wandered = next(c for c in dx.causes if c.entity.name == "humidity_pct")
    assert wandered.rank > 1
