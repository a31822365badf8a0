"""Sequential split-run tests on first-pass yield: stop as soon as the answer is clear.

Two arms — control (the current recipe, arm 0) and treatment (the change, arm 1) — receive
units in production order. After every `look_every` units the test looks at the running
counts and stops with

- **adopt** when the treatment is better with confidence (the interval lies above 0),
- **reject** when it is worse (the interval lies below 0), when it cannot reach `min_gain`
  (futility), or when the guardrail fires: a quicker, less demanding test that the
  treatment makes things worse, so a harmful arm is stopped early,
- **inconclusive** when `max_units` are spent without an answer.

`MixtureSPRT` is the default: a mixture sequential probability ratio test (Robbins 1970;
Johari et al. 2017) whose confidence sequence is valid however often one looks, so the
false-adoption rate under no real difference stays below `alpha`. `BayesianSplitTest` is
the beta-binomial alternative with a posterior-probability threshold; its false-adoption
rate under repeated looks depends on the threshold and the number of looks (the experiment
benchmark measures it).

Both follow the shape every LineLab learner has: `fit(reference)` resets and optionally
takes the line's historical yield, `update(arm, passed)` takes a batch of units or one unit
(same answers: the looks are at fixed cumulative unit counts, evaluated vectorised inside a
batch), `verdict()` reads the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from linelab.experiment.verdict import ArmSummary, Verdict

ARM_NAMES = ("control", "treatment")


@dataclass
class Look:
    """The test's view at one look; kept (thinned) for plots of the path to the verdict."""

    units: int
    control_yield: float
    treatment_yield: float
    difference: float
    lower: float
    upper: float


@dataclass
class _Stats:
    """Vectorised statistics over a set of looks."""

    lower: np.ndarray
    upper: np.ndarray
    guard_upper: np.ndarray  # the guardrail's (less demanding) upper bound on the difference
    p_value: np.ndarray | None = None
    prob_better: np.ndarray | None = None


