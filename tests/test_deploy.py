"""Deploying models on a simulated line: train, register, shadow → canary → full, roll back, score, relabel.

Every test that keeps a workspace runs on both backends: a DuckDB folder, and a PostgreSQL schema
of its own (the deploy stage's SQL runs on the replica, its rows go to the database).
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import skops.io as sio
from fastapi.testclient import TestClient
from postgres_service import admin, fresh_schema
from typer.testing import CliRunner

from linelab.act.simulation import open_workspace_line, record_simulation
from linelab.api.app import create_app
from linelab.cli import build_app
from linelab.commands import call
from linelab.deploy import predict, registry, rollout, serving
from linelab.deploy.features import features_of, frame_from_records, matrix, unit_features, unit_frame, vector
from linelab.deploy.sequential import PairedTest, mixture_halfwidth
from linelab.errors import UserError
from linelab.experiment.sequential import MixtureSPRT
from linelab.line import open_simulator
from linelab.store import Workspace
from linelab.store.pg_address import DATABASE_FILE, DatabaseURL

# A seal lot fails a quarter of its units at the leak test (units ~5,600 to ~8,200); the next lot is good.
# Trained on the first 7,600 units, a model meets the rest of the bad lot and then the good one.
SCENARIO = "assembly:bad_lot_fails"
STATION = "LEAK"
TRAIN_UNITS = 7600
runner = CliRunner()


@pytest.fixture(scope="module", params=["duckdb", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def new_workspace(backend: str, folder: Path) -> Iterator[Path]:
    """An empty workspace's folder: a DuckDB one, or the local folder of a PostgreSQL schema of its own."""
    if backend == "duckdb":
        yield folder
        return
    with fresh_schema(folder) as (url, _):
        Workspace.open(url).close()  # makes the schema and links the folder to it
        yield folder


@pytest.fixture(scope="module")
def trained(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A zoo line's workspace with a good model (M-0001) and one trained on shuffled labels (M-0002)."""
    with new_workspace(backend, tmp_path_factory.mktemp("deploy") / "ws") as root:
        line = open_simulator("zoo", SCENARIO, 0)
        with Workspace.open(root) as ws:
            while line.units_produced < TRAIN_UNITS:
                ws.ingest_tables(line.produce(1900), source=line.source)
            record_simulation(ws, line, "zoo", SCENARIO, 0)
        good = call("model train", root, station=STATION)
        # a control that learned nothing but inspects its share anyway, as a line with fixed capacity would
        bad = call("model train", root, station=STATION, shuffle_labels=True, fill_capacity=True)
        assert (good.model["id"], bad.model["id"]) == ("M-0001", "M-0002")
        yield root


@pytest.fixture
def ws_path(trained: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the trained workspace for one test to change."""
    registry._CACHE.clear()
    copy = tmp_path / "ws"
    shutil.copytree(trained, copy)
    url = (trained / DATABASE_FILE).read_text().strip() if (trained / DATABASE_FILE).exists() else None
    if url is None:
        yield copy
        return
    with fresh_schema(copy) as (new_url, schema):
        _copy_schema(DatabaseURL.parse(url).schema, schema)
        (copy / DATABASE_FILE).write_text(new_url + "\n")
        yield copy


def _copy_schema(source: str, target: str) -> None:
    """A PostgreSQL workspace's tables, rows and batch sequence, copied into a new schema."""
    with admin() as con:
        con.execute(f'CREATE SCHEMA "{target}"')
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                            (source,))]
        for t in names:
            con.execute(f'CREATE TABLE "{target}"."{t}" (LIKE "{source}"."{t}" INCLUDING ALL)')
            con.execute(f'INSERT INTO "{target}"."{t}" SELECT * FROM "{source}"."{t}"')
        last, called = con.execute(f'SELECT last_value, is_called FROM "{source}".batch_seq').fetchone() or (1, False)
        con.execute(f'CREATE SEQUENCE "{target}".batch_seq START 1')
        con.execute("SELECT setval(%s, %s, %s)", (f'"{target}".batch_seq', last, called))


