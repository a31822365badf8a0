"""Twin throughput: units simulated per second, alone and simulated + stored in a workspace.

    .venv/bin/python bench/twin.py            # 1M units
    .venv/bin/python bench/twin.py --quick    # 100k units

The baseline is simulation alone; the store figure shows what ingest (validation, duplicate
check, DuckDB write) adds. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from linelab.twin import Line


def simulate(units: int, chunk: int, scenario: str, seed: int) -> tuple[float, int]:
    line = Line(scenario, seed=seed)
    rows = 0
    t = time.perf_counter()
    done = 0
    while done < units:
        c = line.produce(min(chunk, units - done))
        rows += sum(tbl.num_rows for tbl in c.tables.values())
        done += c.n_units
    return time.perf_counter() - t, rows


def simulate_and_store(units: int, chunk: int, scenario: str, seed: int) -> tuple[float, float, int]:
    from linelab.store import Workspace

    line = Line(scenario, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        try:
            t = time.perf_counter()
            store_s = 0.0
            stored = 0
            done = 0
            while done < units:
                c = line.produce(min(chunk, units - done))
                s = time.perf_counter()
                rep = ws.ingest_tables(c.tables, source=f"twin:{scenario}:seed{seed}")
                store_s += time.perf_counter() - s
                stored += rep.stored
                done += c.n_units
            total = time.perf_counter() - t
        finally:
            ws.close()
    return total, store_s, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100k units instead of 1M")
    ap.add_argument("--units", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=100_000, help="units per produce() call")
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store-units", type=int, default=None, help="units for the store run (default: same)")
    args = ap.parse_args()
    units = args.units or (100_000 if args.quick else 1_000_000)
    store_units = args.store_units or units

    sim_s, rows = simulate(units, args.chunk, args.scenario, args.seed)
    print(f"simulate        {units:>9,} units  {rows:>11,} rows  {sim_s:7.2f} s  {units / sim_s:>10,.0f} units/s")
    result = {
        "bench": "twin",
        "units": units,
        "chunk": args.chunk,
        "scenario": args.scenario,
        "rows": rows,
        "seconds_simulate": round(sim_s, 3),
        "units_per_s_simulate": round(units / sim_s),
        "rows_per_s_simulate": round(rows / sim_s),
    }
    total_s, store_s, stored = simulate_and_store(store_units, args.chunk, args.scenario, args.seed)
    print(
        f"simulate+store  {store_units:>9,} units  {stored:>11,} rows  {total_s:7.2f} s  "
        f"{store_units / total_s:>10,.0f} units/s  (store {store_s:.2f} s)"
    )
    result |= {
        "units_store": store_units,
        "seconds_simulate_and_store": round(total_s, 3),
        "seconds_store": round(store_s, 3),
        "units_per_s_simulate_and_store": round(store_units / total_s),
        "store_overhead_ratio": round(total_s / (sim_s * store_units / units), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
