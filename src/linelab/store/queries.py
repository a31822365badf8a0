"""The first questions every quality engineer asks of line data, answered in SQL.

First-pass yield (FPY) counts a unit good only if it passed on its first visit; final yield
counts units that shipped, reworked or retested ones included. Both are reported because the
gap between them is the hidden factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from linelab.errors import NotFound, UserError
from linelab.store import summary

if TYPE_CHECKING:  # annotations only: the store's commands import this module for its factor names
    import pyarrow as pa

    from linelab.store.workspace import Workspace

# Factors recorded per station visit: yield is the station's first-visit pass rate.
STEP_FACTORS = ("station", "machine", "fixture", "operator", "shift", "recipe_id")
# Factors recorded per consumed material: yield is the units' FPY and final yield.
MATERIAL_FACTORS = ("lot", "supplier", "material")
MATERIAL_GROUPS = {"lot": "material, supplier, lot", "supplier": "material, supplier", "material": "material"}
# Factors of the unit itself, or of its start time.
UNIT_FACTORS = ("product", "line", "work_order")
TIME_FACTORS = {"hour": "hour", "day": "day", "week": "week", "month": "month"}
FACTORS = STEP_FACTORS + MATERIAL_FACTORS + UNIT_FACTORS + tuple(TIME_FACTORS)

# The first visit of each unit at each station (rework and retest visits come later).
_FIRST_VISITS = """
    SELECT * FROM steps
    QUALIFY row_number() OVER (PARTITION BY unit_id, station ORDER BY t_in) = 1
"""
# Its result alone (a visit without a time sorts last, as in ORDER BY t_in; no result is not a pass).
_FIRST_RESULTS = """
    SELECT station, unit_id, arg_min(coalesce(result, ''), coalesce(t_in, 'infinity'::TIMESTAMP)) AS result
    FROM steps GROUP BY station, unit_id
"""


def yield_by(ws: Workspace, by: str) -> pa.Table:
    if by not in FACTORS:
        raise UserError(f"cannot group yield by {by!r}; choose one of: {', '.join(FACTORS)}")
    if by == "station":
        # Counted at ingest (`linelab.store.summary`): the same numbers as `station_yield_from_records`.
        return summary.station_yield(ws)
    if by in STEP_FACTORS:
        return _step_yield(ws, by)
    join = ""
    if by in MATERIAL_FACTORS:
        group = MATERIAL_GROUPS[by]
        join = f"JOIN (SELECT DISTINCT unit_id, {group} FROM materials) m USING (unit_id)"
    elif by in UNIT_FACTORS:
        group = by
    else:
        group = f"date_trunc('{TIME_FACTORS[by]}', u.t_start) AS {by}"
    return ws.query(
        f"""
        SELECT {group}, count(*) AS units,
               avg(CASE WHEN u.first_pass THEN 1.0 ELSE 0.0 END) AS first_pass_yield,
               avg(CASE WHEN u.result = 'pass' THEN 1.0 ELSE 0.0 END) AS final_yield
        FROM units u {join}
        GROUP BY ALL ORDER BY ALL
        """
    )


def _step_yield(ws: Workspace, by: str) -> pa.Table:
    """Yield of a station's visits by a factor recorded per visit: each unit's first visit counts."""
    group = "station" if by == "station" else f"station, {by}"
    # By station only the first visit's result is needed: an arg_min per unit and station is a hash
    # aggregate, a third cheaper on a large line than the window that sorts every visit.
    first = _FIRST_RESULTS if by == "station" else _FIRST_VISITS
    return ws.query(
        f"""
        WITH v AS ({first})
        SELECT {group}, count(*) AS units,
               avg(CASE WHEN v.result = 'pass' THEN 1.0 ELSE 0.0 END) AS first_pass_yield,
               avg(CASE WHEN u.result = 'pass' THEN 1.0 ELSE 0.0 END) AS final_yield
        FROM v JOIN units u USING (unit_id)
        WHERE {by} IS NOT NULL
        GROUP BY ALL ORDER BY {group}
        """
    )


def station_yield_from_records(ws: Workspace) -> pa.Table:
    """Yield by station counted over every stored step: the definition the line summary keeps."""
    return _step_yield(ws, "station")


def overall_yield(ws: Workspace) -> dict[str, Any]:
    """Units, first-pass and final yield of the whole line, counted at ingest (`linelab.store.summary`):
    the same numbers as `overall_yield_from_records`."""
    return summary.overall(ws)


def overall_yield_from_records(ws: Workspace) -> dict[str, Any]:
    """The line's yield counted over every stored unit: the definition the line summary keeps."""
    row = ws.query(
        """SELECT count(*) AS units,
                  avg(CASE WHEN first_pass THEN 1.0 ELSE 0.0 END) AS first_pass_yield,
                  avg(CASE WHEN result = 'pass' THEN 1.0 ELSE 0.0 END) AS final_yield
           FROM units"""
    ).to_pylist()[0]
    return row


def pareto(ws: Workspace, station: str | None = None, top: int = 15) -> pa.Table:
    """Defects by code, most frequent first, with cumulative share (the 80/20 view), counted at ingest
    (`linelab.store.summary`): the same numbers as `pareto_from_records`."""
    return summary.pareto(ws, station, top)


def pareto_from_records(ws: Workspace, station: str | None = None, top: int = 15) -> pa.Table:
    """The Pareto counted over every stored step: the definition the line summary keeps."""
    where = "AND station = ?" if station else ""
    return ws.query(
        f"""
        WITH d AS (
            SELECT station, defect_code, count(*) AS defects
            FROM steps WHERE result <> 'pass' AND defect_code IS NOT NULL {where}
            GROUP BY ALL
        )
        SELECT station, defect_code, defects,
               defects / sum(defects) OVER () AS share,
               sum(defects) OVER (ORDER BY defects DESC, station, defect_code
                                  ROWS UNBOUNDED PRECEDING) / sum(defects) OVER () AS cumulative_share
        FROM d ORDER BY defects DESC, station, defect_code LIMIT {int(top)}
        """,
        [station] if station else None,
    )


