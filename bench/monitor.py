"""Monitoring benchmark: problems on the twin, delay vs the optimal CUSUM, TEP, throughput.

    .venv/bin/python bench/monitor.py [--quick] [--default]

1. Twin: each built-in scenario is produced in chunks, ingested, and the monitor engine runs
   after every chunk (as it would live). Every injected micro-problem should become a problem;
   per type the detection delay (units from onset to the problem's first evidence); false
   problems per 100,000 units on the clean scenario.
2. A 1-sigma mean shift: delay of LineLab's charts (fitted on a 500-point reference) at
   in-control ARL 370 vs the optimal CUSUM that knows mean, sigma and the shift; river's ADWIN
   and PageHinkley for comparison. In-control run lengths are measured in the same run.
3. Tennessee Eastman through ingest: FDR/FAR per fault vs the published PCA numbers, and a
   plain PCA (theoretical 99% limits) measured in the same run.
4. Throughput: rows/s through the charts in batch and records/s streaming, each against a
   plain NumPy (batch) / plain Python (streaming) computation of the same statistic.

The last line is one JSON object {"bench": "monitor", ...}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from linelab.monitor import CUSUMChart, EWMAChart, IndividualsChart, PCAMonitor, Scores, cusum_design
from linelab.monitor.engine import EngineConfig, MonitorEngine
from linelab.monitor.problems import list_problems
from linelab.monitor.tep import HARD_FAULTS, fault_figures, monitor_tep, read_run, tep_summary
from linelab.store import Workspace

DATA = Path(os.environ.get("LINELAB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def unit_index(serial: str | None) -> int | None:
    return int(serial[2:]) - 1 if serial and serial.startswith("SN") else None


# -- 1. twin ------------------------------------------------------------------------------------
def _matches(problem: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Does a found problem point at this injected one (its station, measurements, cause)?"""
    sym = truth["symptoms"]
    names = set(sym.get("measurements", [])) | set(sym.get("params", []))
    cause = truth["cause"]
    levels = {str(c["level"]) for c in truth["accept"]} | {str(v) for k, v in cause.items() if k != "factor" and v}
    levels.discard(str(sym.get("station")))  # a station alone does not say which problem
    for s in problem["signals"]:
        scope = s["scope"]
        values = {str(v) for v in scope.values()}
        if scope.get("measurement") in names or values & levels:
            return True
        if any(lv in v for v in values for lv in levels):  # lot names carry the supplier
            return True
        if scope.get("station") == sym.get("station") and s["detector"] == "defect_rate":
            return True
    return False


