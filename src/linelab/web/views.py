"""What each workbench page shows: command results turned into tables and Plotly figures.

Each view runs the registered commands (through the page's `Workbench`) and reads nothing the
commands do not read; figures use the same colours as the reports.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import numpy as np
import plotly.graph_objects as go

from linelab.diagnose.plots import level_axis
from linelab.errors import UserError
from linelab.knowhow import ledger, problem_report
from linelab.loop.report import COLOURS, NAMES, action_text
from linelab.monitor import problems as pb
from linelab.monitor.chart_commands import ATTRIBUTE, available_series, spec_unit, stations
from linelab.monitor.chart_plots import FLAG, LIMIT, LINE, capability_data, chart_data
from linelab.render import recipe_moves, recipe_text
from linelab.web import overview_data

if TYPE_CHECKING:
    from linelab.api.pages import Workbench
    from linelab.commands import Context

OK = "#2e7d32"
ONSET = "#e69500"
GRID = {"gridcolor": "#e8e8e8", "zerolinecolor": "#ccc"}
Figure = dict[str, Any]


def figure(data: list[dict[str, Any]], height: int, **layout: Any) -> Figure:
    """A Plotly figure as plain JSON data: plotly.js draws it; building it costs no Python plotting."""
    base: dict[str, Any] = {"height": height, "margin": {"t": 30, "l": 60, "r": 20, "b": 40},
                            "legend": {"orientation": "h", "y": -0.2}, "plot_bgcolor": "white",
                            "xaxis": dict(GRID), "yaxis": dict(GRID)}
    for key, value in layout.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return {"data": data, "layout": base}


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, float | np.floating):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def figure_json(fig: go.Figure | Figure) -> str:
    text = str(fig.to_json()) if isinstance(fig, go.Figure) else json.dumps(_plain(fig), default=str)
    # `</` inside a <script> block would end it early: escape it in the embedded JSON.
    return text.replace("</", "<\\/")


def vline(x: Any, colour: str, text: str, yref: str = "paper") -> tuple[dict[str, Any], dict[str, Any]]:
    """A vertical line across the plot and its label (shape, annotation)."""
    return ({"type": "line", "xref": "x", "yref": yref, "x0": x, "x1": x, "y0": 0, "y1": 1,
             "line": {"color": colour, "width": 2}},
            {"x": x, "xref": "x", "yref": "paper", "y": 1, "yanchor": "bottom", "text": text, "showarrow": False,
             "font": {"color": colour, "size": 11}})


def hline(y: float, colour: str, text: str, dash: str = "dash", yref: str = "y") -> tuple[dict[str, Any], ...]:
    return ({"type": "line", "xref": "paper", "yref": yref, "x0": 0, "x1": 1, "y0": y, "y1": y,
             "line": {"color": colour, "width": 1, "dash": dash}},
            {"x": 1, "xref": "paper", "xanchor": "left", "yref": yref, "y": y, "text": text, "showarrow": False,
             "font": {"color": colour, "size": 10}})


# -- overview ------------------------------------------------------------------------------------
def _line_numbers(bench: Workbench, ctx: Context) -> dict[str, Any]:
    """What the overview shows of the records, computed once per ingest batch: overall yield and its
    trend (one query), yield by station and the Pareto (the `yield` and `pareto` commands)."""
    def compute(ws: Any) -> dict[str, Any]:
        overall, period, trend = overview_data.yield_trend(ws)
        return {"overall": overall, "period": period, "trend": trend,
                "stations": bench.run(ctx, "yield", by="station").rows,  # type: ignore[attr-defined]
                "pareto": bench.run(ctx, "pareto", top=12).rows}  # type: ignore[attr-defined]
    return bench.memo(ctx, "overview", compute)


def _artifacts_version(ctx: Context, kind: str) -> tuple[Any, ...]:
    """Problems and know-how change without a new batch (a status set, a fix recorded): their answers
    are kept until one of their rows is added, removed or rewritten."""
    row = ctx.workspace.query("SELECT count(*) AS n, max(updated) AS latest FROM artifacts WHERE kind = ?",
                              [kind]).to_pylist()[0]
    return (kind, row["n"], row["latest"])


def overview(bench: Workbench, ctx: Context) -> dict[str, Any]:
    numbers = _line_numbers(bench, ctx)
    period, trend, pareto = numbers["period"], numbers["trend"], numbers["pareto"]
    problems = bench.memo(ctx, "problems", lambda _: bench.run(ctx, "problems").problems,  # type: ignore
                          version=_artifacts_version(ctx, pb.KIND))
    knowhow_count = _artifacts_version(ctx, ledger.KIND)[1]
    active = sorted((p for p in problems if p["status"] in pb.ACTIVE), key=lambda p: -(p["lost_units"] or 0))
    x = [r[period] for r in trend]
    fpy = [r["first_pass_yield"] for r in trend]
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}.get(period)
    data: list[dict[str, Any]] = [
        {"type": "scatter", "x": x, "y": fpy, "name": "first-pass yield", "mode": "lines+markers",
         "line": {"color": COLOURS["loop"]}, "text": [f"{r['units']:,}" for r in trend],
         # a click on a point opens the units of its period that failed first pass
         "customdata": [units_url(outcome="first_pass_fail", since=t, until=t + step if step else None)
                        for t in x],
         "hovertemplate": "%{x}<br>%{y:.2%} of %{text} units<extra></extra>"},
        {"type": "scatter", "x": x, "y": [r["final_yield"] for r in trend], "name": "final yield", "mode": "lines",
         "line": {"color": OK, "dash": "dot"}}]
    low = min(fpy or [0.0])
    marked = [p for p in problems if p["since"]]
    if marked:
        # One marker per problem at its onset, on the axis floor; a click opens the problem.
        data.append({"type": "scatter", "x": [p["since"] for p in marked], "y": [low] * len(marked),
                     "mode": "markers+text", "text": [p["id"] for p in marked], "textposition": "top center",
                     "customdata": [f"/problem/{quote(p['id'], safe='')}" for p in marked], "name": "problem onsets",
                     "marker": {"symbol": "triangle-up", "size": 11,
                                "color": [FLAG if p["status"] in pb.ACTIVE else "#888" for p in marked]},
                     "hovertemplate": "%{text}: onset %{x}<extra></extra>"})
    # The axis follows the data: a line at 60 % and one at 99.9 % both show their movement.
    trend_fig = figure(data, 320, yaxis={"tickformat": ".1%", "title": {"text": "yield"}})
    labels = [f"{r['station']}/{r['defect_code']}" for r in pareto]
    # A bar counts one defect at one station over every record: a click opens the units behind that
    # count (their list links the defect's u chart over time).
    links = [units_url(station=r["station"], defect_code=r["defect_code"]) for r in pareto]
    pareto_fig = figure([
        {"type": "bar", "x": labels, "y": [r["defects"] for r in pareto], "name": "defects",
         "marker": {"color": LIMIT}, "customdata": links,
         "hovertemplate": "%{x}: %{y:,} defects (each failed visit counts)<br>click: the units<extra></extra>"},
        {"type": "scatter", "x": labels, "y": [r["cumulative_share"] for r in pareto], "name": "cumulative share",
         "mode": "lines+markers", "line": {"color": LINE}, "yaxis": "y2"}], 320,
        yaxis2={"overlaying": "y", "side": "right", "tickformat": ".0%", "range": [0, 1.02], "dtick": 0.25,
                "showgrid": False})
    return {"title": "Line overview", "overall": numbers["overall"], "stations": numbers["stations"],
            "period": period, "trend_fig": figure_json(trend_fig), "pareto": pareto,
            "pareto_fig": figure_json(pareto_fig), "problems": problems, "active": active,
            "knowhow_count": knowhow_count}


# -- a problem -----------------------------------------------------------------------------------
def units_url(**query: Any) -> str:
    """The /units page for these filters (times as ISO text)."""
    given = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in query.items() if v not in (None, "")}
    return "/units?" + urlencode(given)


def units(bench: Workbench, ctx: Context, form: dict[str, str]) -> dict[str, Any]:
    """The units behind a number: `linelab units` with the page's filters."""
    fields = ("outcome", "since", "until", "station", "defect_code", "machine", "operator", "shift", "lot",
              "product")
    given = {k: form[k] for k in fields if form.get(k)}
    offset = _int(form, "offset") or 0
    res: Any = bench.run(ctx, "units", **given, offset=offset, limit=100)
    more = offset + len(res.units) < res.count
    # The units of one defect at one station: that defect's u chart shows when they came.
    u_chart = (f"/chart?series={quote(given['station'] + '/' + given['defect_code'], safe='')}&type=u"
               if given.get("station") and given.get("defect_code") else None)
    return {"title": "Units", "res": res, "form": given, "offset": offset, "u_chart": u_chart,
            "next": units_url(**given, offset=offset + len(res.units)) if more else None}


