"""The loop's report: one self-contained HTML page a morning meeting can read.

It opens with what to do next, then the figures, the learning curve, every problem the monitor
saw and what happened to it (including those nobody acted on), the recipe before and after
within its bounds, and the know-how written. Numbers are rounded for people: yields in percent
with two decimals, units with thousands separators, settings to their step.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from linelab.render import recipe_moves, recipe_rows

COLOURS = {"none": "#b3261e", "loop": "#1f4e79", "oracle": "#2e7d32"}
NAMES = {"none": "no loop (scheduled maintenance only)", "loop": "LineLab loop", "oracle": "oracle"}
ACTIVE = ("open", "diagnosed", "fixing")

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1d2330}"
    "table{border-collapse:collapse;font-size:13px;width:100%;table-layout:auto}"
    "td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}"
    "td{overflow-wrap:anywhere}td.n,th.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
    "td.text{max-width:380px}td.id{white-space:nowrap}.next li{margin:4px 0}"
    ".next{background:#fff6e0;padding:8px 16px 8px 32px;"
    "border-radius:6px}small{color:#667}"
)


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


# -- formatting ----------------------------------------------------------------------------------
def pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def count(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def table(rows: list[list[str]], head: list[str], numeric: set[int] | frozenset[int] = frozenset(),
          text: set[int] | frozenset[int] = frozenset()) -> str:
    """An HTML table of already formatted cells (escaped here); `numeric` columns align right."""
    if not rows:
        return "<p><i>none</i></p>"

    def cls(i: int) -> str:
        return ' class="n"' if i in numeric else ' class="text"' if i in text else ' class="id"' if i == 0 else ""

    top = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><tr>{top}</tr>{body}</table>"


# -- what the workspace adds ---------------------------------------------------------------------
def workspace_facts(result: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every problem the monitor filed, and the recipe's settings with their bounds (from the profile)."""
    where = result.get("workspace")
    if not where or not Path(where).exists():
        return [], {}
    from linelab.monitor import problems as pb
    from linelab.profile import workspace_profile
    from linelab.store import Workspace

    profile = workspace_profile(where)
    settings = {s.name: s.model_dump() for s in profile.recipe} if profile else {}
    with Workspace.open(where) as ws:
        problems = pb.list_problems(ws)
    return problems, settings


def outcome(problem: dict[str, Any] | None, inc: dict[str, Any] | None) -> str:
    """What happened to a problem, in a sentence."""
    status = (problem or {}).get("status", "")
    if inc is None:
        if status in ACTIVE:
            return f"seen, never acted on ({status})"
        return {"false_alarm": "closed as a false alarm", "resolved": "resolved"}.get(status, status or "seen")
    parts = []
    if inc.get("trial_effect"):
        parts.append("a recipe trial's own effect, not a problem of the line")
    if inc.get("rides_on"):
        parts.append(f"judged by the fix of {inc['rides_on']}")
    if inc.get("left_to_person"):
        parts.append(f"left to a person: {inc['left_to_person']}")
    if inc.get("fixed_unit") is not None:
        fixed = f"fixed at unit {inc['fixed_unit']:,} by {action_text(inc.get('action'))}"
        if inc.get("knowhow_reused"):
            fixed += f" (know-how {inc['knowhow_reused']} reused)"
        parts.append(fixed)
    elif not parts:
        parts.append(f"seen, not acted on ({status or 'open'})")
    if inc.get("failed_actions"):
        parts.append(f"{inc['failed_actions']} action(s) did not help")
    if inc.get("resolved_unit") is not None:
        parts.append(f"verified at unit {inc['resolved_unit']:,}")
    elif status in ACTIVE and inc.get("fixed_unit") is not None:
        parts.append(f"not yet verified ({status})")
    return "; ".join(parts)


def action_text(action: str | None) -> str:
    """`service_press {'machine': 'PR2'}` as a person writes it: `service_press machine=PR2`."""
    if not action:
        return "an action"
    return re.sub(r"\{([^{}]*)\}", lambda m: re.sub(r"'?([\w.-]+)'?:\s*'?([^',]+)'?", r"\1=\2", m.group(1)),
                  action).strip()


def problem_rows(result: dict[str, Any], problems: list[dict[str, Any]]) -> list[list[str]]:
    incidents = {i["problem_id"]: i for i in result["incidents"]}
    by_id = {p["id"]: p for p in problems}
    ids = list(by_id) + [i for i in incidents if i not in by_id]
    rows = []
    for pid in ids:
        p, inc = by_id.get(pid), incidents.get(pid)
        what = (p or {}).get("description") or (inc or {}).get("description") or ""
        lost = ((p or {}).get("severity") or {}).get("yield_lost_units")
        rows.append([pid, (p or {}).get("entity", ""), what.split(" (")[0],
                     count((inc or {}).get("onset_unit")), count((inc or {}).get("detected_unit")),
                     (inc or {}).get("cause") or "—", outcome(p, inc), count(lost)])
    return rows


