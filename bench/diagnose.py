"""Diagnosis benchmark: does the true root cause come out on top?

Data sets:
* causalAssembly (Bosch assembly-line DAG): root-cause development cases with answers. LineLab's
  Diagnoser (mechanism shift given DAG parents) next to the three baselines shipped with the
  cases (z-shift, z-shift restricted to ancestors, linear residual shift) and, when dowhy is
  installed, DoWhy's gcm.distribution_change (Shapley attribution of the symptom's change to
  node mechanisms), all on the same cases in this run. LineLab also without the graph: with the
  stations' order only (`stages`, read off the StationK_ names) and with nothing.
  Then 40 cases generated afresh on the same DAG with new mechanisms and faults (never looked at
  while developing), with the graph, with the stations' order, and with neither.
* the twin (when `linelab.twin` is present): seeded scenarios with one micro-problem or two
  overlapping; LineLab's diagnosis from a workspace next to a defect-rate-ratio baseline.

* the zoo (linelab.zoo): every problem type of every line kind, produced up to its onset plus a
  modest number of affected units, diagnosed from a symptom built from the truth (its station and
  reading, or its station's failures with the defect codes that rose, since its onset), without
  the monitor: is the true cause first, in the top three? Seeds 100+ by default (for tuning),
  `--seeds report` for 0+ (never tuned on). Every miss is listed with what ranked above the truth.

* a long history: a twin workspace of `--history N` units (1,000,000 by default, 100,000 with
  --quick, 0 skips it) with one oven-zone loss 25,000 units before its end; the whole workspace
  diagnosis is timed three times.

    .venv/bin/python bench/diagnose.py [--quick] [--no-dowhy] [--only twin|causalassembly|history|zoo]
                                       [--history N] [--show-misses] [--seeds tune|report]

The last line is one JSON object {"bench": "diagnose", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from linelab.diagnose import Diagnoser  # noqa: E402
from linelab.twin.scenario import PROBLEM_TYPES  # noqa: E402

SHARED = Path(os.environ.get("LINELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
CA = SHARED / "causalassembly" / "dev_cases"
SUITES = ["faithful_forest", "realdag_randomfcm"]
BASELINES = {
    "zshift": "rankings_zshift.json",
    "zshift_anc": "rankings_zshift_anc.json",
    "resid_lin": "rankings_resid_lin.json",
}


def topk(ranks: list[int | None], k: int) -> float:
    return float(np.mean([r is not None and r <= k for r in ranks])) if ranks else float("nan")


def dowhy_rank(normal, faulty, edges, symptom: str) -> list[str]:
    """DoWhy gcm: attribute the change of the symptom's distribution to changed mechanisms."""
    import networkx as nx
    from dowhy import gcm
    from dowhy.gcm.shapley import ShapleyApproximationMethods, ShapleyConfig

    gcm.config.disable_progress_bars()
    gcm.config.set_default_n_jobs(1)
    g = nx.DiGraph(edges)
    nodes = sorted(nx.ancestors(g, symptom) | {symptom})
    sub = g.subgraph(nodes).copy()
    scm = gcm.StructuralCausalModel(sub)
    for node in sub.nodes:
        if sub.in_degree(node) == 0:
            scm.set_causal_mechanism(node, gcm.EmpiricalDistribution())
        else:
            scm.set_causal_mechanism(node, gcm.AdditiveNoiseModel(gcm.ml.create_linear_regressor()))
    contrib = gcm.distribution_change(
        scm,
        normal[nodes],
        faulty[nodes],
        symptom,
        num_samples=500,
        mechanism_change_test_significance_level=0.01,
        shapley_config=ShapleyConfig(
            approximation_method=ShapleyApproximationMethods.PERMUTATION, num_permutations=8, n_jobs=1
        ),
    )
    ranked = sorted((n for n in contrib if n != symptom), key=lambda n: -abs(contrib[n]))
    rest = [c for c in normal.columns if c not in ranked and c != symptom]
    return ranked + rest


