"""A version's live metrics per stage over time, from its recorded predictions and the units' results.

Each period's rows are the version's latest decision on each unit it scored in that stage, joined
to what happened to the unit (`labels.outcome_sql`; units without a result yet count as scored,
not as labelled). Per period: precision and recall of inspection, the escape rate of the units it
let skip the test, and the saving per unit in the version's cost units — the guard's own metric.
Periods are days or hours of scoring time, or blocks of units in scoring order (a line scored in
a few large batches, or within an hour, still shows a curve); `auto` picks the first that gives
at least `MIN_PERIODS` periods.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from . import tables
from .labels import outcome_sql
from .registry import ModelRecord

Period = Literal["auto", "day", "hour", "units"]
MIN_PERIODS = 4
MAX_BLOCKS = 30
MIN_BLOCK = 50


def _rows(rec: ModelRecord) -> str:
    """One row per unit and stage: the version's latest decision on it, and its outcome (NULL: unknown)."""
    latest = (f"SELECT unit_id, stage, arg_max(decision, t) AS decision, bool_or(acted) AS acted, max(t) AS t, "
              f"arg_max(score, t) AS score FROM {tables.PREDICTIONS} WHERE version = ? GROUP BY unit_id, stage")
    return (f"WITH p AS ({latest}), o AS {outcome_sql(rec.label, 'p')} "
            "SELECT p.*, o.bad FROM p LEFT JOIN o USING (unit_id)")


def _span(ws: Any, rec: ModelRecord) -> tuple[int, datetime | None, datetime | None]:
    row = ws.query(f"SELECT count(*) AS n, min(t) AS lo, max(t) AS hi FROM {tables.PREDICTIONS} WHERE version = ?",
                   [rec.id]).to_pylist()[0]
    return int(row["n"]), row["lo"], row["hi"]


def choose(ws: Any, rec: ModelRecord, by: Period) -> tuple[Period, int]:
    """The period kind (and block size for `units`) for this version's predictions."""
    n, lo, hi = _span(ws, rec)
    block = max(MIN_BLOCK, -(-n // MAX_BLOCKS))
    if by != "auto":
        return by, block
    if lo is not None and hi is not None:
        span_h = (hi - lo).total_seconds() / 3600
        if span_h >= 24 * MIN_PERIODS:
            return "day", block
        if span_h >= MIN_PERIODS:
            return "hour", block
    return "units", block


def periods(ws: Any, rec: ModelRecord, by: Period = "auto") -> tuple[Period, list[dict[str, Any]]]:
    """Per stage and period: units scored, labelled, acted on, and the live metrics (see the docstring)."""
    kind, block = choose(ws, rec, by)
    if kind == "units":
        key = f"(row_number() OVER (PARTITION BY stage ORDER BY t, unit_id) - 1) // {int(block)}"
    else:
        key = f"epoch_us(date_trunc('{kind}', t))"
    sql = (f"WITH r AS ({_rows(rec)}), k AS (SELECT *, {key} AS period FROM r) "
           "SELECT stage, period, min(t) AS t_first, max(t) AS t_last, count(*) AS units, count(bad) AS labelled, "
           "count(*) FILTER (WHERE acted) AS acted, "
           "count(*) FILTER (WHERE bad) AS bad, "
           "count(*) FILTER (WHERE decision = 'inspect' AND bad IS NOT NULL) AS inspected, "
           "count(*) FILTER (WHERE decision = 'inspect' AND bad) AS inspected_bad, "
           "count(*) FILTER (WHERE decision = 'pass' AND bad IS NOT NULL) AS passed, "
           "count(*) FILTER (WHERE decision = 'pass' AND bad) AS escapes "
           "FROM k GROUP BY stage, period ORDER BY stage, period")
    out = []
    cumulative: dict[str, int] = {}
    for r in ws.query(sql, [rec.id]).to_pylist():
        cumulative[r["stage"]] = cumulative.get(r["stage"], 0) + r["units"]
        out.append({**r, **_metrics(r, rec), "units_so_far": cumulative[r["stage"]],
                    "t_first": r["t_first"].isoformat(), "t_last": r["t_last"].isoformat()})
    return kind, out


def _metrics(r: dict[str, Any], rec: ModelRecord) -> dict[str, float | None]:
    c = rec.costs
    good_inspected = r["inspected"] - r["inspected_bad"]
    good_passed = r["passed"] - r["escapes"]
    saving = (r["inspected_bad"] * (c.fail - c.inspect) - good_inspected * c.inspect + good_passed * c.test
              - r["escapes"] * c.escape)
    return {"precision": r["inspected_bad"] / r["inspected"] if r["inspected"] else None,
            "recall": r["inspected_bad"] / r["bad"] if r["bad"] else None,
            "escape_rate": r["escapes"] / r["passed"] if r["passed"] else None,
            "bad_rate": r["bad"] / r["labelled"] if r["labelled"] else None,
            "saving_per_unit": saving / r["labelled"] if r["labelled"] else None}


def latest_units(ws: Any, rec: ModelRecord, limit: int = 50) -> list[dict[str, Any]]:
    """The units the version scored last, with its decision, whether it was applied, and the outcome."""
    rows = ws.query(f"WITH r AS ({_rows(rec)}) SELECT unit_id, stage, t, score, decision, acted, bad FROM r "
                    f"ORDER BY t DESC, unit_id DESC LIMIT {int(limit)}", [rec.id]).to_pylist()
    return [{**r, "t": r["t"].isoformat(), "misrouted": bool(r["acted"] and r["bad"] is not None and (
        (r["decision"] == "inspect" and not r["bad"]) or (r["decision"] == "pass" and r["bad"])))} for r in rows]
