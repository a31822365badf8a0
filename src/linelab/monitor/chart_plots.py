"""Figures of `linelab chart` and `linelab capability`, in the measurement's own units.

The Plotly figures serve the HTML files and the web pages alike; PNG files are drawn with
matplotlib (no browser needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from linelab.errors import UserError

if TYPE_CHECKING:
    from linelab.monitor.chart_commands import CapabilityResult, ChartResult

FLAG = "#b3261e"
LINE = "#1f4e79"
LIMIT = "#b3261e"
SPEC = "#555555"


def _axis_title(name: str, unit: str | None) -> str:
    return f"{name} [{unit}]" if unit else name


Figure = dict[str, Any]
GRID = {"gridcolor": "#e8e8e8", "zerolinecolor": "#ccc"}


def _level(t: list[str], y: list[float | None], name: str, line: dict[str, Any], axis: str = "y",
           legend: bool = True) -> dict[str, Any]:
    """A limit line: two points when it is constant (most charts), else one point per chart point."""
    ys = [v for v in y if v is not None]
    if t and ys and len(ys) == len(y) and min(ys) == max(ys):
        t, y = [t[0], t[-1]], [ys[0], ys[0]]
    return {"type": "scatter", "x": t, "y": y, "mode": "lines", "name": name, "line": line, "yaxis": axis,
            "showlegend": legend, "hoverinfo": "skip"}


def _layout(height: int, title: str, **more: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "height": height, "margin": {"t": 50, "l": 60, "r": 20, "b": 40},
            "legend": {"orientation": "h", "y": -0.12}, "plot_bgcolor": "white", "xaxis": dict(GRID),
            "yaxis": dict(GRID), **more}


def chart_data(r: ChartResult, group: int = 0) -> Figure:
    """The chart (and its spread chart) of one group as Plotly JSON, flagged points circled in red
    with their rules; a point's `customdata` is the unit behind it (the web pages link it)."""
    g = r.groups[group]
    label = r.series if r.type not in ("cusum",) else f"{r.series} CUSUM (sigma units)"
    data: list[dict[str, Any]] = [
        {"type": "scatter", "x": g.t, "y": g.value, "mode": "lines+markers", "name": label, "customdata": g.units,
         "marker": {"size": 4, "color": LINE}, "line": {"width": 1, "color": LINE},
         "hovertemplate": "%{x}<br>%{y:.4g}<br>unit %{customdata}<extra></extra>"},
        _level(g.t, g.upper, "UCL", {"dash": "dash", "color": LIMIT, "width": 1}),
        _level(g.t, g.lower, "LCL", {"dash": "dash", "color": LIMIT, "width": 1}),
        _level(g.t, g.centre_line(), "centre", {"color": "#2e7d32", "width": 1})]
    if g.violations:
        v = g.violations
        data.append({"type": "scatter", "x": [x.t for x in v], "y": [x.value for x in v], "mode": "markers",
                     "name": "flagged", "customdata": [x.unit_id for x in v],
                     "marker": {"color": FLAG, "size": 8, "symbol": "circle-open", "line": {"width": 2}},
                     "text": ["rules " + ",".join(map(str, x.rules)) for x in v],
                     "hovertemplate": "%{x}<br>%{y:.4g}<br>%{text}<br>unit %{customdata}<extra></extra>"})
    ytitle = "CUSUM (sigma units)" if r.type == "cusum" else _axis_title(r.series, r.unit) if r.type not in (
        "p", "np", "u") else {"p": "fraction failed", "np": "units failed", "u": "defects per unit"}[r.type]
    layout = _layout(460 if g.spread else 380, f"{r.type.upper()} chart of {r.series}"
                     + (f" — {g.group}" if g.group else ""), shapes=[], annotations=[])
    layout["yaxis"]["title"] = {"text": ytitle}
    if g.first_index < g.phase1 and g.t:
        end = g.t[min(len(g.t), g.phase1 - g.first_index) - 1]
        layout["shapes"].append({"type": "rect", "xref": "x", "yref": "paper", "x0": g.t[0], "x1": end, "y0": 0,
                                 "y1": 1, "fillcolor": "#999", "opacity": 0.08, "line": {"width": 0}})
        layout["annotations"].append({"x": g.t[0], "xref": "x", "y": 1, "yref": "paper", "text": "phase I",
                                      "showarrow": False, "xanchor": "left", "yanchor": "bottom"})
    if g.spread:
        s = g.spread
        data += [{"type": "scatter", "x": g.t, "y": s.value, "mode": "lines", "name": s.name, "yaxis": "y2",
                  "line": {"width": 1, "color": "#555"}},
                 _level(g.t, [s.ucl] * len(g.t), f"{s.name} UCL", {"dash": "dash", "color": LIMIT, "width": 1},
                        "y2", legend=False),
                 _level(g.t, [s.centre] * len(g.t), f"{s.name} centre", {"color": "#2e7d32", "width": 1}, "y2",
                        legend=False)]
        layout["yaxis"]["domain"] = [0.36, 1.0]
        layout["yaxis2"] = {**GRID, "domain": [0.0, 0.28], "anchor": "x", "title": {"text": s.name}}
        layout["xaxis"]["anchor"] = "y2"
    return {"data": data, "layout": layout}