def twin_scenario(name: str, units: int, chunk: int, seed: int = 0) -> dict[str, Any]:
    from linelab.twin.line import Line

    line = Line(name, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        ws.ingest_tables({"specs": line.specs_table()}, source="specs")
        t_monitor = 0.0
        rows = 0
        for i in range(0, units, chunk):
            c = line.produce(min(chunk, units - i))
            ws.ingest_tables(dict(c.tables), source=f"twin:{name}:{seed}:{i}")
            t0 = time.perf_counter()
            rep = MonitorEngine.load(ws, EngineConfig()).run(ws)
            t_monitor += time.perf_counter() - t0
            rows += sum(rep.records.values())
        found = list_problems(ws)
        ws.close()
    truths = [t for t in line.truth if t["onset_unit"] is not None and t["onset_unit"] < units]
    matched: set[str] = set()
    per_truth = []
    for t in truths:
        end = (t["end_unit"] or units) + 5000
        hits = [p for p in found if _matches(p, t)
                and t["onset_unit"] - 500 <= (unit_index(p["first_evidence"]["unit"]) or -1) <= end]
        hits.sort(key=lambda p: unit_index(p["first_evidence"]["unit"]) or 0)
        matched |= {p["id"] for p in hits}
        first = hits[0] if hits else None
        per_truth.append({
            "scenario": name, "problem": t["id"], "type": t["type"], "onset_unit": t["onset_unit"],
            "detected": first is not None,
            "problem_id": first["id"] if first else None,
            "delay_units": (unit_index(first["first_evidence"]["unit"]) - t["onset_unit"]) if first else None,
            "problems_for_it": len(hits),
        })
    false = [p for p in found if p["id"] not in matched]
    return {"scenario": name, "units": units, "truth": per_truth, "problems": len(found),
            "false_problems": len(false), "false_descriptions": [p["description"] for p in false],
            "monitor_s": t_monitor, "rows_monitored": rows}


def bench_twin(quick: bool, with_default: bool) -> dict[str, Any]:
    from linelab.twin.scenario import list_scenarios

    infos = {s.name: s for s in list_scenarios()}
    if quick:
        plan = [("nozzle_wear", 12000, 3000), ("clean", 12000, 4000)]
    else:
        plan = [(n, max(s.units, 30000), 2500) for n, s in infos.items() if n not in ("default", "clean")]
        plan.append(("clean", 200000, 5000))
        if with_default:
            plan.append(("default", infos["default"].units, 5000))
    results = []
    for name, units, chunk in plan:
        if name not in infos:
            continue
        r = twin_scenario(name, units, chunk)
        results.append(r)
        for t in r["truth"]:
            print(f"  {name:20s} {t['problem']:12s} {t['type']:20s} onset {t['onset_unit']:>7} "
                  f"detected={t['detected']!s:5s} delay={t['delay_units']} units, problems={t['problems_for_it']}")
        print(f"  {name:20s} problems {r['problems']}, not matching an injected problem {r['false_problems']}")
        for d in r["false_descriptions"][:3]:
            print(f"      unmatched: {d}")
    truths = [t for r in results for t in r["truth"]]
    by_type: dict[str, list[int]] = {}
    for t in truths:
        if t["detected"]:
            by_type.setdefault(t["type"], []).append(t["delay_units"])
    clean = [r for r in results if r["scenario"] == "clean"]
    clean_units = sum(r["units"] for r in clean)
    clean_false = sum(r["false_problems"] for r in clean)
    monitor_s = max(sum(r["monitor_s"] for r in results), 1e-9)
    return {
        "injected": len(truths),
        "detected": sum(t["detected"] for t in truths),
        "delay_units_by_type": {k: float(np.median(v)) for k, v in by_type.items()},
        "false_per_100k_clean": 100_000 * clean_false / clean_units if clean_units else None,
        "clean_units": clean_units,
        "unmatched_problems_fault_scenarios": sum(r["false_problems"] for r in results if r["scenario"] != "clean"),
        "duplicate_problems": sum(max(0, t["problems_for_it"] - 1) for t in truths),
        "engine_rows_per_s": sum(r["rows_monitored"] for r in results) / monitor_s,
    }


# -- 2. mean shift --------------------------------------------------------------------------------
def _run_lengths(make: Any, rng: np.random.Generator, reps: int, length: int, shift: float, tau: int,
                 per_record: bool = False) -> np.ndarray:
    """Delay after a change at tau (runs with a false alarm before tau are dropped)."""
    out = []
    for _ in range(reps):
        x = rng.standard_normal(length)
        x[tau:] += shift
        det = make(rng)
        alarm = det(x) if per_record else det.update(x).alarm
        hits = np.flatnonzero(alarm)
        if hits.size and hits[0] < tau:
            continue
        out.append((hits[0] - tau + 1) if hits.size else length - tau)
    return np.asarray(out, dtype=float)


def _river(kind: str) -> Any:
    from river import drift

    def run(x: np.ndarray) -> np.ndarray:
        det = drift.ADWIN() if kind == "adwin" else drift.PageHinkley()
        alarm = np.zeros(len(x), dtype=bool)
        for i, v in enumerate(x):
            det.update(float(v))
            if det.drift_detected:
                alarm[i] = True
                break
        return alarm

    return lambda rng: run


def bench_shift(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    reps = 200 if quick else 2000
    k, h = cusum_design(370, 1.0)
    methods = {
        # LineLab charts learn mean and sigma from 500 in-control points, as in use.
        "linelab_cusum": lambda r: CUSUMChart(shift=1.0, arl0=370).fit(r.standard_normal(500)),
        "linelab_ewma": lambda r: EWMAChart(lam=0.1, arl0=370).fit(r.standard_normal(500)),
        "optimal_cusum_known": lambda r: CUSUMChart(k=k, h=h, mu=0.0, sigma=1.0).fit(),
    }
    out: dict[str, Any] = {}
    for name, make in methods.items():
        d = _run_lengths(make, rng, reps, 50 + 400, 1.0, 50)
        arl0 = _run_lengths(make, rng, reps // 3, 6000, 0.0, 0)
        out[name] = {"delay": float(d.mean()), "arl0": float(arl0.mean())}
    river_reps = 20 if quick else 200
    for name in ("adwin", "pagehinkley"):
        d = _run_lengths(_river(name), rng, river_reps, 450, 1.0, 50, per_record=True)
        arl0 = _run_lengths(_river(name), rng, max(10, river_reps // 4), 3000, 0.0, 0, per_record=True)
        out[f"river_{name}"] = {"delay": float(d.mean()) if d.size else None, "arl0_capped_3000": float(arl0.mean())}
    out["ratio_linelab_cusum_vs_optimal"] = out["linelab_cusum"]["delay"] / out["optimal_cusum_known"]["delay"]
    out["ratio_linelab_ewma_vs_optimal"] = out["linelab_ewma"]["delay"] / out["optimal_cusum_known"]["delay"]
    return out


# -- 3. TEP ---------------------------------------------------------------------------------------
def bench_tep(quick: bool) -> dict[str, Any]:
    tep = DATA / "tep"
    if not tep.exists():
        return {"skipped": f"no data at {tep}"}
    runs = ["d00_te", "d01_te", "d04_te", "d11_te", "d21_te"] if quick else None
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        t0 = time.perf_counter()
        res = monitor_tep(tep, ws, runs=runs)
        seconds = time.perf_counter() - t0
        # Plain PCA baseline on the same data read back from the workspace.
        train = read_run(ws, "d00")
        tests = {r: read_run(ws, r) for r in res.alarms}
        ws.close()
    plain = PCAMonitor(variance=0.9, alpha=0.01, limits="theoretical").fit(train)
    base_t2, base_spe = {}, {}
    for r, x in tests.items():
        s = copy.deepcopy(plain).update(x)
        base_t2[r], base_spe[r] = s.extra["t2_alarm"], s.extra["spe_alarm"]
    print(f"  {'fault':>5} {'LineLab FDR':>11} {'FAR':>6} {'delay':>6} | {'plain T2':>8} {'SPE':>6} | "
          f"{'publ. T2':>8} {'SPE':>6}")
    f_t2, far_t2 = fault_figures(base_t2)
    f_spe, far_spe = fault_figures(base_spe)
    for f, b2, bs in zip(res.faults, f_t2, f_spe, strict=True):
        print(f"  {f.fault:>5} {f.fdr:>11.1f} {f.far:>6.1f} {f.delay!s:>6} | {b2.fdr:>8.1f} {bs.fdr:>6.1f} | "
              f"{f.published_t2:>8.1f} {f.published_spe:>6.1f}")
    s = res.summary()
    s2, ss = tep_summary(f_t2, far_t2), tep_summary(f_spe, far_spe)
    return {
        "faults": len(res.faults),
        "linelab": {k: round(v, 2) for k, v in s.items()},
        "plain_pca_t2": {k: round(s2[k], 2) for k in ("fdr_mean_21", "fdr_mean_18", "far_fault_runs", "far_d00_te")},
        "plain_pca_spe": {k: round(ss[k], 2) for k in ("fdr_mean_21", "fdr_mean_18", "far_fault_runs", "far_d00_te")},
        "per_fault_fdr": {f.fault: round(f.fdr, 1) for f in res.faults},
        "seconds_with_ingest": round(seconds, 2),
        "hard_faults": list(HARD_FAULTS),
    }


# -- 4. throughput ------------------------------------------------------------------------------
def bench_throughput(quick: bool) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    n = 1_000_000 if quick else 10_000_000
    x = rng.standard_normal(n)
    ref = rng.standard_normal(1000)
    out: dict[str, Any] = {}

    def rate(fn: Any, rows: int, repeat: int = 3) -> float:
        best = np.inf
        for _ in range(repeat):  # best of a few: the first pass also pays for page faults
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return rows / best

    def numpy_cusum() -> None:  # the same two-sided Lindley recursion in plain NumPy
        z = (x - 0.0) / 1.0
        up, down = np.cumsum(z - 0.5), np.cumsum(-z - 0.5)
        _ = ((up - np.minimum(0, np.minimum.accumulate(up))) > 4.77) | (
            (down - np.minimum(0, np.minimum.accumulate(down))) > 4.77)

    for name, make in {
        "cusum": lambda: CUSUMChart(shift=1.0).fit(ref),
        "ewma": lambda: EWMAChart(lam=0.1).fit(ref),
        "individuals_nelson": lambda: IndividualsChart(rules="nelson").fit(ref),
    }.items():
        out[f"batch_rows_per_s_{name}"] = rate(lambda m=make: m().update(x), n)
    out["batch_rows_per_s_numpy_cusum_baseline"] = rate(numpy_cusum, n)
    out["batch_ratio_cusum_vs_numpy"] = out["batch_rows_per_s_cusum"] / out["batch_rows_per_s_numpy_cusum_baseline"]

    m = 10_000 if quick else 100_000
    xs = x[:m].tolist()
    det = CUSUMChart(shift=1.0).fit(ref)
    out["stream_records_per_s_cusum"] = rate(lambda: [det.update(v) for v in xs], m, repeat=1)

    def python_cusum() -> None:  # the textbook per-record loop, floats only
        cp = cm = 0.0
        for v in xs:
            cp = max(0.0, cp + v - 0.5)
            cm = max(0.0, cm - v - 0.5)
            _ = cp > 4.77 or cm > 4.77

    out["stream_records_per_s_python_baseline"] = rate(python_cusum, m, repeat=1)
    stream, python = out["stream_records_per_s_cusum"], out["stream_records_per_s_python_baseline"]
    out["stream_ratio_cusum_vs_python"] = stream / python
    # Batch == streaming, checked on the same records.
    a = CUSUMChart(shift=1.0).fit(ref).update(x[:2000])
    d2 = CUSUMChart(shift=1.0).fit(ref)
    b = Scores.concat([d2.update(v) for v in x[:2000]])
    out["batch_equals_streaming"] = bool(np.array_equal(a.alarm, b.alarm) and np.allclose(a.statistic, b.statistic))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small runs, under 30 s")
    ap.add_argument("--default", action="store_true", help="also run the 260,000-unit default scenario")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"bench": "monitor", "quick": args.quick}
    sections = [("twin", "1. twin scenarios", bench_twin, (args.quick, args.default)),
                ("mean_shift", "2. 1-sigma mean shift, in-control ARL 370", bench_shift, (args.quick,)),
                ("tep", "3. Tennessee Eastman", bench_tep, (args.quick,)),
                ("throughput", "4. throughput", bench_throughput, (args.quick,))]
    for key, title, fn, fargs in sections:
        print(title)
        t1 = time.perf_counter()
        result[key] = fn(*fargs)
        shown = {k: v for k, v in result[key].items() if k != "per_fault_fdr"}
        print(json.dumps(shown, indent=1, default=float))
        print(f"   ({time.perf_counter() - t1:.1f} s)")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    sys.stdout.write(json.dumps(result, default=float) + "\n")


if __name__ == "__main__":
    main()
