"""LineLab on lines it was not written for: the zoo, fed online, against a naive fail-rate baseline.

    .venv/bin/python bench/zoo.py [--quick] [--seeds report|tune] [--jobs N]

Each run is one zoo scenario (linelab.zoo) produced in chunks in time order (a few hours of the
line each), ingested into a fresh workspace holding the line's profile; the monitor engine runs
after every chunk. A problem's detection point is the last unit of the chunk after which the
engine first opened it (what a line fed this way would have seen). For each injected problem
the first problem that points at it (its cause's entity, or its symptom's station and reading)
opened between its onset and a little after its end counts as its detection, and is diagnosed
right then: is the true cause first, in the top three? Problems that point at no injected
problem are false; on clean runs they are counted per 100,000 units.

The baseline, scored on the same chunks: per station and per station's machine, the first-visit
fail rate over the last `window` visits against that group's own first `window` visits (a
one-sided binomial z limit); per material lot, the first-pass fail rate of the lot's units
against the line's first window. An alarm names its group; that is its whole diagnosis (the
top three: the three groups furthest over their limits at that moment).

Seeds: the report uses seeds 0, 1, 2...; `--seeds tune` uses 100, 101... for tuning, so what is
reported was never tuned on. The last line is one JSON object {"bench": "zoo", ...}.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import binom

from linelab.diagnose.workspace import diagnose_problem
from linelab.monitor.engine import run_monitor
from linelab.monitor.problems import list_problems
from linelab.profile.io import save_profile
from linelab.store import Workspace
from linelab.zoo import KINDS, ZooLine, open_line
from linelab.zoo.simulator import problem_types

TYPE_OF_ENTITY = {"machine": {"machine", "fixture"}, "lot": {"lot"}, "shift": {"shift"}, "operator": {"operator"},
                  "product": {"product"}, "param": {"param", "signal", "measurement", "environment", "continuous"},
                  "signal": {"param", "signal", "measurement", "environment", "continuous"}}


# -- the plan ---------------------------------------------------------------------------------
def plan(quick: bool, seeds: str) -> list[tuple[str, int, int | None]]:
    """(scenario, seed, units) per run: every problem type of every kind, obvious and subtle in
    turn, and clean runs; --quick: a handful of shorter runs."""
    base = 100 if seeds == "tune" else 0
    if quick:
        return [("assembly:bad_lot_fails", base, 12000), ("assembly:clean", base, 12000),
                ("machining:machine_step", base, None), ("meddev:bad_lot_fails", base, None),
                ("meddev:clean", base, None), ("process:tester_drift", base, 20000)]
    runs: list[tuple[str, int, int | None]] = []
    for k, kind in enumerate(KINDS):  # each type is obvious on two kinds and subtle on the others
        for i, t in enumerate(problem_types(kind)):
            runs.append((f"{kind}:{t}" + (":subtle" if (i + k) % 2 else ""), base + i, None))
        runs += [(f"{kind}:clean", base + 50 + s, None) for s in range(3)]
    return runs


# -- the naive baseline -----------------------------------------------------------------------
class RollingFailRate:
    """Per group: fail rate of the last `window` visits vs the group's first `window` (binomial limit)."""

    def __init__(self, window: int, alpha: float = 1e-4) -> None:
        self.window, self.alpha = window, alpha
        self.hist: dict[str, list[np.ndarray]] = defaultdict(list)
        self.ref: dict[str, float] = {}
        self.alarming: set[str] = set()
        self.line_ref: float | None = None
        self.lot_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def _limit(self, p0: float, n: int) -> float:
        """Most failures in `n` visits at rate p0 that are not an alarm (one-sided, alpha)."""
        p0 = max(p0, 0.5 / self.window)
        return float(binom.isf(self.alpha, n, p0))

    def update(self, steps: pa.Table, units: pa.Table, lots: pa.Table) -> list[tuple[str, float]]:
        """Feed one chunk; returns the groups that started alarming, with how far over the limit."""
        first = _first_visits(steps)
        fail = pc.equal(first["result"], "fail").to_numpy(zero_copy_only=False)
        station = first["station"].to_numpy(zero_copy_only=False)
        machine = first["machine"].to_numpy(zero_copy_only=False)
        groups = defaultdict(list)
        st = station.astype(str)
        for key_arr in (np.char.add("station:", st),
                        np.char.add(np.char.add("machine:", st), np.char.add("/", machine.astype(str)))):
            for key in np.unique(key_arr):
                groups[str(key)].append(fail[key_arr == key])
        over: dict[str, float] = {}
        for key, parts in groups.items():
            h = self.hist[key]
            h.extend(parts)
            seq = np.concatenate(h)
            if key not in self.ref:
                if seq.size < self.window:
                    continue
                self.ref[key] = float(seq[: self.window].mean())
                seq = seq[self.window:]
            recent = seq[-self.window:]
            self.hist[key] = [recent]
            if recent.size < self.window // 2:
                continue
            lim = self._limit(self.ref[key], recent.size)
            if recent.sum() > lim:
                over[key] = (recent.sum() - lim) / max(np.sqrt(lim), 1.0)
        # lots: the first-pass fail rate of each lot's units against the line's first window
        fp = units["first_pass"].to_numpy(zero_copy_only=False)
        uid = units["unit_id"].to_numpy(zero_copy_only=False)
        if self.line_ref is None:
            self._line_seen = getattr(self, "_line_seen", [])
            self._line_seen.append(~fp)
            seen = np.concatenate(self._line_seen)
            if seen.size >= self.window:
                self.line_ref = float(seen[: self.window].mean())
        failed = dict(zip(uid, ~fp, strict=True))
        for u, lot in zip(lots["unit_id"].to_pylist(), lots["lot"].to_pylist(), strict=True):
            c = self.lot_counts[f"lot:{lot}"]
            c[0] += 1
            c[1] += int(failed.get(u, False))
        if self.line_ref is not None:
            for key, (n, k) in self.lot_counts.items():
                if n >= 30:
                    lim = self._limit(self.line_ref, n)
                    if k > lim:
                        over[key] = (k - lim) / max(np.sqrt(lim), 1.0)
        new = [(k, v) for k, v in over.items() if k not in self.alarming]
        self.alarming = set(over)
        self.last_over = over
        return new


