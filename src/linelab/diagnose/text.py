"""Plain words for causes and diagnoses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import Cause

if TYPE_CHECKING:
    from .model import Diagnosis
    from .symptom import Symptom


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2g}%"


def _num(x: float) -> str:
    return f"{x:+.3g}"


def cause_text(c: Cause, sym: Symptom, target: str) -> str:
    d = c.details
    parts: list[str] = []
    if c.kind == "categorical":
        head = f"{c.factor} {c.level}"
        if sym.mode == "case-control":
            parts.append(
                f"{head}: on {d['n_incident']} of the {sym.s_inc.size} affected units vs {d['n_reference']} "
                f"of the {sym.s_ref.size} unaffected (odds ratio {c.effect:.3g})"
            )
        elif sym.mode == "rate":
            inc = _rate(d["incident_level"] if sym.sign > 0 else 1 - d["incident_level"])
            ref = d["reference_level"]
            oth = d["others_level"]
            if sym.sign < 0:
                ref = None if ref is None else 1 - ref
                oth = None if oth is None else 1 - oth
            text = f"{head}: {target} rate {inc} over {d['n_incident']:,} incident units"
            text += f" vs {_rate(oth)} on other levels" if oth is not None else ""
            text += f" and {_rate(ref)} in its own reference" if ref is not None else " (new in the incident)"
            text += f" (x{c.effect:.2g})"
            parts.append(text)
        else:
            what = "shifted" if sym.mode == "mean" else "spread"
            parts.append(
                f"{head}: {target} {what} by {c.effect:.2g} reference sds more than on other levels "
                f"({d['n_incident']:,} incident units)"
            )
    else:
        shift = d.get("z_shift", 0.0)
        unit_delta = f"{_num(c.delta)}" if c.delta is not None else ""
        head = f"{c.factor}: {'up' if shift >= 0 else 'down'} by {unit_delta} ({shift:+.2g} robust sd"
        ratio = d.get("spread_ratio")
        if ratio is not None and abs(ratio - 1) > 0.2:
            head += f", spread x{ratio:.2g}"
        parts.append(head + ")")
        if "residual_shift" in d:
            parents = d.get("mechanism_parents") or []
            given = f"given its {len(parents)} causes" if parents else "(it has no known causes)"
            parts.append(
                f"its own mechanism changed {given}: residuals moved {d['residual_shift']:+.2g} sd, "
                f"spread x{d['residual_spread_ratio']:.2g}"
            )
    if c.onset:
        parts.append(f"since {c.onset}")
    ev = c.details.get("events_at_onset")
    if ev:
        e = ev[0]
        label = " ".join(str(e[k]) for k in ("kind", "machine", "target") if e.get(k))
        parts.append(f"near the event {label} at {e.get('t')}")
    if c.share is not None:
        noun = {"rate": "defects", "case-control": "affected units"}.get(sym.mode, "shift")
        unit = "excess " + noun
        parts.append(f"accounts for {_pct(max(c.share, 0.0))} of the {unit} in {target}")
    parts.append(f"q={c.q_value:.2g}")
    if not c.upstream:
        parts.append(c.details.get("downstream_evidence") or "not upstream of the symptom in the causal graph")
    if c.explained_by:
        parts.append(f"accounted for by {c.explained_by}: {c.details.get('explained_by_evidence', '')}".rstrip(": "))
    if c.confounded_with:
        parts.append(f"cannot be told apart from {', '.join(c.confounded_with)} with this data")
    return "; ".join(parts)


def summary_text(r: Diagnosis) -> str:
    lines: list[str] = []
    if r.symptom_mode == "rate":
        lines.append(
            f"{r.target}: {_rate(r.incident_level)} in the incident ({r.n_incident:,} units) vs "
            f"{_rate(r.reference_level)} in the reference ({r.n_reference:,}); {abs(r.excess):,.0f} excess units"
        )
    elif r.symptom_mode == "case-control":
        lines.append(f"{r.target}: {r.n_incident:,} affected vs {r.n_reference:,} unaffected units")
    else:
        lines.append(
            f"{r.target}: {'mean' if r.symptom_mode == 'mean' else 'spread'} {r.reference_level:.4g} -> "
            f"{r.incident_level:.4g} ({r.n_reference:,} reference, {r.n_incident:,} incident rows)"
        )
    if r.onset is not None:
        lines.append("onset: " + r.onset.text)
    if not r.causes:
        lines.append("no candidate causes")
        return "\n".join(lines)
    for c in r.causes[:3]:
        lines.append(f"{c.rank}. {c.evidence}")
    for conf in r.confounded:
        lines.append(f"confounded: {' and '.join(conf.causes)}; to separate them, {conf.experiment}")
    top = r.causes[0]
    if r.confident:
        lines.append(f"check: {top.label} accounts for {_pct(r.explained_share)} of the excess")
    elif top.confounded_with:
        lines.append("check: the top cause is confounded; run the separating experiment before acting")
    elif top.details.get("only_machine"):
        lines.append(f"check: nothing that varied explains it; look at {top.level} itself (a contact, a probe, "
                     f"its program)")
    elif top.q_value > 0.05:
        lines.append("check: no candidate is statistically supported; more data or other factors are needed")
    if r.explained_share is not None and not r.explained and r.confident:
        lines.append(f"check: the top cause leaves {_pct(1 - max(r.explained_share, 0))} of the excess unexplained")
    return "\n".join(lines)
