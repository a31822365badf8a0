"""A problem's report for the morning meeting: one self-contained HTML page that prints well.

What was seen (the monitor's chart, in the measurement's units), when, how many units it lost,
the ranked causes with their evidence, the actions taken and their measured effect, the know-how
written or recalled for it, and what to do next. The workbench's problem page says the same next
step (`next_step`) and links the same units (`lost_units_filter`): both are defined here once.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from linelab.knowhow.ledger import Effect
from linelab.knowhow.report import draw_chart, join, params_text
from linelab.monitor.problems import ACTIVE
from linelab.profile import Profile
from linelab.render import number

Remedy = Callable[[dict[str, Any]], dict[str, Any] | None]


def profile_remedy(profile: Profile | None) -> Remedy:
    """`remedy(cause)` for `next_step`: the line profile's action for a ranked cause, None without a
    profile or an action for it."""
    from linelab.act.remedies import remedy
    from linelab.model import Cause

    def of(cause: dict[str, Any]) -> dict[str, Any] | None:
        if profile is None:
            return None
        return remedy(profile, Cause.model_validate({k: v for k, v in cause.items() if k in Cause.model_fields}))

    return of


def cause_label(c: dict[str, Any]) -> str:
    return f"{c['factor']}={c['level']}" if c.get("level") is not None else str(c["factor"])


# -- what the problem page and the report share --------------------------------------------------
def next_step(record: dict[str, Any], diagnosis: dict[str, Any] | None, actions: list[Any],
              entries: list[dict[str, Any]], remedy: Remedy) -> dict[str, Any]:
    """What a person should do next about a problem, in a sentence; the action to propose if any
    (`propose`), and its know-how entry once it is closed (`knowhow`). `remedy(cause)` gives the line
    profile's action for a cause ({"kind": ..., params...}) or None."""
    status = record["status"]
    pid = record["id"]
    if status in ("resolved", "false_alarm"):
        return {"text": f"Nothing to do: this problem is {status.replace('_', ' ')}.",
                "knowhow": entries[0]["id"] if entries else None}
    for a in reversed(actions):  # the latest action decides
        what = f"{a.id} ({a.kind})"
        if a.status == "proposed":
            return {"text": f"{what} is proposed: approve it, then apply it (`linelab act approve {a.id}`, "
                            f"`linelab act apply {a.id}`), or reject it."}
        if a.status == "approved":
            return {"text": f"{what} is approved: apply it (`linelab act apply {a.id}`)."}
        if a.status == "sent":
            return {"text": f"{what} was sent to the line: acknowledge it when done (`linelab act done {a.id}`)."}
        if a.status == "applied":
            verdict = (a.observed_effect or {}).get("verdict")
            if verdict is None:
                return {"text": f"{what} is applied: measure its effect on the units built since "
                                f"(`linelab act check {a.id}`), then record the fix "
                                f"(`linelab problem resolve {pid} --cause … --fix …`)."}
            if verdict == "improved":
                return {"text": f"{what} improved first-pass yield: record the fix to close the problem and write "
                                f"its know-how (`linelab problem resolve {pid} --cause … --fix …`)."}
            return {"text": f"{what} showed {verdict}: try the next cause in the ranking, or record what was "
                            f"done by hand (`linelab problem resolve {pid} --cause … --fix …`)."}
    causes = (diagnosis or {}).get("causes") or []
    if not causes:
        return {"text": f"Diagnose it: rank its candidate causes (`linelab diagnose {pid}`, or its page's button)."}
    top = causes[0]
    fix = remedy(top)
    if fix is None:
        return {"text": f"Its top-ranked cause is {cause_label(top)}; no action in the line's profile remedies it: "
                        f"fix it by hand and record the fix (`linelab problem resolve {pid} --cause … --fix …`)."}
    fix = dict(fix)
    kind = fix.pop("kind")
    params = ",".join(f"{k}={v}" for k, v in fix.items())
    return {"text": f"Its top-ranked cause is {cause_label(top)}; the line's remedy for it is {kind} {params}: "
                    "propose it (it then waits for approval).",
            "propose": {"kind": kind, "params": params, "reason": f"top-ranked cause {cause_label(top)}"}}


NARROWS = ("machine", "operator", "shift", "lot", "product")  # scope keys `linelab units` filters by