def _produce(path: Path, units: int) -> None:
    """The line runs on: more units, with their results, into the workspace."""
    with Workspace.open(path) as ws:
        held = open_workspace_line(ws)
        ws.ingest_tables(held.line.produce(units), source=held.source)


def _predictions(path: Path, version: str) -> list[dict[str, Any]]:
    with Workspace.open(path) as ws:
        return ws.query("SELECT unit_id, decision, acted, stage FROM deploy_predictions WHERE version = ? "
                        "ORDER BY t, unit_id", [version]).to_pylist()


def test_training_is_recorded_and_learns_the_failures(trained: Path) -> None:
    good = call("model show", trained, version="M-0001").model
    bad = call("model show", trained, version="M-0002").model
    assert good["data"]["seq_from"] == 1 and good["data"]["seq_to"] >= 7 and good["data"]["units"] > 6000
    assert good["code"]["linelab"] and good["params"]["seed"] == 0 and good["parent"] is None
    assert bad["parent"] == "M-0001" and bad["data"]["shuffled"]
    # features come from the stations before the leak test, named as the profile names them
    names = [n for n in good["features"]["numeric"]] + good["features"]["categorical"]
    assert {f["station"] for f in names if f.get("station")} <= {"PRESS", "SCREW"}
    m = good["metrics"]
    assert m["auc"] > 0.85 and m["precision"] > 3 * m["bad_rate"] and m["recall"] > 0.3
    assert bad["metrics"]["auc"] < 0.65
    assert good["operating"]["inspect_threshold"] is not None


def test_a_model_whose_inspections_would_not_pay_inspects_nothing(ws_path: Path) -> None:
    """A model that has learned nothing finds failures among the units it would inspect no more often
    than among any: the holdout does not show that inspecting them pays, and it sends no unit."""
    rec = call("model train", ws_path, station=STATION, shuffle_labels=True).model
    assert rec["operating"]["inspect_threshold"] is None
    assert rec["metrics"]["inspected"] == 0 and rec["metrics"]["saving_per_unit"] >= 0
    forced = call("model show", ws_path, version="M-0002").model  # the same control, made to fill its share
    assert forced["metrics"]["inspected"] > 0
    # at costs where finding a failure early is worth far more, the good model inspects more units
    good = call("model show", ws_path, version="M-0001").model
    dear = call("model train", ws_path, station=STATION, cost_fail=100.0).model
    assert dear["metrics"]["inspected"] >= good["metrics"]["inspected"]


def test_registry_round_trip_is_skops_without_pickle(ws_path: Path) -> None:
    with Workspace.open(ws_path) as ws:
        rec = registry.get(ws, "M-0001")
        path = ws_path / rec.file
        assert zipfile.is_zipfile(path) and set(sio.get_untrusted_types(file=path)) <= set(registry.TRUSTED)
        with zipfile.ZipFile(path) as z:
            assert not any(n.endswith((".pkl", ".pickle")) for n in z.namelist())
        x = matrix(unit_frame(ws, rec.features, "batch <= 3"), rec.features)
        first = predict.scores(rec, registry.load(ws, rec), x)
    registry._CACHE.clear()
    with Workspace.open(ws_path) as ws:  # another process, the same model
        again = predict.scores(rec, registry.load(ws, registry.get(ws, "M-0001")), x)
    assert len(first) > 1000 and np.array_equal(first, again)
    with pytest.raises(UserError, match="no model is live"):
        call("model score", ws_path, station=STATION, unit="U")


