"""Deploy benchmark: models on the line, judged by the line's own results.

On the twin (scenario `bad_lot`) and on a zoo line (`assembly:bad_lot_fails`), each run fresh:

1. Predictor: a failure predictor trained on the first units, deployed full, scored on the units
   that follow: its live precision and recall at its operating point, and the cost it saved
   (inspection, test, escape and failure costs at the defaults of `linelab.deploy.registry.Costs`)
   against running with no model (the baseline, saving 0) — per unit and in total.
2. Shuffled-label canary: a model trained on permuted labels, made to fill the inspection's capacity
   (left to its own operating point it would inspect nothing: its holdout shows no gain), goes canary
   (10 % of units) beside the good incumbent; units are produced and scored in chunks with a review
   after each. Reported: units it scored until rolled back, and units it mis-routed before that.
3. Trained model: the predictor as canary against no model; units until it is promoted to full, or
   withdrawn. The right verdict is the one its own live record (section 1) supports: promoted where it
   saved money deployed full, withdrawn where it lost (`right_verdict`).
4. A/A: two models of equal skill on simulated score streams (vectorised), the paired always-valid
   test run over each stream: the false-promotion rate over `--aa-runs` runs (target <= 0.05).
5. Serving: `POST /score` (one unit, its features read from the workspace, or handed in with the
   request as a station would: `score_sent`; a full model and a shadow score it, the decision is
   recorded) on a `linelab serve` process, 8 concurrent clients (keep-alive connections; the
   clients' own CPU per request is reported, far below the server's), against the bare endpoint
   `GET /score/ping` of the same server in the same run (before and after): p50 / p99 in ms
   (target p99 <= 20 ms); one request's CPU time in process (scoring alone) and in the server
   (from /proc, one client at a time: what each request costs it); batch scoring in units per second.
   With 8 clients and no pause between requests, a request waits for the others' CPU time: on a
   machine that gives the server one free core, p50 is about 8 x the server's CPU per request.

`--quick` uses smaller runs. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from linelab.act.simulation import open_workspace_line, record_simulation  # noqa: E402
from linelab.commands import call  # noqa: E402
from linelab.deploy import live, predict, registry, rollout, scoring  # noqa: E402
from linelab.deploy.features import unit_features  # noqa: E402
from linelab.deploy.registry import Costs  # noqa: E402
from linelab.deploy.sequential import PairedTest  # noqa: E402
from linelab.line import open_simulator  # noqa: E402
from linelab.store import Workspace  # noqa: E402

# (simulator, scenario, units to train on): each trains on its problem's first 1,500 units or so
# (the twin's bad capacitor lot is first loaded at unit 19,850, the zoo's bad seal lot near 5,600).
LINES = [("twin", "bad_lot", 21500), ("zoo", "assembly:bad_lot_fails", 7600)]


def build(root: Path, simulator: str, scenario: str, units: int) -> str:
    """A workspace of the line's first `units` units; returns the station the predictor guards."""
    line = open_simulator(simulator, scenario, 0)
    with Workspace.open(root) as ws:
        while line.units_produced < units:
            ws.ingest_tables(line.produce(min(2000, units - line.units_produced)), source=line.source)
        record_simulation(ws, line, simulator, scenario, 0)
        # the station whose first visits fail most: where a predictor saves most
        row = ws.query("SELECT station, count(*) FILTER (WHERE r <> 'pass') AS f FROM (SELECT unit_id, station, "
                       "arg_min(result, t_in) AS r FROM steps GROUP BY ALL) GROUP BY station ORDER BY f DESC LIMIT 1")
    return str(row.column("station")[0].as_py())


def produce(root: Path, units: int) -> None:
    with Workspace.open(root) as ws:
        held = open_workspace_line(ws)
        ws.ingest_tables(held.line.produce(units), source=held.source)


def predictor_live(root: Path, station: str, units: int) -> dict[str, Any]:
    call("model promote", root, version="M-0001", to="full", force=True)
    produce(root, units)
    call("model score", root, station=station, review=False)
    with Workspace.open(root) as ws:
        ev = live.evidence(ws, rollout.get(ws, station), "M-0001")
    m = ev["live"]
    return {"units": ev["labelled"], "bad_rate": m["bad_rate"], "precision": m["precision"], "recall": m["recall"],
            "lift": (m["precision"] or 0) / m["bad_rate"] if m["bad_rate"] else None,
            "saving_per_unit": m["saving_per_unit"], "cost_saved": m["saving_per_unit"] * ev["labelled"],
            "baseline_saving": 0.0, "escape_rate": m["escape_rate"], "passed": m["passed"]}


