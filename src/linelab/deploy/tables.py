"""The deploy stage's own tables in the workspace: predictions (one row per unit, version and look)
and a person's verdicts on units. Rows, not artefacts: a line scores every unit, and feedback is a
join of these rows with the units' later results, done by the database."""

from __future__ import annotations

import weakref
from typing import Any

import pyarrow as pa

PREDICTIONS = "deploy_predictions"
VERDICTS = "deploy_verdicts"

PREDICTION_SCHEMA = pa.schema([
    pa.field("unit_id", pa.string()),
    pa.field("station", pa.string()),
    pa.field("version", pa.string()),
    pa.field("stage", pa.string()),  # shadow | canary | full
    pa.field("score", pa.float64()),
    pa.field("decision", pa.string()),  # inspect | pass | none: what this version would do
    pa.field("acted", pa.bool_()),  # whether its decision was the one applied to the unit
    pa.field("t", pa.timestamp("us")),  # when it was scored
    pa.field("via", pa.string()),  # batch | request
])

_READY: weakref.WeakSet[Any] = weakref.WeakSet()  # backends whose tables exist
_DDL = [
    f"CREATE TABLE IF NOT EXISTS {PREDICTIONS} (unit_id VARCHAR, station VARCHAR, version VARCHAR, "
    "stage VARCHAR, score DOUBLE PRECISION, decision VARCHAR, acted BOOLEAN, t TIMESTAMP, via VARCHAR)",
    f"CREATE TABLE IF NOT EXISTS {VERDICTS} (unit_id VARCHAR, verdict VARCHAR, bad BOOLEAN, note VARCHAR, "
    "who VARCHAR, t TIMESTAMP)",
]


def ensure(ws: Any) -> None:
    """Create the tables on first use (a workspace that never deployed a model has none)."""
    if ws.backend in _READY:
        return
    have = ws.scalar(f"SELECT count(*) FROM information_schema.tables WHERE table_name IN ('{PREDICTIONS}', "
                     f"'{VERDICTS}')")
    if have < len(_DDL):  # a read-only handle never gets here: the tables exist once anything was scored
        for ddl in _DDL:
            ws.backend.execute(ddl)
    _READY.add(ws.backend)


def append(ws: Any, table: str, rows: pa.Table) -> None:
    if rows.num_rows == 0:
        return
    if ws.backend not in _READY:
        try:  # a unit scored on request: no look at the catalogue first when the tables are there
            _insert(ws, table, rows)
            return
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise
        ensure(ws)
    _insert(ws, table, rows)


def _insert(ws: Any, table: str, rows: pa.Table) -> None:
    if rows.num_rows <= 8:  # one parameterised statement is quickest for a few rows
        marks = "(" + ", ".join("?" * rows.num_columns) + ")"
        values = [v for row in rows.to_pylist() for v in row.values()]
        ws.backend.execute(f"INSERT INTO {table} VALUES {', '.join([marks] * rows.num_rows)}", values)
        return
    ws.backend.register("_deploy_rows", rows)
    try:
        ws.backend.execute(f"INSERT INTO {table} SELECT * FROM _deploy_rows")
    finally:
        ws.backend.unregister("_deploy_rows")