def lost_units_link(record: dict[str, Any]) -> dict[str, str] | None:
    """The /units page of the units behind a problem's "units lost" (`problem_report.lost_units_filter`)."""
    lost = problem_report.lost_units_filter(record)
    return {"url": units_url(**lost["filters"]), "title": lost["note"]} if lost else None


def _values(v: list[Any] | None) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in v or []], dtype=float)


def problem_figure(problem: dict[str, Any]) -> Figure | None:
    """The monitor's chart of the problem: values, limits, flagged points, onset and detection."""
    c = problem.get("chart") or {}
    if not c.get("t"):
        return None
    t, v = c["t"], _values(c["value"])
    stat = _values(c.get("statistic"))
    two = bool(len(stat)) and c.get("h") is not None
    data: list[dict[str, Any]] = [{"type": "scatter", "x": t, "y": v, "mode": "lines+markers",
                                   "name": c.get("label") or "value", "marker": {"size": 4, "color": LINE},
                                   "line": {"color": LINE, "width": 1}}]
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for key, colour, dash in (("lcl", LIMIT, "dash"), ("ucl", LIMIT, "dash"), ("lsl", "#555", "dot"),
                              ("usl", "#555", "dot"), ("centre", OK, "solid")):
        if c.get(key) is not None:
            shape, note = hline(c[key], colour, key.upper(), dash)
            shapes.append(shape)
            notes.append(note)
    flagged = np.zeros(len(v), bool)
    if c.get("lcl") is not None:
        flagged |= v < c["lcl"]
    if c.get("ucl") is not None:
        flagged |= v > c["ucl"]
    if two:
        data.append({"type": "scatter", "x": t, "y": stat, "mode": "lines", "name": "CUSUM (sigma units)",
                     "line": {"color": "#555", "width": 1}, "yaxis": "y2"})
        shape, note = hline(c["h"], LIMIT, "h", yref="y2")
        shapes.append(shape)
        notes.append(note)
        flagged |= stat > c["h"]
    idx = np.flatnonzero(flagged)
    data.append({"type": "scatter", "x": [t[i] for i in idx], "y": v[idx], "mode": "markers",
                 "name": "beyond the limits",
                 "marker": {"color": FLAG, "size": 9, "symbol": "circle-open", "line": {"width": 2}}})
    for when, colour, text in ((problem["onset"].get("t"), ONSET, "onset"),
                               (problem["first_evidence"].get("t"), FLAG, "detected")):
        if when:
            shape, note = vline(when, colour, text)
            shapes.append(shape)
            notes.append(note)
    layout: dict[str, Any] = {"shapes": shapes, "annotations": notes}
    if two:
        layout |= {"xaxis": {"anchor": "y2"}, "yaxis": {"domain": [0.4, 1.0], "title": {"text": c.get("label") or ""}},
                   "yaxis2": {**GRID, "domain": [0.0, 0.3], "anchor": "x", "title": {"text": "CUSUM"}}}
    return figure(data, 440, **layout)


