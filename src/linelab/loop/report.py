"""The loop's report: one self-contained HTML page with the learning curve a newcomer can open."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLOURS = {"none": "#b3261e", "loop": "#1f4e79", "oracle": "#2e7d32"}
NAMES = {"none": "no loop (scheduled maintenance only)", "loop": "LineLab loop", "oracle": "oracle"}


def _smooth(y: list[float], w: int) -> np.ndarray:
    a = np.asarray(y, dtype=float)
    if len(a) < w:
        return a
    kernel = np.ones(w) / w
    return np.convolve(np.r_[np.full(w - 1, a[0]), a], kernel, mode="valid")


def learning_figure(result: dict[str, Any]) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("First-pass yield (moving average of 10,000 units)",
                                        "Cumulative cost of poor quality (board equivalents)"))
    for name, c in result["curves"].items():
        units = c["units"]
        per_point = max(1, int(np.median(np.diff(np.r_[0, units])))) if units else 1
        smooth = _smooth(c["yield"], max(1, 10000 // per_point))
        fig.add_trace(go.Scatter(x=units, y=smooth, name=NAMES[name], mode="lines",
                                 line={"color": COLOURS[name]}), row=1, col=1)
        cost = np.cumsum(np.asarray(c["copq"]) * np.diff(np.r_[0, units]))
        fig.add_trace(go.Scatter(x=units, y=cost, name=NAMES[name], mode="lines", showlegend=False,
                                 line={"color": COLOURS[name]}), row=2, col=1)
    for inc in result["incidents"]:
        if inc.get("fixed_unit"):
            fig.add_vline(x=inc["fixed_unit"], line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=1)
    if result["recipe"].get("adopted_at_unit"):
        fig.add_vline(x=result["recipe"]["adopted_at_unit"], line={"color": COLOURS["loop"], "dash": "dash"},
                      annotation_text="recipe adopted", row=1, col=1)
    fig.update_yaxes(tickformat=".1%", row=1, col=1)
    fig.update_xaxes(title_text="cumulative units", row=2, col=1)
    fig.update_layout(height=640, margin={"t": 40, "l": 60, "r": 20, "b": 40}, legend={"orientation": "h"})
    return fig


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    def cell(v: Any) -> str:
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    body = "".join("<tr>" + "".join(cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    fy = result["first_pass_yield"]
    summary = (
        f"<p>Scenario <b>{html.escape(result['scenario'])}</b>, seed {result['seed']}, "
        f"{result['units']:,} units. First-pass yield: no loop {fy['none']:.2%}, LineLab {fy['loop']:.2%}, "
        f"oracle {fy['oracle']:.2%}. <b>Yield gap closed: {result['yield_gap_closed']:.2f}</b>. "
        f"Learning rate (defects removed per doubling of volume): "
        f"{', '.join(f'{k} {v:.1%}' for k, v in result['learning_rate'].items())}.</p>"
        f"<p>Recurring problems: time-to-fix ratio {result['recurrence_ratio']}, recall accuracy "
        f"{result['recall_accuracy']}; actions that did not help: {result['actions_that_did_not_help']}; "
        f"false problems acted on: {result['false_problems_acted_on']}.</p>"
    )
    figure = learning_figure(result).to_html(full_html=False, include_plotlyjs=True)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>LineLab loop report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;color:#1d2330}"
        "table{border-collapse:collapse;font-size:13px;width:100%}td,th{border-bottom:1px solid #ddd;"
        "padding:4px 6px;text-align:left}</style></head><body>"
        "<h1>LineLab: the line learning</h1>" + summary + figure
        + "<h2>Incidents</h2>"
        + _table(result["incidents"], ["problem_id", "description", "onset_unit", "detected_unit", "diagnosed_unit",
                                       "fixed_unit", "resolved_unit", "cause", "action", "failed_actions",
                                       "knowhow_reused", "knowhow_written", "truth_ids"])
        + "<h2>Injected micro-problems (ground truth)</h2>"
        + _table(result["truth"], ["id", "type", "onset_unit", "fixed_by", "end_unit", "time_to_fix_units"])
        + "<h2>Know-how written</h2>" + _table(result["knowhow"], ["id", "title", "reused"])
        + "<h2>Recipe</h2>"
        + f"<p>adopted at unit {result['recipe'].get('adopted_at_unit')}: "
        + html.escape(str(result["recipe"].get("adopted"))) + "</p>"
        + _table(result["recipe"]["trials"], ["unit", "recipe", "units", "first_pass_yield"])
        + "</body></html>"
    )
    path = out_dir / "loop-report.html"
    path.write_text(page)
    return path
