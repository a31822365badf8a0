"""The model pages: every version with its stage, and per version its live metrics per stage over time.

The numbers come from the `model list`, `model show` and `model metrics` commands (the same as
`linelab model ...` and `/api/model/...`); a figure's axis is the scoring time (days or hours)
or, when the line was scored in a few large looks, the units scored in order. Stage changes are
drawn where they happened on that axis.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from linelab.monitor.chart_plots import FLAG, LINE
from linelab.web.views import ONSET, figure, figure_json, vline

if TYPE_CHECKING:
    from linelab.api.pages import Workbench
    from linelab.commands import Context

STAGE_COLOURS = {"shadow": "#9aa5b1", "canary": ONSET, "full": LINE}
EVENT_COLOURS = {"rollback": FLAG, "withdraw": FLAG}


def models(bench: Workbench, ctx: Context, station: str | None = None) -> dict[str, Any]:
    res: Any = bench.run(ctx, "model list", station=station)
    return {"title": "Models" + (f" at {station}" if station else ""), "models": res.models,
            "deployments": res.deployments}


def model(bench: Workbench, ctx: Context, version: str, by: str = "auto") -> dict[str, Any]:
    shown: Any = bench.run(ctx, "model show", version=version)
    met: Any = bench.run(ctx, "model metrics", version=version, by=by)
    rows = _ordered(met.periods)
    x, title = _axis(rows, met.by)
    marks = _event_marks(met.events, rows, met.by)
    figs = []
    if rows:
        figs.append(("Precision and recall of inspection", "metrics-routing", figure_json(_figure(
            rows, x, title, marks, [("precision", "solid"), ("recall", "dot")], {"tickformat": ".0%", "rangemode":
                                                                                 "tozero",
                                                                                 "title": {"text": "share"}}))))
        figs.append(("Saving per unit (the guards' measure)", "metrics-saving", figure_json(_figure(
            rows, x, title, marks, [("saving_per_unit", "solid")],
            {"title": {"text": "saving per unit (cost units)"}, "zeroline": True}))))
        if any(r["escape_rate"] is not None for r in rows):
            figs.append(("Escapes among the units it let skip the test", "metrics-escapes", figure_json(_figure(
                rows, x, title, marks, [("escape_rate", "solid")], {"tickformat": ".2%", "rangemode": "tozero",
                                                                    "title": {"text": "escape rate"}}))))
    return {"title": f"Model {version}", "m": shown.model, "stage": shown.stage, "evidence": shown.evidence,
            "scored": shown.scored, "events": met.events, "units": met.units, "periods": rows, "by": met.by,
            "figs": figs, "choices": ("auto", "day", "hour", "units")}


def _ordered(periods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Periods in scoring order across stages, each with the units scored up to its end."""
    rows = sorted(periods, key=lambda r: (r["t_first"], r["stage"]))
    total = 0
    out = []
    for r in rows:
        total += r["units"]
        out.append({**r, "scored_so_far": total})
    return out


def _axis(rows: list[dict[str, Any]], by: str) -> tuple[list[Any], str]:
    if by == "units":
        return [r["scored_so_far"] for r in rows], "units scored"
    return [r["t_first"][:16].replace("T", " ") for r in rows], f"scoring {by}"


def _event_marks(events: list[dict[str, Any]], rows: list[dict[str, Any]], by: str) -> list[tuple[Any, str, str]]:
    """Where each stage change falls on the axis: its time, or the units scored before it."""
    marks = []
    for e in events:
        if by == "units":
            when = datetime.fromisoformat(e["t"])
            at: Any = sum(r["units"] for r in rows if datetime.fromisoformat(r["t_last"]) < when)
        else:
            at = e["t"][:16].replace("T", " ")
        marks.append((at, EVENT_COLOURS.get(e["event"], "#555"), f"{e['event']} → {e['to']}"))
    return marks


def _figure(rows: list[dict[str, Any]], x: list[Any], x_title: str, marks: list[tuple[Any, str, str]],
            metrics: list[tuple[str, str]], yaxis: dict[str, Any]) -> dict[str, Any]:
    data = []
    for stage, colour in STAGE_COLOURS.items():
        idx = [i for i, r in enumerate(rows) if r["stage"] == stage]
        if not idx:
            continue
        for name, dash in metrics:
            data.append({"type": "scatter", "mode": "lines+markers", "name": f"{name.replace('_', ' ')} ({stage})",
                         "x": [x[i] for i in idx], "y": [rows[i][name] for i in idx],
                         "line": {"color": colour, "dash": dash}, "marker": {"size": 5},
                         "customdata": [[rows[i]["units"], rows[i]["labelled"], rows[i]["acted"]] for i in idx],
                         "hovertemplate": "%{y:.3g}<br>%{customdata[0]} units scored, %{customdata[1]} with "
                                          "results, %{customdata[2]} acted on<extra>" + stage + "</extra>"})
    shapes, notes = [], []
    for at, colour, text in marks:
        shape, note = vline(at, colour, text)
        shapes.append(shape)
        notes.append(note)
    return figure(data, 320, xaxis={"title": {"text": x_title}}, yaxis=yaxis, shapes=shapes, annotations=notes)
