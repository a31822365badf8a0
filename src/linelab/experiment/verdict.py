"""The verdict of an experiment: adopt, reject or inconclusive, with the numbers behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Decision = Literal["adopt", "reject", "inconclusive", "continue"]


@dataclass(frozen=True)
class ArmSummary:
    """Units seen and units that passed first time, for one arm of a split run."""

    name: str
    units: int
    passed: int

    @property
    def yield_(self) -> float | None:
        return self.passed / self.units if self.units else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "units": self.units, "passed": self.passed, "yield": self.yield_}


@dataclass(frozen=True)
class Verdict:
    """What an experiment concluded.

    `difference` is treatment minus control first-pass yield (a fraction: 0.01 is one
    percentage point); `interval` is the always-valid confidence sequence (mSPRT) or the
    credible interval (Bayesian) at `confidence`. `decision` is "continue" while the test
    has not stopped yet.
    """

    decision: Decision
    reason: str
    control: ArmSummary
    treatment: ArmSummary
    difference: float | None
    interval: tuple[float, float] | None
    confidence: float
    method: str
    p_value: float | None = None  # always-valid p-value (mSPRT)
    prob_better: float | None = None  # posterior P(treatment > control) (Bayesian)
    stopped_at: int | None = None  # total units (both arms) when the test stopped
    guardrail: bool = False  # stopped because the treatment made things worse
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return self.control.units + self.treatment.units

    @property
    def final(self) -> bool:
        return self.decision != "continue"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["control"] = self.control.as_dict()
        d["treatment"] = self.treatment.as_dict()
        d["interval"] = list(self.interval) if self.interval else None
        d["units"] = self.units
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Verdict:
        def arm(a: dict[str, Any]) -> ArmSummary:
            return ArmSummary(a["name"], int(a["units"]), int(a["passed"]))

        return Verdict(
            decision=d["decision"],
            reason=d["reason"],
            control=arm(d["control"]),
            treatment=arm(d["treatment"]),
            difference=d.get("difference"),
            interval=tuple(d["interval"]) if d.get("interval") else None,
            confidence=d["confidence"],
            method=d["method"],
            p_value=d.get("p_value"),
            prob_better=d.get("prob_better"),
            stopped_at=d.get("stopped_at"),
            guardrail=bool(d.get("guardrail", False)),
            extra=d.get("extra") or {},
        )

    def summary(self) -> str:
        """One line a person can read: decision, difference with its interval, units."""
        if self.difference is None or self.interval is None:
            return f"{self.decision}: {self.reason}"
        lo, hi = self.interval
        return (
            f"{self.decision}: {self.reason} — difference {100 * self.difference:+.2f} pt "
            f"[{100 * lo:+.2f}, {100 * hi:+.2f}] at {100 * self.confidence:.0f}%, {self.units:,} units"
        )