@pytest.mark.parametrize("planted", ["pickle", "foreign_type"])
def test_planted_model_file_is_refused(ws_path: Path, planted: str) -> None:
    marker = ws_path / "owned"
    with Workspace.open(ws_path) as ws:
        rec = registry.get(ws, "M-0001")
        target = ws_path / rec.file
        if planted == "pickle":
            target.write_bytes(pickle.dumps(_Exploit(str(marker))))
            message = "not a skops archive"
        else:
            sio.dump({"payload": _Foreign()}, target)
            message = "does not trust"
        with pytest.raises(UserError, match=message):
            registry.load(ws, rec)
    result = runner.invoke(build_app(), ["model", "promote", "M-0001", "--to", "shadow", "-w", str(ws_path)])
    assert result.exit_code == 0  # moving a version reads no file
    _produce(ws_path, 50)
    result = runner.invoke(build_app(), ["model", "score", "--station", STATION, "-w", str(ws_path)])
    assert result.exit_code == 2 and message in result.output
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


class _Foreign:
    pass


def test_shadow_scores_every_unit_and_acts_on_none(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="full", force=True)
    call("model promote", ws_path, version="M-0002", to="shadow")
    _produce(ws_path, 600)
    out = call("model score", ws_path, station=STATION, review=False).result
    assert out["units"] == 600 and out["by_version"] == {"M-0001": 600, "M-0002": 0}
    shadow = _predictions(ws_path, "M-0002")
    assert len(shadow) == 600 and not any(r["acted"] for r in shadow)
    assert {r["decision"] for r in shadow} & {"inspect"}  # it would have acted, but did not
    assert all(r["acted"] for r in _predictions(ws_path, "M-0001"))


def test_canary_share_is_respected_and_stable(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="canary", share=0.25)
    _produce(ws_path, 1200)
    out = call("model score", ws_path, station=STATION, review=False).result
    acted = [r for r in _predictions(ws_path, "M-0001") if r["acted"]]
    assert len(_predictions(ws_path, "M-0001")) == 1200
    assert abs(len(acted) / 1200 - 0.25) < 0.04 and out["by_version"]["M-0001"] == len(acted)
    # the same serial is routed the same way, every time and in every process
    serials = np.array([r["unit_id"] for r in _predictions(ws_path, "M-0001")])
    again = rollout.canary_units(serials, STATION, 0.25)
    assert sorted(serials[again].tolist()) == sorted(r["unit_id"] for r in acted)


def test_shuffled_label_canary_is_rolled_back_and_opens_a_problem(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="full", force=True)
    call("model promote", ws_path, version="M-0002", to="canary", share=0.2)
    _produce(ws_path, 1500)
    changes = call("model score", ws_path, station=STATION).changes
    assert [(c["version"], c["event"], c["to"]) for c in changes] == [("M-0002", "rollback", "retired")]
    assert "sd less per unit than M-0001" in changes[0]["reason"]
    assert 0 < changes[0]["evidence"]["misrouted"] < changes[0]["evidence"]["labelled"] * 0.2
    problem = call("problem show", ws_path, id=changes[0]["problem"], plot="none").model_dump()
    text = json.dumps(problem)
    assert "M-0002" in text and "rolled back" in text
    listed = call("model list", ws_path, station=STATION)
    assert listed.deployments[0]["full"] == "M-0001" and listed.deployments[0]["canary"] is None
    # its live metrics as a canary, period by period, cover every unit it scored
    periods = call("model metrics", ws_path, version="M-0002").periods
    assert {r["stage"] for r in periods} == {"canary"} and sum(r["units"] for r in periods) == 1500
    # after the rollback the incumbent decides for every unit again
    _produce(ws_path, 200)
    assert call("model score", ws_path, station=STATION).result["by_version"] == {"M-0001": 200}
    assert call("model score", ws_path, station=STATION).result["units"] == 0  # nothing new: nothing scored


