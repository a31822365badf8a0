"""The deploy stage's own tables in the workspace: predictions (one row per unit, version and look)
and a person's verdicts on units. Rows, not artefacts: a line scores every unit, and feedback is a
join of these rows with the units' later results, done by the database."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

# Their columns are the store's (`linelab.store.migrations.STAGE_TABLES`); the schemas below are what
# the stage writes.
PREDICTIONS = "deploy_predictions"
VERDICTS = "deploy_verdicts"



@cache
def prediction_schema() -> pa.Schema:
    """The prediction rows' columns (Arrow is loaded by what writes or reads them, not by every command)."""
    import pyarrow as pa

    return pa.schema([
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


def rows_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Prediction rows given as tuples (in the schema's column order) as one table."""
    import pyarrow as pa

    schema = prediction_schema()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


def append(ws: Any, table: str, rows: pa.Table) -> None:
    """Add rows to one of the tables (they exist in every workspace: store migration 3 made them)."""
    if rows.num_rows == 0:
        return
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
