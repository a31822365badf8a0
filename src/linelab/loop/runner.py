"""The closed loop on a simulated line: produce → store → monitor → recall or diagnose → act → verify → know-how.

Between incidents the loop climbs the yield surface with trust-region Bayesian optimisation of
the recipe, each trial a chunk of production. Policies say what may be applied without a person.

Three runs of the same scenario and seed make the learning curve honest:
- `none`: nobody acts; problems persist until scheduled maintenance or they end by themselves;
- `loop`: LineLab's closed loop;
- `oracle`: every problem fixed the moment it starts, at the optimal recipe from the first unit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from linelab.act import actions as act
from linelab.act.control import LineControl
from linelab.act.remedies import remedy, target_of
from linelab.diagnose.model import Diagnosis
from linelab.diagnose.workspace import diagnose_problem
from linelab.errors import UserError
from linelab.experiment.optimise import RecipeOptimizer, trial_guardrail, tune_bounds
from linelab.experiment.process_model import CODE, PASSED, unit_readings
from linelab.knowhow import ledger, recall
from linelab.line import SimulatedLine
from linelab.loop import verify
from linelab.loop.curve import Curve
from linelab.model import Cause, Entity, Problem
from linelab.monitor import cost
from linelab.monitor.effect import compare_yields
from linelab.monitor.engine import run_monitor
from linelab.monitor.problems import is_condition, set_status
from linelab.profile import PROFILE_FILE, profile_path, save_profile
from linelab.profile.actions import line_actions
from linelab.store import Workspace

# A recalled entry this close to the new symptom may aim its fix at any of the diagnosis' top three.
CLOSE_MATCH = 0.95
NO_OWN_REMEDY = "a process condition with no remedy of its own left to try"


class LoopPolicy(BaseModel):
    """What the loop may do on its own, and how cautiously.

    Waits are in hours of the line's production, turned into units at the rate the line's own
    records show (a line of a hundred units a day and one of twenty thousand look at their data,
    judge a fix and run a trial over the same working time); a `*_units` value, where given,
    overrides its hours."""

    look_hours: float = Field(4.0, gt=0, description="line time between two looks at the data")
    chunk: int | None = Field(None, gt=0, description="units produced between two looks (default: look_hours' worth)")
    min_lost_units: float = Field(20.0, description="act only on problems that cost at least this many units")
    auto_apply_recalled: bool = Field(True, description="apply a fix recalled from know-how with high confidence")
    auto_apply_diagnosed: bool = Field(True, description="apply the remedy of a confident diagnosis")
    max_wait_hours: float = Field(20.0, gt=0, description="line time to wait for a confident diagnosis before "
                                                        "acting on the best")
    max_wait_units: int | None = Field(None, gt=0, description="the same in units (default: max_wait_hours' worth)")
    verify_hours: float = Field(20.0, gt=0, description="line time after a fix before judging it")
    verify_units: int | None = Field(None, gt=0, description="the same in units (default: verify_hours' worth)")
    urgent_loss: float = Field(0.05, description="a problem losing this share of units or more is acted on at "
                                                 "once on its best-ranked cause, without waiting for a sure one")
    max_actions: int = Field(3, description="actions tried on one problem before it is left to a person")
    optimise_recipe: bool = Field(True, description="run recipe trials between incidents")
    max_trials: int = Field(24, description="recipe trials before adopting the best recipe")
    trial_hours: float = Field(10.0, gt=0, description="line time one recipe trial runs (whole looks at the data)")
    trial_units: int | None = Field(None, gt=0, description="the same in units (default: trial_hours' worth)")
    search_share: float = Field(1 / 3, description="share of a planned run the recipe trials may take (at least "
                                                   "6 trials): a short run adopts sooner")
    max_trial_loss: float = Field(0.01, description="yield a trial may risk below the incumbent")


# Confidence of the judgement, at a look before `verify_units`, that a fix did not take: it is
# made at every look, so it must rarely call a working fix a failure by chance.
EARLY_CONFIDENCE = 0.999
# Units of the first look, before the line's records say how fast it produces.
FIRST_LOOK_UNITS = 100


class LineRate:
    """Units per hour of line time, from the start times of the units produced so far."""

    def __init__(self) -> None:
        self.units = 0
        self.t_first: datetime | None = None
        self.t_last: datetime | None = None

    def add(self, units: pa.Table) -> None:
        if units.num_rows == 0:
            return
        t = pc.min_max(units.column("t_start")).as_py()
        self.units += units.num_rows
        self.t_first = t["min"] if self.t_first is None else min(self.t_first, t["min"])
        self.t_last = t["max"] if self.t_last is None else max(self.t_last, t["max"])

    @property
    def per_hour(self) -> float | None:
        if self.t_first is None or self.t_last is None or self.units < 2:
            return None
        hours = (self.t_last - self.t_first).total_seconds() / 3600
        return (self.units - 1) / hours if hours > 0 else None

    def units_in(self, hours: float, given: int | None, floor: int = 1) -> int:
        """`given` units, or `hours` of production at the rate seen so far."""
        if given is not None:
            return given
        rate = self.per_hour
        return max(floor, round(hours * rate)) if rate else FIRST_LOOK_UNITS


@dataclass
class Incident:
    """One problem's path through the loop, in units produced."""

    problem_id: str
    description: str
    detected_unit: int
    onset_unit: int | None = None  # the monitor's estimate of when it began (units since then counted)
    diagnosed_unit: int | None = None
    fixed_unit: int | None = None
    resolved_unit: int | None = None
    cause: str | None = None  # the cause acted on, for people (`cause_of` is what decisions read)
    action: str | None = None
    actions_tried: list[str] = field(default_factory=list)
    failed_actions: int = 0
    knowhow_reused: str | None = None
    recalled: str | None = None  # the top know-how match when the loop acted, applied or not
    knowhow_written: str | None = None
    trial_effect: bool = False  # a recipe trial's own effect, not a problem of the line
    rides_on: str | None = None  # fixed by the action applied for this other problem
    left_to_person: str | None = None  # why the loop will not act on it
    riders: list[str] = field(default_factory=list)  # other problems judged by this one's fix
    truth_ids: list[str] = field(default_factory=list)
    # internal bookkeeping
    waited: int = 0  # units looked at since it was first diagnosed without acting
    fixed_t: str | None = None
    onset_t: str | None = None
    tried: list[str] = field(default_factory=list)
    applied: dict[str, Any] = field(default_factory=dict)
    cause_of: Cause | None = None  # the cause acted on, with the entity it names


