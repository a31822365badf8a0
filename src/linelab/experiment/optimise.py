"""Sequential optimisation of recipe parameters on the running line, inside safe bounds.

Each trial is a small production run at one recipe. The optimiser is Bayesian optimisation
with a trust region, in the spirit of TuRBO (Eriksson et al. 2019) and of safe BO:

- a Gaussian process on yield (Matérn 5/2, one length scale per parameter) with each
  observation's binomial noise on its diagonal pools every trial's units, so a recipe is
  judged by its neighbours as well as by its own few thousand units;
- trials are drawn only from a box around the incumbent (the tried recipe with the best
  posterior mean) that doubles after successes and halves after failures, and, once the
  model has enough data, only where the GP's lower bound stays within `max_loss` of the
  incumbent — so no trial risks more than a set yield loss;
- the runner stops a trial early when its own yield falls clearly below that floor
  (`trial_guardrail`).

The study is an Optuna study (seeded): `TrustRegionSampler` is an Optuna sampler whose
proposals come from the GP and the trust region, or from Optuna's TPE clipped to the trust
region (`sampler="tpe"`). Every parameter value is clipped to the declared safe bounds
before it leaves the optimiser, whatever the sampler says.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
from optuna.distributions import BaseDistribution, FloatDistribution
from scipy.special import ndtr, ndtri
from scipy.stats import qmc
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern

from linelab.errors import UserError
from linelab.experiment.process_model import ProcessModel
from linelab.experiment.verdict import ArmSummary, Verdict
from linelab.profile.schema import Profile

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Observation:
    recipe: dict[str, float]
    units: int
    passed: int
    stopped_early: bool = False
    kind: str = "trial"  # "reference" for the line's own history at the starting recipe
    readings: pa.Table | None = None  # the units' own readings and defects (see `process_model`)

    @property
    def yield_(self) -> float:
        return self.passed / self.units if self.units else float("nan")


def trial_guardrail(units: int, passed: int, floor: float, alpha: float = 0.05) -> bool:
    """True when a trial's yield is surely below `floor` (one-sided Wilson bound, level alpha)."""
    if units <= 0:
        return False
    z = float(ndtri(1 - alpha))
    p = passed / units
    centre = (p + z * z / (2 * units)) / (1 + z * z / units)
    half = z * math.sqrt(p * (1 - p) / units + z * z / (4 * units * units)) / (1 + z * z / units)
    return centre + half < floor