def evidence_figures(diagnosis: dict[str, Any], unit: str | None) -> list[tuple[dict[str, Any], str]]:
    """One figure per top cause, reference against incident, in the symptom's own units."""
    out = []
    target = diagnosis.get("target", "")
    mode = diagnosis.get("symptom_mode")
    measured_unit = unit if mode in ("mean", "spread") else None
    for c in diagnosis.get("causes", [])[:3]:
        p = c.get("plot") or {}
        if not p:
            continue
        title = {"text": f"#{c['rank']} {problem_report.cause_label(c)}", "font": {"size": 13}}
        if p.get("type") == "levels":
            colours = [FLAG if lv == p.get("highlight") else LINE for lv in p["levels"]]
            fig = figure([{"type": "bar", "x": p["levels"], "y": p["reference"], "name": "reference",
                           "marker": {"color": "#9aa5b1"}},
                          {"type": "bar", "x": p["levels"], "y": p["incident"], "name": "incident",
                           "marker": {"color": colours}}], 300, title=title, barmode="group",
                         yaxis={"title": {"text": level_axis(target, str(mode), measured_unit)}})
        else:
            edges = np.asarray(p["edges"], dtype=float)
            mids = (edges[1:] + edges[:-1]) / 2
            fig = figure([{"type": "bar", "x": mids, "y": p["reference"], "name": "reference", "opacity": 0.6,
                           "marker": {"color": "#9aa5b1"}},
                          {"type": "bar", "x": mids, "y": p["incident"], "name": "incident", "opacity": 0.6,
                           "marker": {"color": FLAG}}], 300, title=title, barmode="overlay",
                         xaxis={"title": {"text": c["factor"]}}, yaxis={"title": {"text": "density"}})
        out.append((c, figure_json(fig)))
    return out