def capability_data(r: CapabilityResult, group: int = 0) -> Figure:
    """Histogram in the measurement's units with the spec limits and the fitted normal curve."""
    s = r.studies[group]
    edges = np.asarray(s.histogram["edges"])
    counts = np.asarray(s.histogram["counts"])
    mids, width = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
    data: list[dict[str, Any]] = [{"type": "bar", "x": mids.tolist(), "y": counts.tolist(), "width": width.tolist(),
                                   "name": "values", "marker": {"color": "#8fb3d9"}}]
    if s.sigma_overall > 0:
        xs = np.linspace(min(edges[0], r.lsl if r.lsl is not None else edges[0]),
                         max(edges[-1], r.usl if r.usl is not None else edges[-1]), 200)
        dens = np.exp(-0.5 * ((xs - s.mean) / s.sigma_overall) ** 2) / (s.sigma_overall * np.sqrt(2 * np.pi))
        data.append({"type": "scatter", "x": xs.tolist(), "y": (dens * s.n * float(width.mean())).tolist(),
                     "mode": "lines", "name": "normal (overall σ)", "line": {"color": LINE}})
    shapes, notes = [], []
    for name, v in (("LSL", r.lsl), ("USL", r.usl), ("target", r.target)):
        if v is not None:
            colour = LIMIT if name != "target" else "#2e7d32"
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": v, "x1": v, "y0": 0, "y1": 1,
                           "line": {"color": colour, "dash": "dash"}})
            notes.append({"x": v, "xref": "x", "y": 1, "yref": "paper", "text": name, "showarrow": False,
                          "yanchor": "bottom", "font": {"color": colour}})
    layout = _layout(380, f"Capability of {r.series}" + (f" — {s.group}" if s.group else ""), bargap=0,
                     shapes=shapes, annotations=notes)
    layout["xaxis"]["title"] = {"text": _axis_title(r.series, r.unit)}
    layout["yaxis"]["title"] = {"text": "count"}
    return {"data": data, "layout": layout}


def chart_figure(r: ChartResult, group: int = 0) -> go.Figure:
    return go.Figure(chart_data(r, group))


def capability_figure(r: CapabilityResult, group: int = 0) -> go.Figure:
    return go.Figure(capability_data(r, group))


def _png_chart(r: ChartResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(r.groups), 1, figsize=(10, 3.2 * len(r.groups)), squeeze=False)
    for ax, g in zip(axes[:, 0], r.groups, strict=True):
        t = np.array(g.t, dtype="datetime64[s]")
        y = np.array([np.nan if v is None else v for v in g.value])
        ax.plot(t, y, lw=0.8, marker=".", ms=2, color=LINE)
        for lim in (g.lower, g.upper):
            ax.plot(t, [np.nan if v is None else v for v in lim], ls="--", lw=0.9, color=LIMIT)
        ax.plot(t, g.centre_line(), color="#2e7d32", lw=0.9)
        if g.violations:
            ax.scatter(np.array([v.t for v in g.violations], dtype="datetime64[s]"),
                       [v.value for v in g.violations], s=30, facecolors="none", edgecolors=FLAG)
        ax.set_ylabel(_axis_title(r.series, r.unit) if r.type not in ("p", "np", "u", "cusum") else r.type)
        ax.set_title(f"{r.type.upper()} chart of {r.series}" + (f" — {g.group}" if g.group else ""), loc="left",
                     fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _png_capability(r: CapabilityResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(r.studies), 1, figsize=(8, 3.2 * len(r.studies)), squeeze=False)
    for ax, s in zip(axes[:, 0], r.studies, strict=True):
        edges = np.asarray(s.histogram["edges"])
        ax.stairs(s.histogram["counts"], edges, fill=True, color="#8fb3d9")
        for name, v in (("LSL", r.lsl), ("USL", r.usl)):
            if v is not None:
                ax.axvline(v, color=LIMIT, ls="--", lw=1)
                ax.annotate(name, (v, 0), xytext=(2, 2), textcoords="offset points", fontsize=8)
        ax.set_xlabel(_axis_title(r.series, r.unit))
        cpk = f"{s.cpk.value:.2f}" if s.cpk.value is not None else "—"
        ppk = f"{s.ppk.value:.2f}" if s.ppk.value is not None else "—"
        ax.set_title(f"{r.series}{' — ' + s.group if s.group else ''}: Cpk {cpk}, Ppk {ppk}", loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(path: Path, html_figures: list[go.Figure], png: Any) -> Path:
    suffix = path.suffix.lower()
    if suffix not in (".html", ".png"):
        raise UserError(f"--plot {path}: the file name ends in .html or .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        png(path)
        return path
    # The plotly library is inlined so the file opens without internet.
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(html_figures)]
    path.write_text("<!doctype html><meta charset='utf-8'><title>LineLab</title>" + "".join(parts))
    return path


def write_chart(r: ChartResult, path: Path) -> Path:
    return _write(path, [chart_figure(r, i) for i in range(len(r.groups))], lambda p: _png_chart(r, p))


def write_capability(r: CapabilityResult, path: Path) -> Path:
    return _write(path, [capability_figure(r, i) for i in range(len(r.studies))], lambda p: _png_capability(r, p))
