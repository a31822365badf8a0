"""The workspace's simulated line, brought back to where it stands so actions and experiments continue it.

A simulated run (`linelab twin run`, `linelab loop`) records which simulator, scenario and seed
made it (artefact kind "simulation", keyed by the run's batch source). A later command that acts
or experiments on that line rebuilds it: the same scenario and seed, production replayed up to
the units already stored (not stored again), with every action LineLab applied to it re-applied
at the unit where it took effect. Serial numbers, wear, lots and the recipe then continue from
where the stored data ends. Nothing here knows which simulator it is: `linelab.line` resolves it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linelab.errors import UserError
from linelab.line import SimulatedLine, open_simulator
from linelab.profile import PROFILE_FILE, profile_path, save_profile
from linelab.store.pg_address import linked_url
from linelab.store.workspace import Workspace, resolve_path, workspace_exists

KIND = "simulation"
VIA = "simulator"  # applied.via of actions a simulated line took at once
SIM_WORKSPACE = "linelab-sim"  # where simulations go unless told otherwise: never over a real line's data


@dataclass
class HeldLine:
    line: SimulatedLine
    source: str
    simulator: str
    scenario: str
    seed: int
    replayed_units: int


def simulation_path(path: str | Path | None) -> Path:
    """The workspace a simulation writes to: the one named, else ./linelab-sim (not the default
    workspace, which may hold a real line's data)."""
    return Path(path or os.environ.get("LINELAB_WORKSPACE") or SIM_WORKSPACE)


def prepare_simulation_workspace(path: str | Path | None, fresh: bool) -> Path:
    """The simulation's workspace, emptied when `fresh`; refused when it holds a real line's data."""
    root = simulation_path(path)
    if workspace_exists(root):
        with Workspace.open(root, create=False) as ws:
            foreign = foreign_sources(ws)
        if foreign:
            raise UserError(f"workspace {root} holds data ingested from a line ({', '.join(foreign[:3])}); a "
                            "simulation never overwrites or mixes with it: give it a workspace of its own "
                            f"(--workspace {SIM_WORKSPACE})")
        if fresh and linked_url(resolve_path(root)):
            from linelab.store.postgres import empty_linked_folder  # the driver only for a PostgreSQL workspace

            empty_linked_folder(resolve_path(root))  # a PostgreSQL workspace: its schema goes, its link stays
        elif fresh:
            shutil.rmtree(root)
    return root


def record_simulation(ws: Any, line: SimulatedLine, simulator: str, scenario: str, seed: int) -> None:
    """Remember which simulator made the workspace's data, and give the workspace the line's profile."""
    ws.put_artifact(KIND, line.source, {"id": line.source, "simulator": simulator, "scenario": scenario,
                                        "seed": int(seed), "source": line.source, "recipe": dict(line.recipe)})
    if profile_path(ws.path) is None:
        save_profile(line.profile, Path(ws.path) / PROFILE_FILE)


def is_simulated(ws: Any, source: str) -> bool:
    return ws.get_artifact(KIND, source) is not None


def foreign_sources(ws: Any) -> list[str]:
    """Sources of line data in the workspace that no simulation made (a real line's ingested files)."""
    sims = {s["source"] for s in ws.list_artifacts(KIND)}
    rows = ws.query("SELECT DISTINCT source FROM batches WHERE table_name = 'units' AND n_rows > 0").column(0)
    return [s for s in rows.to_pylist() if s not in sims]


def workspace_simulation(ws: Any) -> tuple[dict[str, Any], int] | None:
    """(the simulation record, units stored) of the simulated line the workspace holds, if any."""
    sims = ws.list_artifacts(KIND)
    if not sims:
        return None
    if len(sims) > 1:
        raise UserError(f"workspace holds several simulated lines ({', '.join(s['source'] for s in sims)}); "
                        "use one workspace per line")
    sim = sims[0]
    units = ws.scalar("SELECT coalesce(sum(n_rows), 0) FROM batches WHERE table_name = 'units' AND source = ?",
                      [sim["source"]])
    return sim, int(units or 0)


def open_workspace_line(ws: Any, simulator: str = "twin", scenario: str | None = None,
                        seed: int | None = None) -> HeldLine:
    """The workspace's simulated line, fast-forwarded; or a fresh one of `scenario` if it holds none."""
    held = workspace_simulation(ws)
    if held is None:
        s = 0 if seed is None else seed
        line = open_simulator(simulator, scenario, s)
        return HeldLine(line, line.source, simulator, line.scenario_name, s, 0)
    sim, units = held
    name, s = sim["scenario"], int(sim["seed"])
    if (scenario is not None and scenario != name) or (seed is not None and seed != s):
        raise UserError(f"workspace holds the simulated line {name} (seed {s}); use another --workspace "
                        f"for {scenario or name} (seed {seed if seed is not None else s})")
    line = open_simulator(sim["simulator"], name, s)
    applied = sorted(
        (a for a in ws.list_artifacts("action", status="applied")
         if (a.get("applied") or {}).get("via") == VIA and (a.get("applied") or {}).get("unit") is not None),
        key=lambda a: int(a["applied"]["unit"]),
    )
    for a in applied:
        at = min(int(a["applied"]["unit"]), units)
        if at > line.units_produced:
            line.produce(at - line.units_produced)
        line.apply({"kind": a["kind"], **a["params"]})
    while line.units_produced < units:  # replay in large chunks: the stored data already holds these units
        line.produce(min(200_000, units - line.units_produced))
    return HeldLine(line, sim["source"], sim["simulator"], name, s, units)
