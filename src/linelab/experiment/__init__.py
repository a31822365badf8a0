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

from __future__ import annotations

from typing import TYPE_CHECKING

from linelab.lazy import lazy_attributes

if TYPE_CHECKING:
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

# Loaded on first use, so that importing one module of the package does not load them all
# (and the heavy libraries they need): commands start fast.
_HOME = {
    "DesignedExperiment": "linelab.experiment.analysis", "DOEAnalysis": "linelab.experiment.analysis",
    "analyse": "linelab.experiment.analysis", "Design": "linelab.experiment.designs",
    "Factor": "linelab.experiment.designs", "box_behnken": "linelab.experiment.designs",
    "central_composite": "linelab.experiment.designs", "fractional_factorial": "linelab.experiment.designs",
    "full_factorial": "linelab.experiment.designs", "make_design": "linelab.experiment.designs",
    "RecipeOptimizer": "linelab.experiment.optimise", "trial_guardrail": "linelab.experiment.optimise",
    "tune_bounds": "linelab.experiment.optimise", "run_design": "linelab.experiment.runner",
    "run_search": "linelab.experiment.runner", "run_split": "linelab.experiment.runner",
    "run_trial": "linelab.experiment.runner", "GridSearch": "linelab.experiment.search",
    "OneFactorAtATime": "linelab.experiment.search", "RandomSearch": "linelab.experiment.search",
    "BayesianSplitTest": "linelab.experiment.sequential", "MixtureSPRT": "linelab.experiment.sequential",
    "SplitRunTest": "linelab.experiment.sequential", "make_test": "linelab.experiment.sequential",
    "ArmSummary": "linelab.experiment.verdict", "Verdict": "linelab.experiment.verdict",
}

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


__getattr__ = lazy_attributes(__name__, _HOME, globals())