def bench_causalassembly(quick: bool, use_dowhy: bool) -> dict:
    import pandas as pd

    out: dict = {}
    for suite in SUITES:
        sdir = CA / suite
        answers = json.loads((sdir / "answers.json").read_text())
        baselines = {m: json.loads((sdir / f).read_text()) for m, f in BASELINES.items()}
        edges = pd.read_csv(sdir / "dag_edges.csv")[["source", "target"]].itertuples(index=False, name=None)
        edges = list(edges)
        cases = sorted(answers)[: 1 if quick else None]
        ranks: dict[str, list[int | None]] = {"linelab": [], "linelab_stages": [], "linelab_no_graph": [],
                                              **{m: [] for m in BASELINES}}
        if use_dowhy:
            ranks["dowhy_gcm"] = []
        secs: dict[str, float] = {m: 0.0 for m in ranks}
        for case in cases:
            cdir = sdir / "cases" / case
            symptom = json.loads((cdir / "case.json").read_text())["symptom"]["variable"]
            root = answers[case]["root_cause"]
            normal = pd.read_csv(cdir / "normal.csv.gz")
            faulty = pd.read_csv(cdir / "faulty.csv.gz")
            t = time.perf_counter()
            dx = Diagnoser(dag=edges, attribution=False).fit(normal, faulty, target=symptom)
            secs["linelab"] += time.perf_counter() - t
            ranks["linelab"].append(dx.rank_of(root))
            for m, kw in (("linelab_stages", {"stages": stages_of(normal.columns)}), ("linelab_no_graph", {})):
                t = time.perf_counter()
                ranks[m].append(Diagnoser(attribution=False, **kw).fit(normal, faulty, target=symptom).rank_of(root))
                secs[m] += time.perf_counter() - t
            for m in BASELINES:
                order = baselines[m].get(case, [])
                ranks[m].append(order.index(root) + 1 if root in order else None)
            if use_dowhy:
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    order = dowhy_rank(normal, faulty, edges, symptom)
                secs["dowhy_gcm"] += time.perf_counter() - t
                ranks["dowhy_gcm"].append(order.index(root) + 1 if root in order else None)
            print(
                f"  {suite}/{case} root={root} ({answers[case]['fault_type']}): "
                + ", ".join(f"{m}#{r[-1]}" for m, r in ranks.items()),
                flush=True,
            )
        out[suite] = {
            m: {"top1": topk(r, 1), "top3": topk(r, 3), "n": len(r), "seconds": round(secs.get(m, 0.0), 2)}
            for m, r in ranks.items()
        }
    return out


def simple_baselines(normal, faulty, edges, symptom: str) -> dict[str, list[str]]:
    """The three shipped baselines, recomputed (for variants of the cases they were not run on)."""
    import networkx as nx

    g = nx.DiGraph(edges)
    anc = nx.ancestors(g, symptom) if symptom in g else set()
    cols = [c for c in normal.columns if c != symptom]
    z = {c: abs(faulty[c].mean() - normal[c].mean()) / (normal[c].std() + 1e-12) for c in cols}
    resid = {}
    for c in cols:
        parents = list(g.predecessors(c)) if c in g else []
        x_n = np.column_stack([np.ones(len(normal))] + [normal[p] for p in parents])
        x_f = np.column_stack([np.ones(len(faulty))] + [faulty[p] for p in parents])
        beta = np.linalg.lstsq(x_n, normal[c], rcond=None)[0]
        r_n, r_f = normal[c] - x_n @ beta, faulty[c] - x_f @ beta
        resid[c] = abs(r_f.mean() - r_n.mean()) / (r_n.std() + 1e-12)
    return {
        "zshift": sorted(cols, key=lambda c: -z[c]),
        "zshift_anc": sorted(cols, key=lambda c: (c not in anc, -z[c])),
        "resid_lin": sorted(cols, key=lambda c: (c not in anc, -resid[c])),
    }


def bench_causalassembly_few_rows(n_rows: int = 30) -> dict:
    """Harder variant of the same cases: only `n_rows` faulty rows (seeded sample) per case."""
    import pandas as pd

    out: dict = {}
    for suite in SUITES:
        sdir = CA / suite
        answers = json.loads((sdir / "answers.json").read_text())
        edges = list(pd.read_csv(sdir / "dag_edges.csv")[["source", "target"]].itertuples(index=False, name=None))
        ranks: dict[str, list[int | None]] = {"linelab": [], "zshift": [], "zshift_anc": [], "resid_lin": []}
        for case in sorted(answers):
            cdir = sdir / "cases" / case
            symptom = json.loads((cdir / "case.json").read_text())["symptom"]["variable"]
            root = answers[case]["root_cause"]
            normal = pd.read_csv(cdir / "normal.csv.gz")
            faulty = pd.read_csv(cdir / "faulty.csv.gz").sample(n_rows, random_state=0)
            dx = Diagnoser(dag=edges, attribution=False).fit(normal, faulty, target=symptom)
            ranks["linelab"].append(dx.rank_of(root))
            for m, order in simple_baselines(normal, faulty, edges, symptom).items():
                ranks[m].append(order.index(root) + 1)
        out[suite] = {m: {"top1": topk(r, 1), "top3": topk(r, 3), "n": len(r)} for m, r in ranks.items()}
    return out


