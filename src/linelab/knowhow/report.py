"""8D reports from know-how entries, in Markdown and HTML, with their plots.

The eight disciplines map onto what LineLab already knows: D2 the problem (signature and
monitor evidence), D3 containment, D4 root cause (diagnosis), D5/D6 the fix and its verified
effect, D7 prevention (the ledger entry and the monitors that watch for recurrence).
"""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linelab.knowhow.ledger import Entry

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _subplots(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure drawn off-screen. matplotlib loads here, not with the module: only the commands
    that draw a chart pay for it, not every knowhow command (commands start fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _close(fig: Figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def draw_chart(ax: Axes, chart: dict[str, Any], onset: Any = None, detected: Any = None,
               ylabel: str | None = None) -> None:
    """A problem's control chart on an axis: its values with centre, control and spec limits, the
    points beyond the limits ringed, the onset and the detection marked (the 8D export and the
    problem report draw the same chart)."""
    y = chart.get("value") or chart.get("y") or chart.get("statistic") or []
    y = [float("nan") if v is None else v for v in y]
    # Monitor charts carry ISO times; anything else is plotted against its index.
    x = [datetime.fromisoformat(t) for t in chart["t"]][: len(y)] if chart.get("t") else \
        chart.get("x") or list(range(len(y)))
    # matplotlib plots datetimes through its date converter; its stubs leave them out of the accepted types
    ax.plot(x, y, lw=0.9, marker=".", ms=2.5, color="#1f4e79", label=chart.get("label") or "value")  # type: ignore[arg-type]
    for key, colour, style, name in (("centre", "#2e7d32", "-", "centre"), ("center", "#2e7d32", "-", "centre"),
                                     ("lcl", "#b3261e", "--", "LCL"), ("ucl", "#b3261e", "--", "UCL"),
                                     ("limit", "#b3261e", "--", "limit"), ("lsl", "#333", ":", "LSL"),
                                     ("usl", "#333", ":", "USL")):
        v = chart.get(key)
        if isinstance(v, int | float):
            ax.axhline(v, color=colour, ls=style, lw=1, label=name)
    ucl, lcl = chart.get("ucl"), chart.get("lcl")
    out = [(xi, yi) for xi, yi in zip(x, y, strict=False) if yi == yi and (
        (ucl is not None and yi > ucl) or (lcl is not None and yi < lcl))]
    if out:
        ax.plot([p[0] for p in out], [p[1] for p in out], "o", mfc="none", mec="#b3261e", ms=6,
                label="beyond the limits")
    if onset is None:
        onset = chart.get("onset_x")
        if onset is None and chart.get("onset_t") and chart.get("t"):
            onset = chart["onset_t"]
    for when, colour, name in ((onset, "#e69500", "onset"), (detected, "#b3261e", "detected")):
        if when is not None:
            at = datetime.fromisoformat(when) if isinstance(when, str) else when
            ax.axvline(at, color=colour, lw=1.5, label=name)  # type: ignore[arg-type]  # dates, as above
    if chart.get("t"):  # dates that fit under the chart: 01-08 12:00 written once, not at every tick
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylabel(ylabel if ylabel is not None else str(chart.get("label") or chart.get("ylabel") or ""))
    if str(chart.get("type", "")).endswith("rate"):
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.1f}%")
    ax.grid(alpha=0.3)


def chart_png(chart: dict[str, Any], path: Path, title: str) -> Path | None:
    """The problem's control chart (values with centre line and limits), if it has one."""
    if not (chart.get("value") or chart.get("y") or chart.get("statistic")):
        return None
    fig, ax = _subplots(8, 3)
    draw_chart(ax, chart)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _close(fig)
    return path


def effect_png(entry: Entry, path: Path) -> Path | None:
    e = entry.effect
    if e is None:
        return None
    fig, ax = _subplots(4, 3)
    ax.bar(["before", "after"], [100 * e.before, 100 * e.after], color=["#b3261e", "#2e7d32"])
    ax.set_ylabel(f"{e.metric} (%)")
    change = f"change {100 * (e.after - e.before):+.2f} pts"
    ax.set_title(f"{change}\n95% CI {100 * e.diff_low:+.2f}…{100 * e.diff_high:+.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _close(fig)
    return path


def _units(n: int | None) -> str:
    return f"{n:,} units" if n is not None else "—"


def _canon(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def join(*parts: str) -> str:
    """Sentences joined, each said once: a part another part already contains is left out."""
    kept: list[str] = []
    for part in (p.strip().rstrip(".") for p in parts):
        if not part:
            continue
        c = _canon(part)
        if any(c in _canon(k) for k in kept):
            continue
        kept = [k for k in kept if _canon(k) not in c] + [part]
    return ". ".join(kept) + ("." if kept else "")


def params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def sections(entry: Entry, problem: dict[str, Any] | None) -> list[tuple[str, str]]:
    sig, cause, fix = entry.signature, entry.root_cause, entry.fix
    p = problem or {}
    level = f"={cause.level}" if cause.level else ""
    containment = "Affected units are traceable with `linelab trace --lot` or by machine and time window."
    writer = entry.evidence.get("written_by")
    team = "Line process engineering and quality" + (f" (written by {writer})" if writer
                                                      else ", with LineLab's closed loop")
    action = f"{fix.action} ({params_text(fix.params)})" if fix.params else fix.action
    return [
        ("D1 Team", join(team, entry.notes)),
        ("D2 Problem", p.get("description") or join(sig.headline())),
        ("D3 Containment", p.get("containment", containment)),
        ("D4 Root cause", join(f"{cause.factor}{level}", cause.description)),
        ("D5 Corrective action", _corrective(action, fix.action, fix.description, fix.params)),
        ("D6 Verification", entry.effect.text() if entry.effect else "not yet measured"),
        ("D7 Prevention", f"Know-how entry {entry.id} is recalled when this signature returns; "
         f"monitors keep watching {sig.station or 'the line'}."
         + (f" Tags: {', '.join(entry.tags)}." if entry.tags else "")),
        ("D8 Closure", f"time to detect: {_units(entry.time_to_detect_units)}; "
         f"time to fix: {_units(entry.time_to_fix_units)}; fix reused {entry.reused} time(s)."),
    ]


def _corrective(action: str, name: str, description: str, params: dict[str, Any] | None) -> str:
    """The action and its description, without saying the action or its arguments twice."""
    desc = description.replace(str(params), params_text(params)) if params else description
    desc = desc[len(name):].strip() if desc.startswith(name) else desc
    return join(f"{action} {desc}") if desc.startswith("(") else join(action, desc)


def summary_rows(entries: list[Entry]) -> list[list[str]]:
    """One line per entry for the report's opening table."""
    rows = []
    for e in entries:
        c = e.root_cause
        effect = (f"{100 * e.effect.before:.2f}% → {100 * e.effect.after:.2f}%" if e.effect else "not measured")
        rows.append([e.id, e.problem_id or "—", f"{c.factor}={c.level}" if c.level else c.factor,
                     f"{e.fix.action} {params_text(e.fix.params)}".strip(), effect, str(e.reused)])
    return rows


SUMMARY_HEAD = ["entry", "problem", "root cause", "fix", "failure rate before → after", "reused"]


def export(entries: list[Entry], problems: dict[str, dict[str, Any]], out_dir: Path, name: str) -> dict[str, str]:
    """Write `<name>.md` and `<name>.html` (PNG plots beside the Markdown, inlined in the HTML).

    Entries about the same problem share its evidence chart: it is drawn and shown once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(entries)
    md: list[str] = [f"# 8D report — {name}", "", "| " + " | ".join(SUMMARY_HEAD) + " |",
                     "|" + "---|" * len(SUMMARY_HEAD)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]
    body: list[str] = [f"<h1>8D report — {html.escape(name)}</h1>", "<table><tr>"
                       + "".join(f"<th>{html.escape(h)}</th>" for h in SUMMARY_HEAD) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>"]
    charted: dict[str, str] = {}
    for entry in entries:
        problem = problems.get(entry.problem_id or "")
        md += [f"## {entry.id}: {entry.title}", ""]
        body.append(f"<h2>{html.escape(entry.id)}: {html.escape(entry.title)}</h2>")
        for head, text in sections(entry, problem):
            md += [f"### {head}", "", text, ""]
            body.append(f"<h3>{html.escape(head)}</h3><p>{html.escape(text)}</p>")
        key = entry.problem_id or entry.id
        plots: list[Path | None] = []
        if key in charted:
            note = f"Evidence chart: see {charted[key]} (the same problem)."
            md += [note, ""]
            body.append(f"<p>{html.escape(note)}</p>")
        else:
            chart = (problem or {}).get("chart") or {}
            drawn = chart_png(chart, out_dir / f"{entry.id}-evidence.png", entry.signature.headline())
            if drawn is not None:
                charted[key] = entry.id
            plots.append(drawn)
        plots.append(effect_png(entry, out_dir / f"{entry.id}-effect.png"))
        for plot in filter(None, plots):
            md += [f"![{plot.stem}]({plot.name})", ""]
            data = base64.b64encode(plot.read_bytes()).decode()
            body.append(f'<img alt="{plot.stem}" src="data:image/png;base64,{data}">')
    md_path, html_path = out_dir / f"{name}.md", out_dir / f"{name}.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(
        "<!doctype html><meta charset='utf-8'><link rel='icon' href='data:,'><title>8D report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:24px auto;padding:0 16px}"
        "table{border-collapse:collapse;font-size:13px;width:100%}td,th{border-bottom:1px solid #ddd;"
        "padding:4px 6px;text-align:left;vertical-align:top}"
        "img{max-width:100%;display:block;margin:8px 0}</style>" + "\n".join(body)
    )
    return {"markdown": str(md_path), "html": str(html_path)}
