"""Ingest throughput: LineLab's validated, idempotent ingest vs a raw DuckDB insert of the same Arrow data.

    python bench/ingest.py [--quick] [--rows N]

Both write the same long-form measurement rows into a fresh DuckDB file in the same run; the
ratio (validated / raw rows per second) is the price of validation, lineage and de-duplication.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from linelab.store import Workspace
from linelab.store.backend import table_ddl

NAMES = ["paste_volume_pct", "paste_height_um", "place_offset_x_mm", "place_offset_y_mm",
         "peak_temp_c", "time_above_liquidus_s", "vout_v", "ripple_mv"]
STATIONS = ["SPI", "SPI", "PLACE", "PLACE", "REFLOW", "REFLOW", "TEST", "TEST"]


def measurements(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    per_unit = len(NAMES)
    units = rows // per_unit
    serials = pa.array([f"SN{i:08d}" for i in range(units)])
    unit_idx = np.repeat(np.arange(units), per_unit)
    name_idx = np.tile(np.arange(per_unit), units)
    t0 = np.datetime64("2026-01-05T06:00:00", "us")
    t = t0 + (unit_idx * 15_000_000 + name_idx * 60_000_000).astype("timedelta64[us]")
    return pa.table({
        "unit_id": serials.take(pa.array(unit_idx)),
        "station": pa.array(STATIONS).take(pa.array(name_idx)),
        "name": pa.array(NAMES).take(pa.array(name_idx)),
        "value": rng.normal(100.0, 5.0, units * per_unit),
        "t": pa.array(t, pa.timestamp("us")),
    })


def raw_insert(table: pa.Table, folder: Path) -> float:
    con = duckdb.connect(str(folder / "raw.duckdb"))
    con.execute(table_ddl("measurements").replace(", \"batch\" BIGINT", ""))
    con.register("incoming", table)
    start = time.perf_counter()
    con.execute("INSERT INTO measurements SELECT * FROM incoming")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def linelab_ingest(table: pa.Table, folder: Path) -> float:
    ws = Workspace.open(folder / "ws")
    start = time.perf_counter()
    rep = ws.ingest_tables({"measurements": table}, source="bench:ingest")
    elapsed = time.perf_counter() - start
    assert rep.stored == table.num_rows, rep
    ws.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a size that runs in seconds")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = args.rows or (1_000_000 if args.quick else 8_000_000)
    table = measurements(rows)
    raw, ours = [], []
    for _ in range(args.repeat):  # interleaved, best of N: both see the same machine state
        with tempfile.TemporaryDirectory() as d:
            raw.append(raw_insert(table, Path(d)))
        with tempfile.TemporaryDirectory() as d:
            ours.append(linelab_ingest(table, Path(d)))
    n = table.num_rows
    result = {
        "bench": "ingest",
        "rows": n,
        "rows_per_s": round(n / min(ours)),
        "raw_duckdb_rows_per_s": round(n / min(raw)),
        "ratio_vs_raw_duckdb": round(min(raw) / min(ours), 3),
    }
    print(f"measurement rows:        {n:,}")
    print(f"raw DuckDB insert:       {result['raw_duckdb_rows_per_s']:,} rows/s")
    print(f"LineLab validated ingest: {result['rows_per_s']:,} rows/s")
    print(f"ratio vs raw:            {result['ratio_vs_raw_duckdb']}  (target >= 0.7)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