def lost_units_filter(record: dict[str, Any]) -> dict[str, Any] | None:
    """The `linelab units` filters for the units behind a problem's "units lost": those that failed
    first pass from its onset (to its latest evidence once it is closed), with its defect code at its
    station, on its machine, lot, shift, operator or product where its scope names one. The number
    lost is the excess over the usual rate, so those units are a part of this list."""
    since = (record.get("onset") or {}).get("t")
    if not since:
        return None
    scope = record.get("scope") or {}
    until = None
    latest = (record.get("latest_evidence") or {}).get("t")
    if record.get("status") not in ACTIVE and latest:
        until = (datetime.fromisoformat(latest) + timedelta(seconds=1)).isoformat()  # the latest unit included
    station, code = scope.get("station"), scope.get("defect_code")
    where = f" with {code} at {station}" if code and station else f" that visited {station}" if station else ""
    narrowed = {k: str(scope[k]) for k in NARROWS if scope.get(k) not in (None, "", "*")}
    where += "".join(f", {k} {v}" for k, v in narrowed.items())
    note = (f"the units that failed first pass{where} since the onset: the units lost are those beyond the "
            "usual failure rate")
    filters = {"outcome": "first_pass_fail", "since": since, "until": until, "station": station,
               "defect_code": code, **narrowed}
    return {"filters": {k: v for k, v in filters.items() if v is not None}, "note": note}


def units_command(filters: dict[str, Any]) -> str:
    return "linelab units " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in filters.items())


# -- the report ----------------------------------------------------------------------------------
@dataclass
class Report:
    """Everything the report shows, gathered by the `problem report` command."""

    record: dict[str, Any]
    unit: str | None  # the measurement's unit (mm, kPa...) where the problem is about a measurement
    diagnosis: dict[str, Any] | None
    actions: list[Any]
    entries: list[dict[str, Any]]  # know-how written for this problem
    recalled: list[Any]  # similar entries in the ledger (recall matches)
    next: dict[str, Any]
    workspace: str = ""
    made: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG (text kept as text: it prints sharp and stays small)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    return plt


def axis_label(chart: dict[str, Any], unit: str | None) -> str:
    label = str(chart.get("label") or "value")
    return f"{label} [{unit}]" if unit and f"[{unit}]" not in label else label


def chart_svg(record: dict[str, Any], unit: str | None) -> str | None:
    """The monitor's chart of the problem: its values with centre, control and spec limits, the onset
    and the detection, the value axis in the measurement's units."""
    c = record.get("chart") or {}
    if not c.get("t") or not c.get("value"):
        return None
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    draw_chart(ax, c, onset=(record.get("onset") or {}).get("t"),
               detected=(record.get("first_evidence") or {}).get("t"), ylabel=axis_label(c, unit))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=9, frameon=False)
    return _svg(fig)


def evidence_svg(cause: dict[str, Any], target: str, mode: str | None, unit: str | None) -> str | None:
    """A cause's evidence: the symptom by its levels, or its distribution, reference against incident."""
    from linelab.diagnose.plots import draw_evidence, level_axis

    p = cause.get("plot") or {}
    if not p:
        return None
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(4.6, 2.6))
    draw_evidence(ax, p, str(cause["factor"]), f"#{cause['rank']} {cause_label(cause)}",
                  level_axis(target, str(mode), unit if mode in ("mean", "spread") else None), fontsize=7)
    return _svg(fig)


def _e(v: Any) -> str:
    return html.escape(str(v))