@dataclass
class Trial:
    """A recipe trial in progress: what it has produced so far."""

    recipe: dict[str, float]
    units: int = 0
    passed: int = 0
    t_from: datetime | None = None
    t_to: datetime | None = None

    def add(self, units_table: pa.Table) -> None:
        n, passed = _first_pass(units_table)
        t = pc.min_max(units_table.column("t_start")).as_py()
        self.units, self.passed = self.units + n, self.passed + passed
        self.t_from, self.t_to = self.t_from or t["min"], t["max"]


@dataclass
class LoopState:
    curve: Curve = field(default_factory=Curve)
    incidents: dict[str, Incident] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    adopted_recipe: dict[str, float] | None = None
    adopted_at_unit: int | None = None


def run_baseline(line: SimulatedLine, units: int, chunk: int, oracle: bool,
                 on_chunk: Callable[[int], None] | None = None) -> Curve:
    """The `none` run (nobody acts) on a fresh `line`, or the `oracle` run (the same line with no
    problems, at its optimal recipe)."""
    if oracle:
        line = line.without_problems()
        line.apply({"kind": "set_recipe", "params": line.optimal_recipe()})
    curve = Curve()
    while line.units_produced < units:
        c = line.produce(min(chunk, units - line.units_produced))
        curve.add(c["units"])
        if on_chunk:
            on_chunk(c["units"].num_rows)
    return curve


def _key(action: dict[str, Any]) -> str:
    return f"{action['kind']}:{sorted((k, str(v)) for k, v in action.items() if k != 'kind')}"


def _first_pass(units: pa.Table) -> tuple[int, int]:
    return units.num_rows, int(pc.sum(units.column("first_pass").cast(pa.int64())).as_py() or 0)


