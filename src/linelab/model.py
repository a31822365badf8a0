"""The records every stage shares: entities, evidence, alarms, problems, causes, actions, watches.

This is the lowest layer of LineLab: it imports nothing of LineLab but its errors, so the monitor,
the diagnosis, the actions, the know-how and the loop all speak of the same things in the same
types, and the REST API's schema documents them. The stored JSON of each record (a problem, an
action, a watch artefact) is exactly what these models dump; records written by older versions
load, their unknown fields kept.

* `Entity`: what something is about — a machine, a fixture, a lot, a shift, a reading — with the
  station (or material) it belongs to. A cause names one; a watch follows one kind of them.
* `Evidence`, `Alarm`: one detector's finding, the monitor's input to its problem book.
* `Problem`: the problem artefact as the problem book writes it (`Signal`: an alarm filed in it).
* `Cause`: one candidate root cause of a diagnosis, with the entity it names.
* `Action`, `ExpectedEffect`, `ActionStep`: an action on the line and its history.
* `Watch`: what the monitor follows entity by entity, set by a solved problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action", "ActionStep", "Alarm", "Cause", "CauseKind", "Entity", "Evidence", "ExpectedEffect",
    "Problem", "Signal", "Watch",
]


# -- entities ---------------------------------------------------------------------------------------
class Entity(BaseModel):
    """What a cause, a problem's scope or a watch is about: one thing on the line."""

    kind: str = Field(description="machine | fixture | operator | recipe | shift | lot | supplier | param | "
                                  "measurement | ...: the kind of thing (a column of the line's records)")
    name: str = Field(description="which one: the machine or lot id, or the reading's name")
    station: str | None = Field(None, description="the station it belongs to (machines, fixtures, readings)")
    material: str | None = Field(None, description="the material it belongs to (lots, suppliers)")

    @property
    def reading(self) -> str | None:
        """`station.name` for a reading at a station (how per-unit readings are named), else None."""
        if self.kind in ("param", "measurement", "environment") and self.station:
            return f"{self.station}.{self.name}"
        return None


# -- the monitor's findings -----------------------------------------------------------------------
# Evidence and Alarm stay plain dataclasses: the monitor builds many of them, positionally, and
# files them with `dataclasses.asdict`; pydantic models that hold them validate them all the same.
@dataclass
class Evidence:
    """A point of evidence: the unit and time it was seen at, and where in the stream."""

    unit: str | None = None
    t: str | None = None  # ISO time
    seq: int | None = None  # ingest batch that carried it
    index: int | None = None  # record index within the detector's stream


@dataclass
class Alarm:
    """One detector's finding, ready to become (or extend) a problem."""

    detector: str  # "measurement_cusum" | "defect_rate" | ...
    kind: str  # "measurement_shift" | "defect_rate"
    entity: str  # what the problem is about; alarms on one entity merge
    scope: dict[str, Any]
    onset: Evidence
    first: Evidence
    latest: Evidence
    units_affected: int
    yield_lost_units: float
    effect: dict[str, Any]
    description: str
    chart: dict[str, Any] = field(default_factory=dict)
    # Units that carry the evidence (failing units of a group, units far off-centre in a
    # series): two alarms sharing most of them are one incident seen by two detectors.
    units: list[str] = field(default_factory=list)
    # Alarms of the same kind on the same thing seen through another machine/group.
    family: str | None = None
    # The know-how entry whose watch raised it: a known failure mode, recalled at once.
    watch: str | None = None

    @property
    def key(self) -> str:
        """One detector scope: repeated alarms of the same series update, not append."""
        return self.detector + "|" + "|".join(f"{k}={v}" for k, v in sorted(self.scope.items()))


class Signal(BaseModel):
    """An alarm as filed in its problem (the latest of its series), with its series key."""

    model_config = ConfigDict(extra="allow")

    key: str = ""
    detector: str = ""
    kind: str = ""
    entity: str = ""
    scope: dict[str, Any] = Field(default_factory=dict)
    onset: Evidence = Field(default_factory=Evidence)
    first: Evidence = Field(default_factory=Evidence)
    latest: Evidence = Field(default_factory=Evidence)
    units_affected: int = 0
    yield_lost_units: float = 0.0
    effect: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    family: str | None = None
    watch: str | None = None


ProblemStatus = Literal["open", "diagnosed", "fixing", "resolved", "false_alarm"]