@dataclass
class SplitRunTest:
    """Shared machinery of the sequential tests; subclasses supply `_stats`."""

    alpha: float = 0.05
    min_units: int = 500  # per arm before the first look: the normal approximations need counts
    max_units: int | None = 80_000  # both arms together; None runs until a decision
    look_every: int = 100  # units (both arms) between looks
    min_gain: float = 0.0  # a treatment whose interval lies below this is rejected as not worth it
    guardrail_alpha: float = 0.2
    guardrail_loss: float = 0.0  # the guardrail stops the treatment once it is surely this much worse
    names: tuple[str, str] = ARM_NAMES
    method: str = field(default="split", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.guardrail_alpha < 1:
            raise ValueError("alpha and guardrail_alpha must lie in (0, 1)")
        if self.look_every < 1 or self.min_units < 1:
            raise ValueError("look_every and min_units must be positive")
        self.fit()

    # -- the learner shape ----------------------------------------------------------------
    def fit(self, reference: Any = None) -> SplitRunTest:
        """Reset the counts. `reference` (a historical yield, or (units, passed)) informs priors."""
        self.n = np.zeros(2, dtype=np.int64)
        self.x = np.zeros(2, dtype=np.int64)
        self.decision = "continue"
        self.reason = "collecting units"
        self.stopped_at: int | None = None
        self.guardrail_fired = False
        self.ignored_after_stop = 0
        self.looks: list[Look] = []
        self._last: dict[str, float | None] = {}
        self._reference = reference
        return self

    def update(self, arm: Any, passed: Any) -> SplitRunTest:
        """Feed units in production order: `arm` 0/1 (or "control"/"treatment"), `passed` bool.

        Scalars feed one unit. Units after the test has stopped are counted in
        `ignored_after_stop` and change nothing.
        """
        arm_a = np.atleast_1d(np.asarray(arm))
        if arm_a.dtype.kind in "USO":
            arm_a = (arm_a == self.names[1]) | (arm_a == "treatment") | (arm_a == "B")
        is_t = arm_a.astype(bool)
        ok = np.atleast_1d(np.asarray(passed)).astype(bool)
        if is_t.shape != ok.shape:
            raise ValueError(f"arm and passed differ in length: {is_t.shape} vs {ok.shape}")
        if self.decision != "continue":
            self.ignored_after_stop += int(is_t.size)
            return self
        if is_t.size == 0:
            return self
        n_t = self.n[1] + np.cumsum(is_t)
        x_t = self.x[1] + np.cumsum(is_t & ok)
        n_c = self.n[0] + np.cumsum(~is_t)
        x_c = self.x[0] + np.cumsum(~is_t & ok)
        total = n_t + n_c
        at = np.flatnonzero((total % self.look_every == 0) & (n_t >= self.min_units) & (n_c >= self.min_units))
        if self.max_units is not None:
            cap = np.flatnonzero(total == self.max_units)
            at = np.union1d(at, cap)
        stop = None
        if at.size:
            st = self._stats(n_c[at], x_c[at], n_t[at], x_t[at])
            adopt = st.lower > 0
            worse = st.upper < 0
            futile = (st.upper < self.min_gain) if self.min_gain > 0 else np.zeros_like(adopt)
            guard = st.guard_upper < -self.guardrail_loss
            capped = total[at] >= self.max_units if self.max_units is not None else np.zeros_like(adopt)
            any_stop = adopt | worse | futile | guard | capped
            hits = np.flatnonzero(any_stop)
            self._record_looks(at, st, n_c, x_c, n_t, x_t)
            if hits.size:
                j = int(hits[0])
                stop = int(at[j])
                if adopt[j]:
                    self.decision, self.reason = "adopt", "treatment is better"
                elif worse[j]:
                    self.decision, self.reason = "reject", "treatment is worse"
                elif guard[j]:
                    self.decision, self.reason = "reject", "guardrail: treatment makes yield worse"
                    self.guardrail_fired = True
                elif futile[j]:
                    self.decision = "reject"
                    self.reason = f"gain cannot reach {100 * self.min_gain:.2f} pt"
                else:
                    self.decision, self.reason = "inconclusive", f"no clear answer within {self.max_units:,} units"
                self._last = {
                    "lower": float(st.lower[j]),
                    "upper": float(st.upper[j]),
                    "p_value": None if st.p_value is None else float(st.p_value[j]),
                    "prob_better": None if st.prob_better is None else float(st.prob_better[j]),
                }
            else:
                self._remember_last(st)
        end = stop if stop is not None else is_t.size - 1
        self.n[:] = (n_c[end], n_t[end])
        self.x[:] = (x_c[end], x_t[end])
        if stop is not None:
            self.stopped_at = int(total[end])
            self.ignored_after_stop += int(is_t.size - 1 - end)
        return self

    def update_counts(self, control: tuple[int, int], treatment: tuple[int, int]) -> SplitRunTest:
        """Feed aggregated counts `(units, passed)` per arm, as units interleaved evenly.

        For sources that report per-lot totals rather than units: the order inside the batch
        is reconstructed by interleaving, so the test looks at the same cumulative counts.
        """
        (nc, xc), (nt, xt) = control, treatment
        if not (0 <= xc <= nc and 0 <= xt <= nt):
            raise ValueError("passed must lie between 0 and units")
        arm = np.concatenate([np.zeros(nc, dtype=bool), np.ones(nt, dtype=bool)])
        # spread each arm's units (and its passes) evenly over the batch
        pos = np.concatenate([(np.arange(nc) + 0.5) / max(nc, 1), (np.arange(nt) + 0.25) / max(nt, 1)])
        ok = np.concatenate([_even(nc, xc), _even(nt, xt)])
        order = np.argsort(pos, kind="stable")
        return self.update(arm[order], ok[order])

    def verdict(self) -> Verdict:
        c = ArmSummary(self.names[0], int(self.n[0]), int(self.x[0]))
        t = ArmSummary(self.names[1], int(self.n[1]), int(self.x[1]))
        diff = None
        interval: tuple[float, float] | None = None
        p_value = prob_better = None
        if c.units and t.units:
            diff = t.passed / t.units - c.passed / c.units
            if self.decision == "continue" or not self._last:
                st = self._stats(self.n[:1], self.x[:1], self.n[1:], self.x[1:])
                self._remember_last(st, index=0)
            lower, upper = self._last["lower"], self._last["upper"]
            assert lower is not None and upper is not None  # the bounds are always remembered as floats
            interval = (lower, upper)
            p_value, prob_better = self._last.get("p_value"), self._last.get("prob_better")
        return Verdict(
            decision=self.decision,  # type: ignore[arg-type]
            reason=self.reason,
            control=c,
            treatment=t,
            difference=diff,
            interval=interval,
            confidence=1 - self.alpha,
            method=self.method,
            p_value=p_value,
            prob_better=prob_better,
            stopped_at=self.stopped_at,
            guardrail=self.guardrail_fired,
            extra=self._extra(),
        )

    @property
    def stopped(self) -> bool:
        return self.decision != "continue"

    def state(self) -> dict[str, Any]:
        """Readable state: counts per arm, decision, settings."""
        return {
            "method": self.method,
            "units": {self.names[0]: int(self.n[0]), self.names[1]: int(self.n[1])},
            "passed": {self.names[0]: int(self.x[0]), self.names[1]: int(self.x[1])},
            "decision": self.decision,
            "reason": self.reason,
            "stopped_at": self.stopped_at,
            "settings": self._extra(),
        }

    # -- internals -------------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "min_units": self.min_units,
            "max_units": self.max_units,
            "look_every": self.look_every,
            "min_gain": self.min_gain,
            "guardrail_alpha": self.guardrail_alpha,
            "guardrail_loss": self.guardrail_loss,
        }

    def _remember_last(self, st: _Stats, index: int = -1) -> None:
        self._last = {
            "lower": float(st.lower[index]),
            "upper": float(st.upper[index]),
            "p_value": None if st.p_value is None else float(st.p_value[index]),
            "prob_better": None if st.prob_better is None else float(st.prob_better[index]),
        }

    def _record_looks(self, at: np.ndarray, st: _Stats, n_c: np.ndarray, x_c: np.ndarray,
                      n_t: np.ndarray, x_t: np.ndarray) -> None:
        # keep at most ~20 looks per update: enough for a plot, bounded memory on long runs
        keep = np.unique(np.linspace(0, at.size - 1, min(at.size, 20)).round().astype(int))
        for k in keep:
            i = at[k]
            yc, yt = x_c[i] / n_c[i], x_t[i] / n_t[i]
            self.looks.append(Look(int(n_c[i] + n_t[i]), float(yc), float(yt), float(yt - yc),
                                   float(st.lower[k]), float(st.upper[k])))

    def _stats(self, n_c: np.ndarray, x_c: np.ndarray, n_t: np.ndarray, x_t: np.ndarray) -> _Stats:
        raise NotImplementedError