def _first_visits(steps: pa.Table) -> pa.Table:
    """Each unit's first visit of each station (a rework's retest is not a first visit)."""
    s = steps.filter(pc.not_equal(steps["result"], "rework"))
    s = s.sort_by([("unit_id", "ascending"), ("station", "ascending"), ("t_in", "ascending")])
    key = pc.binary_join_element_wise(s["unit_id"], s["station"], "|").to_numpy(zero_copy_only=False)
    keep = np.ones(key.size, bool)
    keep[1:] = key[1:] != key[:-1]
    return s.filter(pa.array(keep))


# -- matching problems to the truth ----------------------------------------------------------
def points_at(scope: dict[str, Any], entity: str, detector: str, truth: dict[str, Any]) -> bool:
    """Does a found problem (or a baseline group) point at this injected problem?"""
    cause, sym = truth["cause"], truth["symptom"]
    values = {str(v) for v in scope.values() if v is not None} | set(entity.replace(":", "/").split("/"))
    names = {cause["name"]} | {a["name"] for a in truth.get("accept") or []}
    if truth.get("aliased_with"):
        names.add(truth["aliased_with"]["name"])
    if values & names:
        return True
    if cause["kind"] == "machine" and scope.get("machine") and scope.get("station") == cause.get("station"):
        return False  # another machine of the same station: not this machine's problem
    station = scope.get("station")
    if station and station == sym.get("station"):
        return scope.get("measurement") in (sym.get("reading"), None) or "rate" in detector
    return bool(scope.get("measurement") and scope.get("measurement") in (sym.get("reading"), cause["name"]))


def cause_rank(causes: list[dict[str, Any]], truth: dict[str, Any]) -> int | None:
    """1-based rank of the true cause among ranked causes [{type, name, station}], or None."""
    want = [truth["cause"], *(truth.get("accept") or [])]
    for rank, c in enumerate(causes, 1):
        for w in want:
            kinds = TYPE_OF_ENTITY.get(w["kind"], {w["kind"]})
            same = str(c.get("type")) in kinds and w["name"] in {str(c.get("name")), str(c.get("level"))}
            if same and (w["kind"] != "machine" or c.get("station") in (None, w.get("station"))):
                return rank
            if w["kind"] in ("param", "signal") and w["name"] in str(c.get("factor", "")):
                return rank
    return None


