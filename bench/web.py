"""Workbench page speed: the overview, a problem page and the units lists on a large twin workspace.

    .venv/bin/python bench/web.py [--quick] [--units N] [--workspace DIR] [--repeat R]

Builds (or reuses) a twin workspace (1,000,000 units; `--quick`: 20,000), runs the monitor so it
has problems, serves it with `create_app` under uvicorn in this process, and measures over HTTP:

- server time: how long each page takes to arrive complete (the pages are rendered on the
  server with their data, so this is the time to the first render's content), median of
  `--repeat` requests after one warm-up; beside it, the baseline: a static file served by the
  same server in the same run, and the REST data endpoints the overview is built from;
- after a new ingest batch: a few new units with their steps are posted to `/api/ingest` (as a
  line's data arrive), then each page is timed on its first load after that batch, when nothing
  kept from the batch before may be used; `--after-ingest` times (each with a batch of its own:
  the workspace keeps a few more units after every run). Beside it, in the same run, the baseline:
  the overview's numbers counted over the records (`*_from_records`: yield by station from every
  unit's first visit, the trend, the Pareto), which is what each first load cost before the line
  summary kept them at ingest;
- the units behind a number (`/units` and `POST /api/units`): every unit, those that failed first
  pass, those of the Pareto's first bar (a defect at a station) and the last page of every unit (the
  deepest offset a person can page to);
- in Debian's chromium (when present): time to first render (first contentful paint) and to full data
  (every chart on the page drawn).

Target: each page complete in under 300 ms of server time, the first load after a batch included.
The last line is one JSON object {"bench": "web", ...}, with the machine's load average (timings on
a busy machine read high).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn

from linelab.api import create_app
from linelab.commands import call
from linelab.store import Workspace, queries
from linelab.web import overview_data

TARGET_MS = 300.0
NEW_UNITS = 20  # units in each batch posted before a first load


def build(workspace: Path, units: int) -> None:
    """A twin workspace with `units` units and the monitor's problems (kept for the next run)."""
    if (workspace / "linelab.duckdb").exists():
        return
    t0 = time.perf_counter()
    call("twin run", workspace=workspace, scenario="default", units=units, seed=0)
    call("monitor run", workspace=workspace)
    print(f"built {units:,} units in {time.perf_counter() - t0:.0f} s: {workspace}", flush=True)


def from_records(workspace: Path, repeat: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The baseline: the overview's numbers counted over the records, each timed on its own (median of
    `repeat`); and what a new batch needs to look like the line's (its last start, its stations)."""
    with Workspace.open(workspace) as ws:  # not read-only: a workspace of an older schema is brought up to date
        parts = {"trend": lambda: overview_data.yield_trend_from_records(ws),
                 "stations": lambda: queries.station_yield_from_records(ws),
                 "pareto": lambda: queries.pareto_from_records(ws, top=12)}
        times: dict[str, float] = {}
        for name, compute in parts.items():
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                compute()
                runs.append(1000 * (time.perf_counter() - t0))
            times[name] = round(statistics.median(runs), 1)
        times["total"] = round(sum(times.values()), 1)
        line = {"last_start": ws.scalar("SELECT max(t_start) FROM units"),
                "stations": [r["station"] for r in queries.yield_by(ws, "station").to_pylist()]}
    return times, line


def new_batch(line: dict[str, Any], tag: str) -> list[tuple[str, tuple[str, bytes]]]:
    """Units and steps of NEW_UNITS new units that started in the line's last hour (one fails a
    station, then passes its retest), as the files an upload to /api/ingest carries."""
    units = ["unit_id,product,line,work_order,t_start,t_end,result,first_pass"]
    steps = ["unit_id,station,machine,fixture,operator,shift,recipe_id,t_in,t_out,result,defect_code"]
    start = line["last_start"]
    for i in range(NEW_UNITS):
        serial = f"BENCH-{tag}-{i:03d}"
        t = start - timedelta(minutes=i)
        fails = i == 0
        units.append(f"{serial},bench,L1,,{t},{t + timedelta(minutes=30)},pass,{str(not fails).lower()}")
        for k, station in enumerate(line["stations"]):
            t_in = t + timedelta(minutes=k)
            if fails and k == 0:
                steps.append(f"{serial},{station},,,,,,{t_in},{t_in + timedelta(seconds=20)},fail,BENCH")
                t_in += timedelta(seconds=30)
            steps.append(f"{serial},{station},,,,,,{t_in},{t_in + timedelta(seconds=20)},pass,")
    return [("paths", ("units.csv", ("\n".join(units) + "\n").encode())),
            ("paths", ("steps.csv", ("\n".join(steps) + "\n").encode()))]


def after_ingest(client: httpx.Client, pages: dict[str, str], line: dict[str, Any], times: int) -> dict[str, Any]:
    """Each page's first load after a new batch: `times` batches, median and worst."""
    loads: dict[str, list[float]] = {name: [] for name in pages}
    for n in range(times):
        r = client.post("/api/ingest", files=new_batch(line, f"{time.time_ns()}-{n}"))
        assert r.status_code == 200, f"ingest: {r.status_code} {r.text[:300]}"
        for name, path in pages.items():
            t0 = time.perf_counter()
            page = client.get(path)
            loads[name].append(1000 * (time.perf_counter() - t0))
            assert page.status_code == 200, f"{path}: {page.status_code}"
    return {name: {"median_ms": round(statistics.median(v), 1), "max_ms": round(max(v), 1)}
            for name, v in loads.items()}


