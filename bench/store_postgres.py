"""PostgreSQL workspace throughput: bulk appends vs a raw COPY, and the monitor vs on DuckDB.

    python bench/store_postgres.py [--quick] [--rows N] [--batch N] [--units N]

1. Bulk append: the same measurement batches go (a) through LineLab's validated, de-duplicated
   ingest into a PostgreSQL workspace, and (b) by a raw binary COPY (ADBC, the fastest client
   path, one transaction per batch too) into a plain table of the same columns, in the same
   run, interleaved, best of --repeat. The ratio is LineLab's price per row (target >= 0.7);
   (c) the same COPY into a table shaped as the store's (the lineage `batch` and its block-range
   index, by which other processes' replicas find new rows) shows what the layout alone costs,
   and the same batches into a DuckDB workspace what validation and de-duplication cost alone.
   The machine's load average is reported with them.
2. Monitor: the twin writes the same line (same seed) into a DuckDB workspace and a PostgreSQL
   one; `monitor run` then processes it on each; records per second on each, and the ratio. A
   fresh process first reads the records into its replica: that time is reported too.

PostgreSQL is LINELAB_PG_URL (default postgresql://postgres@127.0.0.1:5432/test); every run
uses schemas of its own and drops them. One JSON line is printed last.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
from adbc_driver_postgresql import dbapi

from linelab.commands import call
from linelab.store import Workspace

PG_URL = os.environ.get("LINELAB_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NAMES = ["paste_volume_pct", "paste_height_um", "place_offset_x_mm", "place_offset_y_mm",
         "peak_temp_c", "time_above_liquidus_s", "vout_v", "ripple_mv"]
STATIONS = ["SPI", "SPI", "PLACE", "PLACE", "REFLOW", "REFLOW", "TEST", "TEST"]


def measurements(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    per_unit = len(NAMES)
    units = rows // per_unit
    unit_idx = np.repeat(np.arange(units), per_unit)
    name_idx = np.tile(np.arange(per_unit), units)
    t0 = np.datetime64("2026-01-05T06:00:00", "us")
    t = t0 + (unit_idx * 15_000_000 + name_idx * 60_000_000).astype("timedelta64[us]")
    return pa.table({
        "unit_id": pa.array([f"SN{i:08d}" for i in range(units)]).take(pa.array(unit_idx)),
        "station": pa.array(STATIONS).take(pa.array(name_idx)),
        "name": pa.array(NAMES).take(pa.array(name_idx)),
        "value": rng.normal(100.0, 5.0, units * per_unit),
        "t": pa.array(t, pa.timestamp("us")),
    })


def workspace_url(schema: str, files: Path) -> str:
    parts = urlsplit(PG_URL)
    query = dict(parse_qsl(parts.query)) | {"schema": schema, "files": str(files)}
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def drop_schema(schema: str) -> None:
    with dbapi.connect(PG_URL, autocommit=True) as con, con.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def raw_copy(batches: list[pa.Table], store_shape: bool = False) -> float:
    """Binary COPY of the batches into a plain table, one transaction each. `store_shape`: into a table
    shaped as the store's (its lineage `batch` column and the block-range index on it), the batch number
    sent with each row: what the store's layout costs before any of its work."""
    schema = f"bench_raw_{uuid.uuid4().hex[:8]}"
    extra = ", batch BIGINT" if store_shape else ""
    try:
        with dbapi.connect(PG_URL, autocommit=True) as con, con.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
            cur.execute(f'CREATE TABLE "{schema}".measurements (unit_id VARCHAR, station VARCHAR, name VARCHAR, '
                        f"value DOUBLE PRECISION, t TIMESTAMP{extra})")
            if store_shape:
                cur.execute(f'CREATE INDEX ON "{schema}".measurements USING brin (batch)')
                batches = [b.append_column("batch", pa.array(np.full(b.num_rows, i + 1, np.int64)))
                           for i, b in enumerate(batches)]
            start = time.perf_counter()
            for batch in batches:
                cur.execute("BEGIN")
                cur.adbc_ingest("measurements", batch, mode="append", db_schema_name=schema)
                cur.execute("COMMIT")
            return time.perf_counter() - start
    finally:
        drop_schema(schema)


def linelab_append(batches: list[pa.Table], folder: Path) -> float:
    """The same batches through LineLab's ingest into a PostgreSQL workspace."""
    schema = f"bench_ws_{uuid.uuid4().hex[:8]}"
    try:
        with Workspace.open(workspace_url(schema, folder / schema)) as ws:
            start = time.perf_counter()
            stored = sum(ws.ingest_tables({"measurements": b}, source="bench:postgres").stored for b in batches)
            elapsed = time.perf_counter() - start
        assert stored == sum(b.num_rows for b in batches), stored
        return elapsed
    finally:
        drop_schema(schema)


