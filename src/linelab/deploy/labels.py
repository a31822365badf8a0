"""What really happened to each unit: the line's own later result, corrected by a person.

A model's label says which units were bad. For a failure predictor it is the unit's first visit
to the model's station (a fail or a rework there); for an anomaly detector, whether the unit
passed every station first time. A person can overrule the line: a **false fail** (the test
failed a good unit) makes it good, a **test escape** (a unit that passed and turned out bad)
makes it bad. The latest verdict on a unit wins, in live metrics and in the next training.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from linelab.errors import NotFound
from linelab.store.backend import sql_text as _lit

from . import tables

Verdict = Literal["false_fail", "escape", "bad", "good"]
BAD = {"false_fail": False, "escape": True, "bad": True, "good": False}


class Label(BaseModel):
    kind: Literal["station_fail", "first_pass"] = Field(
        description="station_fail: the first visit to `station` failed; first_pass: the unit failed anywhere")
    station: str | None = None


def outcome_sql(label: Label, units: str) -> str:
    """SQL of (unit_id, bad) for the units in relation `units` (a query with unit_id) whose result is known."""
    tables_sql = f"(SELECT unit_id FROM {units})"
    if label.kind == "station_fail":
        line = (f"SELECT unit_id, arg_min(result, t_in) <> 'pass' AS bad FROM steps WHERE station = "
                f"{_lit(label.station or '')} AND unit_id IN {tables_sql} GROUP BY unit_id")
    else:
        line = (f"SELECT unit_id, NOT first_pass AS bad FROM units WHERE first_pass IS NOT NULL "
                f"AND unit_id IN {tables_sql}")
    person = (f"SELECT unit_id, arg_max(bad, t) AS bad FROM {tables.VERDICTS} WHERE unit_id IN {tables_sql} "
              "GROUP BY unit_id")
    return (f"(SELECT unit_id, coalesce(p.bad, l.bad) AS bad FROM ({line}) l FULL JOIN ({person}) p "
            "USING (unit_id))")


def relabel(ws: Any, unit_id: str, verdict: Verdict, note: str = "", by: str = "person") -> dict[str, Any]:
    """Record a person's verdict on a unit; it overrules the line's result from now on."""
    import pyarrow as pa

    if not ws.scalar("SELECT count(*) FROM units WHERE unit_id = ?", [unit_id]):
        raise NotFound(f"no unit {unit_id!r} in the workspace")
    now = datetime.now(UTC).replace(tzinfo=None)
    row: dict[str, Any] = {"unit_id": unit_id, "verdict": verdict, "bad": BAD[verdict], "note": note, "who": by,
                           "t": now}
    tables.append(ws, tables.VERDICTS, pa.Table.from_pylist([row], schema=pa.schema([
        ("unit_id", pa.string()), ("verdict", pa.string()), ("bad", pa.bool_()), ("note", pa.string()),
        ("who", pa.string()), ("t", pa.timestamp("us"))])))
    return {**row, "t": now.isoformat(timespec="seconds")}


def verdict_count(ws: Any) -> int:
    return int(ws.scalar(f"SELECT count(DISTINCT unit_id) FROM {tables.VERDICTS}") or 0)
