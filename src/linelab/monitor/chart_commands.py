"""`linelab chart` and `linelab capability`: the SPC views on any series of the workspace.

A series is named by the line's own data: a measurement, a process parameter or a signal
(`NAME` or `STATION/NAME` where the name is read at several stations); attribute charts (p, np, u)
take a station (`STATION`, or `STATION/DEFECT_CODE` for one defect). Charts are fitted on a
phase-I window and every point carries the Nelson numbers of the rules it breaks, so a person can
see which rule caught it; plots are in the measurement's own units (from the specs table).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from scipy.stats import chi2, norm

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.monitor.attribute import PChart
from linelab.monitor.process_capability import capability as capability_indices
from linelab.monitor.rules import RULE_TEXT, resolve_rules, rules_fired
from linelab.monitor.spc import CUSUMChart, EWMAChart, IndividualsChart, XbarChart
from linelab.render import fmt, print_rows

ChartType = Literal["imr", "xbar-r", "xbar-s", "p", "np", "u", "ewma", "cusum"]
ATTRIBUTE = ("p", "np", "u")
SUBGROUPED = ("xbar-r", "xbar-s", *ATTRIBUTE)
BY_FACTORS = ("station", "machine", "fixture", "operator", "shift")
VALUE_TABLES = ("measurements", "params")


# -- reading a series ----------------------------------------------------------------------------
@dataclass
class Series:
    """One series as stored: times, values, the unit behind each value, the group it belongs to."""

    name: str
    station: str | None
    t: np.ndarray
    value: np.ndarray
    unit_id: np.ndarray
    group: np.ndarray
    unit: str | None  # of measure, from the specs
    lsl: float | None
    usl: float | None
    target: float | None


def _spec(ws: Any, station: str | None, name: str) -> dict[str, Any]:
    if not ws.count("specs"):
        return {}
    rows = ws.query("SELECT lsl, usl, target, unit FROM specs WHERE name = ? AND (? IS NULL OR station = ?) "
                    "ORDER BY product LIMIT 1", [name, station, station]).to_pylist()
    return rows[0] if rows else {}


def _split(series: str) -> tuple[str | None, str]:
    station, _, name = series.rpartition("/")
    return (station or None), name


def read_values(ws: Any, series: str, by: str | None = None) -> Series:
    """A measurement, parameter or signal series in time order (optionally with a grouping factor)."""
    station, name = _split(series)
    if by is not None and by not in BY_FACTORS:
        raise UserError(f"--by is one of {', '.join(BY_FACTORS)}")
    for table in VALUE_TABLES:
        stations = [r["station"] for r in ws.query(
            f"SELECT DISTINCT station FROM {table} WHERE name = ? ORDER BY 1", [name]).to_pylist()]
        if not stations:
            continue
        if station is None and len(stations) > 1 and by != "station":
            raise UserError(f"{name} is read at {', '.join(stations)}: name one, e.g. {stations[0]}/{name}")
        if station is not None and station not in stations:
            raise UserError(f"{name} is not read at {station} (it is at {', '.join(stations)})")
        where = "v.name = ?" + (" AND v.station = ?" if station else "")
        args = [name, station] if station else [name]
        if by in (None, "station"):
            group = "v.station" if by else "''"
            sql = f"SELECT v.t, v.value, v.unit_id, {group} AS g FROM {table} v WHERE {where} ORDER BY v.t, v.unit_id"
        else:
            # The machine (fixture, operator, shift) of the unit's last visit to the station the value is
            # read at; only that station's steps are grouped (a fraction of the table).
            at = station or stations[0]
            sql = (f"SELECT v.t, v.value, v.unit_id, COALESCE(CAST(s.g AS VARCHAR), '?') AS g FROM {table} v "
                   f"LEFT JOIN (SELECT unit_id, station, arg_max({by}, t_in) AS g FROM steps WHERE station = ? "
                   f"GROUP BY ALL) s USING (unit_id, station) WHERE {where} ORDER BY v.t, v.unit_id")
            args = [at, *args]
        rows = ws.query(sql, args)
        spec = _spec(ws, station or (stations[0] if len(stations) == 1 else None), name)
        return Series(name=name, station=station or (stations[0] if len(stations) == 1 else None),
                      t=rows.column("t").to_numpy(zero_copy_only=False).astype("datetime64[ms]"),
                      value=rows.column("value").to_numpy(zero_copy_only=False).astype(float),
                      unit_id=rows.column("unit_id").to_numpy(zero_copy_only=False).astype(str),
                      group=rows.column("g").to_numpy(zero_copy_only=False).astype(str),
                      unit=spec.get("unit"), lsl=spec.get("lsl"), usl=spec.get("usl"), target=spec.get("target"))
    if station is None and by in (None,):
        rows = ws.query("SELECT t, value FROM signals WHERE name = ? ORDER BY t", [name])
        if rows.num_rows:
            spec = _spec(ws, None, name)
            n = rows.num_rows
            return Series(name=name, station=None,
                          t=rows.column("t").to_numpy(zero_copy_only=False).astype("datetime64[ms]"),
                          value=rows.column("value").to_numpy(zero_copy_only=False).astype(float),
                          unit_id=np.full(n, "", dtype=object).astype(str), group=np.full(n, "").astype(str),
                          unit=spec.get("unit"), lsl=spec.get("lsl"), usl=spec.get("usl"), target=spec.get("target"))
    known = ", ".join(available_series(ws)[:12])
    raise UserError(f"no measurement, parameter or signal named {series!r} in this workspace (some: {known})")


def available_series(ws: Any) -> list[str]:
    """Every chartable value series, as STATION/NAME (signals by name)."""
    names: list[str] = []
    for table in VALUE_TABLES:
        names += [f"{r['station']}/{r['name']}" for r in ws.query(
            f"SELECT DISTINCT station, name FROM {table} ORDER BY 1, 2").to_pylist()]
    names += [r["name"] for r in ws.query("SELECT DISTINCT name FROM signals ORDER BY 1").to_pylist()]
    return names


def stations(ws: Any) -> list[str]:
    """The stations that attribute charts (p, np, u) can take."""
    return [r["station"] for r in ws.query("SELECT DISTINCT station FROM steps ORDER BY 1").to_pylist()]


def spec_unit(ws: Any, station: str | None, name: str) -> str | None:
    """The unit of measure the specs give a reading (None when the specs do not say)."""
    return _spec(ws, station, name).get("unit")


def read_counts(ws: Any, series: str, by: str | None = None) -> Series:
    """A station's units in the order they first reached it: value = 1 for a unit that failed there
    (or, for `STATION/CODE`, the number of its visits with that defect code); attribute charts
    count these per subgroup of units."""
    station, code = _split(series)
    if station is None:
        station, code = code, ""
    stations = {r["station"] for r in ws.query("SELECT DISTINCT station FROM steps").to_pylist()}
    if station not in stations:
        raise UserError(f"no station {station!r} in this workspace (stations: {', '.join(sorted(stations))})")
    if by is not None and by not in BY_FACTORS[1:]:
        raise UserError(f"--by for an attribute chart is one of {', '.join(BY_FACTORS[1:])}")
    bad = "SUM(CASE WHEN defect_code = ? THEN 1 ELSE 0 END)" if code else \
        "MAX(CASE WHEN result <> 'pass' THEN 1 ELSE 0 END)"
    group = f"COALESCE(CAST(arg_min({by}, t_in) AS VARCHAR), '?')" if by else "''"
    args = [code, station] if code else [station]
    rows = ws.query(f"SELECT MIN(t_in) AS t, CAST({bad} AS DOUBLE) AS value, unit_id, {group} AS g "
                    "FROM steps WHERE station = ? GROUP BY unit_id ORDER BY t, unit_id", args)
    return Series(name=f"{station}/{code}" if code else station, station=station,
                  t=rows.column("t").to_numpy(zero_copy_only=False).astype("datetime64[ms]"),
                  value=rows.column("value").to_numpy(zero_copy_only=False).astype(float),
                  unit_id=rows.column("unit_id").to_numpy(zero_copy_only=False).astype(str),
                  group=rows.column("g").to_numpy(zero_copy_only=False).astype(str),
                  unit=None, lsl=None, usl=None, target=None)


# -- charting ------------------------------------------------------------------------------------
class Violation(BaseModel):
    index: int = Field(description="the point's position in the whole chart (0 = first)")
    t: str
    value: float
    unit_id: str = Field(description="the first unit behind the point")
    rules: list[int] = Field(description="Nelson rule numbers broken; 0 = the spread chart (MR, R or S)")


class Spread(BaseModel):
    name: str
    value: list[float | None]
    centre: float
    lcl: float
    ucl: float


class ChartStage(BaseModel):
    start: int = Field(description="chart index of the stage's first point")
    t: str = Field(description="time of the stage's first point")
    phase1: int = Field(description="points of the stage's own phase I")
    centre: float
    sigma: float | None


class ChartGroup(BaseModel):
    group: str = Field(description="the --by level ('' without --by)")
    points: int = Field(description="points in the whole chart (only the last --points are listed)")
    phase1: int = Field(description="points of the phase-I window the limits were learnt from")
    first_index: int = Field(description="chart index of the first listed point")
    centre: float
    sigma: float | None
    t: list[str]
    value: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    units: list[str] = Field(description="first unit behind each point")
    rules: list[int] = Field(description="per point, bit r-1 set when Nelson rule r fired")
    spread: Spread | None = None
    violations: list[Violation]
    flagged: int = Field(description="points flagged by any rule over the whole chart")
    rule_counts: dict[str, int] = Field(description="points breaking each rule over the whole chart")
    stages: list[ChartStage] = Field(default_factory=list, description="with --stage-at: each stage's own "
                                     "limits, learnt on its own phase I (centre and sigma above: the last stage's)")

    def centre_line(self) -> list[float | None]:
        """The centre at each listed point (each stage has its own)."""
        if not self.stages:
            return [self.centre] * len(self.t)
        starts = np.array([st.start for st in self.stages])
        at = np.searchsorted(starts, np.arange(self.first_index, self.first_index + len(self.t)), side="right") - 1
        return [self.stages[max(int(i), 0)].centre for i in at]


def _clean_list(a: np.ndarray) -> list[float | None]:
    """Floats for JSON, NaN and infinities as None (vectorised: charts list thousands of points)."""
    arr = np.asarray(a, dtype=float)
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return list(out.tolist())


def _subgroups(s: Series, idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = len(idx) // size
    take = idx[: m * size]
    return (s.value[take].reshape(m, size), s.t[take].reshape(m, size)[:, -1],
            s.unit_id[take].reshape(m, size)[:, 0])


def _attribute(kind: str, g: np.ndarray, ph: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """(statistic, lower, upper, centre, z) of a p, np or u chart over subgroups `g` of equal size."""
    n = g.shape[1]
    counts = g.sum(axis=1)
    if kind == "p":
        chart = PChart().fit(np.c_[counts[:ph], np.full(ph, n)])
        sc = chart.update(np.c_[counts, np.full(len(counts), n)])
        centre, sd = chart.p_bar_, np.sqrt(chart.p_bar_ * (1 - chart.p_bar_) / n)
        stat, lower, upper = sc.statistic, sc.lower, sc.upper
    else:
        rate = float(counts[:ph].sum() / (ph * n))
        if kind == "np":
            centre, sd, stat = n * rate, np.sqrt(n * rate * (1 - rate)), counts
        else:
            centre, sd, stat = rate, np.sqrt(rate / n), counts / n
        lower = np.full(len(counts), max(centre - 3 * sd, 0.0))
        upper = np.full(len(counts), centre + 3 * sd)
    # A phase I without a single defect has no spread: any defect later is then beyond the limit.
    z = (stat - centre) / sd if sd > 0 else np.sign(stat - centre) * np.inf
    return stat, np.asarray(lower), np.asarray(upper), float(centre), z


def _window(t: np.ndarray, points: int, until: datetime | None) -> tuple[int, int]:
    """The listed window: the last `points` up to `until` (every point is judged either way)."""
    m = len(t)
    stop = m if until is None else int(np.searchsorted(t, np.datetime64(until, "ms"), side="right"))
    stop = max(stop, min(m, 1))
    return max(0, stop - points), stop


def staged_group(s: Series, idx: np.ndarray, kind: str, rules: str | list[int], phase1: int | None, size: int,
                 points: int, group: str, until: datetime | None, stage_at: list[datetime]) -> ChartGroup:
    """One chart whose limits are learnt afresh at each time the process changed: every stage is
    charted on its own phase I, and the stages are joined in time order."""
    cuts = np.searchsorted(s.t[idx], np.array(sorted(stage_at), dtype="datetime64[ms]"), side="left")
    pieces = [p for p in np.split(idx, cuts) if len(p)]
    if len(pieces) < 2:
        return chart_group(s, idx, kind, rules, phase1, size, points, group, until)
    every_point = len(idx)  # each stage lists all its points; the joined chart is windowed below
    parts = [chart_group(s, p, kind, rules, phase1, size, every_point, group) for p in pieces]
    offsets = np.cumsum([0] + [g.points for g in parts[:-1]])
    t = np.array([x for g in parts for x in g.t], dtype="datetime64[ms]")
    start, stop = _window(t, points, until)

    def joined(field: str) -> list[Any]:
        return [x for g in parts for x in getattr(g, field)][start:stop]

    counts: dict[str, int] = {}
    for g in parts:
        for k, v in g.rule_counts.items():
            counts[k] = counts.get(k, 0) + v
    last = parts[-1]
    spread = None if last.spread is None else last.spread.model_copy(
        update={"value": [x for g in parts for x in (g.spread.value if g.spread else [])][start:stop]})
    return ChartGroup(
        group=group, points=int(offsets[-1] + last.points), phase1=parts[0].phase1, first_index=start,
        centre=last.centre, sigma=last.sigma, t=joined("t"), value=joined("value"), lower=joined("lower"),
        upper=joined("upper"), units=joined("units"), rules=joined("rules"), spread=spread,
        violations=[v.model_copy(update={"index": int(v.index + off)}) for g, off in zip(parts, offsets, strict=True)
                    for v in g.violations if start <= v.index + off < stop],
        flagged=sum(g.flagged for g in parts), rule_counts=counts,
        stages=[ChartStage(start=int(off), t=g.t[0], phase1=g.phase1, centre=g.centre, sigma=g.sigma)
                for g, off in zip(parts, offsets, strict=True)])


def chart_group(s: Series, idx: np.ndarray, kind: str, rules: str | list[int], phase1: int | None, size: int,
                points: int, group: str = "", until: datetime | None = None) -> ChartGroup:
    """One chart over the values `idx` of series `s`."""
    from linelab.monitor.rules import rule_mask

    rule_set, run = resolve_rules(rules)
    spread: Spread | None = None
    spread_values = np.empty(0)
    spread_alarm: np.ndarray | None = None
    sigma: float | None = None
    if kind in SUBGROUPED:
        vals, t, units = _subgroups(s, idx, size)
    else:
        vals, t, units = s.value[idx], s.t[idx], s.unit_id[idx]
    m = len(vals)
    ph = min(m, phase1 or max(20, m // 5))
    if ph < (2 if kind in SUBGROUPED else 3):
        raise UserError(f"{s.name}{' ' + group if group else ''}: only {m} point(s); a chart needs more "
                        f"(lower --subgroup or pick a longer series)")
    if kind == "imr":
        ch = IndividualsChart(rules=rules).fit(vals[:ph])
        sc = ch.update(vals)
        stat, lower, upper, centre, mask = sc.statistic, sc.lower, sc.upper, ch.centre_, sc.extra["rules"]
        sigma = ch.sigma_
        spread = Spread(name="moving range", value=[], centre=ch.mr_bar_, lcl=0.0, ucl=ch.mr_ucl_)
        spread_values = sc.extra["moving_range"]
        spread_alarm = sc.extra["mr_alarm"]
    elif kind in ("xbar-r", "xbar-s"):
        xb = XbarChart(dispersion="range" if kind == "xbar-r" else "std", rules=rules).fit(vals[:ph])
        sc = xb.update(vals)
        stat, lower, upper, centre, mask = sc.statistic, sc.lower, sc.upper, xb.centre_, sc.extra["rules"]
        sigma = xb.sigma_
        spread = Spread(name="range" if kind == "xbar-r" else "standard deviation",
                        value=[], centre=xb.spread_centre_, lcl=xb.spread_lcl_, ucl=xb.spread_ucl_)
        spread_values = sc.extra["spread"]
        spread_alarm = sc.extra["spread_alarm"]
    elif kind in ATTRIBUTE:
        stat, lower, upper, centre, z = _attribute(kind, vals, ph)
        mask = rule_mask(z, rule_set, run)
    else:
        design: EWMAChart | CUSUMChart = EWMAChart() if kind == "ewma" else CUSUMChart()
        design.fit(vals[:ph])
        sc = design.update(vals)
        stat, lower, upper, centre = sc.statistic, sc.lower, sc.upper, design.centre_
        if kind == "cusum":
            centre = 0.0  # C+ / C- accumulate in sigma units from zero
        sigma = design.sigma_
        mask = np.where(sc.alarm, 1, 0)  # these charts have one rule: the statistic beyond its limit
    mask = np.asarray(mask, dtype=np.int64)
    counts = {str(r): int(((mask >> (r - 1)) & 1).sum()) for r in rule_set}
    if spread_alarm is not None:
        counts["0"] = int(np.asarray(spread_alarm).sum())
    start, stop = _window(np.asarray(t, dtype="datetime64[ms]"), points, until)
    spread_hit = np.zeros(m, bool) if spread_alarm is None else np.asarray(spread_alarm, bool)
    hit = (mask > 0) | spread_hit
    flagged = np.flatnonzero(hit[start:stop])
    t_text = np.datetime_as_string(np.asarray(t[start:stop], dtype="datetime64[s]"))
    violations = [Violation(index=int(start + i), t=str(t_text[i]), value=float(stat[start + i]),
                            unit_id=str(units[start + i]),
                            rules=rules_fired(int(mask[start + i]))
                            + ([0] if spread_hit[start + i] else []))
                  for i in flagged]
    return ChartGroup(group=group, points=m, phase1=ph, first_index=start, centre=float(centre), sigma=sigma,
                      t=[str(x) for x in t_text], value=_clean_list(stat[start:stop]),
                      lower=_clean_list(np.asarray(lower)[start:stop]),
                      upper=_clean_list(np.asarray(upper)[start:stop]),
                      units=[str(u) for u in units[start:stop]], rules=[int(x) for x in mask[start:stop]],
                      spread=spread if spread is None else spread.model_copy(
                          update={"value": _clean_list(spread_values[start:stop])}),
                      violations=violations, flagged=int(hit.sum()), rule_counts=counts)


def _groups(s: Series) -> list[tuple[str, np.ndarray]]:
    levels = np.unique(s.group)
    return [(str(g), np.flatnonzero(s.group == g)) for g in levels]


def _rules_name(rules: str) -> str:
    name = rules.replace("-", "_")
    if name in ("none", "western_electric", "nelson"):
        return name
    try:
        nums = [int(x) for x in rules.split(",") if x.strip()]
        resolve_rules(nums)  # a number that names no rule (0, -1, 9) is refused here
    except ValueError:
        raise UserError(f"--rules is western-electric, nelson, none or Nelson rule numbers 1..8 like 1,2,5 "
                        f"(got {rules!r})") from None
    return ",".join(map(str, nums))


def _rule_set(rules: str) -> str | list[int]:
    return rules if not rules[:1].isdigit() else [int(x) for x in rules.split(",")]


# -- linelab chart -------------------------------------------------------------------------------
# Marks an output file parameter, so the REST layer can keep what a request writes inside its workspace.
OUTPUT: dict[str, Any] = {"path": "output"}


class ChartParams(BaseModel):
    series: str = Field(..., description="a measurement, parameter or signal (NAME or STATION/NAME); for p, np, u "
                        "a station (STATION or STATION/DEFECT_CODE)", json_schema_extra={"argument": True})
    type: ChartType = Field("imr", description="imr, xbar-r, xbar-s, p, np, u, ewma or cusum")
    rules: str = Field("western-electric", description="run rules: western-electric, nelson, none, or Nelson "
                       "rule numbers such as 1,2,5")
    phase1: int | None = Field(None, gt=1, description="points (subgroups) the limits are learnt from "
                               "[default: the first fifth, at least 20]")
    subgroup: int | None = Field(None, gt=1, description="values per subgroup [default: 5 for X̄ charts, "
                                 "200 units for p, np, u]")
    by: str | None = Field(None, description=f"one chart per level of: {', '.join(BY_FACTORS)}")
    points: int = Field(5000, gt=0, description="list (and plot) the last this many points; all are judged")
    until: datetime | None = Field(None, description="list (and plot) the points up to this time "
                                   "[default: the latest]")
    stage_at: list[datetime] = Field(default_factory=list, description="times the process changed (a new "
                                     "recipe, a repair): each stage learns its own limits from its own phase I")
    plot: Path | None = Field(None, description="write the chart: .html (interactive) or .png",
                              json_schema_extra=dict(OUTPUT))


class ChartResult(Result):
    series: str
    station: str | None
    type: str
    rules: str
    rule_text: dict[str, str]
    unit: str | None = Field(description="unit of measure of the values (from the specs)")
    subgroup: int | None
    lsl: float | None
    usl: float | None
    groups: list[ChartGroup]
    plot: str | None = None

    def render(self, console: Console) -> None:
        unit = f" [{self.unit}]" if self.unit else ""
        console.print(f"[bold]{self.type} chart of {self.series}{unit}[/bold] — rules: {self.rules}"
                      + (f", subgroups of {self.subgroup}" if self.subgroup else ""))
        rows = [{"group": g.group or "all", "points": g.points, "phase I": g.phase1, "centre": g.centre,
                 "LCL": g.lower[-1] if g.lower else None, "UCL": g.upper[-1] if g.upper else None,
                 "flagged": g.flagged} for g in self.groups]
        print_rows(console, rows, "limits (learnt on phase I)")
        for g in self.groups:
            if g.stages:
                print_rows(console, [{"stage": i + 1, "from": st.t.replace("T", " "), "phase I": st.phase1,
                                      "centre": st.centre, "sigma": st.sigma} for i, st in enumerate(g.stages)],
                           f"stages{' of ' + g.group if g.group else ''}, each with its own limits")
        for g in self.groups:
            flagged = [{"point": v.index, "time": v.t.replace("T", " "), "value": v.value, "unit": v.unit_id,
                        "rules": ",".join(map(str, v.rules))} for v in g.violations]
            print_rows(console, flagged[-20:], f"flagged points{' of ' + g.group if g.group else ''} (last 20)")
        used = sorted({r for g in self.groups for v in g.violations for r in v.rules})
        for r in used:
            console.print(f"  rule {r}: {self.rule_text.get(str(r), '')}", highlight=False)
        if self.plot:
            console.print(f"plot: {self.plot}")


@command("chart", ChartParams, writes=False)
def chart(p: ChartParams, ctx: Context) -> ChartResult:
    """Control chart of any series (I-MR, X̄-R/S, p/np/u, EWMA, CUSUM), points flagged by rule."""
    rules = _rules_name(p.rules)
    attribute = p.type in ATTRIBUTE
    s = read_counts(ctx.workspace, p.series, p.by) if attribute else read_values(ctx.workspace, p.series, p.by)
    if not len(s.value):
        raise UserError(f"{p.series} has no values in this workspace")
    size = (p.subgroup or (200 if attribute else 5)) if p.type in SUBGROUPED else None
    groups = [staged_group(s, idx, p.type, _rule_set(rules), p.phase1, size or 1, p.points, g, p.until, p.stage_at)
              for g, idx in _groups(s)]
    texts = {str(k): v for k, v in RULE_TEXT.items()}
    texts["0"] = "the spread chart (moving range, range or standard deviation) beyond its limits"
    if p.type in ("ewma", "cusum"):
        texts["1"] = f"the {p.type.upper()} statistic beyond its limit"
        rules = "limit"
    result = ChartResult(series=s.name if attribute or not s.station else f"{s.station}/{s.name}",
                         station=s.station, type=p.type, rules=rules, rule_text=texts, unit=s.unit,
                         subgroup=size, lsl=s.lsl, usl=s.usl, groups=groups)
    if p.plot:
        from linelab.monitor.chart_plots import write_chart

        result.plot = str(write_chart(result, p.plot))
    return result


# -- linelab capability --------------------------------------------------------------------------
class CapabilityParams(BaseModel):
    series: str = Field(..., description="a measurement, parameter or signal (NAME or STATION/NAME)",
                        json_schema_extra={"argument": True})
    lsl: float | None = Field(None, description="lower spec limit [default: from the specs table]")
    usl: float | None = Field(None, description="upper spec limit [default: from the specs table]")
    subgroup: int | None = Field(None, gt=1, description="values per subgroup for the within sigma "
                                 "[default: moving range of individual values]")
    by: str | None = Field(None, description=f"one study per level of: {', '.join(BY_FACTORS)}")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    plot: Path | None = Field(None, description="write the histogram with spec limits: .html or .png",
                              json_schema_extra=dict(OUTPUT))


class Index(BaseModel):
    value: float | None
    low: float | None
    high: float | None


class CapabilityStudy(BaseModel):
    group: str
    n: int
    mean: float
    sigma_within: float
    sigma_overall: float
    cp: Index
    cpk: Index
    pp: Index
    ppk: Index
    expected_ppm: float = Field(description="out-of-spec parts per million at the overall sigma (normal)")
    observed_ppm: float = Field(description="values outside the spec limits per million")
    histogram: dict[str, list[float]] = Field(description="counts and bin edges, in the measurement's units")


class CapabilityResult(Result):
    series: str
    unit: str | None
    lsl: float | None
    usl: float | None
    target: float | None
    confidence: float
    studies: list[CapabilityStudy]
    plot: str | None = None

    def render(self, console: Console) -> None:
        u = f" {self.unit}" if self.unit else ""

        def limit(v: float | None) -> str:
            return "none" if v is None else f"{fmt(v)}{u}"

        console.print(f"[bold]capability of {self.series}[/bold]: LSL {limit(self.lsl)}, USL {limit(self.usl)}"
                      + (f", target {limit(self.target)}" if self.target is not None else ""), highlight=False)

        # the intervals beside the values need a wide terminal; a narrow one gets them in a table of their own
        wide = console.width >= 120

        def show(i: Index) -> str:
            if i.value is None:
                return "—"
            return f"{i.value:.2f} ({i.low:.2f}–{i.high:.2f})" if i.low is not None and wide else f"{i.value:.2f}"

        def interval(i: Index) -> str:
            return f"{i.low:.2f}–{i.high:.2f}" if i.low is not None and i.high is not None else "—"

        rows = [{"group": s.group or "all", "n": s.n, "mean": f"{s.mean:.4g}", "Cp": show(s.cp), "Cpk": show(s.cpk),
                 "Pp": show(s.pp), "Ppk": show(s.ppk), "ppm": round(s.expected_ppm)} for s in self.studies]
        for s in self.studies:
            console.print(f"  {s.group or 'all'}: σ within {s.sigma_within:.3g}{u}, σ overall "
                          f"{s.sigma_overall:.3g}{u}, observed out of spec {s.observed_ppm:,.0f} ppm", highlight=False)
        if wide:
            print_rows(console, rows, f"indices with {self.confidence:.0%} confidence intervals")
        else:
            print_rows(console, rows, "capability indices")
            print_rows(console, [{"group": s.group or "all", "Cp": interval(s.cp), "Cpk": interval(s.cpk),
                                  "Pp": interval(s.pp), "Ppk": interval(s.ppk)} for s in self.studies],
                       f"their {self.confidence:.0%} confidence intervals")
        if self.plot:
            console.print(f"plot: {self.plot}")


def _interval(value: float | None, n: int, conf: float, spread_only: bool) -> Index:
    """Cp/Pp: chi-square interval; Cpk/Ppk: Bissell's normal approximation."""
    if value is None or n < 3:
        return Index(value=value, low=None, high=None)
    a = 1 - conf
    if spread_only:
        nu = n - 1
        return Index(value=value, low=value * float(np.sqrt(chi2.ppf(a / 2, nu) / nu)),
                     high=value * float(np.sqrt(chi2.ppf(1 - a / 2, nu) / nu)))
    half = float(norm.ppf(1 - a / 2)) * float(np.sqrt(1 / (9 * n) + value**2 / (2 * (n - 1))))
    return Index(value=value, low=value - half, high=value + half)


