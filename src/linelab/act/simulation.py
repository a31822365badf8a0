"""The workspace's simulated line, brought back to where it stands so experiments continue it.

`twin run` simulates a scenario into a workspace (source "twin:NAME:seed=S"). A later
command that experiments on that line rebuilds it: the same scenario and seed, production
replayed up to the units already stored (not stored again), with every action LineLab applied
to it through the twin control re-applied at the unit where it took effect. Serial numbers,
wear, lots and the recipe then continue from where the stored data ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from linelab.errors import UserError

_SOURCE = re.compile(r"^twin:(?P<name>[^:]+):seed=(?P<seed>-?\d+)$")


@dataclass
class TwinLine:
    line: Any  # linelab.twin.Line
    source: str
    scenario: str
    seed: int
    replayed_units: int


def workspace_twin(ws: Any) -> tuple[str, int, int] | None:
    """(scenario, seed, units stored) of the twin line the workspace holds, if any."""
    rows = ws.query(
        "SELECT source, sum(n_rows) FILTER (WHERE table_name = 'units') AS units FROM batches "
        "WHERE source LIKE 'twin:%' GROUP BY source"
    ).to_pylist()
    lines = [(r["source"], int(r["units"] or 0)) for r in rows if _SOURCE.match(r["source"])]
    if not lines:
        return None
    if len(lines) > 1:
        raise UserError(f"workspace holds several simulated lines ({', '.join(s for s, _ in lines)}); "
                        "experiment on one workspace per line")
    source, units = lines[0]
    m = _SOURCE.match(source)
    assert m is not None
    return m["name"], int(m["seed"]), units


def open_twin(ws: Any, scenario: str | None = None, seed: int | None = None) -> TwinLine:
    """The workspace's twin line, fast-forwarded; or a fresh one of `scenario` if it holds none."""
    from linelab.twin import Line, load_scenario

    held = workspace_twin(ws)
    if held is None:
        sc = load_scenario(scenario or "clean")
        s = 0 if seed is None else seed
        return TwinLine(Line(sc, seed=s), f"twin:{sc.name}:seed={s}", sc.name, s, 0)
    name, s, units = held
    if (scenario is not None and scenario != name) or (seed is not None and seed != s):
        raise UserError(f"workspace holds the simulated line {name} (seed {s}); use another --workspace "
                        f"for {scenario or name} (seed {seed if seed is not None else s})")
    line = Line(name, seed=s)
    applied = sorted(
        (a for a in ws.list_artifacts("action", status="applied")
         if (a.get("applied") or {}).get("via") == "twin" and (a.get("applied") or {}).get("unit") is not None),
        key=lambda a: int(a["applied"]["unit"]),
    )
    for a in applied:
        at = min(int(a["applied"]["unit"]), units)
        if at > line.units_produced:
            line.produce(at - line.units_produced)
        line.apply({"kind": a["kind"], **a["params"]})
    if units > line.units_produced:
        # replay in large chunks: the stored data already holds these units
        while line.units_produced < units:
            line.produce(min(200_000, units - line.units_produced))
    return TwinLine(line, f"twin:{name}:seed={s}", name, s, units)
