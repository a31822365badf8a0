"""What a problem has cost so far, in first-pass units, counted on the units through its scope.

Most detectors count their own losses (units out of spec, extra failures). A process condition
out of its window (a cold oven zone, damp air) fails no unit by itself: what it costs shows in the
units that went through it, failing more since its onset than the units just before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from linelab.monitor.effect import compare_yields

ENTITY_KEYS = ("machine", "fixture")


def entity(scope: dict[str, Any]) -> tuple[str, str] | None:
    """The (column, value) of the one entity a scope names, if any."""
    return next(((k, str(scope[k])) for k in ENTITY_KEYS if scope.get(k)), None)


def scope_counts(ws: Any, scope: dict[str, Any], t_from: str, t_to: str | None) -> tuple[int, int]:
    """(units, first-pass units) started in [t_from, t_to) through the scope's station and entity."""
    where = ["u.t_start >= ?"]
    params: list[datetime | str] = [datetime.fromisoformat(t_from)]
    if t_to:
        where.append("u.t_start < ?")
        params.append(datetime.fromisoformat(t_to))
    ent = entity(scope)
    if ent and scope.get("station"):
        where.append(f"u.unit_id IN (SELECT unit_id FROM steps WHERE station = ? AND {ent[0]} = ?)")
        params += [scope["station"], ent[1]]
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


def condition_cost(ws: Any, scope: dict[str, Any], onset: str | None) -> float:
    """Units the scope's units have failed since `onset` beyond the rate of as many units before it,
    when surely worse (a 95 % interval below zero); else 0."""
    if not onset:
        return 0.0
    after = scope_counts(ws, scope, onset, None)
    before = scope_counts(ws, scope, units_before(ws, onset, after[0]), onset)
    if not before[0] or compare_yields(before, after).verdict != "worse":
        return 0.0
    return max(0.0, ((after[0] - after[1]) / after[0] - (before[0] - before[1]) / before[0]) * after[0])