def serve(workspace: Path) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(workspace, host="127.0.0.1"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def timed(client: httpx.Client, method: str, url: str, repeat: int, body: Any = None) -> dict[str, float]:
    def once() -> float:
        t0 = time.perf_counter()
        r = client.request(method, url, json=body)
        r.read()
        assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
        return 1000 * (time.perf_counter() - t0)

    first = once()  # warm-up: imports, the workspace opened, caches filled
    runs = [once() for _ in range(repeat)]
    return {"first_ms": round(first, 1), "median_ms": round(statistics.median(runs), 1),
            "max_ms": round(max(runs), 1), "bytes": len(client.request(method, url, json=body).content)}


def browser_times(base: str, paths: dict[str, str]) -> dict[str, dict[str, float]] | None:
    chromium = os.environ.get("LINELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not found: browser timings skipped", flush=True)
        return None
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/workbench/static/workbench.css")  # nothing cached from a page yet
        for name, path in paths.items():
            for visit in ("first", "again"):  # the first visit loads plotly.js, the next has it cached
                t0 = time.perf_counter()
                page.goto(base + path, wait_until="commit")
                page.wait_for_load_state("domcontentloaded")  # a page without charts is whole once parsed
                n = page.locator(".plot").count()
                for i in range(n):
                    page.locator(".plot").nth(i).and_(page.locator("[data-rendered='1']")).wait_for(timeout=60_000)
                # First contentful paint, from the page's own clock: when the tables and numbers showed.
                # Waited for: read at once, a page without charts had not painted yet and gave 0 ms.
                page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0",
                                       timeout=10_000)
                full = 1000 * (time.perf_counter() - t0)  # every chart drawn and the page painted
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
                out[f"{name}_{visit}"] = {"first_render_ms": round(fcp or 0.0, 1), "full_data_ms": round(full, 1),
                                          "charts": n}
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 20,000-unit workspace")
    ap.add_argument("--units", type=int, default=None)
    ap.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (built if missing)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--after-ingest", type=int, default=3, help="batches posted, each before a first load")
    args = ap.parse_args()
    units = args.units or (20_000 if args.quick else 1_000_000)
    tmp = None
    workspace = args.workspace
    if workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="linelab-web-")
        workspace = Path(tmp.name) / "ws"
    build(workspace, units)
    records_ms, line = from_records(workspace, max(1, args.repeat // 2))
    server, thread, base = serve(workspace)
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            problems = client.post("/api/problems", json={}).json()["problems"]
            units_served = client.post("/api/yield", json={"by": "station"}).json()["overall"]["units"]
            worst = max(problems, key=lambda p: p["lost_units"] or 0)["id"] if problems else None
            pages = {"overview": "/"} | ({"problem": f"/problem/{worst}"} if worst else {})
            # The units behind a number, as the overview's links open them.
            bar = (client.post("/api/pareto", json={"top": 1}).json()["rows"] or [None])[0]
            unit_lists: dict[str, dict[str, Any]] = {"all": {}, "failed": {"outcome": "first_pass_fail"}}
            if bar:
                unit_lists["defect"] = {"station": bar["station"], "defect_code": bar["defect_code"]}
            unit_lists["last_page"] = {"offset": max(units_served - 100, 0)}
            pages |= {f"units_{k}": "/units" + (f"?{urlencode(v)}" if v else "") for k, v in unit_lists.items()}
            server_ms = {name: timed(client, "GET", path, args.repeat) for name, path in pages.items()}
            static = timed(client, "GET", "/workbench/static/workbench.css", args.repeat)
            data = {name: timed(client, "POST", f"/api/{name}", args.repeat, body)
                    for name, body in (("yield", {"by": "station"}), ("pareto", {"top": 12}), ("problems", {}))}
            data |= {f"units_{k}": timed(client, "POST", "/api/units", args.repeat, {**v, "limit": 100})
                     for k, v in unit_lists.items()}
            first_after = after_ingest(client, pages, line, args.after_ingest)
        for name, t in server_ms.items():
            print(f"{name:>16}: {t['median_ms']:8.1f} ms median ({t['first_ms']:.0f} ms cold), {t['bytes']:,} bytes; "
                  f"first load after a new batch {first_after[name]['median_ms']:.0f} ms median, "
                  f"{first_after[name]['max_ms']:.0f} ms worst", flush=True)
        print(f"  baseline: the overview's numbers counted over the records {records_ms['total']:.0f} ms ("
              + ", ".join(f"{k} {v:.0f}" for k, v in records_ms.items() if k != "total") + ")", flush=True)
        print(f"   static: {static['median_ms']:8.1f} ms median; data endpoints: "
              + ", ".join(f"{k} {v['median_ms']:.0f} ms" for k, v in data.items()), flush=True)
        browser = browser_times(base, pages)
        if browser:
            for name, t in browser.items():
                print(f"  browser {name}: first render {t['first_render_ms']:.0f} ms, all {t['charts']} chart(s) "
                      f"drawn {t['full_data_ms']:.0f} ms", flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if tmp is not None:
            tmp.cleanup()
    worst_ms = max(max(t["median_ms"] for t in server_ms.values()),
                   max(t["max_ms"] for t in first_after.values()))
    print(json.dumps({
        "bench": "web", "units": units_served, "problems": len(problems), "repeat": args.repeat,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "server_ms": server_ms, "first_load_after_ingest_ms": first_after, "from_records_ms": records_ms,
        "records_over_first_load": round(records_ms["total"] / max(first_after["overview"]["median_ms"], 1e-3), 1),
        "static_ms": static, "data_endpoints_ms": data, "browser": browser,
        "page_over_static": {k: round(v["median_ms"] / max(static["median_ms"], 1e-3), 1)
                             for k, v in server_ms.items()},
        "target_ms": TARGET_MS, "within_target": worst_ms < TARGET_MS,
    }))


if __name__ == "__main__":
    main()