def test_good_model_is_promoted_by_live_evidence(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="canary", share=0.2)
    with pytest.raises(UserError, match="not yet better"):
        call("model promote", ws_path, version="M-0001", to="full")
    _produce(ws_path, 1200)
    changes = call("model score", ws_path, station=STATION).changes
    assert [(c["version"], c["event"], c["from"], c["to"]) for c in changes] == [("M-0001", "promote", "canary",
                                                                                  "full")]
    assert changes[0]["evidence"]["lower"] > 0 and changes[0]["by"] == "review"
    shown = call("model show", ws_path, version="M-0001")
    assert shown.stage == "full" and [e["to"] for e in shown.events] == ["canary", "full"]
    canary = shown.scored[0]
    assert canary["stage"] == "canary" and canary["units"] == 1200 and 0 < canary["acted"] < 400


def test_signoff_holds_a_promotion_until_a_person_gives_it(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="canary", require_signoff=True)
    _produce(ws_path, 1200)
    changes = call("model score", ws_path, station=STATION).changes
    assert [c["event"] for c in changes] == ["awaiting_signoff"]
    assert call("model list", ws_path).deployments[0]["awaiting_signoff"] == "M-0001"
    event = call("model promote", ws_path, version="M-0001", to="full", by="quality lead").events[0]
    assert event["by"] == "quality lead" and event["reason"].startswith("signed off")


