"""`linelab profile check`: the profile compared with the data, and what is missing in plain words.

Checked against export files (their headers, and what they hold read through their sources) or
against the ingested workspace: each source's columns present in its files; stations named in the
data but not in the profile and the reverse; readings with no role; recipe settings never seen
among the params; actions remedying causes at stations the line does not have; specs and products
the data does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Literal

from linelab.profile.facts import LineFacts
from linelab.profile.schema import Profile, Source
from linelab.profile.sources import file_columns, plan

Level = Literal["error", "warning"]


@dataclass
class Finding:
    level: Level
    topic: str  # sources | stations | readings | recipe | actions | specs | products
    message: str


def check_sources(profile: Profile, files: list[Path]) -> tuple[list[Finding], list[tuple[Path, Source]]]:
    """Each file against the source its name matches; the (file, source) pairs to read the data of."""
    out: list[Finding] = []
    readable: list[tuple[Path, Source]] = []
    used: set[str] = set()
    for path in files:
        source = next((s for s in profile.sources if s.matches(path.name)), None)
        if source is None:
            if profile.sources:
                out.append(Finding("warning", "sources", f"{path.name} matches no source's file pattern: it would "
                                   "be ingested as it is, by its name or its columns"))
            continue
        used.add(source.name)
        problems = plan(source, file_columns(path, source)).problems(source, path.name)
        out += [Finding("error", "sources", p) for p in problems]
        readable.append((path, source))  # what it can give still counts (a missing column is reported above)
    for s in profile.sources:
        if files and s.name not in used:
            out.append(Finding("warning", "sources", f"source '{s.name}' ({', '.join(s.files)}) matches none of the "
                               "files checked"))
    return out, readable


def check_line(profile: Profile, facts: LineFacts) -> list[Finding]:
    out: list[Finding] = []
    line = profile.line
    data_stations = facts.station_names
    steps = {s["station"]: s["steps"] for s in facts.stations}
    if data_stations:
        if not line.stations:
            out.append(Finding("error", "stations", "the profile lists no stations; the data has "
                               f"{', '.join(data_stations)} (in process order)"))
        else:
            for s in data_stations:
                if s not in line.station_order:
                    out.append(Finding("error", "stations", f"station {s} appears in the data ({steps[s]:,} steps) "
                                       "but not in line.stations"))
            for s in line.station_order:
                if s not in data_stations:
                    out.append(Finding("warning", "stations", f"station {s} is in line.stations but no step in the "
                                       "data names it"))
    known_stations = set(line.station_order) | set(data_stations)
    if facts.readings and not line.readings:
        names = sorted({r.name for r in facts.readings})
        out.append(Finding("error", "readings", f"no reading has a role (line.readings is empty); the data has "
                           f"{len(names)}: {', '.join(names[:12])}{'…' if len(names) > 12 else ''} — say which are "
                           "settings, conditions, measurements or environment"))
    for r in facts.readings if line.readings else []:
        if line.role(r.name, r.station) is None:
            where = f"{r.table}" + (f" at {r.station}" if r.station else "")
            out.append(Finding("error", "readings", f"reading {r.name} ({where}) has no role: add it to line.readings "
                               "as a setting, condition, measurement or environment"))
    for reading in line.readings:
        if facts.readings and not any(fnmatch(f.name, reading.name) for f in facts.readings):
            out.append(Finding("warning", "readings", f"line.readings names {reading.name}, which no reading in the "
                               "data matches"))
    params = {(f.name, f.station) for f in facts.readings if f.table == "params"}
    if facts.tables.get("params"):
        for setting in profile.recipe:
            if not any(n == setting.name and (setting.station is None or st == setting.station) for n, st in params):
                out.append(Finding("error", "recipe", f"recipe setting {setting.name} is never seen among the params"
                                   + (f" at {setting.station}" if setting.station else "")
                                   + ": experiments could not tell what each unit was made with"))
    for a in profile.actions:
        for rule in a.remedies:
            for st in rule.station:
                if known_stations and st not in known_stations and not any(ch in st for ch in "*?["):
                    out.append(Finding("error", "actions", f"action {a.name} remedies causes at station {st}, "
                                       "which the line does not have"))
    for sp in line.specs:
        if known_stations and sp.station not in known_stations:
            out.append(Finding("warning", "specs", f"spec {sp.product}/{sp.station}/{sp.name} names station "
                               f"{sp.station}, which the line does not have"))
        if facts.products and line.products and sp.product not in line.products:
            out.append(Finding("warning", "specs", f"spec {sp.product}/{sp.station}/{sp.name} is for product "
                               f"{sp.product}, which line.products does not list"))
    if line.products:
        for p in facts.products:
            if p not in line.products:
                out.append(Finding("warning", "products", f"product {p} appears in the data but not in line.products"))
    return out