class YieldModel:
    """GP on the yield of tried recipes (normalised coordinates), binomial noise per trial."""

    def __init__(self, dims: int, seed: int = 0) -> None:
        self.dims = dims
        self.seed = seed
        self.gp: GaussianProcessRegressor | None = None
        self._mean = 0.0
        self._std = 1.0

    def fit(self, x: np.ndarray, units: np.ndarray, passed: np.ndarray, warm: YieldModel | None = None,
            restarts: int | None = 2, offset: np.ndarray | None = None) -> YieldModel:
        """Fit hyperparameters by marginal likelihood; `warm` starts from a previous fit's.

        `restarts=None` keeps the warm kernel's hyperparameters as they are (conditioning only).
        `offset`: a prior prediction of each yield; the GP then learns what it misses.
        """
        y = passed / units - (0.0 if offset is None else offset)
        pooled = float(passed.sum() / units.sum())
        noise = max(pooled * (1 - pooled), 1e-4) / units
        self._mean = float(np.average(y, weights=units))
        self._std = float(max(np.std(y), np.sqrt(noise.mean()), 1e-4))
        # bounds keep marginal likelihood from explaining everything as noise on a few trials:
        # a signal of at least a third of the spread seen, varying over at least a tenth of
        # each parameter's safe range (recipe responses are smooth at that scale)
        kernel = ConstantKernel(1.0, (0.1, 1e2)) * Matern(
            length_scale=np.full(self.dims, 0.3), length_scale_bounds=(0.1, 5.0), nu=2.5
        )
        if warm is not None and warm.gp is not None:
            kernel = warm.gp.kernel_
        gp = GaussianProcessRegressor(
            kernel=kernel, alpha=noise / self._std**2, normalize_y=False, n_restarts_optimizer=restarts or 0,
            random_state=self.seed, optimizer="fmin_l_bfgs_b" if restarts is not None or warm is None else None,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit(x, (y - self._mean) / self._std)
        self.gp = gp
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free yield at `x`."""
        assert self.gp is not None
        mu, sd = self.gp.predict(np.atleast_2d(x), return_std=True)
        return self._mean + self._std * mu, self._std * sd


class TrustRegionSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler that proposes inside the optimiser's trust region (see the module doc)."""

    def __init__(self, optimiser: RecipeOptimizer, base: optuna.samplers.BaseSampler | None = None) -> None:
        self.optimiser = optimiser
        self.base = base

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, BaseDistribution]:
        if self.base is not None:
            return self.base.infer_relative_search_space(study, trial)
        return dict(self.optimiser.distributions)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, BaseDistribution]) -> dict:
        if self.base is not None:
            raw = self.base.sample_relative(study, trial, search_space)
            return {k: self.optimiser._clip_to_region(k, v) for k, v in raw.items()}
        if not search_space:
            return {}
        u = self.optimiser._propose()
        return self.optimiser._to_recipe(u)

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, dist: BaseDistribution) -> Any:
        if self.base is not None:
            return self.optimiser._clip_to_region(name, self.base.sample_independent(study, trial, name, dist))
        return self.optimiser._to_recipe(self.optimiser._propose())[name]

    def reseed_rng(self) -> None:
        if self.base is not None:
            self.base.reseed_rng()


