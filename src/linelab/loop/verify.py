"""Did the fix work? Counts of units and the symptom itself, before, during and after.

Yield alone cannot judge a fix applied while a problem is still small (the few extra failures
are noise); the measurement that raised the problem can: if it is back where it was before the
onset, the fix worked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

ENTITY_KEYS = ("machine", "fixture")


def _entity(scope: dict[str, Any]) -> tuple[str, str] | None:
    return next(((k, str(scope[k])) for k in ENTITY_KEYS if scope.get(k)), None)


def scope_counts(ws: Any, problem: dict[str, Any], t_from: str, t_to: str | None) -> tuple[int, int]:
    """(units, first-pass units) started in [t_from, t_to) through the problem's station and entity."""
    scope = problem.get("scope") or {}
    where, params = ["u.t_start >= ?"], [datetime.fromisoformat(t_from)]
    if t_to:
        where.append("u.t_start < ?")
        params.append(datetime.fromisoformat(t_to))
    entity = _entity(scope)
    if entity and scope.get("station"):
        where.append(f"u.unit_id IN (SELECT unit_id FROM steps WHERE station = ? AND {entity[0]} = ?)")
        params += [scope["station"], entity[1]]
    row = ws.query(f"SELECT count(*), count(*) FILTER (WHERE u.first_pass) FROM units u WHERE {' AND '.join(where)}",
                   params).to_pylist()[0]
    n, ok = list(row.values())
    return int(n), int(ok)


def units_before(ws: Any, t: str, n: int) -> str:
    """The start time of the `n` units before time `t` (the reference window)."""
    row = ws.query("SELECT min(t_start) FROM (SELECT t_start FROM units WHERE t_start < ? "
                   "ORDER BY t_start DESC LIMIT ?)", [datetime.fromisoformat(t), max(n, 500)])
    first = row.column(0)[0].as_py()
    return (first or datetime.fromisoformat(t)).isoformat()


def symptom_recovered(ws: Any, problem: dict[str, Any], normal_from: str, onset: str, fixed: str) -> bool | None:
    """Whether the problem's measurement is back to its normal level after the fix: None when the
    problem has no measurement, or too few readings to say.

    Normal is the centre its detector learned from clean data where there is one (the units just
    before an estimated onset may already carry the start of a slow drift), else those units.
    """
    scope = problem.get("scope") or {}
    name, station = scope.get("measurement"), scope.get("station")
    if not name or not station:
        return None
    entity = _entity(scope)
    # A reading belongs to the visit it was made in: a unit retested on another tester is not this one's.
    join = (f"ASOF JOIN steps s ON s.unit_id = m.unit_id AND s.station = m.station AND m.t >= s.t_in "
            f"WHERE s.{entity[0]} = ?" if entity else "")
    rows = ws.query(
        f"""WITH m AS (SELECT unit_id, station, value, t FROM measurements WHERE station = ? AND name = ? AND t >= ?
                       UNION ALL
                       SELECT unit_id, station, value, t FROM params WHERE station = ? AND name = ? AND t >= ?)
            SELECT avg(value) FILTER (WHERE m.t < ?) AS normal, stddev(value) FILTER (WHERE m.t < ?) AS sd,
                   avg(value) FILTER (WHERE m.t >= ? AND m.t < ?) AS incident,
                   avg(value) FILTER (WHERE m.t >= ?) AS after, count(*) FILTER (WHERE m.t >= ?) AS n_after
            FROM m {join}""",
        [station, name, datetime.fromisoformat(normal_from)] * 2
        + [datetime.fromisoformat(x) for x in (onset, onset, onset, fixed, fixed, fixed)]
        + ([entity[1]] if entity else []),
    ).to_pylist()[0]
    normal, sd, incident, after, n_after = (rows[k] for k in ("normal", "sd", "incident", "after", "n_after"))
    if None in (normal, incident, after) or not sd or n_after < 30:
        return None
    centre = (problem.get("chart") or {}).get("centre")
    if isinstance(centre, int | float):
        normal = float(centre)
    moved = incident - normal
    if abs(moved) < 0.1 * sd:
        return None  # the incident's mean barely moved: nothing to judge by
    return abs(after - normal) <= 0.5 * abs(moved)