def trace_unit(ws: Workspace, serial: str) -> dict[str, pa.Table]:
    """A unit's full genealogy: its route, the lots it consumed, what was measured and set."""
    unit = ws.query(
        "SELECT u.* EXCLUDE (batch), b.source FROM units u LEFT JOIN batches b ON b.seq = u.batch WHERE unit_id = ?",
        [serial],
    )
    if unit.num_rows == 0:
        near = ws.query("SELECT unit_id FROM units WHERE unit_id ILIKE ? LIMIT 3", [f"%{serial}%"])
        hint = f" (did you mean {', '.join(near.column(0).to_pylist())}?)" if near.num_rows else ""
        raise NotFound(f"no unit with serial {serial!r}{hint}")
    cols = "* EXCLUDE (unit_id, batch)"
    return {
        "unit": unit,
        "steps": ws.query(f"SELECT {cols} FROM steps WHERE unit_id = ? ORDER BY t_in", [serial]),
        "materials": ws.query(f"SELECT {cols} FROM materials WHERE unit_id = ? ORDER BY station, material", [serial]),
        "measurements": ws.query(
            """SELECT m.station, m.name, m.value, s.lsl, s.usl,
                      (m.value < s.lsl OR m.value > s.usl) AS out_of_spec, m.t
               FROM measurements m JOIN units u USING (unit_id)
               LEFT JOIN specs s ON s.product = u.product AND s.station = m.station AND s.name = m.name
               WHERE m.unit_id = ? ORDER BY m.t, m.name""",
            [serial],
        ),
        "params": ws.query(f"SELECT {cols} FROM params WHERE unit_id = ? ORDER BY t, name", [serial]),
    }


def trace_lot(ws: Workspace, lot: str) -> dict[str, Any]:
    """Every unit that consumed a material lot: what a containment or a recall needs."""
    lots = ws.query(
        "SELECT DISTINCT material, lot, supplier, station FROM materials WHERE lot = ?", [lot]
    )
    if lots.num_rows == 0:
        raise NotFound(f"no material lot {lot!r} in the workspace")
    units = ws.query(
        """SELECT u.unit_id, u.t_start, u.result, u.first_pass, m.station, m.material
           FROM materials m JOIN units u USING (unit_id)
           WHERE m.lot = ? ORDER BY u.t_start""",
        [lot],
    )
    return {"lot": lots, "units": units}


# What a yield counts against a unit: the first-pass failures (no flag is no pass, as in the yields
# above) or the units that did not ship good.
OUTCOMES = {"all": "TRUE", "first_pass_fail": "NOT coalesce(u.first_pass, FALSE)",
            "final_fail": "coalesce(u.result, '') <> 'pass'"}


def units_where(ws: Workspace, *, since: Any = None, until: Any = None, outcome: str = "all",
                station: str | None = None, defect_code: str | None = None, machine: str | None = None,
                operator: str | None = None, shift: str | None = None, lot: str | None = None,
                product: str | None = None, limit: int = 100, offset: int = 0) -> tuple[int, pa.Table]:
    """The units behind a number: started in [since, until), with the outcome, of the product, that
    visited the station (on the machine, by the operator, in the shift, with the defect code: all on
    one visit), that consumed the lot, in the order they started. Returns (how many match, one page)."""
    if outcome not in OUTCOMES:
        raise UserError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    where, args = [OUTCOMES[outcome]], []
    if since is not None:
        where.append("u.t_start >= ?")
        args.append(since)
    if until is not None:
        where.append("u.t_start < ?")
        args.append(until)
    if product is not None:
        where.append("u.product = ?")
        args.append(product)
    visit = [(f"{name} = ?", v) for name, v in (("station", station), ("defect_code", defect_code),
                                                 ("machine", machine), ("operator", operator), ("shift", shift))
             if v is not None]
    if visit:
        where.append(f"u.unit_id IN (SELECT unit_id FROM steps WHERE {' AND '.join(c for c, _ in visit)})")
        args += [v for _, v in visit]
    if lot is not None:
        where.append("u.unit_id IN (SELECT unit_id FROM materials WHERE lot = ?)")
        args.append(lot)
    cond = " AND ".join(where)
    count = int(ws.scalar(f"SELECT count(*) FROM units u WHERE {cond}", args) or 0)
    # Beside each unit of the page, why it failed: the station of its first visit that did not pass
    # and the defect code recorded there (looked up for the page's units only).
    rows = ws.query(f"""
        WITH page AS (SELECT u.unit_id, u.t_start, u.first_pass, u.result, u.product, u.line, u.work_order
                      FROM units u WHERE {cond} ORDER BY u.t_start, u.unit_id LIMIT ? OFFSET ?),
        bad AS (SELECT s.unit_id, arg_min(s.station, coalesce(s.t_in, 'infinity'::TIMESTAMP)) AS failed_at,
                       arg_min(s.defect_code, coalesce(s.t_in, 'infinity'::TIMESTAMP)) AS defect_code
                FROM steps s JOIN page USING (unit_id) WHERE coalesce(s.result, '') <> 'pass' GROUP BY s.unit_id)
        SELECT page.unit_id, page.t_start, page.first_pass, page.result, bad.failed_at, bad.defect_code,
               page.product, page.line, page.work_order
        FROM page LEFT JOIN bad USING (unit_id) ORDER BY page.t_start, page.unit_id""", [*args, limit, offset])
    return count, rows
