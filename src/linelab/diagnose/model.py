"""What a diagnosis says: ranked candidate causes with their effect, confidence and evidence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from linelab.model import Cause, CauseKind, Entity

__all__ = ["Cause", "CauseKind", "Confounding", "Diagnosis", "Entity", "Onset"]


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
    incident_from: str | None = Field(
        None, description="where the problem's window held a clear step well inside it: the time the units "
        "compared with the reference begin (those before it looked like the reference)")
    onset: Onset | None = None
    confounded: list[Confounding] = Field(default_factory=list)
    explained_share: float | None = Field(None, description="share of the excess the top cause accounts for")
    explained: bool = Field(False, description="the top cause accounts for most of the excess")
    confident: bool = Field(False, description="a single, unconfounded, well-supported top cause")
    skipped: dict[str, str] = Field(default_factory=dict, description="columns left out, and why")
    summary: str = ""

    def top(self, k: int = 3) -> list[Cause]:
        return self.causes[:k]