def test_manual_rollback_of_the_incumbent_restores_its_predecessor(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0002", to="full", force=True)
    call("model promote", ws_path, version="M-0001", to="full", force=True)
    event = call("model rollback", ws_path, station=STATION, reason="operators report odd routing").events[0]
    assert event["version"] == "M-0001" and event["problem"].startswith("PRB-")
    assert call("model list", ws_path).deployments[0]["full"] == "M-0002"


def test_score_endpoint_routes_records_and_answers(ws_path: Path) -> None:
    call("model promote", ws_path, version="M-0001", to="full", force=True)
    call("model promote", ws_path, version="M-0002", to="shadow")
    with Workspace.open(ws_path) as ws:
        unit = ws.scalar("SELECT max(unit_id) FROM units")
        reading = registry.get(ws, "M-0001").features.numeric[0]
        press = ws.query(f"SELECT * FROM {reading.table} WHERE unit_id = ? AND station = ? AND name = ?",
                         [unit, reading.station, reading.reading])
    with TestClient(create_app(ws_path), base_url="http://localhost") as client:
        r = client.post("/score", json={"station": STATION, "unit_id": unit})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == "M-0001" and body["decision"] in ("inspect", "pass", "none")
        assert set(body["shadow"]) == {"M-0002"}
        # a station can hand the unit's readings in; unknown names are refused with the name
        r = client.post("/score", json={"station": STATION, "unit_id": "NEW-1", "features": {"nonsense": 1}})
        assert r.status_code == 400 and "nonsense" in r.json()["error"]["message"]
        r = client.post("/api/model/score", json={"station": STATION, "unit": unit})
        assert r.status_code == 200 and r.json()["result"]["version"] == "M-0001"
        # a reading of the unit that arrives later (ingested through the server) is read by its next
        # request, as a batch would read it
        late = press.set_column(press.schema.get_field_index("value"), "value", pa.array([1e6]))
        late = late.set_column(late.schema.get_field_index("t"), "t",
                               pc.add(late.column("t"), pa.scalar(1_000_000, pa.duration("us"))))
        text = "unit_id,station,name,value,t\n" + "".join(
            f"{r['unit_id']},{r['station']},{r['name']},{r['value']},{r['t'].isoformat(sep=' ')}\n"
            for r in late.to_pylist())
        r = client.post("/api/ingest", files=[("paths", (f"{reading.table}.csv", text.encode(), "text/csv"))])
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
        with Workspace.open(ws_path) as ws:
            rec = registry.get(ws, "M-0001")
            x = matrix(frame_from_records([unit_features(ws, rec.features, unit) or {}], rec.features),
                       rec.features)
            expected = float(predict.scores(rec, registry.load(ws, rec), x)[0])
        again = client.post("/score", json={"station": STATION, "unit_id": unit}).json()
        assert again["score"] == pytest.approx(expected, rel=1e-12)
        # the server lets the file go when idle; the next request opens it again and answers the same
        client.app.state.pool.close()
        r = client.post("/score", json={"station": STATION, "unit_id": unit})
        assert r.status_code == 200 and r.json() == again
    # the rows are stored by group commit: every request's, by the time the server stops
    assert [r["unit_id"] for r in _predictions(ws_path, "M-0001")] == [unit] * 4


def test_relabels_feed_the_next_training(ws_path: Path) -> None:
    with Workspace.open(ws_path) as ws:
        failed = ws.query("SELECT DISTINCT unit_id FROM steps WHERE station = ? AND result <> 'pass' ORDER BY 1 "
                          "LIMIT 3", [STATION]).column(0).to_pylist()
    for u in failed:
        result = runner.invoke(build_app(), ["model", "label", u, "--verdict", "false_fail", "--note", "retest ok",
                                             "-w", str(ws_path)])
        assert result.exit_code == 0, result.output
    before = call("model show", ws_path, version="M-0001").model["data"]
    after = call("model train", ws_path, station=STATION).model
    assert after["data"]["verdicts"] == 3 and after["data"]["bad"] == before["bad"] - 3
    assert after["parent"] == "M-0002"
    result = runner.invoke(build_app(), ["model", "label", "NO-SUCH", "--verdict", "escape", "-w", str(ws_path)])
    assert result.exit_code == 2 and "NO-SUCH" in result.output


def test_a_unit_scored_alone_reads_what_batch_scoring_reads(trained: Path) -> None:
    with Workspace.open(trained) as ws:
        rec = registry.get(ws, "M-0001")
        frame = unit_frame(ws, rec.features, "batch >= 5")
        some = frame.column("unit_id").to_pylist()[::97]
        batch = matrix(frame.filter(pc.is_in(frame.column("unit_id"), pa.array(some))), rec.features)
        # what a request reads: the unit's records held by the server process, coded one row at a time
        held = serving.recent_units(ws)
        alone = np.vstack([vector(features_of(held.get(ws, u) or {}, rec.features), rec.features) for u in some])
    assert len(some) > 20 and np.array_equal(np.isnan(batch), np.isnan(alone))
    assert np.allclose(np.nan_to_num(batch), np.nan_to_num(alone))


def test_a_few_units_score_exactly_as_scikit_learn_scores_them(trained: Path) -> None:
    # a request's unit goes through LineLab's walk of the trees, a batch through scikit-learn's
    with Workspace.open(trained) as ws:
        for version in ("M-0001", "M-0002"):
            rec = registry.get(ws, version)
            est = registry.load(ws, rec)
            x = matrix(unit_frame(ws, rec.features, "batch >= 4"), rec.features)
            for j in range(x.shape[1]):  # missing readings and unknown levels, column by column
                x[j::x.shape[1] + 3, j] = np.nan
            few = np.concatenate([predict.scores(rec, est, x[i:i + predict.FEW])
                                  for i in range(0, len(x), predict.FEW)])
            assert len(x) > 1000 and np.array_equal(few, est.predict_proba(x)[:, 1])


def test_promotion_test_is_the_experiments_mixture_sprt_and_holds_its_error_rate() -> None:
    # the same normal-mixture boundary as the split-run test, at the same variance and tau
    s2 = np.array([1e-4, 4e-5])
    assert np.allclose(mixture_halfwidth(s2, 0.01**2, 0.05), MixtureSPRT(tau=0.01)._halfwidth(s2, 0.05))
    rng = np.random.default_rng(0)
    test = PairedTest()
    null = [test.run(rng.choice([-1.0, 0.0, 0.0, 1.0], 3000))["decision"] for _ in range(200)]
    assert np.mean([d == "better" for d in null]) <= 0.05
    assert test.run(rng.choice([-1.0, 0.0, 1.0, 1.0], 3000))["decision"] == "better"


def test_anomaly_detector_is_rolled_back_when_its_inputs_drift(backend: str, tmp_path: Path) -> None:
    from linelab.zoo import open_line

    line = open_line("assembly:machine_step", seed=0, units=3000)  # a press steps out of its level
    onset = line.truth[0]["onset_unit"]
    with new_workspace(backend, tmp_path / "ws") as root:
        _drifting_anomaly_detector_is_rolled_back(line, onset, root)


def _drifting_anomaly_detector_is_rolled_back(line: Any, onset: int, root: Path) -> None:
    with Workspace.open(root) as ws:
        ws.ingest_tables(line.produce(onset), source=line.source)
        record_simulation(ws, line, "zoo", "assembly:machine_step", 0)
    model = call("model train", root, station="PRESS", kind="anomaly").model
    assert model["kind"] == "anomaly" and {f["station"] for f in model["features"]["numeric"]} == {"PRESS"}
    with pytest.raises(UserError, match="only failure predictors"):
        call("model export", root, version=model["id"], mlflow=root / "mlflow")
    call("model promote", root, version=model["id"], to="full", force=True)
    with Workspace.open(root) as ws:
        dep = rollout.get(ws, "PRESS")  # judge it by its inputs alone: a half-sigma move is enough here
        dep.guards = dep.guards.model_copy(update={"max_shift": 0.5, "max_loss": 100.0})
        rollout.save(ws, dep)
        ws.ingest_tables(line.produce(800), source=line.source)
    changes = call("model score", root, station="PRESS").changes
    assert [c["event"] for c in changes] == ["rollback"], changes
    assert "inputs drifted: PRESS.press_force_kn moved" in changes[0]["reason"], changes[0]["evidence"]
    assert changes[0]["evidence"]["max_shift_sd"] > 0.5 and changes[0]["problem"].startswith("PRB-")


def test_export_to_mlflow_loads_in_mlflow_and_scores_as_linelab_does(ws_path: Path, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import yaml

    folder = tmp_path / "mlflow-model"
    result = runner.invoke(build_app(), ["model", "export", "M-0001", "--mlflow", str(folder), "-w", str(ws_path)])
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    assert meta["flavors"]["sklearn"]["serialization_format"] == "skops"  # no pickle: loading runs no code
    assert (folder / "model.skops").read_bytes() == (ws_path / "models" / "M-0001.skops").read_bytes()
    assert any(r.startswith("scikit-learn==") for r in (folder / "requirements.txt").read_text().split())
    model = mlflow.pyfunc.load_model(str(folder))
    example = json.loads((folder / "input_example.json").read_text())
    frame = pd.DataFrame(example["data"], columns=example["columns"], dtype=float)
    with Workspace.open(ws_path) as ws:
        rec = registry.get(ws, "M-0001")
        ours = predict.scores(rec, registry.load(ws, rec), frame.to_numpy())
    assert [c.name for c in model.metadata.get_input_schema().inputs] == rec.features.names
    assert np.allclose(np.asarray(model.predict(frame))[:, 1], ours)
    linelab = model.metadata.metadata["linelab"]
    assert linelab["version"] == "M-0001" and linelab["operating_point"]["inspect_threshold"] == \
        rec.operating.inspect_threshold
    assert set(linelab["categories"]) == {c.name for c in rec.features.categorical}
    # the same through REST: the server picks the folder and links the files
    client = TestClient(create_app(ws_path), base_url="http://localhost")
    r = client.post("/api/model/export", json={"version": "M-0001"})
    assert r.status_code == 200, r.text
    served = yaml.safe_load(client.get(r.json()["files"]["MLmodel"]).text)
    assert (served["flavors"], served["signature"]) == (meta["flavors"], meta["signature"])
    with pytest.raises(UserError, match="not an empty folder"):
        call("model export", ws_path, version="M-0002", mlflow=folder)
