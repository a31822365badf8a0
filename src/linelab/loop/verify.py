"""Did the fix work? The symptom itself, before, during and after (unit counts: `monitor.cost`).

Yield alone cannot judge a fix applied while a problem is still small (the few extra failures
are noise); the measurement that raised the problem can: if it is back where it was before the
onset, the fix worked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from linelab.monitor.cost import entity


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
    ent = entity(scope)
    # A reading belongs to the visit it was made in: a unit retested on another tester is not this one's.
    join = (f"ASOF JOIN steps s ON s.unit_id = m.unit_id AND s.station = m.station AND m.t >= s.t_in "
            f"WHERE s.{ent[0]} = ?" if ent else "")
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
        + ([ent[1]] if ent else []),
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