def _pct(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def _when(v: Any) -> str:
    return str(v)[:16].replace("T", " ") if v else "—"


def _hours(a: str | None, b: str | None) -> str | None:
    if not a or not b:
        return None
    h = (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 3600
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def _table(head: list[str], rows: list[list[str]], cls: str = "", numeric: tuple[int, ...] = ()) -> str:
    """Cells are HTML already (escaped by the caller)."""
    th = "".join(f'<th class="n">{h}</th>' if i in numeric else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def _code(text: str) -> str:
    """A sentence whose `commands` are set as code."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _effect(o: dict[str, Any]) -> tuple[str, str]:
    if o.get("delta") is None:
        return "—", "not measured"
    lo, hi = (o.get("interval") or [None, None])[:2]
    ci = f" ({100 * lo:+.2f}…{100 * hi:+.2f})" if lo is not None and hi is not None else ""
    return f"{_pct(o.get('before_yield'))} → {_pct(o.get('after_yield'))}", f"{100 * o['delta']:+.2f} pt{ci}"


STYLE = """
body{font-family:system-ui,sans-serif;color:#1d2330;max-width:1000px;margin:20px auto;padding:0 18px;font-size:14px}
h1{font-size:21px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px;border-bottom:2px solid #1d2330;padding-bottom:2px}
h3{font-size:14px;margin:10px 0 4px}.meta{color:#667;font-size:12px;margin:0 0 10px}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin:4px 0}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #ddd;vertical-align:top}
th{color:#445;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.top td{background:#fff6e0}.lead{font-size:15px}.next{background:#eef4fb;border-left:4px solid #1f4e79;
padding:8px 12px}.figs{display:flex;flex-wrap:wrap;gap:10px}.figs figure{margin:0;flex:1 1 300px}
svg{max-width:100%;height:auto}figure figcaption{font-size:12px;color:#445}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:4px 0}dt{color:#667}
.status{font-size:12px;padding:1px 6px;border-radius:8px;background:#eee}.empty{color:#888;font-style:italic}
code{font-size:12px;background:#f2f3f5;padding:0 3px;border-radius:3px}
:target{background:#fff1d6}
@page{size:A4;margin:14mm 12mm}
@media print{body{max-width:none;margin:0;padding:0;font-size:10.5pt}a{color:inherit;text-decoration:none}
section{break-inside:avoid-page}h2{break-after:avoid}figure,table tr,svg{break-inside:avoid}
.next{background:none;border:1px solid #1f4e79}.noprint{display:none}}
"""


def render(r: Report) -> str:
    """The report as one HTML page: no script, no file or site it loads (plots are inline SVG)."""
    p = r.record
    pid = str(p["id"])
    sev = p.get("severity") or {}
    chart = chart_svg(p, r.unit)
    parts: list[str] = [
        f"<h1>Problem report — {_e(pid)}</h1>",
        f'<p class="meta">{_e(p.get("entity") or "")} · status <span class="status">'
        f'{_e(str(p.get("status", "")).replace("_", " "))}</span> · made {_e(r.made)}'
        + (f" from {_e(r.workspace)}" if r.workspace else "") + "</p>",
        '<section id="next"><h2>What to do next</h2>'
        f'<p class="next lead">{_code(r.next["text"])}'
        + (f' Its know-how is <a href="#{_e(r.next["knowhow"])}">{_e(r.next["knowhow"])}</a>.'
           if r.next.get("knowhow") else "") + "</p></section>",
    ]
    # What was seen, when, how many units.
    lost = lost_units_filter(p)
    facts = [("what", _e(p.get("description") or "")),
             ("onset", f"{_when(p['onset'].get('t'))} (unit {_e(p['onset'].get('unit') or '—')})"),
             ("detected", f"{_when(p['first_evidence'].get('t'))} (unit {_e(p['first_evidence'].get('unit') or '—')})"
              + (f", {_hours(p['onset'].get('t'), p['first_evidence'].get('t'))} after the onset"
                 if _hours(p['onset'].get('t'), p['first_evidence'].get('t')) else "")),
             ("latest evidence", _when(p["latest_evidence"].get("t"))),
             ("units affected", number(sev.get("units_affected"))),
             ("units lost", number(sev.get("yield_lost_units"))
              + (f' <small>({_e(lost["note"])}: <code>{_e(units_command(lost["filters"]))}</code>)</small>'
                 if lost else ""))]
    if sev.get("loss_rate") is not None:
        facts.append(("losing now", f"{_pct(sev['loss_rate'])} of units"))
    parts.append('<section id="seen"><h2>What was seen, when, and what it cost</h2><dl>'
                 + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
                 + (f'<figure id="chart">{chart}<figcaption>The monitor\'s chart of {_e(pid)}: '
                    f'{_e(axis_label(p.get("chart") or {}, r.unit))}; onset and detection marked.</figcaption>'
                    "</figure>" if chart else '<p class="empty">the monitor kept no chart for this problem</p>')
                 + "</section>")
    # Ranked causes with their evidence.
    d = r.diagnosis
    if d and d.get("causes"):
        rows = []
        for i, c in enumerate(d["causes"][:10]):
            note = (f"confounded with {', '.join(c['confounded_with'])}" if c.get("confounded_with")
                    else f"explained by {c['explained_by']}" if c.get("explained_by") else "")
            label = f" <small>{_e(c['effect_label'])}</small>" if c.get("effect_label") else ""
            rows.append([str(c["rank"]), f"<b>{_e(cause_label(c))}</b>" if i == 0 else _e(cause_label(c)),
                         _e(c.get("kind") or ""), number(c.get("effect")) + label,
                         _pct(c.get("share"), 0) if c.get("share") is not None else "—", number(c.get("q_value"), 2),
                         _e(note)])
        figs = []
        for c in d["causes"][:3]:
            svg = evidence_svg(c, str(d.get("target") or ""), d.get("symptom_mode"), r.unit)
            figs.append(f"<figure>{svg or ''}<figcaption>{_e(c.get('evidence') or '')}</figcaption></figure>")
        summary = (d.get("summary") or "").splitlines()
        parts.append('<section id="causes"><h2>Ranked causes and their evidence</h2>'
                     + (f'<p class="lead">{_e(summary[0])}</p>' if summary else "")
                     + (f"<p>onset: {_e(d['onset']['text'])}</p>" if (d.get("onset") or {}).get("text") else "")
                     + _table(["#", "cause", "kind", "effect", "share of excess", "q", "note"], rows, "causes",
                              (3, 4, 5))
                     + f'<div class="figs">{"".join(figs)}</div></section>')
    else:
        parts.append('<section id="causes"><h2>Ranked causes and their evidence</h2>'
                     f'<p class="empty">not diagnosed yet (<code>linelab diagnose {_e(pid)}</code>)</p></section>')
    # Actions and their measured effect.
    if r.actions:
        rows = []
        for a in r.actions:
            exp = a.expected_effect.delta if a.expected_effect and a.expected_effect.delta is not None else None
            before_after, change = _effect(a.observed_effect or {})
            rows.append([_e(a.id), _e(f"{a.kind} {params_text(a.params)}".strip()), _e(a.status),
                         f"{100 * exp:+.2f} pt" if exp is not None else "—", before_after, change,
                         _e((a.observed_effect or {}).get("verdict") or "—")])
        actions = _table(["action", "what", "status", "expected", "first-pass yield before → after",
                          "change (95% CI)", "verdict"], rows, "actions", (3, 4, 5))
    else:
        actions = '<p class="empty">no action taken</p>'
    parts.append(f'<section id="actions"><h2>Actions taken and their measured effect</h2>{actions}</section>')
    # Know-how: written for this problem, and the most similar entries of the ledger.
    kh: list[str] = []
    for e in r.entries:
        cause = e["root_cause"]
        fix = e["fix"]
        effect = e.get("effect")
        kh.append(f'<h3 id="{_e(e["id"])}">{_e(e["id"])} {_e(e["title"])}</h3><dl>'
                  f'<dt>root cause</dt><dd>{_e(join(cause_label(cause), cause.get("description") or ""))}</dd>'
                  f'<dt>fix</dt><dd>{_e(fix["action"])} {_e(params_text(fix.get("params")))}</dd>'
                  f'<dt>effect</dt><dd>{_e(_effect_text(effect))}</dd>'
                  f'<dt>reused</dt><dd>{number(e.get("reused"))} time(s)</dd></dl>')
    if r.recalled:
        rows = [[f'<span id="{_e(m.entry_id)}">{_e(m.entry_id)}</span>', _e(m.title), _e(m.fix), _e(m.why),
                 number(m.score, 2)] for m in r.recalled]
        kh.append("<h3>Similar entries in the ledger</h3>"
                  + _table(["entry", "title", "fix", "why", "similarity"], rows, "recalled", (4,)))
    if not kh:
        kh.append('<p class="empty">nothing written for this problem yet, and nothing like it in the ledger</p>')
    parts.append(f'<section id="knowhow"><h2>Know-how</h2>{"".join(kh)}</section>')
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>Problem report {_e(pid)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def _effect_text(effect: dict[str, Any] | None) -> str:
    if not effect:
        return "not measured"
    return Effect(**effect).text()


def write(r: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(r), encoding="utf-8")
    return path