def stages_of(columns) -> dict[str, int]:
    """The line's order, as a plant engineer knows it: StationK_mp_N is taken at station K."""
    return {c: int(c.split("_")[0].removeprefix("Station")) for c in columns if c.startswith("Station")}


def generated_case(g, rng: np.random.Generator, n_normal: int = 1000, n_faulty: int = 200):
    """One root-cause case on the real assembly line's DAG with mechanisms drawn afresh: each
    measurement is a weighted sum of nonlinear functions of its parents (identity, tanh, a
    centred square, sine) plus noise, parents explaining 30-80 % of its variance. One measurement
    with descendants at the last station gets a fault (a mean shift of 1.5-3 sds, a new mechanism,
    or noise 2-4 times larger); the symptom is the last-station descendant that moved most.
    Returns (normal, faulty, symptom, root, fault type), or None when no descendant moved clearly."""
    import networkx as nx
    import pandas as pd
    from scipy.stats import ks_2samp

    funcs = [lambda x: x, np.tanh, lambda x: (x * x - 1) / np.sqrt(2), np.sin]
    order = list(nx.topological_sort(g))
    last = {n for n in g if n.startswith("Station5")}
    mech = {}
    for n in order:
        parents = list(g.predecessors(n))
        mech[n] = ([(p, float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.5)), int(rng.integers(len(funcs))))
                    for p in parents], float(rng.uniform(0.3, 0.8)))
    roots = [n for n in order if len(nx.descendants(g, n) & last) >= 1]
    root = str(rng.choice(roots))
    kind = str(rng.choice(["shift", "soft", "scale"]))
    if kind == "soft" and not mech[root][0]:
        kind = "shift"
    fault_terms = [(p, float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.5)), int(rng.integers(len(funcs))))
                   for p, _, _ in mech[root][0]]
    delta = float(rng.choice([-1, 1]) * rng.uniform(1.5, 3.0))
    scale = float(rng.uniform(2.0, 4.0))

    def simulate(n: int, faulty: bool, norm: dict) -> dict[str, np.ndarray]:
        x: dict[str, np.ndarray] = {}
        for node in order:
            terms, r2 = mech[node]
            if faulty and node == root and kind == "soft":
                terms = fault_terms
            raw = sum((w * funcs[f](x[p]) for p, w, f in terms), np.zeros(n))
            if node not in norm:
                norm[node] = (float(raw.mean()), float(raw.std()) or 1.0)
            mu, sd = norm[node]
            noise = rng.normal(0, 1, n) * (scale if faulty and node == root and kind == "scale" else 1.0)
            v = (np.sqrt(r2) * (raw - mu) / sd if terms else 0.0) + np.sqrt(1 - r2 if terms else 1.0) * noise
            x[node] = v + (delta if faulty and node == root and kind == "shift" else 0.0)
        return x

    norm: dict = {}
    normal = pd.DataFrame(simulate(n_normal, False, norm))
    faulty = pd.DataFrame(simulate(n_faulty, True, norm))
    moved = {d: ks_2samp(normal[d], faulty[d]).statistic for d in nx.descendants(g, root) & last}
    if not moved:
        return None
    symptom = max(moved, key=lambda d: moved[d])
    if moved[symptom] < 0.25:
        return None
    return normal, faulty, symptom, root, kind


def bench_causalassembly_generated(n_cases: int, seed: int = 1000) -> dict:
    """Cases generated afresh on the real DAG (never seen while developing): LineLab with the
    graph, with the stations' order only, and with neither, beside the z-shift ranking."""
    from networkx.readwrite import json_graph

    g = json_graph.adjacency_graph(json.loads((CA.parent / "ground_truth.json").read_text()))
    ranks: dict[str, list[int | None]] = {"linelab": [], "linelab_stages": [], "linelab_no_graph": [], "zshift": []}
    misses: list[str] = []
    k = seed
    while len(ranks["zshift"]) < n_cases:
        rng = np.random.default_rng(k)
        k += 1
        case = generated_case(g, rng)
        if case is None:
            continue
        normal, faulty, symptom, root, kind = case
        fitted = {m: Diagnoser(attribution=False, **kw).fit(normal, faulty, symptom)
                  for m, kw in (("linelab", {"dag": list(g.edges)}), ("linelab_stages", {"stages": stages_of(normal)}),
                                ("linelab_no_graph", {}))}
        for m, dx in fitted.items():
            ranks[m].append(dx.rank_of(root))
        cols = [c for c in normal.columns if c != symptom]
        z = {c: abs(faulty[c].mean() - normal[c].mean()) / (normal[c].std() + 1e-12) for c in cols}
        ranks["zshift"].append(sorted(cols, key=lambda c: -z[c]).index(root) + 1)
        if ranks["linelab_stages"][-1] != 1:
            first = fitted["linelab_stages"].causes_[0].factor if fitted["linelab_stages"].causes_ else None
            misses.append(f"seed {k - 1} {kind} root {root} symptom {symptom}: stages #{ranks['linelab_stages'][-1]}"
                          f" (first {first}), graph #{ranks['linelab'][-1]}, neither #{ranks['linelab_no_graph'][-1]}")
    out = {m: {"top1": topk(r, 1), "top3": topk(r, 3), "n": len(r)} for m, r in ranks.items()}
    out["misses_stages"] = misses
    return out