def next_step(ctx: Context, record: dict[str, Any], diagnosis: dict[str, Any] | None, actions: list[Any],
              entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What a person should do next about a problem (the problem report says the same)."""
    return problem_report.next_step(record, diagnosis, actions, entries, problem_report.profile_remedy(_profile(ctx)))


_PROFILES: dict[str, tuple[float, Any]] = {}


def _profile(ctx: Context) -> Any:
    """The workspace's line profile, read again only when its file changes (reading it costs ~80 ms)."""
    from linelab.profile import profile_path, workspace_profile

    path = profile_path(ctx.workspace.path)
    if path is None:
        return None
    mtime = path.stat().st_mtime
    kept = _PROFILES.get(str(path))
    if kept is None or kept[0] != mtime:
        kept = _PROFILES[str(path)] = (mtime, workspace_profile(ctx.workspace.path))
    return kept[1]


def problem(bench: Workbench, ctx: Context, problem_id: str) -> dict[str, Any]:
    shown = bench.run(ctx, "problem show", id=problem_id, plot="none").problem  # type: ignore[attr-defined]
    record = pb.get_problem(ctx.workspace, problem_id)  # the same record `problem show` reads, with its chart
    fig = problem_figure(record)
    stored = ctx.workspace.get_artifact("diagnosis", problem_id)
    diagnosis = (stored or {}).get("diagnosis")
    scope = record.get("scope") or {}
    measurement = scope.get("measurement")
    unit = spec_unit(ctx.workspace, scope.get("station"), measurement) if measurement else None
    actions = bench.run(ctx, "act list", problem_id=problem_id).actions  # type: ignore[attr-defined]
    entries = [e for e in bench.run(ctx, "knowhow list").entries  # type: ignore[attr-defined]
               if e.get("problem_id") == problem_id]
    recalled, _ = bench.attempt(ctx, "knowhow search", problem=problem_id, top=3)
    # The control chart around the problem: up to the end of the monitor's own chart of it.
    until = ((record.get("chart") or {}).get("t") or [None])[-1] or record["latest_evidence"].get("t")
    if scope.get("measurement") and scope.get("station"):
        chart_link = {"series": f"{scope['station']}/{scope['measurement']}", "type": "imr",
                      "by": "machine" if scope.get("machine") else "", "until": until}
    elif scope.get("station"):
        code = scope.get("defect_code")
        chart_link = {"series": scope["station"] + (f"/{code}" if code else ""), "type": "u" if code else "p",
                      "by": "", "until": until}
    else:
        chart_link = None
    step = next_step(ctx, record, diagnosis, actions, entries)
    return {"title": f"{problem_id}", "p": shown, "record": record, "fig": figure_json(fig) if fig else None,
            "next_step": step,
            "diagnosis": diagnosis, "diagnosis_meta": stored, "unit": unit,
            "evidence": evidence_figures(diagnosis, unit) if diagnosis else [],
            "actions": actions, "entries": entries,
            "recalled": [m for m in (recalled.matches if recalled else [])  # type: ignore[attr-defined]
                         if m.entry_id not in {e["id"] for e in entries}],
            "chart_link": chart_link, "lost_link": lost_units_link(record)}


# -- control charts and capability ---------------------------------------------------------------
def _int(form: dict[str, str], key: str) -> int | None:
    raw = (form.get(key) or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{key} must be a whole number (got {raw!r})") from None


def _choices(bench: Workbench, ctx: Context) -> dict[str, list[str]]:
    return bench.memo(ctx, "choices", lambda ws: {"series": available_series(ws), "stations": stations(ws)})


def chart(bench: Workbench, ctx: Context, form: dict[str, str]) -> dict[str, Any]:
    choices = _choices(bench, ctx)
    kind = form.get("type") or "imr"
    default = (choices["stations"] if kind in ATTRIBUTE else choices["series"]) or [""]
    series = form.get("series") or default[0]
    values = {"series": series, "type": kind, "rules": form.get("rules") or "western-electric",
              "phase1": _int(form, "phase1"), "subgroup": _int(form, "subgroup"), "by": form.get("by") or None,
              "points": _int(form, "points") or 2000, "until": form.get("until") or None,
              "stage_at": [x.strip() for x in (form.get("stage_at") or "").split(",") if x.strip()]}
    result: Any = bench.run(ctx, "chart", **values)
    figures = [figure_json(chart_data(result, i)) for i in range(len(result.groups))]
    cap: Any = None
    if kind not in ATTRIBUTE and (result.lsl is not None or result.usl is not None):
        cap, _ = bench.attempt(ctx, "capability", series=series, by=values["by"])
    return {"title": f"{kind.upper()} chart of {result.series}", "form": values, "choices": choices,
            "result": result, "figures": figures, "types": CHART_TYPES, "rule_sets": RULE_SETS,
            "cap": cap, "cap_figures": [figure_json(capability_data(cap, i)) for i in range(len(cap.studies))]
            if cap else []}


def capability(bench: Workbench, ctx: Context, form: dict[str, str]) -> dict[str, Any]:
    choices = _choices(bench, ctx)
    series = form.get("series") or (choices["series"] or [""])[0]

    def limit(key: str) -> float | None:
        raw = (form.get(key) or "").strip()
        try:
            return float(raw) if raw else None
        except ValueError:
            raise UserError(f"{key} must be a number (got {raw!r})") from None

    values = {"series": series, "lsl": limit("lsl"), "usl": limit("usl"), "subgroup": _int(form, "subgroup"),
              "by": form.get("by") or None}
    cap: Any = bench.run(ctx, "capability", **values)
    return {"title": f"Capability of {cap.series}", "form": values, "choices": choices, "cap": cap,
            "cap_figures": [figure_json(capability_data(cap, i)) for i in range(len(cap.studies))]}


CHART_TYPES = ("imr", "xbar-r", "xbar-s", "p", "np", "u", "ewma", "cusum")
RULE_SETS = ("western-electric", "nelson", "none")


# -- know-how, experiments, learning, units ------------------------------------------------------
def knowhow(bench: Workbench, ctx: Context, q: str | None) -> dict[str, Any]:
    entries = bench.run(ctx, "knowhow list").entries  # type: ignore[attr-defined]
    matches = bench.run(ctx, "knowhow search", text=q, top=10).matches if q else None  # type: ignore[attr-defined]
    return {"title": "Know-how", "entries": entries, "q": q or "", "matches": matches}


def experiments(bench: Workbench, ctx: Context) -> dict[str, Any]:
    res: Any = bench.run(ctx, "experiment status")
    trials = [{**t, "moved": recipe_moves(t.get("recipe") or {}, t.get("start") or {}, res.settings)}
              for t in res.recipe_trials]
    return {"title": "Experiments", "rows": res.experiments, "trials": trials, "recipe": res.recipe,
            "adopted_at": res.recipe_adopted_at_unit}


def _lot_yield(lot: dict[str, Any]) -> float | None:
    return lot["passed"] / lot["units"] if lot.get("units") else None


def arms_figure(lots: list[dict[str, Any]]) -> Figure:
    """A split run over time: each lot's first-pass yield by arm, and the difference with its interval."""
    data: list[dict[str, Any]] = []
    for arm, colour in (("control", "#9aa5b1"), ("treatment", LINE)):
        mine = [lot for lot in lots if lot.get("arm") == arm]
        data.append({"type": "scatter", "mode": "markers", "name": f"{arm} lots", "marker": {"color": colour},
                     "x": [lot["cumulative_units"] for lot in mine], "y": [_lot_yield(lot) for lot in mine]})
    x = [lot["cumulative_units"] for lot in lots]
    data += [{"type": "scatter", "mode": "lines", "name": "difference (treatment − control)", "yaxis": "y2",
              "x": x, "y": [lot.get("difference") for lot in lots], "line": {"color": FLAG}},
             {"type": "scatter", "mode": "lines", "name": "its interval", "yaxis": "y2", "x": x + x[::-1],
              "y": [lot.get("upper") for lot in lots] + [lot.get("lower") for lot in lots][::-1], "fill": "toself",
              "fillcolor": "rgba(179,38,30,0.1)", "line": {"width": 0}, "hoverinfo": "skip"}]
    return figure(data, 360, margin={"r": 70}, xaxis={"title": {"text": "units in the run"}},
                  yaxis={"tickformat": ".1%", "title": {"text": "lot first-pass yield"}},
                  yaxis2={"overlaying": "y", "side": "right", "tickformat": "+.1%", "showgrid": False,
                          "title": {"text": "difference"}})


def experiment(bench: Workbench, ctx: Context, exp_id: str) -> dict[str, Any]:
    e = bench.run(ctx, "experiment status", id=exp_id).experiment  # type: ignore[attr-defined]
    results = e.get("results") or {}
    figs = []
    lots = results.get("lots") or (results.get("confirmation") or {}).get("lots") or []
    if lots:
        figs.append(("Arms over time", figure_json(arms_figure(lots))))
    steps = results.get("steps") or []
    if steps:
        ys = [s["passed"] / s["units"] if s.get("units") else s.get("yield") for s in steps]
        figs.append(("Recipe search", figure_json(figure(
            [{"type": "scatter", "x": list(range(1, len(steps) + 1)), "y": ys, "mode": "lines+markers",
              "line": {"color": LINE}, "name": "trial"},
             {"type": "scatter", "x": list(range(1, len(steps) + 1)), "y": [s.get("incumbent_yield") for s in steps],
              "mode": "lines", "line": {"color": OK, "dash": "dot"}, "name": "best so far (estimated)"}], 300,
            xaxis={"title": {"text": "trial"}}, yaxis={"tickformat": ".2%", "title": {"text": "first-pass yield"}}))))
    analysis = results.get("analysis")
    if results.get("runs") and analysis and (e.get("plan") or {}).get("design"):
        figs += surface_figures(e)
    optimum = None
    if analysis and analysis.get("optimum"):
        lo, hi = analysis.get("optimum_interval") or (None, None)
        optimum = {"recipe": recipe_text(analysis["optimum"], _settings(ctx)), "yield": analysis.get("optimum_yield"),
                   "lower": lo, "upper": hi}
    return {"title": f"Experiment {exp_id}", "e": e, "figs": figs, "spec": _spec_rows(e.get("spec") or {}),
            "effects": (analysis or {}).get("effects") or [], "optimum": optimum}


def _settings(ctx: Context) -> dict[str, dict[str, Any]]:
    profile = _profile(ctx)
    return {s.name: s.model_dump() for s in profile.recipe} if profile else {}


def _spec_rows(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """An experiment's plan as a person reads it: ranges as `low … high`, changes as `name value`."""
    def text(v: Any) -> Any:
        if isinstance(v, dict):
            return ", ".join(f"{k} {text(x)}" for k, x in v.items()) or "—"
        if isinstance(v, list | tuple):
            return " … ".join(str(text(x)) for x in v) if len(v) == 2 and all(
                isinstance(x, int | float) for x in v) else ", ".join(str(text(x)) for x in v)
        if isinstance(v, float):
            return f"{v:.4g}"
        return v
    return [(k.replace("_", " "), text(v)) for k, v in spec.items()]


def surface_figures(e: dict[str, Any]) -> list[tuple[str, str]]:
    """A design's fitted yield over each pair of its factors (up to three), refitted from its runs."""
    from linelab.experiment.analysis import analyse
    from linelab.experiment.designs import Design
    from linelab.experiment.plots import surface_figure

    design = Design.from_dict(e["plan"]["design"])
    units, passed = np.zeros(len(design.coded)), np.zeros(len(design.coded))
    for r in e["results"]["runs"]:
        units[r["run"] - 1] += r["units"]
        passed[r["run"] - 1] += r["passed"]
    fitted = analyse(design, units, passed, e["spec"].get("model", "auto"),
                     e["results"]["analysis"].get("confidence", 0.95))
    names = design.names
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))][:3]
    out = []
    for x, y in pairs:
        fig = surface_figure(fitted, design, x, y)
        fig.update_layout(title=None, height=480, margin={"t": 30, "l": 60, "r": 20, "b": 40},
                          legend={"orientation": "h", "y": -0.2})
        out.append((f"Response surface: {x} × {y}", figure_json(fig.to_plotly_json())))  # plain lists
    return out


