"""Evidence plots: the top causes side by side, reference against incident (PNG or HTML)."""

from __future__ import annotations

from pathlib import Path

from .model import Diagnosis


def render_evidence(report: Diagnosis, path: str | Path, top: int = 3) -> Path:
    """Write the evidence plot of the top causes; `.html` gives an interactive plotly page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    causes = [c for c in report.causes[:top] if c.plot]
    if path.suffix.lower() == ".html":
        return _html(report, causes, path)
    return _png(report, causes, path)


def level_axis(target: str, mode: str, unit: str | None = None) -> str:
    """What a level's bar measures, in the symptom's own units."""
    u = f" [{unit}]" if unit else ""
    if mode == "mean":
        return f"mean {target}{u}"
    if mode == "spread":
        return f"mean distance of {target} from its usual level{u}"
    return f"{target} ({mode})"


def _title(c) -> str:
    share = f", {100 * c.share:.0f}% of excess" if c.share is not None else ""
    return f"#{c.rank} {c.label}{share}"


def draw_evidence(ax, plot: dict, factor: str, title: str, ylabel: str, fontsize: float = 8.0) -> None:
    """One cause's evidence on a matplotlib axis: the symptom by its levels (reference against
    incident, the guilty level marked) or the factor's distribution in both periods. A level one
    period never saw has no bar."""

    def heights(key: str) -> list[float]:
        return [float("nan") if v is None else float(v) for v in plot.get(key) or []]

    if plot["type"] == "levels":
        levels = [str(v) for v in plot["levels"]]
        x = range(len(levels))
        ax.bar([i - 0.2 for i in x], heights("reference"), 0.4, label="reference", color="#9aa5b1")
        colors = ["#d64545" if lv == str(plot.get("highlight")) else "#3e7cb1" for lv in levels]
        ax.bar([i + 0.2 for i in x], heights("incident"), 0.4, label="incident", color=colors)
        many = len(levels) > 4
        ax.set_xticks(list(x), levels, rotation=45 if many else 0, ha="right" if many else "center", fontsize=fontsize)
        ax.set_ylabel(ylabel, fontsize=fontsize)
    else:
        edges = plot["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        width = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
        ax.bar(centers, heights("reference"), width, alpha=0.5, label="reference", color="#9aa5b1")
        ax.bar(centers, heights("incident"), width, alpha=0.5, label="incident", color="#d64545")
        ax.set_xlabel(factor, fontsize=fontsize)
        ax.set_ylabel("density", fontsize=fontsize)
    ax.set_title(title, fontsize=fontsize + 1)
    ax.tick_params(labelsize=fontsize)
    ax.legend(fontsize=fontsize - 1)


def _png(report: Diagnosis, causes, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(causes), 1)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.8), squeeze=False)
    for ax, c in zip(axes[0], causes, strict=False):
        draw_evidence(ax, c.plot, c.factor, _title(c), level_axis(report.target, report.symptom_mode), fontsize=9)
    if not causes:
        axes[0][0].text(0.5, 0.5, "no candidate causes", ha="center")
    fig.suptitle(f"Diagnosis of {report.target}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html(report: Diagnosis, causes, path: Path) -> Path:
    from plotly.subplots import make_subplots

    n = max(len(causes), 1)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[_title(c) for c in causes] or ["no causes"])
    for i, c in enumerate(causes, 1):
        p = c.plot
        if p["type"] == "levels":
            fig.add_bar(x=p["levels"], y=p["reference"], name="reference", marker_color="#9aa5b1", row=1, col=i)
            fig.add_bar(x=p["levels"], y=p["incident"], name="incident", marker_color="#d64545", row=1, col=i)
        else:
            edges = p["edges"]
            centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
            fig.add_bar(x=centers, y=p["reference"], name="reference", marker_color="#9aa5b1", row=1, col=i)
            fig.add_bar(x=centers, y=p["incident"], name="incident", marker_color="#d64545", opacity=0.6, row=1, col=i)
    fig.update_layout(title=f"Diagnosis of {report.target}", barmode="group", height=420, width=480 * n)
    body = fig.to_html(include_plotlyjs=True, full_html=False)
    words = "".join(f"<li>{c.evidence}</li>" for c in report.causes[:5])
    path.write_text(
        f"<html><head><meta charset='utf-8'><title>Diagnosis of {report.target}</title></head><body>"
        f"<pre>{report.summary}</pre>{body}<ol>{words}</ol></body></html>"
    )
    return path