TYPES = list(PROBLEM_TYPES)
SUPPLIERS = {"CAP-22UF": ["NORVIK", "SANWA", "CORELIA"], "IND-4R7": ["TAMARU", "SANWA"]}


def problem(kind: str, rng: np.random.Generator, onset: int, pid: str) -> dict:
    p: dict = {"id": pid, "type": kind, "onset": onset}
    if kind == "stencil_clog":
        p["magnitude"] = float(rng.uniform(3.0, 5.0))
    elif kind == "nozzle_wear":
        p.update(machine=str(rng.choice(["P1", "P2"])), nozzle=str(rng.choice(["N1", "N2", "N3", "N4"])))
        p.update(magnitude=float(rng.uniform(0.06, 0.08)), ramp=3000)
    elif kind == "bad_lot":
        material = str(rng.choice(list(SUPPLIERS)))
        p.update(material=material, supplier=str(rng.choice(SUPPLIERS[material])), magnitude=3.0)
    elif kind == "reflow_zone_loss":
        p.update(zone=int(rng.choice([6, 7])), magnitude=float(rng.uniform(3.0, 5.0)), ramp=2000)
    elif kind == "shift_handling":
        p.update(shift=str(rng.choice(["A", "B", "C"])), magnitude=3.5)
    elif kind == "tester_drift":
        p.update(tester=str(rng.choice(["T1", "T2"])), magnitude=0.05, ramp=3000)
    else:
        p.update(magnitude=25.0, duration=8000)
    return p