def duckdb_append(batches: list[pa.Table], folder: Path) -> float:
    """The same batches through LineLab's ingest into a DuckDB workspace: the ingest's own cost."""
    with tempfile.TemporaryDirectory(dir=folder) as d, Workspace.open(Path(d) / "ws") as ws:
        start = time.perf_counter()
        for b in batches:
            ws.ingest_tables({"measurements": b}, source="bench:duckdb")
        return time.perf_counter() - start


def open_and_close(where: str) -> None:
    Workspace.open(where).close()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def monitor_rates(units: int, folder: Path) -> dict[str, float]:
    """`monitor run` records per second on the same twin line stored in DuckDB and in PostgreSQL."""
    schema = f"bench_mon_{uuid.uuid4().hex[:8]}"
    out: dict[str, float] = {}
    try:
        for name, where in (("duckdb", str(folder / "duck")), ("postgres", workspace_url(schema, folder / schema))):
            call("twin run", workspace=where, units=units, seed=1)
            if name == "postgres":  # what a fresh process pays first: reading the records into its replica
                out["postgres_open_s"] = timed(functools.partial(open_and_close, where))
            start = time.perf_counter()
            run = call("monitor run", workspace=where).model_dump()
            seconds = time.perf_counter() - start
            records = sum(run["records"].values())
            out[name] = records / seconds
            out["records"] = records
    finally:
        drop_schema(schema)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a size that runs in seconds")
    ap.add_argument("--rows", type=int, default=None, help="measurement rows appended")
    ap.add_argument("--batch", type=int, default=None, help="rows per ingest batch")
    ap.add_argument("--units", type=int, default=None, help="twin units for the monitor comparison")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = args.rows or (400_000 if args.quick else 4_000_000)
    batch = args.batch or (100_000 if args.quick else 200_000)
    units = args.units or (2_000 if args.quick else 20_000)
    table = measurements(rows)
    batches = [table.slice(i, batch) for i in range(0, table.num_rows, batch)]
    raw, shaped, ours, duck = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeat):  # interleaved, best of N: all see the same machine state
            raw.append(raw_copy(batches))
            shaped.append(raw_copy(batches, store_shape=True))
            ours.append(linelab_append(batches, Path(d)))
            duck.append(duckdb_append(batches, Path(d)))
        monitor = monitor_rates(units, Path(d))
    result = {
        "bench": "store_postgres",
        "rows": rows,
        "batch_rows": batch,
        "append_rows_per_s": round(rows / min(ours)),
        "raw_copy_rows_per_s": round(rows / min(raw)),
        "append_ratio_vs_raw_copy": round(min(raw) / min(ours), 3),
        "store_shaped_copy_rows_per_s": round(rows / min(shaped)),
        "store_shaped_copy_ratio_vs_raw_copy": round(min(raw) / min(shaped), 3),
        "load_average": round(os.getloadavg()[0], 2),
        "duckdb_append_rows_per_s": round(rows / min(duck)),
        "monitor_records": int(monitor["records"]),
        "monitor_records_per_s_postgres": round(monitor["postgres"]),
        "monitor_records_per_s_duckdb": round(monitor["duckdb"]),
        "monitor_ratio_postgres_vs_duckdb": round(monitor["postgres"] / monitor["duckdb"], 3),
        "postgres_open_s": round(monitor["postgres_open_s"], 3),
    }
    print(f"measurement rows:            {rows:,} in batches of {batch:,}")
    print(f"raw binary COPY:             {result['raw_copy_rows_per_s']:,} rows/s")
    print(f"LineLab ingest (PostgreSQL): {result['append_rows_per_s']:,} rows/s")
    print(f"ratio vs raw COPY:           {result['append_ratio_vs_raw_copy']}  (target >= 0.7)")
    print(f"COPY into the store's shape: {result['store_shaped_copy_rows_per_s']:,} rows/s "
          f"(ratio {result['store_shaped_copy_ratio_vs_raw_copy']}: batch column and its index, no other work)")
    print(f"LineLab ingest (DuckDB):     {result['duckdb_append_rows_per_s']:,} rows/s  (validation alone)")
    print(f"monitor run, {result['monitor_records']:,} records: PostgreSQL "
          f"{result['monitor_records_per_s_postgres']:,}/s, DuckDB {result['monitor_records_per_s_duckdb']:,}/s "
          f"(ratio {result['monitor_ratio_postgres_vs_duckdb']}; opening the PostgreSQL workspace "
          f"{result['postgres_open_s']} s of it)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
