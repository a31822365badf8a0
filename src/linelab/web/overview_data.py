"""The line overview's yield trend as one aggregate query whose answer is a few hundred rows at most.

The definitions are those of `linelab.store.queries` (the `yield` command): first-pass yield of a
unit is its `first_pass` flag, final yield the share of units whose result is `pass`. Only the way
the database gets there differs: the line summary (`linelab.store.summary`, counted at ingest) holds
the units by the hour they started, and one query over it gives the overall numbers and the trend at
the period that suits the data's span; `yield_trend_from_records` counts the same over the units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from linelab.store import summary

if TYPE_CHECKING:
    from linelab.store.workspace import Workspace

# A trend reads well with a few hundred points at most: by day, by hour when the data covers under a
# week of days, by week past this many days.
MAX_DAYS = 400
_FPY = "avg(CASE WHEN first_pass THEN 1.0 ELSE 0.0 END)"
_FINAL = "avg(CASE WHEN result = 'pass' THEN 1.0 ELSE 0.0 END)"


def yield_trend(ws: Workspace) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """(overall yield, the period, the yield per period) from the line summary's units by hour (a few
    thousand rows, counted at ingest): the numbers of `yield_trend_from_records`, to the last digit."""
    return _shaped(summary.trend(ws, MAX_DAYS))


def yield_trend_from_records(ws: Workspace) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """(overall yield, the period, the yield per period) from one pass over the units.

    The overall row comes from the same GROUP BY (GROUPING SETS) as the trend, with the same
    expressions as `linelab.store.queries.overall_yield_from_records`, so the two agree to the last digit.
    """
    return _shaped(ws.query(
        f"""
        WITH span AS (SELECT count(DISTINCT date_trunc('day', t_start)) AS days FROM units),
        u AS (
            SELECT first_pass, result,
                   CASE WHEN days < 7 THEN 'hour' WHEN days > {MAX_DAYS} THEN 'week' ELSE 'day' END AS period,
                   CASE WHEN days < 7 THEN date_trunc('hour', t_start)
                        WHEN days > {MAX_DAYS} THEN date_trunc('week', t_start)
                        ELSE date_trunc('day', t_start) END AS t
            FROM units, span
        )
        SELECT t, any_value(period) AS period, GROUPING(t) AS is_total, count(*) AS units,
               {_FPY} AS first_pass_yield, {_FINAL} AS final_yield
        FROM u GROUP BY GROUPING SETS ((t), ()) ORDER BY is_total, t
        """
    ).to_pylist())


def _shaped(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    total = next((r for r in rows if r["is_total"]), None)
    overall = {k: total[k] if total else None for k in ("units", "first_pass_yield", "final_yield")}
    if not total or not total["units"]:
        overall["units"] = 0
    period = total["period"] if total and total["period"] else "day"
    trend = [{period: r["t"], "units": r["units"], "first_pass_yield": r["first_pass_yield"],
              "final_yield": r["final_yield"]} for r in rows if not r["is_total"] and r["t"] is not None]
    return overall, period, trend