def until(root: Path, station: str, version: str, stop: str, chunk: int, limit: int) -> dict[str, Any]:
    """Produce and score in chunks (review after each) until `version` is rolled back or made full."""
    produced = 0
    while produced < limit:
        produce(root, chunk)
        produced += chunk
        changes = call("model score", root, station=station).changes
        hit = [c for c in changes if c["version"] == version and c["to"] in (stop, "retired", "full")]
        if hit:
            e = hit[0]["evidence"]
            return {"outcome": hit[0]["to"], "as_expected": hit[0]["to"] == stop, "units": e["labelled"],
                    "misrouted": e["misrouted"], "reason": hit[0]["reason"], "produced": produced}
    return {"outcome": "still live", "as_expected": False, "units": None, "misrouted": None,
            "reason": f"no verdict within {limit} units", "produced": produced}


def one_line(work: Path, simulator: str, scenario: str, train_units: int, a: argparse.Namespace) -> dict[str, Any]:
    base = work / f"{simulator}-base"
    t0 = time.perf_counter()
    station = build(base, simulator, scenario, train_units)
    good = call("model train", base, station=station).model
    call("model train", base, station=station, shuffle_labels=True, fill_capacity=True)
    trained_s = time.perf_counter() - t0
    out: dict[str, Any] = {"scenario": f"{simulator}:{scenario}", "station": station, "train_s": round(trained_s, 1),
                           "holdout": {k: good["metrics"][k] for k in ("auc", "precision", "recall", "bad_rate")}}
    runs = {}
    for name in ("predictor", "shuffled", "promote"):
        runs[name] = work / f"{simulator}-{name}"
        shutil.copytree(base, runs[name])
    out["predictor"] = predictor_live(runs["predictor"], station, a.live_units)
    call("model promote", runs["shuffled"], version="M-0001", to="full", force=True)
    call("model promote", runs["shuffled"], version="M-0002", to="canary", share=0.1)
    out["shuffled_canary"] = until(runs["shuffled"], station, "M-0002", "retired", a.chunk, a.live_units * 3)
    call("model promote", runs["promote"], version="M-0001", to="canary", share=0.1)
    out["good_canary"] = until(runs["promote"], station, "M-0001", "full", a.chunk, a.live_units * 3)
    # The right verdict on the trained model is the one its own live record supports: promoted where,
    # deployed full, it saved money; withdrawn where it lost (a line whose failures it cannot foresee).
    pays = out["predictor"]["saving_per_unit"] > 0
    out["good_canary"]["model_pays_live"] = pays
    out["good_canary"]["right_verdict"] = out["good_canary"]["outcome"] == ("full" if pays else "retired")
    out["serving"] = serving(runs["predictor"], station, a)
    return out


def aa_rate(runs: int, units: int, seed: int = 0) -> dict[str, Any]:
    """Two equally good models on the same units: how often the test promotes one over the other."""
    rng = np.random.default_rng(seed)
    costs = Costs()
    test = PairedTest()
    promoted = wrong = 0
    for _ in range(runs):
        bad = rng.random(units) < 0.05
        # equal skill: the same signal, independent noise; each inspects its own top 10 %
        a = 1.5 * bad + rng.normal(size=units)
        b = 1.5 * bad + rng.normal(size=units)
        da = np.where(a >= np.quantile(a, 0.9), "inspect", "none")
        db = np.where(b >= np.quantile(b, 0.9), "inspect", "none")
        d = predict.savings(db, bad, costs) - predict.savings(da, bad, costs)
        verdict = test.run(d, discordant=da != db)["decision"]
        promoted += verdict == "better"
        wrong += verdict != "continue"
    return {"runs": runs, "units": units, "false_promotion_rate": promoted / runs, "any_verdict_rate": wrong / runs}