# -- one run ------------------------------------------------------------------------------------
def one_run(spec: tuple[str, int, int | None]) -> dict[str, Any]:
    scenario, seed, units = spec
    line: ZooLine = open_line(scenario, seed, units)
    n_units, chunk = line.run_units, line.kind.chunk
    base = RollingFailRate(window=max(200, min(2000, 2 * chunk)))
    found: dict[str, dict[str, Any]] = {}  # LineLab problem id -> detection point and scope
    alarms: list[dict[str, Any]] = []  # baseline
    diagnoses: dict[str, dict[str, Any]] = {}
    t_mon = t_diag = 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(Path(tmp) / "ws")
        save_profile(line.profile, Path(tmp) / "ws" / "profile.yaml")
        for start in range(0, n_units, chunk):
            tables = line.produce(min(chunk, n_units - start))
            end_unit = line.units_produced - 1
            ws.ingest_tables(tables, source=f"{line.source}:{start}")
            t1 = time.perf_counter()
            run_monitor(ws)
            t_mon += time.perf_counter() - t1
            truth = line.truth
            for p in list_problems(ws):
                if p["id"] in found:
                    continue
                first = (p.get("first_evidence") or {}).get("unit")
                found[p["id"]] = {"id": p["id"], "detected_unit": end_unit, "scope": p.get("scope") or {},
                                  "entity": str(p.get("entity") or ""), "detector": str(p.get("kind") or ""),
                                  "first_evidence_unit": line.unit_index(first) if first else None,
                                  "description": p.get("description", "")[:160]}
                hits = [t for t in truth if _window(t, end_unit, n_units, chunk)
                        and points_at(found[p["id"]]["scope"], found[p["id"]]["entity"], found[p["id"]]["detector"], t)]
                if hits:  # diagnose it now, as the loop would
                    t1 = time.perf_counter()
                    diagnoses[p["id"]] = _diagnose(ws, p["id"], Path(tmp) / "plots")
                    t_diag += time.perf_counter() - t1
            lots = tables["materials"].select(["unit_id", "lot"])
            for key, z in base.update(tables["steps"], tables["units"], lots):
                kind, _, name = key.partition(":")
                ranked = sorted(base.last_over.items(), key=lambda kv: -kv[1])[:3]
                alarms.append({"key": key, "detected_unit": end_unit, "over": round(float(z), 2),
                               "scope": _group_scope(kind, name), "top3": [_group_cause(k) for k, _ in ranked]})
        ws.close()
    truth = line.truth
    return {"scenario": scenario, "kind": line.kind.name, "seed": seed, "units": n_units,
            "truth": truth, "problems": list(found.values()), "diagnoses": diagnoses, "baseline": alarms,
            "seconds": round(time.perf_counter() - t0, 1), "monitor_s": round(t_mon, 1), "diagnose_s": round(t_diag, 1)}


def _window(t: dict[str, Any], unit: int, n_units: int, chunk: int) -> bool:
    end = t["end_unit"] if t["end_unit"] is not None else n_units
    return t["onset_unit"] <= unit <= end + 2 * chunk


def _diagnose(ws: Any, pid: str, plots: Path) -> dict[str, Any]:
    try:
        report, _, seconds = diagnose_problem(ws, pid, plot=plots / f"{pid}.png")
    except Exception as e:  # a diagnosis that cannot run is a miss, with its reason
        return {"error": f"{type(e).__name__}: {e}"[:200], "causes": []}
    causes = []
    for c in report.causes[:10]:
        ent = getattr(c, "entity", None)  # the typed entity where the model has one, else details["entity"]
        if ent is not None:
            causes.append({"type": ent.kind, "name": ent.name, "level": c.level, "station": ent.station,
                           "factor": c.factor})
            continue
        d = dict(c.details.get("entity") or {})
        causes.append({"type": d.get("type", c.kind), "name": d.get("name", c.level), "level": c.level,
                       "station": d.get("station"), "factor": c.factor})
    return {"causes": causes, "seconds": seconds}


def _group_scope(kind: str, name: str) -> dict[str, Any]:
    if kind == "station":
        return {"station": name}
    if kind == "machine":
        st, _, m = name.partition("/")
        return {"station": st, "machine": m}
    return {"lot": name}


def _group_cause(key: str) -> dict[str, Any]:
    kind, _, name = key.partition(":")
    if kind == "machine":
        st, _, m = name.partition("/")
        return {"type": "machine", "name": m, "station": st}
    return {"type": kind, "name": name, "station": name if kind == "station" else None}


