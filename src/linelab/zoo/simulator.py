"""The zoo as a simulator LineLab knows by name ("zoo" in linelab.line.SIMULATORS).

Scenario names are "kind:problem" or "kind:problem:subtle" (e.g. "assembly:bad_lot_fails",
"machining:clean"); every kind offers every problem type its line has a target for.
"""

from __future__ import annotations

from linelab.zoo.kinds import KINDS
from linelab.zoo.line import ZooLine
from linelab.zoo.problems import PROBLEM_TYPES

DEFAULT = "assembly:machine_step"


def problem_types(kind: str) -> list[str]:
    """The problem types a kind's line can inject (overlap needs a machine step and a bad lot)."""
    targets = KINDS[kind].targets
    both = {"machine_step", "bad_lot_fails"} <= set(targets)
    return [t for t in PROBLEM_TYPES if t in targets or (t == "overlap" and both)]


def scenarios() -> list[str]:
    out = []
    for kind in KINDS:
        out.append(f"{kind}:clean")
        for t in problem_types(kind):
            out += [f"{kind}:{t}", f"{kind}:{t}:subtle"]
    return out


def parse(scenario: str | None) -> tuple[str, str, str]:
    """'kind:problem[:subtle]' -> (kind, problem, severity)."""
    parts = (scenario or DEFAULT).split(":")
    kind, problem = parts[0], parts[1] if len(parts) > 1 else "clean"
    severity = parts[2] if len(parts) > 2 else "obvious"
    if kind not in KINDS:
        raise ValueError(f"unknown line kind {kind!r}; known: {', '.join(KINDS)}")
    if problem != "clean" and problem not in problem_types(kind):
        raise ValueError(f"{kind} has no problem {problem!r}; known: {', '.join(problem_types(kind))}, clean")
    return kind, problem, severity


def open_line(scenario: str | None = None, seed: int = 0, units: int | None = None) -> ZooLine:
    kind, problem, severity = parse(scenario)
    return ZooLine(kind, problem, severity, seed, units)