class Problem(BaseModel):
    """A problem as the monitor's problem book stores it (artefact kind "problem")."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: ProblemStatus = "open"
    kind: str = Field("", description="measurement_shift | defect_rate | ...")
    entity: str = Field("", description="what it is about (alarms on one entity join one problem)")
    scope: dict[str, Any] = Field(default_factory=dict, description="station, machine, measurement, lot...")
    onset: Evidence = Field(default_factory=Evidence, description="when it began (estimated)")
    first_evidence: Evidence = Field(default_factory=Evidence)
    latest_evidence: Evidence = Field(default_factory=Evidence)
    signals: list[Signal] = Field(default_factory=list, description="the alarms grouped here")
    history: list[dict[str, Any]] = Field(default_factory=list, description="status moves: status, at, note")
    created: str | None = None
    updated: str | None = None
    lead: str | None = Field(None, description="key of the signal whose view heads the problem")
    description: str = ""
    severity: dict[str, Any] = Field(default_factory=dict,
                                     description="units_affected, yield_lost_units, signals")
    watch: str | None = Field(None, description="the know-how entry whose watch raised it")
    resolution: dict[str, Any] | None = Field(None, description="how it was solved: cause, fix, knowhow, by")


# -- causes -----------------------------------------------------------------------------------------
CauseKind = Literal["categorical", "continuous", "time", "environment"]


class Cause(BaseModel):
    """One candidate root cause of the symptom."""

    rank: int = 0
    factor: str = Field(description="column (or table.column) the cause lives in")
    level: str | None = Field(None, description="the guilty level of a categorical factor")
    kind: CauseKind
    entity: Entity | None = Field(None, description="the thing on the line the cause names (a workspace "
                                                    "diagnosis names one for every cause)")
    effect: float = Field(
        description="effect size: rate ratio for a categorical level against the rest, "
        "standardised shift (reference sds) for a continuous factor"
    )
    effect_label: str = Field("", description="what `effect` measures, in words")
    delta: float | None = Field(
        None, description="change in the factor itself, in its own units (shift of a continuous value)"
    )
    p_value: float = 1.0
    q_value: float = Field(1.0, description="Benjamini-Hochberg adjusted p-value over all candidates")
    confidence: float = Field(0.0, description="1 - q, reduced when the cause is confounded")
    share: float | None = Field(None, description="fraction of the excess symptom this cause accounts for")
    score: float = 0.0
    upstream: bool = Field(True, description="can cause the symptom (an ancestor in the causal graph)")
    explained_by: str | None = Field(None, description="another candidate that accounts for this one")
    confounded_with: list[str] = Field(default_factory=list)
    onset: str | None = Field(None, description="when the cause started (time or row), if estimated")
    evidence: str = Field("", description="the case for this cause, in plain words")
    details: dict[str, Any] = Field(default_factory=dict, description="the numbers behind the evidence")
    plot: dict[str, Any] = Field(default_factory=dict, description="data for an evidence plot")

    @property
    def label(self) -> str:
        return f"{self.factor}={self.level}" if self.level is not None else self.factor

    def about(self) -> Entity:
        """The entity the cause names; for a cause built without one, its factor's own name (the
        part before any `@`) as the kind and its level (or that name) as the entity."""
        if self.entity is not None:
            return self.entity
        kind = self.factor.split("@")[0]
        return Entity(kind=kind, name=self.level if self.level is not None else kind)


# -- actions ----------------------------------------------------------------------------------------
ActionStatus = Literal["proposed", "approved", "sent", "applied", "rejected", "failed"]


class ExpectedEffect(BaseModel):
    model_config = ConfigDict(extra="allow")

    metric: str = "first_pass_yield"
    delta: float | None = None
    window_units: int = 2000


class ActionStep(BaseModel):
    """One change of an action's status."""

    model_config = ConfigDict(extra="allow")

    status: str
    t: str
    by: str = ""
    note: str = ""


class Action(BaseModel):
    """An action on the line (artefact kind "action"), linked to the problem it answers."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str = Field(description="one of the actions the line's profile accepts")
    params: dict[str, Any] = Field(default_factory=dict)
    problem_id: str | None = None
    experiment_id: str | None = None
    source: str = Field("person", description="person | diagnosis | knowhow | experiment | monitor")
    reason: str = ""
    expected_effect: ExpectedEffect | None = None
    observed_effect: dict[str, Any] | None = Field(None, description="yield before and after, with its interval")
    applied: dict[str, Any] | None = Field(None, description="how and when it reached the line: via, t, ...")
    status: ActionStatus = "proposed"
    history: list[ActionStep] = Field(default_factory=list)


# -- watches ----------------------------------------------------------------------------------------
class Watch(BaseModel):
    """A symptom the monitor follows entity by entity, set by a solved problem."""

    id: str = Field(description="the know-how entry that set it")
    station: str
    factor: str = Field(description="machine | fixture: the entities followed one by one")
    measurements: list[str]
    moves: dict[str, float] = Field(default_factory=dict,
                                    description="how far each measurement moved last time, in its sigmas (signed)")
    level: str | None = Field(None, description="the entity that was at fault when the entry was written")