@dataclass
class RecipeOptimizer:
    """Trust-region Bayesian optimisation of a recipe: `fit(reference)`, `ask()`, `update(...)`, `best()`.

    `bounds` maps each tuned parameter to its (low, high) safe bounds. `max_loss` is the yield
    (fraction) a trial may risk below the incumbent. Region sizes are fractions of each
    parameter's range (side length of the box around the incumbent).
    """

    bounds: Mapping[str, tuple[float, float]]
    seed: int = 0
    max_loss: float = 0.01
    sampler: str = "gp"
    init_region: float = 0.4
    min_region: float = 0.05
    max_region: float = 0.8
    max_step: float = 0.25  # furthest a trial may sit from a recipe known to be above the floor
    succ_tol: int = 2
    fail_tol: int = 3
    n_init: int = 4
    candidates: int = 1024
    # Learn through the process (recipe -> readings -> defects) when trials bring their readings:
    # the GP then models only what the process model misses.
    use_process: bool = True
    observations: list[Observation] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.bounds:
            raise UserError("the optimiser needs at least one parameter to tune")
        for name, (lo, hi) in self.bounds.items():
            if not hi > lo:
                raise UserError(f"parameter {name}: high ({hi}) must exceed low ({lo})")
        if self.sampler not in ("gp", "tpe"):
            raise UserError(f"unknown sampler {self.sampler!r}; choose gp or tpe")
        self.names = list(self.bounds)
        self.lo = np.array([self.bounds[n][0] for n in self.names], dtype=float)
        self.hi = np.array([self.bounds[n][1] for n in self.names], dtype=float)
        self.distributions = {n: FloatDistribution(float(lo), float(hi)) for n, (lo, hi) in self.bounds.items()}
        self.rng = np.random.default_rng(self.seed)
        self.fit()

    # -- the learner shape ------------------------------------------------------------------
    def fit(self, reference: Mapping[str, Any] | None = None) -> RecipeOptimizer:
        """Start afresh from the line's current recipe: {"recipe": {...}, "units": n, "passed": x}.

        The reference's units (history at the current recipe) enter the model like a trial,
        and its recipe is the first incumbent, the centre of the first trust region.
        """
        self.observations = []
        self.region = self.init_region
        self.successes = self.failures = 0
        self.model: YieldModel | None = None
        self.process: ProcessModel | None = None
        self._offset_was_none = True
        self._pending: dict[int, optuna.trial.Trial] = {}
        base = None
        if self.sampler == "tpe":
            base = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_init)
        self.study = optuna.create_study(direction="maximize", sampler=TrustRegionSampler(self, base))
        self._sobol = qmc.Sobol(len(self.names), scramble=True, seed=self.seed)
        self.reference = dict(reference) if reference else None
        centre = (self.lo + self.hi) / 2
        if reference and reference.get("recipe"):
            rec = reference["recipe"]
            centre = np.array([float(rec.get(n, c)) for n, c in zip(self.names, centre, strict=True)])
            if reference.get("units"):
                self.observations.append(Observation(self._clip_dict(rec), int(reference["units"]),
                                                     int(reference["passed"]), kind="reference",
                                                     readings=reference.get("readings")))
        self.centre_u = self._normalise(np.clip(centre, self.lo, self.hi))
        self.best_value: float | None = None
        if self.observations:
            self._refit()
        return self

    def ask(self) -> dict[str, float]:
        """The next recipe to try: inside the safe bounds and the trust region."""
        trial = self.study.ask(dict(self.distributions))
        recipe = {n: float(np.clip(trial.params[n], self.bounds[n][0], self.bounds[n][1])) for n in self.names}
        self._pending[trial.number] = trial
        self._last_trial = trial.number
        return recipe

    def update(self, recipe: Mapping[str, float], units: int, passed: int, stopped_early: bool = False,
               trial: int | None = None, readings: pa.Table | None = None) -> RecipeOptimizer:
        """Tell the outcome of a trial (or of any production at a recipe), with the units'
        readings (`process_model.unit_readings`) where they are known."""
        if units <= 0:
            raise ValueError("a trial needs at least one unit")
        obs = Observation(self._clip_dict(recipe), int(units), int(passed), stopped_early, readings=readings)
        self.observations.append(obs)
        number = self._last_trial if trial is None and self._pending else trial
        if number is not None and number in self._pending:
            self.study.tell(self._pending.pop(number), obs.yield_)
        previous = self.best_value
        self._refit()
        self._adapt_region(previous, stopped_early)
        return self

    def best(self) -> dict[str, float]:
        """The recommended recipe: the tried recipe with the highest posterior mean yield."""
        i, _, _ = self._incumbent()
        return dict(self.observations[i].recipe) if self.observations else self._to_recipe(self.centre_u)

    def best_estimate(self) -> tuple[float, float]:
        """Posterior mean and standard deviation of the recommended recipe's yield."""
        _, mu, sd = self._incumbent()
        return mu, sd

    def verdict(self, confidence: float = 0.95) -> Verdict:
        """Incumbent versus the starting recipe, from the GP posterior (model-based).

        The difference of the two posterior means with an interval from their joint posterior.
        A model that pooled many small trials can be optimistic about the one it ranks first,
        so LineLab confirms the incumbent with a split run before adopting it.
        """
        trials = [o for o in self.observations if o.kind == "trial"]
        control = ArmSummary("start", 0, 0)
        ref = [o for o in self.observations if o.kind == "reference"]
        if ref:
            control = ArmSummary("start", ref[0].units, ref[0].passed)
        search = ArmSummary("search", sum(o.units for o in trials), sum(o.passed for o in trials))
        if self.model is None or self.model.gp is None or self.reference is None:
            return Verdict("continue", "no trial yet", control, search, None, None, confidence, "optimise")
        start = np.array([float(self.reference["recipe"].get(n, c)) for n, c in
                          zip(self.names, (self.lo + self.hi) / 2, strict=True)])
        pts = np.vstack([self._normalise([self.best()[n] for n in self.names]), self._normalise(start)])
        mu, cov = self.model.gp.predict(pts, return_cov=True)
        scale = self.model._std
        diff = float(scale * (mu[0] - mu[1]))
        se = float(scale * np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
        z = float(ndtri(1 - (1 - confidence) / 2))
        lo, hi = diff - z * se, diff + z * se
        if lo > 0:
            decision, reason = "adopt", "incumbent beats the starting recipe (model-based; confirm with a split run)"
        elif hi < 0:
            decision, reason = "reject", "nothing tried beats the starting recipe"
        else:
            decision, reason = "inconclusive", "the search cannot yet separate the incumbent from the start"
        return Verdict(decision, reason, control, search, diff, (lo, hi), confidence, "optimise",  # type: ignore[arg-type]
                       extra={"candidate": self.best(), "incumbent_yield": float(self.model._mean + scale * mu[0])})

    def floor(self) -> float | None:
        """The yield below which a running trial is stopped (incumbent minus `max_loss`)."""
        if self.best_value is None:
            return None
        return self.best_value - self.max_loss

    @property
    def units(self) -> int:
        return sum(o.units for o in self.observations if o.kind == "trial")

    def state(self) -> dict[str, Any]:
        mu, sd = self.best_estimate() if self.observations else (None, None)
        return {
            "sampler": self.sampler,
            "trials": sum(1 for o in self.observations if o.kind == "trial"),
            "units": self.units,
            "region": self.region,
            "incumbent": self.best() if self.observations else None,
            "incumbent_yield": mu,
            "incumbent_sd": sd,
            "successes": self.successes,
            "failures": self.failures,
            "stopped_early": sum(1 for o in self.observations if o.stopped_early),
        }

    # -- internals ----------------------------------------------------------------------------
    def _normalise(self, x: np.ndarray | Sequence[float]) -> np.ndarray:
        return (np.asarray(x, dtype=float) - self.lo) / (self.hi - self.lo)

    def _to_recipe(self, u: np.ndarray) -> dict[str, float]:
        x = self.lo + np.clip(u, 0.0, 1.0) * (self.hi - self.lo)
        return {n: float(v) for n, v in zip(self.names, x, strict=True)}

    def _clip_dict(self, recipe: Mapping[str, float]) -> dict[str, float]:
        return {n: float(np.clip(recipe[n], self.bounds[n][0], self.bounds[n][1])) for n in self.names}

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        half = self.region / 2
        lo = np.clip(self.centre_u - half, 0.0, 1.0)
        hi = np.clip(self.centre_u + half, 0.0, 1.0)
        return lo, hi

    def _clip_to_region(self, name: str, value: float) -> float:
        lo, hi = self._box()
        j = self.names.index(name)
        return float(self.lo[j] + np.clip((value - self.lo[j]) / (self.hi[j] - self.lo[j]), lo[j], hi[j])
                     * (self.hi[j] - self.lo[j]))

    def _xy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.array([self._normalise([o.recipe[n] for n in self.names]) for o in self.observations])
        units = np.array([o.units for o in self.observations], dtype=float)
        passed = np.array([o.passed for o in self.observations], dtype=float)
        return x, units, passed

    def _refit(self) -> None:
        x, units, passed = self._xy()
        # hyperparameters move little from one trial to the next: re-estimate them every few
        # trials (a multi-start search now and then in case they should move a lot), and in
        # between only condition the last fit's GP on the new data
        k = len(self.observations)
        self._fit_process(x)
        offset = self.process.predict(x) if self.process is not None else None
        cold = self.model is None or k % 6 == 0 or (offset is not None and self._offset_was_none)
        self._offset_was_none = offset is None
        restarts = 2 if cold else 0 if k % 2 == 0 or k < 8 else None
        self.model = YieldModel(len(self.names), self.seed).fit(
            x, units, passed, warm=None if cold else self.model, restarts=restarts, offset=offset
        )
        i, mu, _ = self._incumbent()
        self.best_value = mu
        self.centre_u = x[i]

    def _fit_process(self, x: np.ndarray) -> None:
        with_readings = [i for i, o in enumerate(self.observations) if o.readings is not None]
        self.process = None
        if not self.use_process or len(with_readings) < len(self.names) + 1:
            return
        model = ProcessModel(seed=self.seed).fit(x[with_readings],
                                                 [self.observations[i].readings for i in with_readings])
        self.process = model if model.ready else None

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of yield: the GP, on top of the process model where there is one."""
        assert self.model is not None
        mu, sd = self.model.predict(x)
        if self.process is not None:
            mu = mu + self.process.predict(x)
        return mu, sd

    def _incumbent(self) -> tuple[int, float, float]:
        if self.model is None or not self.observations:
            return 0, float("nan"), float("nan")
        x, units, _ = self._xy()
        mu, sd = self._predict(x)
        # a recipe seen for only a few hundred units (a stopped trial) must not win on luck:
        # rank by a lower bound that shrinks with the units behind it
        score = mu - 0.5 * sd
        i = int(np.argmax(score))
        return i, float(mu[i]), float(sd[i])

    def _adapt_region(self, previous: float | None, stopped_early: bool) -> None:
        improved = previous is not None and self.best_value is not None and self.best_value > previous + 1e-3 * 0.5
        if stopped_early or not improved:
            self.failures += 1
            self.successes = 0
        else:
            self.successes += 1
            self.failures = 0
        if self.successes >= self.succ_tol:
            self.region = min(2 * self.region, self.max_region)
            self.successes = 0
        if self.failures >= self.fail_tol:
            self.region = max(self.region / 2, self.min_region)
            self.failures = 0

    def _propose(self) -> np.ndarray:
        """A point (normalised) in the trust region: Sobol while the model is young, then EI."""
        lo, hi = self._box()
        n_trials = sum(1 for o in self.observations if o.kind == "trial")
        if self.model is None or n_trials < self.n_init:
            # first trials: around the starting recipe, no further than a safe step from it
            lo = np.maximum(lo, self.centre_u - self.max_step)
            hi = np.minimum(hi, self.centre_u + self.max_step)
            return lo + self._sobol.random(1)[0] * (hi - lo)
        cand = lo + qmc.Sobol(len(self.names), scramble=True, seed=self.rng).random(self.candidates) * (hi - lo)
        # also perturb the incumbent along a few coordinates: good moves are often axis-aligned
        k = self.candidates // 4
        mask = self.rng.random((k, len(self.names))) < max(0.2, 1 / len(self.names))
        local = np.where(mask, lo + self.rng.random((k, len(self.names))) * (hi - lo), self.centre_u)
        cand = np.vstack([cand, local])
        mu, sd = self._predict(cand)
        best = self.best_value if self.best_value is not None else float(mu.max())
        z = (mu - best) / np.maximum(sd, 1e-9)
        ei = (mu - best) * ndtr(z) + sd * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        # safe expansion: a candidate must lie within `max_step` of a tried recipe the model
        # believes is above the floor — the model is trusted near its data, not in far corners
        x, _, _ = self._xy()
        mu_x, _ = self._predict(x)
        known = x[mu_x >= best - self.max_loss]
        if known.size:
            near = (np.abs(cand[:, None, :] - known[None, :, :]).max(axis=2) <= self.max_step).any(axis=1)
        else:
            near = np.abs(cand - self.centre_u).max(axis=1) <= self.max_step
        safe = near
        if len(self.observations) >= len(self.names) + 2:
            safe = near & (mu - 2.0 * sd >= best - self.max_loss)
        if not safe.any():  # nothing is surely safe: take the most cautious candidate near the data
            pool = np.flatnonzero(near) if near.any() else np.arange(len(cand))
            return cand[pool[int(np.argmax((mu - 2.0 * sd)[pool]))]]
        ei = np.where(safe, ei, -np.inf)
        return cand[int(np.argmax(ei))]


def tune_bounds(profile: Profile, names: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    """Safe bounds of the named recipe settings (all of them by default), from the line's profile."""
    spec = {s.name: s for s in profile.recipe}
    if not spec:
        raise UserError("the line's profile names no recipe settings: there is nothing to tune")
    chosen = list(names) if names else list(spec)
    unknown = [n for n in chosen if n not in spec]
    if unknown:
        raise UserError(f"unknown recipe setting(s) {unknown}; the line's profile lists: {', '.join(spec)}")
    return {n: (float(spec[n].low), float(spec[n].high)) for n in chosen}