def twin_scenarios(quick: bool) -> list[tuple[str, int, list[str]]]:
    """(name, seed, problem types): every type alone (3 seeds) and ten overlapping pairs."""
    singles = [(f"{t}-s{s}", 100 + 10 * i + s, [t]) for i, t in enumerate(TYPES) for s in range(3)]
    pairs = [
        (f"{TYPES[i % 7]}+{TYPES[(i + 2 + i // 7) % 7]}", 500 + i, [TYPES[i % 7], TYPES[(i + 2 + i // 7) % 7]])
        for i in range(10)
    ]
    if quick:
        return [singles[13], pairs[1]]
    return singles + pairs


def oracle_spec(ws, truth: dict, order: list[str]):
    """The problem as a monitor would report it: its defect codes since its onset."""
    from datetime import datetime

    from linelab.diagnose.workspace import SymptomSpec

    if not truth.get("onset_time"):
        return None
    codes = truth["symptoms"]["defect_codes"]
    lits = ", ".join("'" + c + "'" for c in codes)
    seen = [
        r["station"] for r in ws.query(f"SELECT DISTINCT station FROM steps WHERE defect_code IN ({lits})").to_pylist()
    ]
    station = max(seen, key=order.index) if seen else truth["symptoms"]["station"]
    end = datetime.fromisoformat(truth["end_time"]) if truth.get("end_time") else None
    return SymptomSpec(
        datetime.fromisoformat(truth["onset_time"]), end, station=station, defect_codes=codes, any_failure=True
    )


def names_of(truth: dict) -> set[str]:
    return {str(truth["cause"]["level"])} | {str(a["level"]) for a in truth["accept"]}


def cause_name(c) -> str:
    if c.entity is not None:
        return str(c.entity.name)
    return str(c.level if c.level is not None else c.factor)


def rate_ratio_baseline(ws, spec) -> list[str]:
    """Baseline: every categorical level ranked by its incident defect rate over the other levels'."""
    from linelab.diagnose.workspace import unit_table

    tbl, _, _ = unit_table(ws, spec)
    inc = tbl.filter(pc_equal(tbl.column("incident"), 1))
    y = np.asarray(inc.column("symptom").to_numpy(zero_copy_only=False), dtype=float)
    ok = np.isfinite(y)
    scored = []
    for name in inc.column_names:
        if name in ("unit_id", "t_start", "incident", "symptom"):
            continue
        col = inc.column(name)
        if not (col.type == "string" or str(col.type) == "string"):
            continue
        v = np.asarray(col.to_pylist(), dtype=object)[ok]
        levels, codes = np.unique(v.astype(str), return_inverse=True)
        n = np.bincount(codes, minlength=levels.size)
        d = np.bincount(codes, weights=y[ok], minlength=levels.size)
        rest_n, rest_d = n.sum() - n, d.sum() - d
        ratio = ((d + 0.5) / (n + 1)) / ((rest_d + 0.5) / (rest_n + 1))
        for lv, r, k in zip(levels, ratio, n, strict=True):
            if k >= 30 and lv != "None":
                scored.append((float(r), lv))
    return [lv for _, lv in sorted(scored, reverse=True)]


def pc_equal(col, value):
    import pyarrow.compute as pc

    return pc.equal(col, value)


def print_ranking(report, k: int = 5) -> None:
    """The top causes with what decided their order (for looking into a miss)."""
    for c in report.causes[:k]:
        share = c.share if c.share is None else round(c.share, 2)
        flags = [f"explained_by={c.explained_by}"] if c.explained_by else []
        flags += [f"confounded_with={c.confounded_with}"] if c.confounded_with else []
        flags += [] if c.upstream else ["not upstream"]
        print(
            f"      #{c.rank} {c.label:38s} {c.kind:11s} score={c.score:6.1f} q={c.q_value:.1e} "
            f"share={share} ({c.details.get('share_method')}) effect={c.effect:.3g} " + " ".join(flags),
            flush=True,
        )


def bench_twin(quick: bool, show_misses: bool = False) -> dict:
    import shutil
    import tempfile

    from linelab.diagnose.workspace import diagnose_spec, station_order
    from linelab.store import Workspace
    from linelab.twin import Line, parse_scenario

    units = 12_000 if quick else 22_000
    ranks: dict[str, list[int | None]] = {"linelab": [], "rate_ratio": []}
    flagged, seconds, rows = 0, [], []
    tmp = Path(tempfile.mkdtemp(prefix="linelab-bench-"))
    try:
        for name, seed, kinds in twin_scenarios(quick):
            rng = np.random.default_rng(seed)
            probs = [problem(k, rng, int(rng.integers(6000, 9000)) + 2500 * i, f"{k}-{i}") for i, k in enumerate(kinds)]
            sc = {"name": name.replace("+", "_"), "units": units, "problems": probs}
            if "stencil_clog" in kinds:
                sc["maintenance"] = {"stencil_clean_every": 20000}
            line = Line(parse_scenario(sc), seed=seed)
            ws = Workspace.open(tmp / f"ws-{seed}")
            for _ in range(0, units, 8000):
                ws.ingest_tables(line.produce(8000).tables, source=f"twin:{name}:{seed}")
            order = station_order(ws)
            truths = line.truth
            for truth in truths:
                # overlapping problems that share a defect code share the symptom: naming the
                # other one's cause first is right too (not when their codes differ)
                codes = set(truth["symptoms"]["defect_codes"])
                all_names = set().union(*(names_of(t) for t in truths if codes & set(t["symptoms"]["defect_codes"])))
                spec = oracle_spec(ws, truth, order)
                if spec is None:
                    continue
                t0 = time.perf_counter()
                report = diagnose_spec(ws, spec)
                seconds.append(time.perf_counter() - t0)
                mine = names_of(truth)
                got = [cause_name(c) for c in report.causes]
                first_ok = bool(got) and got[0] in all_names
                rank = next((i + 1 for i, g in enumerate(got) if g in mine), None)
                if rank is not None and rank > 1 and first_ok:
                    rank = 1
                ranks["linelab"].append(rank)
                base = rate_ratio_baseline(ws, spec)
                b_rank = next((i + 1 for i, g in enumerate(base) if g in mine), None)
                if b_rank is not None and b_rank > 1 and base and base[0] in all_names:
                    b_rank = 1
                ranks["rate_ratio"].append(b_rank)
                top = report.causes[0] if report.causes else None
                conf = bool(top and top.confounded_with)
                flagged += conf
                rows.append((name, truth["type"], rank, b_rank, top.label if top else None, conf))
                label = top.label if top else None
                print(
                    f"  {name:40s} {truth['type']:18s} linelab#{rank} rate_ratio#{b_rank} top={label}"
                    + (" [confounded]" if conf else "")
                    + f" ({seconds[-1]:.1f}s)",
                    flush=True,
                )
                if show_misses and rank != 1:
                    print_ranking(report)
            ws.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(ranks["linelab"])
    return {
        "scenarios": len(twin_scenarios(quick)),
        "cases": n,
        "units_per_scenario": units,
        **{m: {"top1": topk(r, 1), "top3": topk(r, 3)} for m, r in ranks.items()},
        "confounded_flagged_share": round(flagged / n, 3) if n else None,
        "seconds_per_diagnosis": round(float(np.mean(seconds)), 2) if seconds else None,
        "dowhy": "not run: the twin's causes are categorical levels with no structural causal model to fit",
    }


def bench_history(units: int, runs: int = 3) -> dict:
    """Build a twin workspace of `units` units with one late problem; time its diagnosis."""
    import shutil
    import tempfile

    from linelab.diagnose.workspace import diagnose_spec, station_order
    from linelab.store import Workspace
    from linelab.twin import Line, parse_scenario

    onset = max(units - 25_000, units // 2)
    prob = {"id": "oven-1", "type": "reflow_zone_loss", "onset": onset, "zone": 6, "magnitude": 4.0, "ramp": 2000}
    line = Line(parse_scenario({"name": "history", "units": units, "problems": [prob]}), seed=42)
    tmp = Path(tempfile.mkdtemp(prefix="linelab-history-"))
    try:
        ws = Workspace.open(tmp / "ws")
        t0 = time.perf_counter()
        for done in range(0, units, 100_000):
            ws.ingest_tables(line.produce(min(100_000, units - done)).tables, source="twin:history:42")
        build = time.perf_counter() - t0
        truth = line.truth[0]
        spec = oracle_spec(ws, truth, station_order(ws))
        seconds, report = [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            report = diagnose_spec(ws, spec)
            seconds.append(time.perf_counter() - t0)
        n_units = ws.scalar("SELECT count(*) FROM units")
        ws.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    top = cause_name(report.causes[0]) if report.causes else None
    return {
        "units": int(n_units),
        "onset_unit": onset,
        "build_seconds": round(build, 1),
        "diagnosis_seconds": [round(x, 2) for x in seconds],
        "median_seconds": round(float(np.median(seconds)), 2),
        "top": top,
        "cause_first": top in names_of(truth),
    }


# -- the zoo: diagnosis alone, on lines LineLab was not written for ---------------------------
# a truth's cause kind -> the entity kinds a diagnosis may name it by
ZOO_TYPE_OF_ENTITY = {"machine": {"machine", "fixture"}, "lot": {"lot"}, "shift": {"shift"},
                      "operator": {"operator"}, "product": {"product"},
                      "param": {"param", "signal", "measurement", "environment", "continuous"},
                      "signal": {"param", "signal", "measurement", "environment", "continuous"}}
ZOO_FAILURES = {"bad_lot_fails", "aliased_lot", "shift_handling", "operator_handling", "intermittent"}
ZOO_AFFECTED = 300  # affected units at diagnosis (a monitor has seen the problem by then)
ZOO_MIN_EXTRA_FAILS = 10  # ... and, for a problem that fails units, this many extra failures


def zoo_plan(quick: bool, seeds: str) -> list[tuple[str, int]]:
    """(scenario, seed): every problem type of every kind, obvious and subtle in turn (as bench/zoo.py)."""
    from linelab.zoo import KINDS
    from linelab.zoo.simulator import problem_types

    base = 100 if seeds == "tune" else 0
    runs = []
    for k, kind in enumerate(KINDS):
        for i, t in enumerate(problem_types(kind)):
            runs.append((f"{kind}:{t}" + (":subtle" if (i + k) % 2 else ""), base + i))
    if quick:
        keep = ("assembly:bad_lot_fails", "assembly:operator_handling", "machining:machine_step",
                "meddev:env_excursion", "process:shift_handling", "process:lot_shift")
        runs = [r for r in runs if r[0].split(":subtle")[0] in keep]
    return runs


def zoo_cause_rank(causes: list[dict], truth: dict) -> int | None:
    """1-based rank of the truth's cause (or an accepted alternative) among ranked causes."""
    want = [truth["cause"], *(truth.get("accept") or [])]
    for rank, c in enumerate(causes, 1):
        for w in want:
            kinds = ZOO_TYPE_OF_ENTITY.get(w["kind"], {w["kind"]})
            same = str(c["type"]) in kinds and w["name"] in {str(c["name"]), str(c["level"])}
            if same and (w["kind"] != "machine" or c["station"] in (None, w.get("station"))):
                return rank
    return None


def _zoo_case(scenario: str, seed: int, pid: str, tmp: Path, show_misses: bool = False) -> dict:
    """Produce one zoo run up to a problem's onset plus a modest number of affected units; diagnose it."""
    from datetime import datetime

    from linelab.diagnose.workspace import SymptomSpec, diagnose_spec, rising_codes
    from linelab.profile.io import save_profile
    from linelab.store import Workspace
    from linelab.zoo import open_line

    line = open_line(scenario, seed)
    step = max(20, line.kind.chunk // 5)
    ws = Workspace.open(tmp / "ws")
    save_profile(line.profile, tmp / "ws" / "profile.yaml")
    truth = next(t for t in line.truth if t["id"] == pid)
    try:
        while line.units_produced < line.run_units:
            before = truth["onset_unit"] - line.units_produced
            n = before if before > 0 else step
            ws.ingest_tables(line.produce(min(n, line.run_units - line.units_produced)), source=line.source)
            truth = next(t for t in line.truth if t["id"] == pid)
            if line.units_produced <= truth["onset_unit"]:
                continue
            enough = truth["affected_units"] >= ZOO_AFFECTED and (
                truth["type"] not in ZOO_FAILURES or truth["extra_failures"] >= ZOO_MIN_EXTRA_FAILS)
            if enough or truth["affected_units"] >= 8 * ZOO_AFFECTED or truth["status"] == "ended":
                break
        onset = datetime.fromisoformat(truth["onset_time"])
        sym = truth["symptom"]
        if truth["type"] in ZOO_FAILURES:
            codes = rising_codes(ws, sym["station"], onset, None)
            spec = SymptomSpec(onset, None, station=sym["station"], defect_codes=codes or None)
        else:
            spec = SymptomSpec(onset, None, station=sym["station"], measurement=sym["reading"])
        t0 = time.perf_counter()
        try:
            report = diagnose_spec(ws, spec)
            error = None
        except Exception as e:  # a diagnosis that cannot run is a miss, with its reason
            report, error = None, f"{type(e).__name__}: {e}"[:200]
        seconds = time.perf_counter() - t0
    finally:
        ws.close()
    causes = []
    for c in (report.causes if report else [])[:10]:
        ent = c.entity
        causes.append({"type": ent.kind if ent else c.kind, "name": ent.name if ent else c.factor, "level": c.level,
                       "station": ent.station if ent else None, "label": c.label})
    rank = zoo_cause_rank(causes, truth)
    if show_misses and rank != 1 and report is not None:
        print(f"    {scenario}#{seed} {pid}: truth {truth['cause']}, symptom {spec.measurement or spec.defect_codes}")
        print_ranking(report, max(5, min(rank or 8, 10)))
    return {"scenario": scenario, "seed": seed, "problem": pid, "kind": scenario.split(":")[0],
            "type": truth["type"], "severity": truth["severity"], "cause": truth["cause"],
            "affected": truth["affected_units"], "extra_failures": truth["extra_failures"],
            "symptom": spec.measurement or f"failures at {spec.station} {spec.defect_codes or ''}",
            "rank": rank, "above": [c["label"] for c in causes[: (rank or 4) - 1]][:5], "error": error,
            "seconds": round(seconds, 2)}


def bench_zoo(quick: bool, seeds: str, show_misses: bool = False, only: str | None = None) -> dict:
    import shutil
    import tempfile

    from linelab.zoo import open_line

    cases: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="linelab-zoo-dx-"))
    try:
        for scenario, seed in zoo_plan(quick, seeds):
            if only and not re.search(only, scenario):
                continue
            for t in open_line(scenario, seed).truth:
                d = tmp / f"{scenario.replace(':', '_')}-{seed}-{t['id']}"
                d.mkdir()
                case = _zoo_case(scenario, seed, t["id"], d, show_misses)
                shutil.rmtree(d, ignore_errors=True)
                cases.append(case)
                print(f"  {scenario:34s} #{seed:<3} {case['problem']:22s} {case['cause']['kind']:8s} "
                      f"{case['cause']['name']:14s} rank {case['rank']!s:>4}  ({case['seconds']:.1f}s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def summary(sub: list[dict]) -> dict:
        return {"n": len(sub), "first": round(sum(c["rank"] == 1 for c in sub) / len(sub), 3),
                "top3": round(sum(c["rank"] is not None and c["rank"] <= 3 for c in sub) / len(sub), 3)}

    def per(key: str) -> dict:
        return {k: summary([c for c in cases if c[key] == k]) for k in sorted({c[key] for c in cases})}

    return {"seeds": seeds, **summary(cases), "per_kind": per("kind"), "per_problem": per("type"),
            "seconds_per_diagnosis": round(float(np.mean([c["seconds"] for c in cases])), 2),
            "misses": [f"{c['scenario']}#{c['seed']} {c['problem']}: {c['cause']['kind']} {c['cause']['name']} "
                       f"rank {c['rank']}" + (f" ({c['error']})" if c["error"] else "")
                       + f"; above it: {', '.join(c['above'])}" for c in cases if c["rank"] != 1],
            "cases": cases}


def print_zoo(zr: dict) -> None:
    print(f"  zoo: cause first {zr['first']}, top-3 {zr['top3']} over {zr['n']} problems "
          f"({zr['seconds_per_diagnosis']} s per diagnosis)")
    for key in ("per_kind", "per_problem"):
        for g, v in zr[key].items():
            print(f"    {g:18s} n={v['n']:>2}  first {v['first']:.2f}  top-3 {v['top3']:.2f}")
    print(f"  misses ({len(zr['misses'])}):")
    for m in zr["misses"]:
        print(f"    {m}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few cases per data set, under 30 s")
    ap.add_argument("--no-dowhy", action="store_true", help="skip DoWhy even if it is installed")
    ap.add_argument("--no-twin", action="store_true", help="skip the twin scenarios and the long history")
    ap.add_argument("--only", choices=["twin", "causalassembly", "history", "zoo"], help="run one part only")
    ap.add_argument("--seeds", choices=("tune", "report"), default="tune",
                    help="zoo seeds: tune = 100+ (default), report = 0+ (never tuned on)")
    ap.add_argument("--history", type=int, help="units in the long-history timing (default 1e6, 1e5 with --quick)")
    ap.add_argument("--show-misses", action="store_true", help="print the top causes of every twin or zoo miss")
    ap.add_argument("--scenarios", help="zoo: only the scenarios matching this regular expression")
    args = ap.parse_args()
    try:
        import dowhy  # noqa: F401

        use_dowhy = not (args.quick or args.no_dowhy)
    except ImportError:
        use_dowhy = False
    t0 = time.perf_counter()
    result: dict = {"bench": "diagnose", "quick": args.quick}
    if args.only:
        result["only"] = args.only
    if args.only in (None, "causalassembly"):
        print("causalAssembly root-cause cases (top-1 / top-3):")
        ca = bench_causalassembly(args.quick, use_dowhy)
        for suite, methods in ca.items():
            for m, r in methods.items():
                print(
                    f"  {suite:18s} {m:11s} top1={r['top1']:.2f} top3={r['top3']:.2f} n={r['n']} ({r['seconds']:.1f}s)"
                )
        result["causalassembly"] = ca
    if not args.quick and args.only in (None, "causalassembly"):
        print("causalAssembly, same cases with only 30 faulty rows each (baselines recomputed):")
        few = bench_causalassembly_few_rows(30)
        for suite, methods in few.items():
            for m, r in methods.items():
                print(f"  {suite:18s} {m:11s} top1={r['top1']:.2f} top3={r['top3']:.2f} n={r['n']}")
        result["causalassembly_30_rows"] = few
    if args.only in (None, "causalassembly"):
        n_gen = 8 if args.quick else 40
        print(f"causalAssembly DAG, {n_gen} cases generated afresh (seeds 1000+): graph, stations' order, neither:")
        gen = bench_causalassembly_generated(n_gen)
        for m, r in gen.items():
            if m != "misses_stages":
                print(f"  generated          {m:16s} top1={r['top1']:.2f} top3={r['top3']:.2f} n={r['n']}")
        for line in gen["misses_stages"]:
            print(f"    {line}")
        result["causalassembly_generated"] = gen
    try:
        import linelab.twin  # noqa: F401

        twin_ok = not args.no_twin
    except ImportError:
        twin_ok = False
    if twin_ok and args.only in (None, "twin"):
        print("twin scenarios (top-1 / top-3 of the injected cause):")
        tw = bench_twin(args.quick, args.show_misses)
        for m in ("linelab", "rate_ratio"):
            print(f"  twin {m:11s} top1={tw[m]['top1']:.2f} top3={tw[m]['top3']:.2f} n={tw['cases']}")
        print(f"  confounded flagged: {tw['confounded_flagged_share']}; {tw['seconds_per_diagnosis']} s per diagnosis")
        result["twin"] = tw
    if args.only in (None, "zoo"):
        print(f"zoo lines, diagnosis from the truth's symptom (seeds {args.seeds}):")
        zr = bench_zoo(args.quick, args.seeds, args.show_misses, args.scenarios)
        print_zoo(zr)
        result["zoo"] = {k: v for k, v in zr.items() if k != "cases"}
    units = args.history if args.history is not None else (100_000 if args.quick else 1_000_000)
    if twin_ok and units > 0 and args.only in (None, "history"):
        print(f"long history: {units:,} units, one oven-zone loss near the end")
        hi = bench_history(units)
        print(
            f"  built in {hi['build_seconds']} s; diagnosis {hi['diagnosis_seconds']} s "
            f"(median {hi['median_seconds']} s); top={hi['top']} cause first: {hi['cause_first']}"
        )
        result["history"] = hi
    result["dowhy"] = use_dowhy
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
