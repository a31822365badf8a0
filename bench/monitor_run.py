"""`monitor run` throughput: readings per second against a bare NumPy CUSUM over the same readings.

    .venv/bin/python bench/monitor_run.py                  # 1,000,000 units of the twin
    .venv/bin/python bench/monitor_run.py --quick          # 50,000 units, well under 2 minutes
    .venv/bin/python bench/monitor_run.py --workspace PATH # reuse (or create) a twin workspace there

1. A workspace of the simulated line is made with `twin run` (the same Python function the CLI
   calls), unless `--workspace` names one that holds units already. Its time is reported apart
   and counts nowhere.
2. `monitor run --reset` runs over it from scratch (again the CLI's own function), timed. The
   workspace is copied first, so the problems it files land in a scratch copy and a reused
   workspace stays as it was. Per-phase times come from timing wrappers around the engine's
   methods (queries, series, rate streams, state saves); they are part of the monitor's time.
3. The baseline, in the same run: the same readings read out of the store in one DuckDB query
   (ordered by series and time) and a bare two-sided NumPy CUSUM per series (k = 0.5, h = 5 in
   standard deviations; mean and sd from each series' first fifth), timed including the read.

A reading is one value the monitor consumes: a measurement or a parameter value of a unit (the
engine's `measurements` count), a unit's first-visit result at a station (`steps`), and a unit's
first-pass result per material it was built with (`units`). The baseline's series: one per
(station, measurement or parameter), one per station's first-visit results, one per material;
its reading count is checked against the monitor's.

The machine may be shared: timings are noisy, so both figures are measured back to back in one
run. The last line is one JSON object {"bench": "monitor_run", ...}.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from linelab.commands import call


def say(msg: str) -> None:
    print(msg, flush=True)


# -- 1. the workspace -----------------------------------------------------------------------------
def units_in(path: Path) -> int:
    from linelab.store import Workspace

    if not (path / "linelab.duckdb").exists():
        return 0
    ws = Workspace.open(path, read_only=True)
    try:
        return int(ws.query("SELECT count(*) FROM units").column(0)[0].as_py())
    finally:
        ws.close()


def make_workspace(path: Path, units: int, scenario: str, seed: int) -> float:
    say(f"simulating {units:,} units of '{scenario}' into {path} ...")
    t0 = time.perf_counter()
    r = call("twin run", workspace=path, scenario=scenario, units=units, seed=seed)
    seconds = time.perf_counter() - t0
    rows = getattr(r, "rows", {})
    say(f"  done in {seconds:.1f} s: " + ", ".join(f"{v:,} {k}" for k, v in rows.items()))
    return seconds


# -- 2. the monitor -------------------------------------------------------------------------------
@contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Time the engine's phases by wrapping its methods (restored afterwards). Nested phases
    (series inside the measurement pass) are reported as they are; the bench derives the rest."""
    from linelab.monitor import engine as eng

    spent: dict[str, float] = defaultdict(float)
    wrapped = {
        (eng.MonitorEngine, "_measurements"): "measurements (query + series + watches)",
        (eng.MonitorEngine, "_watches"): "watches",
        (eng.SeriesMonitor, "process"): "measurement series",
        (eng.MonitorEngine, "_steps"): "steps (query + rate streams)",
        (eng.MonitorEngine, "_materials"): "materials (query + rate streams)",
        (eng.RateStream, "process"): "rate streams",
        (eng.MonitorEngine, "_events"): "events query",
        (eng.MonitorEngine, "_recipe_changes"): "recipe changes query",
        (eng.MonitorEngine, "_fixes"): "fixes query",
        (eng.MonitorEngine, "save"): "state save",
    }
    originals = {}
    for (cls, name), label in wrapped.items():
        orig = cls.__dict__[name]
        originals[(cls, name)] = orig

        def timed(*a: Any, _f: Callable[..., Any] = orig, _label: str = label, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_label] += time.perf_counter() - t

        setattr(cls, name, staticmethod(functools.wraps(orig.__func__)(timed)) if isinstance(orig, staticmethod)
                else functools.wraps(orig)(timed))
    try:
        yield spent
    finally:
        for (cls, name), orig in originals.items():
            setattr(cls, name, orig)


def run_monitor_cli(path: Path, profile: Path | None) -> dict[str, Any]:
    """`linelab monitor run --reset --workspace PATH`, through the same function the CLI calls."""
    from linelab.commands import load_all

    load_all()  # command registration (imports) is start-up, not monitoring
    import linelab.monitor.engine  # noqa: F401  the detectors' libraries, imported by the command

    say("monitor run --reset ...")
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
    with phase_timers() as spent:
        t0 = time.perf_counter()
        if prof is not None:
            prof.enable()
        r = call("monitor run", workspace=path, reset=True)
        if prof is not None:
            prof.disable()
        seconds = time.perf_counter() - t0
    if prof is not None and profile is not None:
        prof.dump_stats(str(profile))
        say(f"  profile written to {profile}")
    res = r.model_dump()
    readings = sum(res["records"].values())
    phases = {k: round(v, 3) for k, v in spent.items()}
    m = spent.get("measurements (query + series + watches)", 0.0)
    phases["measurement query and prep (derived)"] = round(
        m - spent.get("measurement series", 0.0) - spent.get("watches", 0.0), 3)
    say(f"  {seconds:.1f} s, {readings:,} readings ({', '.join(f'{v:,} {k}' for k, v in res['records'].items())}), "
        f"{res['alarms']} alarm(s), {len(res['problems_opened'])} problem(s) opened")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        say(f"    {k:42s} {v:8.2f} s")
    return {"seconds": seconds, "readings": readings, "records": res["records"], "alarms": res["alarms"],
            "problems_opened": len(res["problems_opened"]), "phases_s": phases}