class ClosedLoop:
    """Drives a simulated line and a workspace one chunk at a time; everything it knows of the
    line (its actions, the causes they remedy, its recipe) comes from the line's profile."""

    def __init__(self, ws: Workspace, line: SimulatedLine, policy: LoopPolicy, seed: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        self.ws, self.line, self.policy = ws, line, policy
        self.profile = line.profile
        self.control = LineControl(line)
        self.state = LoopState()
        self.source = line.source
        self.start_recipe = dict(line.recipe)
        if profile_path(ws.path) is None:  # later commands on this workspace read the line from it
            save_profile(self.profile, Path(ws.path) / PROFILE_FILE)
        self.log = log or (lambda msg: None)
        self.optimiser: RecipeOptimizer | None = None
        self.seed = seed
        self.rate = LineRate()
        self.last_look = 0
        self.trial: Trial | None = None  # the recipe trial running now, over one or more looks
        self.planned_units: int | None = None  # the run's length, when known: it bounds the search
        self._reference_readings: pa.Table | None = None  # the units at the starting recipe
        self._moved: dict[tuple[datetime, datetime], set[str]] = {}  # readings each ended trial moved

    # -- waits in units, at the line's own rate ---------------------------------------------
    @property
    def look_units(self) -> int:
        """Units to produce before the next look at the data."""
        return self.rate.units_in(self.policy.look_hours, self.policy.chunk, floor=10)

    @property
    def max_wait_units(self) -> int:
        return self.rate.units_in(self.policy.max_wait_hours, self.policy.max_wait_units)

    @property
    def verify_units(self) -> int:
        return self.rate.units_in(self.policy.verify_hours, self.policy.verify_units)

    @property
    def trial_units(self) -> int:
        return self.rate.units_in(self.policy.trial_hours, self.policy.trial_units)

    def _urgent(self, problem: dict[str, Any]) -> bool:
        """Losing units fast: each look spent waiting for a sure diagnosis costs more than a wrong
        first try (the loop tries up to `max_actions` and judges each)."""
        return float((problem.get("severity") or {}).get("loss_rate", 0.0)) >= self.policy.urgent_loss

    # -- one chunk -------------------------------------------------------------------------
    def step(self, n: int | None = None) -> None:
        """Produce `n` units (default: one look's worth), ingest them and act on what they show."""
        n = self.look_units if n is None else n
        self.last_look = n
        self._start_trial()
        chunk = self.line.produce(n)
        self.ws.ingest_tables(chunk, source=self.source)
        self.state.curve.add(chunk["units"])
        self.rate.add(chunk["units"])
        if self.trial is not None:
            self.trial.add(chunk["units"])
        elif self.optimiser is None and self.policy.optimise_recipe:
            units, passed = _first_pass(chunk["units"])
            t = pc.min_max(chunk["units"].column("t_start")).as_py()
            self.optimiser = RecipeOptimizer(tune_bounds(self.profile), seed=self.seed,
                                             max_loss=self.policy.max_trial_loss)
            self._reference_readings = unit_readings(self.ws, t["min"], t["max"])
            self.optimiser.fit({"recipe": dict(self.line.recipe), "units": units, "passed": passed,
                                "readings": self._reference_readings})
        run_monitor(self.ws)
        self._verify()
        self._handle_open_problems()
        if self.trial is not None:
            floor = self.optimiser.floor() if self.optimiser else None
            # A trial surely below the incumbent by more than it may risk stops at once.
            stop = floor is not None and trial_guardrail(self.trial.units, self.trial.passed, floor)
            if stop or self.trial.units >= self.trial_units or self._busy():
                self._finish_trial(stopped=stop)

    @property
    def produced(self) -> int:
        return int(self.line.units_produced)

    # -- recipe optimisation between incidents ----------------------------------------------
    def _busy(self) -> bool:
        """An incident still being diagnosed (a fix under verification does not hold the search)."""
        return any(i.resolved_unit is None and i.fixed_unit is None and not self._escalated(i)
                   and not (i.action or "").startswith("set_recipe")  # the search's own side effects
                   for i in self.state.incidents.values())

    def _trial_at(self, t: str | None) -> tuple[datetime, datetime] | None:
        """The recipe trial time `t` falls in (or in the quarter of one before it: onsets are estimates)."""
        if not t:
            return None
        at = datetime.fromisoformat(t)
        windows = [(datetime.fromisoformat(x["t_from"]), datetime.fromisoformat(x["t_to"])) for x in self.state.trials]
        if self.trial is not None and self.trial.t_from and self.trial.t_to:
            windows.append((self.trial.t_from, self.trial.t_to))
        return next(((t0, t1) for t0, t1 in windows if t0 - (t1 - t0) / 4 <= at <= t1), None)

    def _moved_by_trial(self, window: tuple[datetime, datetime]) -> set[str]:
        """Readings (station.name) a trial's recipe moved by more than one unit-sd from the start."""
        if window in self._moved:  # an ended trial's, kept when it ended
            return self._moved[window]
        return self._moved_of(unit_readings(self.ws, *window))  # the running trial's: it still grows

    def _moved_of(self, trial: pa.Table) -> set[str]:
        ref = self._reference_readings
        if ref is None:
            return set()
        moved = set()
        for name in set(ref.column_names) & set(trial.column_names) - {CODE, PASSED}:
            r = ref.column(name).to_numpy(zero_copy_only=False).astype(float)
            v = trial.column(name).to_numpy(zero_copy_only=False).astype(float)
            sd = np.nanstd(r)
            if sd > 0 and abs(np.nanmean(v) - np.nanmean(r)) > sd:
                moved.add(name)
        return moved

    @property
    def trial_budget(self) -> int:
        p = self.policy
        if self.planned_units is None:
            return p.max_trials
        return min(p.max_trials, max(6, int(self.planned_units * p.search_share / self.trial_units)))

    def _escalated(self, inc: Incident) -> bool:
        return inc.fixed_unit is None and (len(inc.actions_tried) >= self.policy.max_actions
                                           or inc.left_to_person is not None)

    def _start_trial(self) -> None:
        opt = self.optimiser
        if opt is None or self.trial is not None or self.state.adopted_recipe is not None:
            return
        if self._busy():  # an incident in progress: hold the best recipe so far
            return
        if len(self.state.trials) >= self.trial_budget:
            self._adopt(opt.best())
            return
        self.trial = Trial(opt.ask())
        self.line.apply({"kind": "set_recipe", "params": self.trial.recipe})

    def _finish_trial(self, stopped: bool = False) -> None:
        """Tell the optimiser what the trial yielded; an incident cuts a trial short (and a trial
        cut to less than half its length says too little to keep), the guardrail stops a bad one."""
        trial, self.trial = self.trial, None
        assert self.optimiser is not None and trial is not None and trial.t_from and trial.t_to
        kept = stopped or trial.units >= self.trial_units / 2
        readings = unit_readings(self.ws, trial.t_from, trial.t_to)  # read once: optimiser and trial effects
        self._moved[(trial.t_from, trial.t_to)] = self._moved_of(readings)
        if kept:  # with the units' readings: the optimiser learns through the process
            self.optimiser.update(trial.recipe, trial.units, trial.passed, stopped_early=stopped, readings=readings)
        self.state.trials.append({"unit": self.produced, "recipe": trial.recipe, "units": trial.units,
                                  "first_pass_yield": trial.passed / trial.units, "kept": kept,
                                  "t_from": trial.t_from.isoformat(), "t_to": trial.t_to.isoformat()})
        if self._busy() or stopped:
            self.line.apply({"kind": "set_recipe", "params": self.optimiser.best()})

    def _adopt(self, recipe: dict[str, float]) -> None:
        self.line.apply({"kind": "set_recipe", "params": recipe})
        self.state.adopted_recipe = recipe
        self.state.adopted_at_unit = self.produced
        self.log(f"adopted recipe {', '.join(f'{k}={v:.4g}' for k, v in recipe.items())}")

    # -- problems ----------------------------------------------------------------------------
    def _handle_open_problems(self) -> None:
        for problem in self.ws.list_artifacts("problem", status="open"):
            pid = problem["id"]
            if self._cost(problem) < self.policy.min_lost_units and not problem.get("watch"):
                continue  # watched, not worth an intervention yet (a known failure mode is, at once)
            inc = self.state.incidents.get(pid)
            if inc is None:
                onset_t = (problem.get("onset") or {}).get("t")
                inc = self.state.incidents[pid] = Incident(
                    pid, problem.get("description", ""), self.produced, onset_t=onset_t,
                    onset_unit=self.produced - cost.scope_counts(self.ws, {}, onset_t, None)[0] if onset_t else None)
                self.log(f"{pid} detected: {inc.description}")
            self._act_on(problem, inc)

    def _cost(self, problem: dict[str, Any]) -> float:
        """Units a problem has cost so far (a process condition's: what its units lost since its
        onset, counted by the problem book)."""
        lost = float((problem.get("severity") or {}).get("yield_lost_units", 0.0))
        if is_condition(problem) and self._trial_at((problem.get("onset") or {}).get("t")):
            # A recipe trial moves conditions and yield together on purpose: not a cost of the line's.
            return max((float(s.get("yield_lost_units") or 0.0) for s in problem.get("signals") or []
                        if not (s.get("effect") or {}).get("condition")), default=0.0)
        return lost

    def _act_on(self, problem: dict[str, Any], inc: Incident) -> None:
        if inc.fixed_unit is not None or self._escalated(inc):
            return  # a fix is being verified, or the loop has done what it may
        matches = recall.recall(self.ws, problem, top=3) if self.policy.auto_apply_recalled else []
        recalled = matches[0] if matches and matches[0].score >= recall.AUTO_APPLY else None
        inc.recalled = matches[0].entry_id if matches else None
        try:
            diagnosis, _, _ = diagnose_problem(self.ws, inc.problem_id, plot=None)
        except UserError:
            return  # not enough data yet: look again after the next chunk
        except Exception as exc:  # noqa: BLE001 - one failed diagnosis must not stop the line's loop
            self.log(f"{inc.problem_id}: diagnosis failed ({type(exc).__name__}: {exc}); left to a person")
            inc.waited += self.last_look
            return
        inc.diagnosed_unit = inc.diagnosed_unit or self.produced
        candidates = self._candidates(diagnosis, inc)
        own = self._own_condition(problem)
        if own is not None and _key(own[1]) not in inc.tried:
            # A process condition out of its window (a cold oven zone) is its own cause: restore it.
            candidates = [own] + [c for c in candidates if _key(c[1]) != _key(own[1])]
        inc.knowhow_reused = None  # each attempt says where its fix came from
        if recalled is not None:
            entry = ledger.get(self.ws, recalled.entry_id)
            # Re-aim the known fix at a cause the diagnosis ranks first (any of its top three for a
            # near-identical symptom), or at the entity the entry's watch caught.
            # The entity a watch caught comes first: the watch saw that very part move, while a
            # diagnosis made on a still-small symptom may point at a neighbour.
            reach = 3 if recalled.score >= CLOSE_MATCH else 1
            aimed = [(c, a) for c, a in candidates[:reach] if a["kind"] == entry.fix.action]
            known = self._known_fix(problem, entry) if not aimed or problem.get("watch") == entry.id else None
            if known is not None and not any(a.name == entry.fix.action for a in line_actions(self.profile)):
                known = None  # a fix done by hand: a person's to repeat, not the control channel's
            if known is not None and _key(known[1]) not in inc.tried:
                aimed = [known]
            if aimed:
                (cause, action), inc.knowhow_reused = aimed[0], entry.id
        if inc.knowhow_reused is None:
            if not candidates:
                inc.waited += self.last_look
                return
            cause, action = candidates[0]
            window = self._trial_at(inc.onset_t) if not inc.actions_tried else None
            reading = cause.about().reading if cause.level is None else None  # a reading that moved
            if window and (action["kind"] == "set_recipe" or reading in self._moved_by_trial(window)):
                # The recipe search's own doing (a recipe parameter, or a reading the trial's recipe
                # moved): the optimiser has the trial's yield and has moved on.
                inc.trial_effect, inc.resolved_unit = True, self.produced
                with contextlib.suppress(UserError):
                    set_status(self.ws, inc.problem_id, "resolved", note=f"effect of a recipe trial ({cause.label})")
                self.log(f"{inc.problem_id}: effect of a recipe trial ({cause.label}); nothing to fix")
                return
            if self._not_its_remedy(problem, own, action):
                self._leave_to_person(inc, problem, NO_OWN_REMEDY)
                return
            if not self.policy.auto_apply_diagnosed:
                return
            sure = diagnosis.confident or (own is not None and candidates[0] == own)
            if not sure and inc.waited < self.max_wait_units and not self._urgent(problem):
                inc.waited += self.last_look  # not sure yet: more units will sharpen the diagnosis
                return
        if self._not_its_remedy(problem, own, action):
            self._leave_to_person(inc, problem, NO_OWN_REMEDY)
            return
        other = self._being_applied(action, inc.onset_t)
        if other is not None:  # the same fix, just applied for another problem: judge it here too
            inc.rides_on, inc.cause, inc.cause_of, inc.action = other.problem_id, cause.label, cause, other.action
            inc.fixed_unit, inc.fixed_t = other.fixed_unit, other.fixed_t
            inc.tried.append(_key(action))
            self.log(f"{inc.problem_id}: {other.action} already applied for {other.problem_id}")
            return
        self._apply(inc, cause, action)

    @staticmethod
    def _not_its_remedy(problem: dict[str, Any], own: tuple[Cause, dict[str, Any]] | None,
                        action: dict[str, Any]) -> bool:
        """A condition out of its window (the room's temperature) is moved by what is off the
        product's path: the lots, shifts and parts a diagnosis ranks explain its units' failures,
        not the condition. Only its own remedy restores it; any other action is a person's call."""
        return is_condition(problem) and (own is None or _key(action) != _key(own[1]))

    def _leave_to_person(self, inc: Incident, problem: dict[str, Any], why: str) -> None:
        inc.left_to_person = why
        with contextlib.suppress(UserError):
            set_status(self.ws, inc.problem_id, problem.get("status", "open"), note=f"left to a person: {why}")
        self.log(f"{inc.problem_id}: left to a person ({why})")

    def _being_applied(self, action: dict[str, Any], onset_t: str | None) -> Incident | None:
        """An incident whose fix, the same action, is under verification now, or was applied after
        `onset_t`: a problem that began before that fix is the same incident seen late (the units
        of a held lot still reaching the tester), judged by that fix, not fixed a second time."""
        def covers(i: Incident) -> bool:
            return i.resolved_unit is None or bool(onset_t and i.fixed_t and datetime.fromisoformat(i.fixed_t)
                                                    >= datetime.fromisoformat(onset_t))
        return next((i for i in self.state.incidents.values() if i.fixed_unit is not None and not i.rides_on
                     and i.tried and i.tried[-1] == _key(action) and covers(i)), None)

    @staticmethod
    def _known_fix(problem: dict[str, Any], entry: ledger.Entry) -> tuple[Cause, dict[str, Any]] | None:
        """The entry's fix where the diagnosis names no target for it: re-aimed at the entity its
        watch caught, or as it was when the symptom is where it was last time."""
        if not entry.fix.params:
            return None
        root = entry.root_cause
        about = root.about()
        scope = {k: str(v) for k, v in (problem.get("scope") or {}).items()}
        old = root.level
        if problem.get("watch") == entry.id and scope.get(about.kind):
            new = scope[about.kind]
            params = {k: new if v == old else v for k, v in entry.fix.params.items()}
            caught = Cause(factor=root.factor, level=new, kind="categorical", effect=0.0,
                           entity=about.model_copy(update={"name": new}))
            return caught, {"kind": entry.fix.action, **params}
        sig = entry.signature
        rest = {k: v for k, v in scope.items() if k not in ("measurement", "station")}
        if scope.get("station") == sig.station and sig.scope and all(rest.get(k) == v for k, v in sig.scope.items()):
            same = Cause(factor=root.factor, level=old, kind="categorical" if old is not None else "continuous",
                         effect=0.0, entity=about)
            return same, {"kind": entry.fix.action, **entry.fix.params}
        return None

    def _own_condition(self, problem: dict[str, Any]) -> tuple[Cause, dict[str, Any]] | None:
        """A process condition's problem as its own cause, with its remedy (None for a product
        measurement, or a condition nothing in the catalogue restores)."""
        scope = problem.get("scope") or {}
        name, station = scope.get("measurement"), scope.get("station")
        if not is_condition(problem) or not name or not station:
            return None
        cause = Cause(factor=f"{name}@{station}", kind="environment", effect=0.0,
                      entity=Entity(kind="param", station=station, name=name))
        action = remedy(self.profile, cause)
        return (cause, action) if action is not None else None

    def _candidates(self, diagnosis: Diagnosis, inc: Incident) -> list[tuple[Cause, dict[str, Any]]]:
        out = []
        for c in diagnosis.causes:
            if not c.upstream or c.explained_by:
                continue
            a = remedy(self.profile, c)
            if a is None:
                continue
            if _key(a) in inc.tried:
                continue
            out.append((c, a))
        return out

    def _apply(self, inc: Incident, cause: Cause, action: dict[str, Any]) -> None:
        chosen = action
        if action["kind"] == "set_recipe":  # a recipe cause: return to the best recipe known
            best = self.state.adopted_recipe or (self.optimiser.best() if self.optimiser else None)
            action = {"kind": "set_recipe", "params": best or self.start_recipe}
        kind = action["kind"]
        params = {k: v for k, v in action.items() if k != "kind"}
        proposed = act.propose(self.ws, kind, params, problem_id=inc.problem_id, by="linelab",
                               profile=self.profile, source="knowhow" if inc.knowhow_reused else "diagnosis",
                               reason=f"{'know-how ' + inc.knowhow_reused if inc.knowhow_reused else 'diagnosis'}: "
                                      f"{cause.label}")
        act.approve(self.ws, proposed["id"], by="policy")
        applied = act.apply(self.ws, proposed["id"], self.control, by="linelab")
        inc.tried.append(_key(chosen))
        inc.applied = action
        inc.actions_tried.append(f"{kind} {params or ''}".strip())
        inc.cause, inc.cause_of, inc.action = cause.label, cause, f"{kind} {params or ''}".strip()
        inc.fixed_unit, inc.fixed_t = self.produced, (applied.get("applied") or {}).get("t")
        inc.truth_ids += [t for t in (applied.get("applied") or {}).get("fixed", []) if t not in inc.truth_ids]
        with contextlib.suppress(UserError):
            set_status(self.ws, inc.problem_id, "fixing", note=f"applied {inc.action}")
        self.log(f"{inc.problem_id}: {inc.action} (cause {cause.label}"
                 f"{', recalled ' + inc.knowhow_reused if inc.knowhow_reused else ''})")
        for problem in self._symptoms_of(cause, inc.problem_id):
            rider = self.state.incidents.get(problem.id) or self.state.incidents.setdefault(
                problem.id, Incident(problem.id, problem.description, self.produced, onset_t=problem.onset.t))
            if rider.fixed_unit is None and rider.resolved_unit is None:
                rider.rides_on, rider.cause, rider.action = inc.problem_id, cause.label, inc.action
                rider.cause_of = cause
                rider.fixed_unit, rider.fixed_t = inc.fixed_unit, inc.fixed_t
                rider.tried.append(_key(chosen))
                inc.riders.append(rider.problem_id)
                self.log(f"{rider.problem_id}: a symptom of the same cause; judged by {inc.action} too")

    def _symptoms_of(self, cause: Cause, pid: str) -> list[Problem]:
        """Open measurement problems on the entity a cause names (the worn nozzle's machine)."""
        entity = cause.about()
        station, level = entity.station, entity.name
        if entity.kind not in ("machine", "fixture") or not cause.level or not station:
            return []
        machines = {level} if entity.kind == "machine" else set(self.ws.query(
            "SELECT DISTINCT machine FROM steps WHERE station = ? AND fixture = ?", [station, level])
            .column(0).to_pylist())
        out = []
        for p in map(Problem.model_validate, self.ws.list_artifacts("problem")):
            if (p.id != pid and p.status in ("open", "diagnosed") and p.kind == "measurement_shift"
                    and p.scope.get("station") == station
                    and (p.scope.get("machine") in machines or p.scope.get("fixture") == level)):
                out.append(p)
        return out

    # -- verification and know-how -----------------------------------------------------------
    def _verify(self) -> None:
        for inc in self.state.incidents.values():
            if inc.fixed_unit is None or inc.resolved_unit is not None:
                continue
            waited = self.produced - inc.fixed_unit
            early = waited < self.verify_units
            if early and (waited < self.last_look or inc.rides_on):
                continue
            problem = self.ws.get_artifact("problem", inc.problem_id) or {}
            scope = problem.get("scope") or {}
            onset = inc.onset_t or inc.fixed_t or ""
            incident = cost.scope_counts(self.ws, scope, onset, inc.fixed_t)
            after = cost.scope_counts(self.ws, scope, inc.fixed_t or "", None)
            normal_from = cost.units_before(self.ws, onset, after[0])
            normal = cost.scope_counts(self.ws, scope, normal_from, onset)
            if early:
                # A fix that plainly did not take (the units after it fail as they did before it,
                # far above normal) is judged at the next look: the next cause is tried at once.
                sure = EARLY_CONFIDENCE
                if (compare_yields(incident, after, confidence=sure).verdict == "no clear change"
                        and compare_yields(normal, after, confidence=sure).verdict == "worse"):
                    self._failed(inc)
                continue
            symptom = verify.symptom_recovered(self.ws, problem, normal_from, onset, inc.fixed_t or onset)
            better = compare_yields(incident, after).verdict == "improved" or symptom is True
            # Back to normal: no longer distinguishable from the units before the onset.
            recovered = compare_yields(normal, after).verdict != "worse" and symptom is not False
            if better or (recovered and waited >= 2 * self.verify_units):
                inc.resolved_unit = self.produced
                set_status(self.ws, inc.problem_id, "resolved",
                           note=f"{inc.action} verified ({'improved' if better else 'back to normal'})")
                self._write_knowhow(inc, problem, incident, after)
                self.log(f"{inc.problem_id} resolved by {inc.action}")
            elif not recovered or waited >= 2 * self.verify_units:
                self._failed(inc)

    def _failed(self, inc: Incident) -> None:
        inc.failed_actions += 0 if inc.rides_on else 1
        inc.fixed_unit, inc.rides_on = None, None
        with contextlib.suppress(UserError):
            set_status(self.ws, inc.problem_id, "open", note=f"{inc.action} did not help")
        self.log(f"{inc.problem_id}: {inc.action} did not help; trying the next cause")

    def _write_knowhow(self, inc: Incident, problem: dict[str, Any], before: tuple[int, int],
                       after: tuple[int, int]) -> None:
        effect = ledger.rate_effect("first-pass failure rate in scope", before[0] - before[1], before[0],
                                    after[0] - after[1], after[0])
        if inc.rides_on:
            return  # the problem whose fix it shared writes the entry
        if inc.knowhow_reused:
            entry = ledger.get(self.ws, inc.knowhow_reused)
            entry.reused += 1
            ledger.save(self.ws, entry)
            return
        kind = (inc.action or "").split(" ")[0]
        cause = inc.cause_of or Cause(factor=inc.cause or "", kind="categorical", effect=0.0)
        # The symptoms that rode on this fix belong to its signature (and so to its watch).
        riders = [self.ws.get_artifact("problem", r) or {} for r in inc.riders]
        problem = {**problem, "signals": problem.get("signals", []) + [s for r in riders for s in r.get("signals", [])]}
        entry = ledger.record(
            self.ws, problem,
            ledger.RootCause(factor=cause.factor, level=cause.level, entity=cause.entity,
                             description=f"diagnosed cause {inc.cause}"),
            ledger.Fix(action=kind, params={k: v for k, v in inc.applied.items() if k != "kind"},
                       target_factor=target_of(self.profile, kind), description=inc.action or ""),
            effect,
            time_to_detect_units=None if inc.onset_unit is None else inc.detected_unit - inc.onset_unit,
            time_to_fix_units=(inc.fixed_unit or self.produced) - inc.detected_unit,
            fixed_at=inc.fixed_t,
        )
        inc.knowhow_written = entry.id

    def incidents(self) -> list[dict[str, Any]]:
        skip = {"waited", "fixed_t", "onset_t", "tried", "applied", "cause_of"}
        return [{k: v for k, v in asdict(i).items() if k not in skip} for i in self.state.incidents.values()]


def open_loop(workspace: str | Any, line: SimulatedLine, seed: int, policy: LoopPolicy,
              log: Callable[[str], None] | None = None) -> ClosedLoop:
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    return ClosedLoop(ws, line, policy, seed=seed, log=log)