def recipe_table_rows(result: dict[str, Any], settings: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = recipe_rows(result["recipe"].get("start") or {}, result["recipe"].get("adopted"), settings)
    return [[r["setting"], r["station"], r["before"], r["after"], r["change"], r["bounds"]] for r in rows]


def trial_rows(result: dict[str, Any], settings: dict[str, dict[str, Any]]) -> list[list[str]]:
    start = result["recipe"].get("start") or {}
    return [[count(t.get("unit")), recipe_moves(t.get("recipe") or {}, start, settings), count(t.get("units")),
             pct(t.get("first_pass_yield"))] for t in result["recipe"]["trials"]]


def next_steps(result: dict[str, Any], problems: list[dict[str, Any]]) -> list[str]:
    """What a person should do next, most costly first."""
    out = []
    incidents = {i["problem_id"]: i for i in result["incidents"]}
    open_ones = sorted((p for p in problems if p.get("status") in ACTIVE),
                       key=lambda p: -((p.get("severity") or {}).get("yield_lost_units") or 0))
    for p in open_ones:
        inc = incidents.get(p["id"], {})
        lost = count((p.get("severity") or {}).get("yield_lost_units"))
        if inc.get("left_to_person"):
            todo = f"it is left to a person ({inc['left_to_person']})"
        elif inc.get("fixed_unit") is not None:
            todo = "its fix is applied but not verified yet: check it on the next data (`linelab act check`)"
        elif inc.get("cause"):
            todo = f"its diagnosed cause is {inc['cause']}: act on it, or record the fix with " \
                   f"`linelab problem resolve {p['id']} --cause … --fix …`"
        else:
            todo = f"diagnose it: `linelab diagnose {p['id']}`"
        out.append(f"{p['id']} at {p.get('entity', '?')} is {p['status']} ({lost} units lost so far): {todo}.")
    failed = [i for i in result["incidents"] if i.get("failed_actions")]
    for i in failed:
        out.append(f"{i['problem_id']}: {i['failed_actions']} action(s) did not help before "
                   f"{i.get('action') or 'the fix'} — review why the first diagnosis missed.")
    adopted = result["recipe"].get("adopted")
    if adopted:
        out.append(f"A new recipe was adopted at unit {result['recipe'].get('adopted_at_unit') or 0:,}: keep it, "
                   "and confirm it with a split run before making it the standard (`linelab experiment design`).")
    fy = result["first_pass_yield"]
    gap = fy["oracle"] - fy["loop"]
    if gap > 0.002:
        out.append(f"First-pass yield is still {100 * gap:.2f} points below the oracle's: see which problems took "
                   "longest from onset to fix in the table below.")
    if not out:
        out.append("Nothing is waiting: every problem seen was fixed and verified.")
    return out


def write_report(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    problems, settings = workspace_facts(result)
    fy, copq = result["first_pass_yield"], result.get("copq_per_unit", {})
    kpis = table([[NAMES[k], pct(fy[k]), f"{copq[k]:.4f}" if k in copq else "—"] for k in ("none", "loop", "oracle")],
                 ["run", "first-pass yield", "cost of poor quality per unit"], numeric={1, 2})
    lr = ", ".join(f"{NAMES[k]} {v:.1%}" for k, v in result["learning_rate"].items())
    summary = (
        f"<p>Scenario <b>{html.escape(result['scenario'])}</b>, seed {result['seed']}, {result['units']:,} units. "
        f"<b>Yield gap closed: {result['yield_gap_closed']:.2f}</b> (0 = no better than no loop, 1 = the oracle).</p>"
        + kpis
        + f"<p>Defects removed per doubling of volume: {html.escape(lr)}. Recurring problems: time-to-fix ratio "
        f"{_maybe(result.get('recurrence_ratio'))}, recall accuracy {_maybe(result.get('recall_accuracy'))}. "
        f"Actions that did not help: {result['actions_that_did_not_help']}; false problems acted on: "
        f"{result['false_problems_acted_on']}.</p>"
    )
    todo = "<ol class='next'>" + "".join(f"<li>{html.escape(s)}</li>" for s in next_steps(result, problems)) + "</ol>"
    figure = learning_figure(result).to_html(full_html=False, include_plotlyjs=True)
    truth = [[t["id"], t["type"], count(t.get("onset_unit")), t.get("fixed_by") or "—", count(t.get("end_unit")),
              count(t.get("time_to_fix_units"))] for t in result.get("truth", [])]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>LineLab loop report</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>LineLab: the line learning</h1>" + summary
        + "<h2>What to do next</h2>" + todo + figure
        + "<h2>Every problem seen, and what happened to it</h2><p><small>Onset and detection in units produced; "
        "units lost: the yield the problem cost, in units.</small></p>"
        + table(problem_rows(result, problems), ["problem", "where", "what", "onset", "detected", "cause",
                                                 "what happened", "units lost"], numeric={3, 4, 7}, text={2, 6})
        + "<h2>Recipe</h2>"
        + table(recipe_table_rows(result, settings), ["setting", "station", "before", "after", "change", "bounds"],
                numeric={2, 3, 4})
        + f"<h3>Trials ({len(result['recipe']['trials'])})</h3>"
        + table(trial_rows(result, settings), ["at unit", "settings changed from the start", "units",
                                               "first-pass yield"], numeric={0, 2, 3}, text={1})
        + "<h2>Know-how written</h2>"
        + table([[k["id"], k["title"], str(k["reused"])] for k in result["knowhow"]], ["entry", "title", "reused"],
                numeric={2})
        + "<h2>Injected micro-problems (the simulation's ground truth)</h2>"
        + table(truth, ["id", "type", "onset unit", "fixed by", "end unit", "units to fix"], numeric={2, 4, 5})
        + "</body></html>"
    )
    path = out_dir / "loop-report.html"
    path.write_text(page)
    return path


def _maybe(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"