def capability_study(values: np.ndarray, lsl: float | None, usl: float | None, subgroup: int | None,
                     conf: float, group: str = "") -> CapabilityStudy:
    v = values[np.isfinite(values)]
    try:
        c = capability_indices(v, lsl, usl, subgroup)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    outside = ((v < lsl) if lsl is not None else np.zeros(len(v), bool)) | \
        ((v > usl) if usl is not None else np.zeros(len(v), bool))
    edges = np.histogram_bin_edges(v, bins=min(60, max(10, int(np.sqrt(len(v))))))
    counts, _ = np.histogram(v, edges)
    return CapabilityStudy(group=group, n=c.n, mean=c.mean, sigma_within=c.sigma_within,
                           sigma_overall=c.sigma_overall, cp=_interval(c.cp, c.n, conf, True),
                           cpk=_interval(c.cpk, c.n, conf, False), pp=_interval(c.pp, c.n, conf, True),
                           ppk=_interval(c.ppk, c.n, conf, False), expected_ppm=c.expected_ppm,
                           observed_ppm=float(outside.mean() * 1e6),
                           histogram={"counts": counts.astype(float).tolist(), "edges": edges.tolist()})


@command("capability", CapabilityParams, writes=False)
def capability(p: CapabilityParams, ctx: Context) -> CapabilityResult:
    """Process capability of a series: Cp, Cpk, Pp, Ppk with confidence intervals, and its histogram."""
    s = read_values(ctx.workspace, p.series, p.by)
    lsl = p.lsl if p.lsl is not None else s.lsl
    usl = p.usl if p.usl is not None else s.usl
    if lsl is None and usl is None:
        raise UserError(f"{p.series} has no spec limits in the specs table: give --lsl and/or --usl")
    if lsl is not None and usl is not None and lsl >= usl:
        raise UserError(f"--lsl ({lsl}) must be below --usl ({usl})")
    studies = [capability_study(s.value[idx], lsl, usl, p.subgroup, p.confidence, g) for g, idx in _groups(s)]
    result = CapabilityResult(series=f"{s.station}/{s.name}" if s.station else s.name, unit=s.unit, lsl=lsl,
                              usl=usl, target=s.target, confidence=p.confidence, studies=studies)
    if p.plot:
        from linelab.monitor.chart_plots import write_capability

        result.plot = str(write_capability(result, p.plot))
    return result