# -- scoring ------------------------------------------------------------------------------------
def score(run: dict[str, Any]) -> dict[str, Any]:
    n, chunk = run["units"], KINDS[run["kind"]].chunk
    rows, used_ll, used_bl = [], set(), set()
    for t in run["truth"]:
        ll = sorted((p for p in run["problems"] if _window(t, p["detected_unit"], n, chunk)
                     and points_at(p["scope"], p["entity"], p["detector"], t)), key=lambda p: p["detected_unit"])
        bl = sorted((a for a in run["baseline"] if _window(t, a["detected_unit"], n, chunk)
                     and points_at(a["scope"], a["key"], "rate", t)), key=lambda a: a["detected_unit"])
        used_ll |= {p["id"] for p in ll}
        used_bl |= {a["key"] + str(a["detected_unit"]) for a in bl}
        row = {"scenario": run["scenario"], "seed": run["seed"], "kind": run["kind"], "problem": t["id"],
               "type": t["type"], "severity": t["severity"], "onset": t["onset_unit"], "cause": t["cause"],
               "extra_failures": t["extra_failures"], "affected": t["affected_units"]}
        for who, hits in (("linelab", ll), ("baseline", bl)):
            first = hits[0] if hits else None
            rank = None
            if first is not None:
                causes = (run["diagnoses"].get(first["id"], {}).get("causes") if who == "linelab" else first["top3"])
                rank = cause_rank(causes or [], t)
            row[who] = {"detected": first is not None,
                        "delay": first["detected_unit"] - t["onset_unit"] if first else None,
                        "evidence_delay": (first["first_evidence_unit"] - t["onset_unit"])
                        if first and first.get("first_evidence_unit") is not None else None,
                        "rank": rank, "by": (first.get("description") or first.get("key")) if first else None,
                        "diag_error": run["diagnoses"].get(first["id"], {}).get("error") if who == "linelab" and first
                        else None}
        rows.append(row)
    false_ll = [p for p in run["problems"] if p["id"] not in used_ll]
    false_bl = [a for a in run["baseline"] if a["key"] + str(a["detected_unit"]) not in used_bl]
    return {"rows": rows, "false_linelab": len(false_ll), "false_baseline": len(false_bl),
            "false_examples": [p["description"] for p in false_ll[:3]]}


