"""What a diagnosis says: ranked candidate causes with their effect, confidence and evidence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

CauseKind = Literal["categorical", "continuous", "time", "environment"]


class Cause(BaseModel):
    """One candidate root cause of the symptom."""

    rank: int = 0
    factor: str = Field(description="column (or table.column) the cause lives in")
    level: str | None = Field(None, description="the guilty level of a categorical factor")
    kind: CauseKind
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


class Onset(BaseModel):
    """When the symptom started, and the events near that moment."""

    index: int = Field(description="row in the time-ordered data where the change starts")
    at: str = Field(description="time (or row number) of the change")
    before: float
    after: float
    events: list[dict[str, Any]] = Field(default_factory=list)
    text: str = ""


class Confounding(BaseModel):
    """Candidates the data cannot tell apart, and the run that would."""

    causes: list[str]
    overlap: float = Field(description="share of the affected units the candidates have in common")
    experiment: str
    units_per_arm: int | None = None


class Diagnosis(BaseModel):
    """The whole answer: symptom summary, ranked causes, onset, confounding and a check."""

    target: str
    symptom_mode: Literal["rate", "mean", "spread", "case-control"]
    n_reference: int
    n_incident: int
    reference_level: float
    incident_level: float
    excess: float = Field(description="excess symptom in the incident: extra defects, or total shift")
    causes: list[Cause] = Field(default_factory=list)
    onset: Onset | None = None
    confounded: list[Confounding] = Field(default_factory=list)
    explained_share: float | None = Field(None, description="share of the excess the top cause accounts for")
    explained: bool = Field(False, description="the top cause accounts for most of the excess")
    confident: bool = Field(False, description="a single, unconfounded, well-supported top cause")
    skipped: dict[str, str] = Field(default_factory=dict, description="columns left out, and why")
    summary: str = ""

    def top(self, k: int = 3) -> list[Cause]:
        return self.causes[:k]
