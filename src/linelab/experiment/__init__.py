"""experiment stage: production runs as experiments, with a statistical verdict before a change is adopted.

One shape for every experimenter (like scikit-learn / river): `fit(reference)`, `update(...)`
with a batch or one record, `verdict()`.

    from linelab.experiment import MixtureSPRT, make_design, Factor, DesignedExperiment, RecipeOptimizer
    test = MixtureSPRT(alpha=0.05).fit()
    test.update(arm, passed)                 # arm 0/1 per unit, passed bool per unit
    test.verdict().decision                  # adopt | reject | inconclusive | continue

    design = make_design("ccd", [Factor("pressure", 5, 9), Factor("speed", 30, 60)])
    doe = DesignedExperiment(design).fit({"recipe": line.recipe})
    run_design(line, doe, units_per_run=1000); doe.analysis(); doe.verdict()

    opt = RecipeOptimizer(tune_bounds(line.profile), seed=0).fit({"recipe": line.recipe})
    run_search(line, opt, budget_units=60_000, units_per_trial=2000); opt.best()

Workspace level (artefacts, events, plots, adoption): `linelab.experiment.experiments`.
"""

from linelab.experiment.analysis import DesignedExperiment, DOEAnalysis, analyse
from linelab.experiment.designs import (
    Design,
    Factor,
    box_behnken,
    central_composite,
    fractional_factorial,
    full_factorial,
    make_design,
)
from linelab.experiment.optimise import RecipeOptimizer, trial_guardrail, tune_bounds
from linelab.experiment.runner import run_design, run_search, run_split, run_trial
from linelab.experiment.search import GridSearch, OneFactorAtATime, RandomSearch
from linelab.experiment.sequential import BayesianSplitTest, MixtureSPRT, SplitRunTest, make_test
from linelab.experiment.verdict import ArmSummary, Verdict

__all__ = [
    "ArmSummary",
    "BayesianSplitTest",
    "DOEAnalysis",
    "Design",
    "DesignedExperiment",
    "Factor",
    "GridSearch",
    "MixtureSPRT",
    "OneFactorAtATime",
    "RandomSearch",
    "RecipeOptimizer",
    "SplitRunTest",
    "Verdict",
    "analyse",
    "box_behnken",
    "central_composite",
    "fractional_factorial",
    "full_factorial",
    "make_design",
    "make_test",
    "run_design",
    "run_search",
    "run_split",
    "run_trial",
    "trial_guardrail",
    "tune_bounds",
]
