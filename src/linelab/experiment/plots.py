"""Plots people would rather look at than read: arms over time, the response surface, a search.

Each function returns a plotly Figure; `save` writes it as HTML next to one shared copy of
plotly.js (works offline, like the dashboard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from linelab.experiment.analysis import DOEAnalysis, predict
from linelab.experiment.designs import Design

ARM_COLOURS = {"control": "#636efa", "treatment": "#ef553b"}


def arms_figure(lots: Sequence[Mapping[str, Any]], title: str = "split run") -> go.Figure:
    """Each arm's cumulative first-pass yield by units produced, and the difference with its interval."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("cumulative first-pass yield per arm", "treatment − control"))
    for arm in ("control", "treatment"):
        rows = [r for r in lots if r["arm"] == arm]
        if not rows:
            continue
        n = np.cumsum([r["units"] for r in rows])
        x = np.cumsum([r["passed"] for r in rows])
        fig.add_trace(go.Scatter(x=[r["cumulative_units"] for r in rows], y=100 * x / n, mode="lines+markers",
                                 name=arm, line={"color": ARM_COLOURS[arm]}), row=1, col=1)
    band = [r for r in lots if r.get("lower") is not None]
    if band:
        xs = [r["cumulative_units"] for r in band]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[100 * r["upper"] for r in band] +
                                 [100 * r["lower"] for r in band][::-1], fill="toself", name="interval",
                                 line={"width": 0}, fillcolor="rgba(239,85,59,0.2)"), row=2, col=1)
        fig.add_trace(go.Scatter(x=xs, y=[100 * r["difference"] for r in band], name="difference",
                                 line={"color": "#ef553b"}), row=2, col=1)
        fig.add_hline(y=0, line_dash="dot", row=2, col=1)
    fig.update_yaxes(title_text="yield %", row=1, col=1)
    fig.update_yaxes(title_text="points", row=2, col=1)
    fig.update_xaxes(title_text="units produced", row=2, col=1)
    fig.update_layout(title=title, height=650)
    return fig


def surface_figure(analysis: DOEAnalysis, design: Design, x: str | None = None, y: str | None = None,
                   grid: int = 60) -> go.Figure:
    """Fitted yield over two factors (the others held at the fitted optimum), design points on top."""
    names = design.names
    x = x or names[0]
    y = y or (names[1] if len(names) > 1 else names[0])
    i, j = names.index(x), names.index(y)
    lo = design.coded.min(axis=0)
    hi = design.coded.max(axis=0)
    gx = np.linspace(lo[i], hi[i], grid)
    gy = np.linspace(lo[j], hi[j], grid)
    mx, my = np.meshgrid(gx, gy)
    pts = np.tile(np.asarray(analysis.optimum_coded), (mx.size, 1))
    pts[:, i], pts[:, j] = mx.ravel(), my.ravel()
    z = 100 * predict(analysis, design, pts).reshape(mx.shape)
    f = design.factors
    nat_x = f[i].centre + gx * f[i].half_range
    nat_y = f[j].centre + gy * f[j].half_range
    # Lists rather than arrays: plain JSON numbers, which any reader of the figure (the dashboard's) takes.
    fig = go.Figure(go.Contour(x=nat_x.tolist(), y=nat_y.tolist(), z=z.tolist(), colorscale="Viridis",
                               colorbar={"title": "yield %"}, contours={"showlabels": True}))
    nat = design.natural()
    fig.add_trace(go.Scatter(x=nat[:, i].tolist(), y=nat[:, j].tolist(), mode="markers", name="design runs",
                             marker={"color": "white", "line": {"color": "black", "width": 1}, "size": 9}))
    fig.add_trace(go.Scatter(x=[analysis.optimum[x]], y=[analysis.optimum[y]], mode="markers",
                             name="fitted optimum", marker={"symbol": "star", "size": 16, "color": "red"}))
    fig.update_layout(title=f"fitted first-pass yield: {x} × {y}", xaxis_title=x, yaxis_title=y, height=600)
    return fig


def search_figure(steps: Sequence[Mapping[str, Any]], title: str = "recipe optimisation") -> go.Figure:
    """Each trial's observed yield and the incumbent's estimate, by cumulative units."""
    xs = [s["cumulative_units"] for s in steps]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[100 * s["passed"] / s["units"] for s in steps], mode="markers",
                             name="trial yield", marker={"color": ["#ef553b" if s.get("stopped_early") else "#636efa"
                                                                   for s in steps]}))
    if steps and steps[0].get("incumbent_yield") is not None:
        fig.add_trace(go.Scatter(x=xs, y=[100 * s["incumbent_yield"] for s in steps], mode="lines",
                                 name="incumbent (model estimate)"))
    if steps and steps[0].get("true_yield") is not None:
        fig.add_trace(go.Scatter(x=xs, y=[100 * s["true_yield"] for s in steps], mode="lines",
                                 name="incumbent (twin's true yield)", line={"dash": "dot"}))
    fig.update_layout(title=title, xaxis_title="units produced", yaxis_title="first-pass yield %", height=500)
    return fig


def save(fig: go.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="directory", full_html=True)
    return path
