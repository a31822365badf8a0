"""The process model: recipe -> readings -> defects, learned from a few trials on the twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from scipy.stats import spearmanr

from linelab.experiment.optimise import RecipeOptimizer, tune_bounds
from linelab.experiment.process_model import ProcessModel, readings_of, unit_readings
from linelab.experiment.runner import run_search
from linelab.store import Workspace
from linelab.twin import Line
from linelab.twin.simulator import twin_profile

BOUNDS = tune_bounds(twin_profile())
NAMES = list(BOUNDS)
LO = np.array([BOUNDS[n][0] for n in NAMES])
HI = np.array([BOUNDS[n][1] for n in NAMES])


def normalise(recipe: dict[str, float]) -> np.ndarray:
    return (np.array([recipe[n] for n in NAMES]) - LO) / (HI - LO)


def recipe_of(u: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(NAMES, LO + np.clip(u, 0, 1) * (HI - LO), strict=True)}


class Trials:
    """Production runs on a clean twin line, each stored and read back as `unit_readings`."""

    def __init__(self, folder: Path, seed: int = 1) -> None:
        self.ws = Workspace.open(folder)
        self.line = Line("clean", seed=seed)

    def run(self, recipe: dict[str, float], units: int = 2000) -> tuple[int, int, object]:
        self.line.apply({"kind": "set_recipe", "params": recipe})
        chunk = self.line.produce(units)
        self.ws.ingest_tables(chunk.tables, source="test")
        t = pc.min_max(chunk["units"].column("t_start")).as_py()
        passed = int(pc.sum(chunk["units"].column("first_pass").cast("int64")).as_py())
        return chunk["units"].num_rows, passed, unit_readings(self.ws, t["min"], t["max"])


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trials, np.ndarray, list]:
    t = Trials(tmp_path_factory.mktemp("pm"))
    rng = np.random.default_rng(0)
    start = normalise(t.line.recipe)
    recipes = np.array([start] + [np.clip(start + rng.uniform(-0.2, 0.2, 4), 0, 1) for _ in range(5)])
    tables = [t.run(recipe_of(u))[2] for u in recipes]
    return t, recipes, tables


def test_readings_are_one_row_per_unit_with_the_first_failure(trials: tuple) -> None:
    _, _, tables = trials
    table = tables[0]
    assert table.num_rows == 2000
    assert {"SPI.paste_volume_pct", "REFLOW.peak_temp_c", "PRINT.ambient_humidity_pct"} <= set(table.column_names)
    codes = table.column("code").to_pylist()
    failed = [not p for p in table.column("first_pass").to_pylist()]
    # every unit that failed first time names a code; BRIDGE (too much paste) leads at the start recipe
    assert all(c is not None for c, f in zip(codes, failed, strict=True) if f)
    assert max(set(codes) - {None}, key=codes.count) == "BRIDGE"


def test_predicts_the_yield_surface_from_six_trials(trials: tuple) -> None:
    t, recipes, tables = trials
    model = ProcessModel(seed=0).fit(recipes, tables)
    assert model.ready
    # the recipe moves paste volume and peak temperature; the weather is its own
    assert {"SPI.paste_volume_pct", "REFLOW.peak_temp_c"} <= set(model.driven)
    assert "PRINT.ambient_humidity_pct" not in model.driven
    rng = np.random.default_rng(1)
    start, best = normalise(t.line.recipe), normalise(t.line.optimal_recipe())
    probe = np.vstack([start, best, np.clip(start + rng.uniform(-0.3, 0.3, (10, 4)), 0, 1)])
    predicted = model.predict(probe)
    true = np.array([t.line.expected_yield(recipe_of(u)) for u in probe])
    assert spearmanr(predicted, true).statistic > 0.8
    assert predicted[1] > predicted[0] + 0.01  # the optimum, never tried, is seen to beat the start
    assert abs(predicted[0] - true[0]) < 0.01


def test_fewer_trials_than_recipe_parameters_leave_the_model_unready(trials: tuple) -> None:
    _, recipes, tables = trials
    assert not ProcessModel().fit(recipes[:4], tables[:4]).ready


def test_optimiser_learning_through_the_process_finds_a_better_recipe(tmp_path: Path) -> None:
    # Seeds 0-7 close 0.85-0.95 of the way, but for seed 2, where six trials find nothing better.
    t = Trials(tmp_path, seed=0)
    first = dict(t.line.recipe)
    units, passed, readings = t.run(first, 2500)
    opt = RecipeOptimizer(BOUNDS, seed=0)
    opt.fit({"recipe": first, "units": units, "passed": passed, "readings": readings})
    for _ in range(6):
        recipe = opt.ask()
        units, passed, readings = t.run(recipe, 2500)
        opt.update(recipe, units, passed, readings=readings)
    assert opt.process is not None and opt.process.ready
    start, found, best = (t.line.expected_yield(r) for r in (first, opt.best(), t.line.optimal_recipe()))
    # six trials close most of the way from the start (~95.5%) to the optimum (~98.1%)
    assert found - start > 0.75 * (best - start)


def test_readings_of_just_produced_tables_equal_the_stored_ones(tmp_path: Path) -> None:
    t = Trials(tmp_path, seed=3)
    chunk = t.line.produce(500)
    t.ws.ingest_tables(chunk.tables, source="test")
    span = pc.min_max(chunk["units"].column("t_start")).as_py()
    stored, fresh = unit_readings(t.ws, span["min"], span["max"]), readings_of(chunk.tables)
    assert stored.column_names == fresh.column_names and stored.num_rows == fresh.num_rows == 500
    for name in stored.column_names:
        a, b = stored.column(name).to_pylist(), fresh.column(name).to_pylist()
        assert a == b or np.allclose(np.array(a, float), np.array(b, float), equal_nan=True), name


def test_a_recipe_search_run_off_the_loop_learns_through_the_process() -> None:
    """`experiment design --kind optimise` runs `run_search` on a line with no workspace under it:
    its optimiser is told each trial's readings all the same, and so builds its process model."""
    line = Line("clean", seed=4)
    opt = RecipeOptimizer(BOUNDS, seed=4).fit({"recipe": dict(line.recipe)})
    res = run_search(line, opt, budget_units=6 * 1500, units_per_trial=1500, guardrail=False)
    assert len(res.steps) == 6
    assert all(o.readings is not None and o.readings.num_rows == 1500 for o in opt.observations[1:])
    assert opt.process is not None and opt.process.ready


def test_prediction_recomputes_only_what_the_recipe_moves_and_stays_exact(trials: tuple) -> None:
    """`predict` keeps each defect's logit from the readings no recipe moves and recomputes only
    the moved readings' share: it must equal scoring every unit's whole basis with each model."""
    t, recipes, tables = trials
    model = ProcessModel(seed=0).fit(recipes, tables)
    probe = np.clip(recipes[0] + np.random.default_rng(2).uniform(-0.3, 0.3, (5, 4)), 0, 1)
    direct = []
    for r in probe:
        x = model._sample_x.copy()
        x[:, model._driven_idx] += (r - model._sample_u) @ model._map
        basis = model._basis(x)
        log_survive = model._plain + sum(np.log1p(-m.predict_proba(basis)[:, 1]) for m in model._models.values())
        direct.append(np.exp(log_survive).mean())
    assert np.allclose(model.predict(probe), direct, atol=1e-12)
