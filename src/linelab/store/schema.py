"""The core tables of the workspace, as Arrow schemas.

One definition serves every backend and every adapter: the twin emits these schemas, file
ingest validates against them, DuckDB (and later PostgreSQL) tables are created from them.
Names follow ISA-95 / MES conventions (station, machine, serial, lot, LSL/USL).

Ingest adds a `batch` column to every record table: the sequence number of the ingest batch
in the `batches` table, which names the source (file, twin run, broker topic) and the content
id. One integer per row instead of two strings keeps ingest fast, and any number on a screen
can still be traced back to the batch and file it came from with one join.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us")

# Record tables: what the line produces. Field order is the column order on disk.
RECORD_TABLES: dict[str, pa.Schema] = {
    "units": pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),
            pa.field("product", pa.string(), nullable=False),
            pa.field("line", pa.string(), nullable=False),
            pa.field("work_order", pa.string()),
            pa.field("t_start", TS, nullable=False),
            pa.field("t_end", TS),
            pa.field("result", pa.string()),  # pass | fail | scrap; null while in progress
            pa.field("first_pass", pa.bool_()),  # passed every station on first visit
        ]
    ),
    "steps": pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),
            pa.field("station", pa.string(), nullable=False),
            pa.field("machine", pa.string()),
            pa.field("fixture", pa.string()),
            pa.field("operator", pa.string()),
            pa.field("shift", pa.string()),
            pa.field("recipe_id", pa.string()),
            pa.field("t_in", TS, nullable=False),
            pa.field("t_out", TS),
            pa.field("result", pa.string(), nullable=False),  # pass | fail | rework
            pa.field("defect_code", pa.string()),
        ]
    ),
    "measurements": pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),
            pa.field("station", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("t", TS, nullable=False),
        ]
    ),
    "params": pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),
            pa.field("station", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=False),
            pa.field("t", TS, nullable=False),
        ]
    ),
    "materials": pa.schema(
        [
            pa.field("unit_id", pa.string(), nullable=False),
            pa.field("station", pa.string(), nullable=False),
            pa.field("material", pa.string(), nullable=False),
            pa.field("lot", pa.string(), nullable=False),
            pa.field("supplier", pa.string()),
        ]
    ),
    "signals": pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("t", TS, nullable=False),
            pa.field("value", pa.float64(), nullable=False),
        ]
    ),
    "events": pa.schema(
        [
            pa.field("t", TS, nullable=False),
            # maintenance | recipe_change | hold | release | calibration | action | experiment | problem_start
            pa.field("kind", pa.string(), nullable=False),
            pa.field("station", pa.string()),
            pa.field("machine", pa.string()),
            pa.field("target", pa.string()),  # what it acts on: nozzle id, lot, parameter name ...
            pa.field("detail", pa.string()),  # JSON text
        ]
    ),
    "specs": pa.schema(
        [
            pa.field("product", pa.string(), nullable=False),
            pa.field("station", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("lsl", pa.float64()),
            pa.field("usl", pa.float64()),
            pa.field("target", pa.float64()),
            pa.field("unit", pa.string()),
        ]
    ),
}

# Natural keys: a record whose key is already stored is the same record arriving again.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "units": ("unit_id",),
    "steps": ("unit_id", "station", "t_in"),
    "measurements": ("unit_id", "station", "name", "t"),
    "params": ("unit_id", "station", "name", "t"),
    "materials": ("unit_id", "station", "material", "lot"),
    "signals": ("name", "t"),
    "events": ("t", "kind", "station", "machine", "target"),
    "specs": ("product", "station", "name"),
}
# Fields a later record may fill in or correct (a tester uploading the final result late).
UPDATABLE: dict[str, tuple[str, ...]] = {"units": ("t_end", "result", "first_pass"),
                                         "specs": ("lsl", "usl", "target", "unit")}

# Columns ingest appends to every record table (specs excepted: it is reference data).
LINEAGE_FIELDS = [pa.field("batch", pa.int64())]


def stored_schema(table: str) -> pa.Schema:
    """Schema of `table` as stored: the record schema plus lineage columns."""
    schema = RECORD_TABLES[table]
    for f in LINEAGE_FIELDS:
        schema = schema.append(f)
    return schema