def learning(bench: Workbench, ctx: Context) -> dict[str, Any]:
    res, why = bench.attempt(ctx, "learning")
    if res is None:
        return {"title": "Learning curve", "missing": why, "fig": None, "incidents": []}
    fig = figure([{"type": "scatter", "x": c["units"], "y": c["yield"], "mode": "lines", "name": NAMES.get(name, name),
                   "line": {"color": COLOURS.get(name, LINE)}} for name, c in res.curves.items()],  # type: ignore
                 380, xaxis={"title": {"text": "cumulative units"}},
                 yaxis={"tickformat": ".1%", "title": {"text": "first-pass yield"}})
    incidents = [{**i, "action": action_text(i["action"]) if i.get("action") else None}
                 for i in res.incidents]  # type: ignore[attr-defined]
    return {"title": "Learning curve", "res": res, "fig": figure_json(fig), "incidents": incidents}


def trace(bench: Workbench, ctx: Context, serial: str | None = None, lot: str | None = None) -> dict[str, Any]:
    res: Any = bench.run(ctx, "trace", serial=serial, lot=lot)
    if serial and not any(res.tables.values()):
        raise UserError(f"no unit {serial!r} in this workspace")
    return {"title": f"unit {serial}" if serial else f"lot {lot}", "serial": serial, "lot": lot,
            "tables": res.tables}