def _even(n: int, x: int) -> np.ndarray:
    """`n` outcomes with `x` passes spread evenly (a deterministic interleaving)."""
    if n == 0:
        return np.empty(0, dtype=bool)
    k = np.arange(1, n + 1)
    return np.floor(k * x / n) > np.floor((k - 1) * x / n)


def _smoothed_var(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Binomial variance of a yield estimate, smoothed so 0 or all fails never gives zero."""
    p = (x + 0.5) / (n + 1.0)
    return p * (1 - p) / n


@dataclass
class MixtureSPRT(SplitRunTest):
    """Always-valid mixture SPRT on the difference in yield (normal mixture, scale `tau`).

    `tau` is the size of difference the test is tuned to find fastest (0.01 = one point).
    The confidence sequence at level 1 - alpha holds at every look simultaneously, so
    stopping the moment it excludes 0 keeps the false-adoption rate under alpha.
    """

    tau: float = 0.01

    def __post_init__(self) -> None:
        self.method = "msprt"
        super().__post_init__()

    def _halfwidth(self, s2: np.ndarray, alpha: float) -> np.ndarray:
        t2 = self.tau**2
        return np.sqrt(s2 * (s2 + t2) / t2 * (2 * np.log(1 / alpha) + np.log((s2 + t2) / s2)))

    def _stats(self, n_c: np.ndarray, x_c: np.ndarray, n_t: np.ndarray, x_t: np.ndarray) -> _Stats:
        n_c, x_c, n_t, x_t = (np.asarray(a, dtype=float) for a in (n_c, x_c, n_t, x_t))
        diff = x_t / n_t - x_c / n_c
        # pooled variance: exact under "no difference", the hypothesis whose error matters most
        s2 = _smoothed_var(n_c + n_t, x_c + x_t) * (n_c + n_t) * (1 / n_c + 1 / n_t)
        t2 = self.tau**2
        log_lr = 0.5 * np.log(s2 / (s2 + t2)) + t2 * diff**2 / (2 * s2 * (s2 + t2))
        p_value = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)))
        h = self._halfwidth(s2, self.alpha)
        hg = self._halfwidth(s2, self.guardrail_alpha)
        return _Stats(lower=diff - h, upper=diff + h, guard_upper=diff + hg, p_value=p_value)

    def _extra(self) -> dict[str, Any]:
        return {**super()._extra(), "tau": self.tau}


@dataclass
class BayesianSplitTest(SplitRunTest):
    """Beta-binomial test: adopt when P(treatment > control) >= `threshold`.

    Both arms start from a Beta prior worth `prior_units` units at the reference yield
    (uniform when no reference is given). The posteriors are summarised by their normal
    approximation, which is accurate at the counts a look needs (`min_units` per arm).
    Stop for harm when P(treatment < control - guardrail_loss) >= 1 - guardrail_alpha.
    """

    threshold: float = 0.997  # with a look every 1000 units, keeps A/A adoption under 5 % (bench)
    prior_units: float = 2.0
    look_every: int = 1000
    guardrail_alpha: float = 0.02  # posteriors peeked at often would stop good arms at 0.2

    def __post_init__(self) -> None:
        self.method = "bayes"
        super().__post_init__()

    def fit(self, reference: Any = None) -> BayesianSplitTest:
        super().fit(reference)
        if reference is None:
            p0 = 0.5
        elif isinstance(reference, tuple):
            units, passed = reference
            p0 = (passed + 0.5) / (units + 1.0)
        else:
            p0 = float(reference)
        self._a0, self._b0 = self.prior_units * p0, self.prior_units * (1 - p0)
        return self

    def _stats(self, n_c: np.ndarray, x_c: np.ndarray, n_t: np.ndarray, x_t: np.ndarray) -> _Stats:
        def post(n: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a = self._a0 + np.asarray(x, dtype=float)
            b = self._b0 + np.asarray(n, dtype=float) - np.asarray(x, dtype=float)
            return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))

        mc, vc = post(n_c, x_c)
        mt, vt = post(n_t, x_t)
        d, sd = mt - mc, np.sqrt(vc + vt)
        prob = ndtr(d / sd)
        z = ndtri(self.threshold)
        zg = ndtri(1 - self.guardrail_alpha)
        # adopt iff P(better) >= threshold  <=>  d - z*sd > 0: report that one-sided bound pair
        return _Stats(lower=d - z * sd, upper=d + z * sd, guard_upper=d + zg * sd, prob_better=prob)

    def verdict(self) -> Verdict:
        # the reported interval is the central credible interval whose edge is the threshold
        return replace(super().verdict(), confidence=2 * self.threshold - 1)

    def _extra(self) -> dict[str, Any]:
        return {**super()._extra(), "threshold": self.threshold, "prior_units": self.prior_units}


def make_test(method: str = "msprt", **settings: Any) -> SplitRunTest:
    """A sequential test by name: "msprt" (default, always valid) or "bayes"."""
    if method == "msprt":
        return MixtureSPRT(**settings)
    if method == "bayes":
        return BayesianSplitTest(**settings)
    raise ValueError(f"unknown sequential test {method!r}; choose msprt or bayes")