async def _client(port: int, k: int, kind: str, n: int, units: list[str], station: str,
                  sent: dict[str, Any]) -> list[float]:
    """One station: `n` requests one after another on one keep-alive connection; their latencies.

    Plain asyncio streams, not httpx: httpx's client cost more CPU per request than the server's
    answer, so on a small machine the clients, not the server, set the latencies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"Host: 127.0.0.1:{port}\r\n"
    lat = []
    try:
        for i in range(n):
            u = units[(k * n + i) % len(units)]
            if kind == "ping":
                request = f"GET /score/ping HTTP/1.1\r\n{head}\r\n".encode()
            else:
                body = {"station": station, "unit_id": u}
                data = json.dumps(body if kind == "score" else {**body, "features": sent[u]}).encode()
                request = (f"POST /score HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                           f"Content-Length: {len(data)}\r\n\r\n").encode() + data
            t0 = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split(b" ", 2)[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(answer.decode(errors="replace"))
    finally:
        writer.close()
    return lat


def serving(root: Path, station: str, a: argparse.Namespace) -> dict[str, Any]:
    """Batch scoring in process; then a `linelab serve` process of its own, asked by 8 clients."""
    call("model train", root, station=station, shuffle_labels=True, seed=1)
    call("model promote", root, version="M-0003", to="shadow")
    with Workspace.open(root) as ws:
        t = time.perf_counter()
        dep = rollout.get(ws, station)
        dep.scored_seq = 0
        rollout.save(ws, dep)
        batch = scoring.score_batch(ws, station)
        batch_s = time.perf_counter() - t
        units = ws.query("SELECT unit_id FROM units ORDER BY unit_id DESC LIMIT 400").column(0).to_pylist()
        spec = registry.get(ws, "M-0001").features  # the shadow reads the same features
        sent = {u: unit_features(ws, spec, u) for u in units}  # what a station hands in with its request
        kept: list[Any] = []  # as the server does it: rows to its writer, the workspace unchanged meanwhile
        scoring.score_unit(ws, station, units[0], store=kept.append, unchanged_since=0)
        c0, t0 = time.process_time(), time.perf_counter()
        for u in units[:100]:  # one after another, in process: what one request costs, free of queueing
            scoring.score_unit(ws, station, u, store=kept.append, unchanged_since=0)
        alone = {"cpu_ms": round((time.process_time() - c0) * 10, 2),
                 "wall_ms": round((time.perf_counter() - t0) * 10, 2)}
    port = _free_port()
    exe = Path(sys.executable).with_name("linelab")
    server = subprocess.Popen([str(exe), "serve", "-w", str(root), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url)

        def client(k: int, kind: str) -> list[float]:
            return asyncio.run(_client(port, k, kind, a.requests, units, station, sent))

        client(0, "score")  # warm up: the server opens the workspace and loads the models once
        # one client, one request after another: the server's own CPU time per request, free of queueing
        alone_server = {}
        for kind in ("ping", "score", "score_sent"):
            before = _cpu_s(server.pid)
            for k in range(4):  # 4 x a.requests: the clock ticks in 10 ms steps
                client(k, kind)
            after = _cpu_s(server.pid)
            alone_server[kind] = (round((after - before) / (4 * a.requests) * 1000, 2)
                                  if before is not None and after is not None else None)
        out: dict[str, Any] = {}

        async def clients(kind: str) -> list[list[float]]:
            return list(await asyncio.gather(*(_client(port, k, kind, a.requests, units, station, sent)
                                               for k in range(8))))

        for kind in ("ping", "score", "score_sent", "ping"):  # the baseline on both sides of the measured runs
            cpu = time.process_time()
            lat = np.concatenate(asyncio.run(clients(kind))) * 1000
            key = kind if kind not in out else "ping_after"
            out[key] = {"p50_ms": round(float(np.percentile(lat, 50)), 2),
                        "p99_ms": round(float(np.percentile(lat, 99)), 2), "requests": int(lat.size),
                        "client_cpu_ms": round((time.process_time() - cpu) * 1000 / lat.size, 3)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"clients": 8, **out, "one_request_in_process": alone, "server_cpu_ms_per_request": alone_server,
            "p99_ratio_vs_bare": round(out["score"]["p99_ms"] / out["ping"]["p99_ms"], 2),
            "batch_units": batch["units"], "batch_versions": len(batch["by_version"]),
            "batch_units_per_s": round(batch["units"] / batch_s, 1)}


def serving_only(a: argparse.Namespace, t0: float) -> dict[str, Any]:
    """Section 5 alone: the zoo line's predictor deployed full, then the serving measurements."""
    simulator, scenario, train_units = LINES[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "serving"
        station = build(root, simulator, scenario, train_units)
        call("model train", root, station=station)
        call("model train", root, station=station, shuffle_labels=True, fill_capacity=True)
        predictor_live(root, station, a.live_units)
        serve = serving(root, station, a)
    return {"bench": "deploy", "section": "serving", "quick": a.quick, "serving": serve,
            "score_p50_ms": serve["score"]["p50_ms"], "score_p99_ms": serve["score"]["p99_ms"],
            "bare_p50_ms": serve["ping"]["p50_ms"], "bare_p99_ms": serve["ping"]["p99_ms"],
            "score_sent_p50_ms": serve["score_sent"]["p50_ms"], "score_sent_p99_ms": serve["score_sent"]["p99_ms"],
            "score_cpu_ms_per_request": serve["one_request_in_process"]["cpu_ms"],
            "server_cpu_ms_per_request": serve["server_cpu_ms_per_request"],
            "batch_units_per_s": serve["batch_units_per_s"], "score_p99_target_met": serve["score"]["p99_ms"] <= 20.0,
            "seconds": round(time.perf_counter() - t0, 1), "load_average": os.getloadavg()[0],
            "cpus": os.cpu_count()}


def _cpu_s(pid: int) -> float | None:
    """A process's CPU time so far (user + system), from /proc; None where there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/score/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the server at {url} did not start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (about a minute or two)")
    ap.add_argument("--aa-runs", type=int, default=None)
    ap.add_argument("--serving-only", action="store_true", help="only section 5 (serving), on the zoo line")
    a = ap.parse_args()
    a.live_units = 1500 if a.quick else 3000
    a.chunk = 100
    a.requests = 50 if a.quick else 250
    aa_runs = a.aa_runs or (200 if a.quick else 1000)
    t0 = time.perf_counter()
    if a.serving_only:
        print(json.dumps(serving_only(a, t0)))
        return
    lines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for simulator, scenario, train_units in LINES:
            lines[simulator] = one_line(Path(tmp), simulator, scenario, train_units, a)
            print(json.dumps(lines[simulator]), file=sys.stderr)
    aa = aa_rate(aa_runs, 3000)
    serve = lines["zoo"]["serving"]
    summary = {name: {"live_precision": ln["predictor"]["precision"], "live_recall": ln["predictor"]["recall"],
                      "lift_vs_base_rate": ln["predictor"]["lift"],
                      "saving_per_unit_vs_no_model": ln["predictor"]["saving_per_unit"],
                      "shuffled_canary": [ln["shuffled_canary"]["outcome"], ln["shuffled_canary"]["units"],
                                          ln["shuffled_canary"]["misrouted"]],
                      "break_even_precision": Costs().inspect / Costs().fail,
                      "holdout_auc": ln["holdout"]["auc"],
                      "good_canary": [ln["good_canary"]["outcome"], ln["good_canary"]["units"]],
                      "good_canary_right_verdict": ln["good_canary"]["right_verdict"]}
               for name, ln in lines.items()}
    result = {
        "bench": "deploy", "quick": a.quick, "summary": summary, "lines": lines, "aa": aa,
        "aa_false_promotion_rate": aa["false_promotion_rate"], "aa_target_met": aa["false_promotion_rate"] <= 0.05,
        "score_p50_ms": serve["score"]["p50_ms"], "score_p99_ms": serve["score"]["p99_ms"],
        "bare_p50_ms": serve["ping"]["p50_ms"], "bare_p99_ms": serve["ping"]["p99_ms"],
        "score_sent_p50_ms": serve["score_sent"]["p50_ms"], "score_sent_p99_ms": serve["score_sent"]["p99_ms"],
        "score_cpu_ms_per_request": serve["one_request_in_process"]["cpu_ms"],
        "server_cpu_ms_per_request": serve["server_cpu_ms_per_request"],
        "batch_units_per_s": serve["batch_units_per_s"],
        "score_p99_target_met": serve["score"]["p99_ms"] <= 20.0,
        "seconds": round(time.perf_counter() - t0, 1), "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