def summarise(rows: list[dict[str, Any]], clean: list[dict[str, Any]], who: str) -> dict[str, Any]:
    det = [r[who] for r in rows]
    found = [d for d in det if d["detected"]]
    clean_units = sum(c["units"] for c in clean)
    return {
        "injected": len(det), "detected": len(found),
        "detection": round(len(found) / len(det), 3) if det else None,
        "median_delay_units": float(statistics.median(d["delay"] for d in found)) if found else None,
        "cause_first": round(sum(d["rank"] == 1 for d in det) / len(det), 3) if det else None,
        "cause_top3": round(sum(d["rank"] is not None and d["rank"] <= 3 for d in det) / len(det), 3) if det else None,
        "false_per_100k_clean": round(100_000 * sum(c[f"false_{who}"] for c in clean) / clean_units, 2)
        if clean_units else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="six shorter runs over the four kinds (a few minutes)")
    ap.add_argument("--seeds", choices=("report", "tune"), default="report",
                    help="report: seeds 0.. (never tuned on); tune: seeds 100.. (for tuning)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one per core)")
    ap.add_argument("--save", help="also write every run's raw record (truth, problems, alarms, diagnoses) as JSON")
    ap.add_argument("--only", help="only the runs whose scenario matches this regular expression (e.g. ':clean$')")
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs_plan = [r for r in plan(args.quick, args.seeds) if not args.only or re.search(args.only, r[0])]
    print(f"zoo bench: {len(runs_plan)} runs, seeds '{args.seeds}' "
          f"({'100+, for tuning' if args.seeds == 'tune' else '0+, report seeds: never tune on these'})")
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(runs_plan)))) as pool:
        runs = list(pool.map(one_run, runs_plan))
    if args.save:
        Path(args.save).write_text(json.dumps(runs, default=str))
    rows, clean, misses = [], [], []
    for run in runs:
        s = score(run)
        rows += s["rows"]
        if not run["truth"]:
            clean.append({"units": run["units"], "kind": run["kind"], "false_linelab": s["false_linelab"],
                          "false_baseline": s["false_baseline"]})
        print(f"{run['scenario']:34s} seed {run['seed']:>3} {run['units']:>6} units  LineLab problems "
              f"{len(run['problems']):>3} (false {s['false_linelab']:>2})  baseline alarms {len(run['baseline']):>3} "
              f"(false {s['false_baseline']:>2})  {run['seconds']:>6.1f} s (monitor {run['monitor_s']} s)")
        for ex in s["false_examples"][:2]:
            print(f"      false: {ex}")
        for r in s["rows"]:
            ll, bl = r["linelab"], r["baseline"]
            print(f"      {r['problem']:20s} {r['severity']:7s} onset {r['onset']:>6} extra fails "
                  f"{r['extra_failures']:>4} | LineLab delay {ll['delay']!s:>6} rank {ll['rank']!s:>4} | "
                  f"baseline delay {bl['delay']!s:>6} rank {bl['rank']!s:>4}")
            if not ll["detected"] or ll["rank"] != 1:
                misses.append({"run": f"{r['scenario']}#{r['seed']}", "problem": r["problem"],
                               "cause": f"{r['cause']['kind']} {r['cause']['name']}",
                               "missed": "not detected" if not ll["detected"] else
                               (f"cause ranked {ll['rank']}" if ll["rank"] else "cause not in ranking")
                               + (f" ({ll['diag_error']})" if ll["diag_error"] else ""),
                               "baseline": "not detected" if not bl["detected"] else f"delay {bl['delay']}"})
    result: dict[str, Any] = {"bench": "zoo", "quick": args.quick, "seeds": args.seeds, "runs": len(runs),
                              "clean_runs": len(clean), "units": sum(r["units"] for r in runs)}
    for who in ("linelab", "baseline"):
        result[who] = summarise(rows, clean, who)
    ll_d, bl_d = result["linelab"]["median_delay_units"], result["baseline"]["median_delay_units"]
    result["delay_ratio_linelab_vs_baseline"] = round(ll_d / bl_d, 3) if ll_d and bl_d else None
    result["detection_ratio_linelab_vs_baseline"] = (
        round(result["linelab"]["detected"] / result["baseline"]["detected"], 3)
        if result["baseline"]["detected"] else None)
    for key, group in (("per_kind", "kind"), ("per_problem", "type")):
        result[key] = {}
        for g in sorted({r[group] for r in rows} | ({c["kind"] for c in clean} if group == "kind" else set())):
            sub = [r for r in rows if r[group] == g]
            sub_clean = [c for c in clean if c["kind"] == g] if group == "kind" else []
            result[key][g] = {who: {k: v for k, v in summarise(sub, sub_clean, who).items()
                                    if k != "injected" and v is not None} for who in ("linelab", "baseline")}
            result[key][g]["injected"] = len(sub)
    print("\nper line kind / per problem kind (LineLab | baseline):")
    for key in ("per_kind", "per_problem"):
        for g, v in result[key].items():
            a, b = v["linelab"], v["baseline"]
            print(f"  {g:18s} n={v['injected']:>2}  detection {a.get('detection')!s:>5} | {b.get('detection')!s:>5}  "
                  f"median delay {a.get('median_delay_units')!s:>7} | {b.get('median_delay_units')!s:>7}  "
                  f"cause first {a.get('cause_first')!s:>5} | {b.get('cause_first')!s:>5}  "
                  f"top3 {a.get('cause_top3')!s:>5} | {b.get('cause_top3')!s:>5}  "
                  f"false/100k clean {a.get('false_per_100k_clean', '-')!s:>6} | "
                  f"{b.get('false_per_100k_clean', '-')!s:>6}")
    print(f"\nLineLab misses ({len(misses)}): run, problem, true cause, what was missed, baseline")
    for m in misses:
        print(f"  {m['run']:40s} {m['problem']:20s} {m['cause']:28s} {m['missed']:40s} baseline: {m['baseline']}")
    result["misses"] = misses
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["seconds_monitor"] = round(sum(r["monitor_s"] for r in runs), 1)
    result["seconds_diagnose"] = round(sum(r["diagnose_s"] for r in runs), 1)
    sys.stdout.write(json.dumps(result, default=float) + "\n")


if __name__ == "__main__":
    main()