# -- 3. the baseline ------------------------------------------------------------------------------
READINGS_SQL = """
SELECT series, value FROM (
    SELECT 'm\x1f' || station || '\x1f' || name AS series, value, t FROM measurements
    UNION ALL
    SELECT 'p\x1f' || station || '\x1f' || name, value, t FROM params
    UNION ALL  -- a unit's first visit of each station: its result
    SELECT 's\x1f' || station, CASE WHEN arg_min(result, t_in) <> 'pass' THEN 1.0 ELSE 0.0 END, min(t_in)
    FROM steps GROUP BY unit_id, station
    UNION ALL  -- a unit's first-pass result, once per material it was built with
    SELECT 'u\x1f' || m.material, CASE WHEN u.first_pass THEN 0.0 ELSE 1.0 END, u.t_start
    FROM units u JOIN materials m USING (unit_id) WHERE u.first_pass IS NOT NULL
) WHERE value IS NOT NULL
ORDER BY series, t
"""


def numpy_cusum(x: np.ndarray, starts: np.ndarray, k: float = 0.5, h: float = 5.0,
                reference: float = 0.2) -> tuple[int, int]:
    """Two-sided tabular CUSUM of each series (x[starts[i]:starts[i+1]]), vectorised within a
    series: S_n = U_n - min(0, min_{j<=n} U_j) with U the cumulative sum of z - k, which is the
    Lindley recursion max(0, S_{n-1} + z_n - k) in closed form. Returns (series, alarmed points)."""
    ends = np.append(starts[1:], len(x))
    alarmed = 0
    for a, b in zip(starts, ends, strict=True):
        v = x[a:b]
        ref = v[: max(2, int(len(v) * reference))]
        sd = float(ref.std()) or 1.0
        z = (v - float(ref.mean())) / sd
        up, down = np.cumsum(z - k), np.cumsum(-z - k)
        s_up = up - np.minimum(np.minimum.accumulate(up), 0.0)
        s_down = down - np.minimum(np.minimum.accumulate(down), 0.0)
        alarmed += int(np.count_nonzero((s_up > h) | (s_down > h)))
    return len(starts), alarmed


def run_baseline(path: Path) -> dict[str, Any]:
    from linelab.store import Workspace

    say("baseline: one query + NumPy CUSUM per series ...")
    ws = Workspace.open(path, read_only=True)
    try:
        t0 = time.perf_counter()
        tbl = ws.query(READINGS_SQL)
        t_read = time.perf_counter() - t0
        series = tbl.column("series").combine_chunks()
        x = tbl.column("value").to_numpy()
        # Series are contiguous (ordered by series): where the label changes a series starts.
        codes = series.dictionary_encode().indices.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
        n_series, alarmed = numpy_cusum(x, starts)
        seconds = time.perf_counter() - t0
    finally:
        ws.close()
    say(f"  {seconds:.1f} s (read {t_read:.1f} s), {len(x):,} readings in {n_series} series")
    return {"seconds": seconds, "read_seconds": t_read, "readings": int(len(x)), "series": n_series,
            "alarmed_points": alarmed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 units (under 2 minutes)")
    ap.add_argument("--units", type=int, default=None, help="units to simulate (default 1,000,000; --quick 50,000)")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="use this twin workspace (made there first if it holds no units); default: a temporary one")
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", type=Path, default=None, help="write a cProfile of the monitor run here")
    args = ap.parse_args()
    units = args.units or (50_000 if args.quick else 1_000_000)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="linelab-bench-") as tmp:
        src = args.workspace or Path(tmp) / "twin"
        gen_s = None
        have = units_in(src)
        if have == 0:
            gen_s = make_workspace(src, units, args.scenario, args.seed)
            have = units_in(src)
        else:
            say(f"reusing {src}: {have:,} units")
        # The monitor writes its state and problems: run it on a copy, so `src` stays as it was.
        work = Path(tmp) / "monitored"
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("monitor"))
        mon = run_monitor_cli(work, args.profile)
        base = run_baseline(work)
    mon_rate = mon["readings"] / mon["seconds"]
    base_rate = base["readings"] / base["seconds"]
    ratio = mon_rate / base_rate
    say(f"monitor  {mon_rate:>12,.0f} readings/s ({mon['seconds']:.1f} s)")
    say(f"baseline {base_rate:>12,.0f} readings/s ({base['seconds']:.1f} s)")
    say(f"ratio    {ratio:.3f} (target >= 0.25)")
    if base["readings"] != mon["readings"]:
        say(f"  note: the baseline read {base['readings']:,} readings, the monitor {mon['readings']:,}")
    result = {
        "bench": "monitor_run", "quick": args.quick, "units": have, "generation_s": gen_s and round(gen_s, 2),
        "readings": mon["readings"], "records": mon["records"],
        "monitor_s": round(mon["seconds"], 2), "monitor_readings_per_s": round(mon_rate),
        "monitor_phases_s": mon["phases_s"], "alarms": mon["alarms"], "problems_opened": mon["problems_opened"],
        "baseline_s": round(base["seconds"], 2), "baseline_read_s": round(base["read_seconds"], 2),
        "baseline_readings": base["readings"], "baseline_series": base["series"],
        "baseline_readings_per_s": round(base_rate), "ratio": round(ratio, 4), "target_ratio": 0.25,
        "readings_match": base["readings"] == mon["readings"],
        "seconds": round(time.perf_counter() - t_all, 1),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
