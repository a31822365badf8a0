"""Symptom signatures: what moved, where, which way — the key by which know-how is recalled.

A recurring problem rarely repeats to the letter: nozzle wear comes back on another nozzle, a
bad lot on the next lot. So a signature separates the *type* of symptom (kind, station,
measurement or defect, direction, which kinds of entity are in scope) from the *levels*
(which machine, which lot). Recall matches types strongly and levels weakly.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Scope keys that name what was measured (the symptom), as opposed to where it happened.
SYMPTOM_KEYS = ("station", "measurement", "name", "defect_code", "metric")


class Signature(BaseModel):
    kind: str = Field(description="measurement_shift, defect_rate, ...")
    station: str | None = None
    measurement: str | None = None
    measurements: list[str] = Field(default_factory=list, description="every measurement the problem's signals name")
    moves: dict[str, float] = Field(default_factory=dict,
                                    description="how far each measurement moved, in its own sigmas (signed)")
    defect_code: str | None = None
    direction: str | None = Field(None, description="up | down | wider")
    shape: str | None = Field(None, description="step | drift | spike, when known")
    scope: dict[str, str] = Field(default_factory=dict, description="entities in scope: machine, lot, shift...")

    def headline(self) -> str:
        what = self.measurement or self.defect_code or self.kind
        where = " on ".join(f"{k} {v}" for k, v in self.scope.items()) or (self.station or "the line")
        arrow = {"up": " ↑", "down": " ↓", "wider": " ↔"}.get(self.direction or "", "")
        return f"{what}{arrow} at {self.station or '?'} ({where})"

    def text(self) -> str:
        parts = [self.kind, self.station, self.measurement, self.defect_code, self.direction, self.shape]
        parts += [f"{k} {v}" for k, v in self.scope.items()]
        return " ".join(str(p).replace("_", " ") for p in parts if p)


def _direction(problem: dict[str, Any]) -> str | None:
    for signal in problem.get("signals") or []:
        effect = signal.get("effect") or {}
        for key in ("direction",):
            if isinstance(effect.get(key), str):
                return effect[key]
        for key in ("shift_sigma", "delta", "shift", "excess", "rate_ratio"):
            v = effect.get(key)
            if isinstance(v, int | float):
                if key == "rate_ratio":
                    return "up" if v > 1 else "down"
                return "up" if v > 0 else "down"
    return None


def signature_of(problem: dict[str, Any]) -> Signature:
    """The signature of a stored problem (a monitor artefact), tolerant of missing fields."""
    scope = {str(k): str(v) for k, v in (problem.get("scope") or {}).items() if v is not None}
    measurement = scope.pop("measurement", None) or scope.pop("name", None)
    defect = scope.pop("defect_code", None)
    station = scope.pop("station", None)
    scope.pop("metric", None)
    shape = None
    moved = [measurement] if measurement else []
    moves: dict[str, float] = {}
    for signal in problem.get("signals") or []:
        effect = signal.get("effect") or {}
        shape = effect.get("shape") or shape
        name = (signal.get("scope") or {}).get("measurement")
        if name and name not in moved:
            moved.append(name)
        if name and name not in moves and isinstance(effect.get("shift_sigma"), int | float):
            moves[name] = round(float(effect["shift_sigma"]), 3)
    return Signature(
        kind=str(problem.get("kind") or "problem"),
        station=station,
        measurement=measurement,
        measurements=moved,
        moves=moves,
        defect_code=defect,
        direction=_direction(problem),
        shape=shape,
        scope=scope,
    )


# Weights: the type of symptom decides a match; the exact entity only sharpens it.
W_KIND, W_SYMPTOM, W_DIRECTION, W_SCOPE_KEY, W_SCOPE_LEVEL = 2.0, 2.0, 1.0, 1.0, 0.5


def similarity(a: Signature, b: Signature) -> float:
    """Structural similarity in [0, 1]."""
    got = total = 0.0

    def term(weight: float, x: Any, y: Any) -> None:
        nonlocal got, total
        if x is None and y is None:
            return
        total += weight
        got += weight if x == y else 0.0

    term(W_KIND, a.kind, b.kind)
    term(W_SYMPTOM, a.station, b.station)
    # One incident moves several measurements, and which one leads its headline varies: compare
    # the sets. A direction only compares between the same headline measurement.
    moved_a = set(a.measurements) or ({a.measurement} if a.measurement else set())
    moved_b = set(b.measurements) or ({b.measurement} if b.measurement else set())
    if moved_a or moved_b:
        total += W_SYMPTOM
        got += W_SYMPTOM * len(moved_a & moved_b) / len(moved_a | moved_b)
    term(W_SYMPTOM, a.defect_code, b.defect_code)
    if a.measurement == b.measurement:
        term(W_DIRECTION, a.direction, b.direction)
    for key in set(a.scope) | set(b.scope):
        total += W_SCOPE_KEY + W_SCOPE_LEVEL
        if key in a.scope and key in b.scope:
            got += W_SCOPE_KEY + (W_SCOPE_LEVEL if a.scope[key] == b.scope[key] else 0.0)
    return got / total if total else 0.0
