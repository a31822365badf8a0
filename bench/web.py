"""Workbench page speed: the overview and a problem page on a large twin workspace.

    .venv/bin/python bench/web.py [--quick] [--units N] [--workspace DIR] [--repeat R]

Builds (or reuses) a twin workspace (1,000,000 units; `--quick`: 20,000), runs the monitor so it
has problems, serves it with `create_app` under uvicorn in this process, and measures over HTTP:

- server time: how long each page takes to arrive complete (the pages are rendered on the
  server with their data, so this is the time to the first render's content), median of
  `--repeat` requests after one warm-up; beside it, the baseline: a static file served by the
  same server in the same run, and the REST data endpoints the overview is built from;
- in Debian's chromium (when present): time to first render (DOMContentLoaded) and to full data
  (every chart on the page drawn).

Target: each page complete in under 300 ms of server time. The last line is one JSON object
{"bench": "web", ...}, with the machine's load average (timings on a busy machine read high).
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
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from linelab.api import create_app
from linelab.commands import call

TARGET_MS = 300.0


def build(workspace: Path, units: int) -> None:
    """A twin workspace with `units` units and the monitor's problems (kept for the next run)."""
    if (workspace / "linelab.duckdb").exists():
        return
    t0 = time.perf_counter()
    call("twin run", workspace=workspace, scenario="default", units=units, seed=0)
    call("monitor run", workspace=workspace)
    print(f"built {units:,} units in {time.perf_counter() - t0:.0f} s: {workspace}", flush=True)


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
                n = page.locator(".plot").count()
                for i in range(n):
                    page.locator(".plot").nth(i).and_(page.locator("[data-rendered='1']")).wait_for(timeout=60_000)
                full = 1000 * (time.perf_counter() - t0)
                # First contentful paint, from the page's own clock: when the tables and numbers showed.
                fcp = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
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
    args = ap.parse_args()
    units = args.units or (20_000 if args.quick else 1_000_000)
    tmp = None
    workspace = args.workspace
    if workspace is None:
        tmp = tempfile.TemporaryDirectory(prefix="linelab-web-")
        workspace = Path(tmp.name) / "ws"
    build(workspace, units)
    server, thread, base = serve(workspace)
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            problems = client.post("/api/problems", json={}).json()["problems"]
            units_served = client.post("/api/yield", json={"by": "station"}).json()["overall"]["units"]
            worst = max(problems, key=lambda p: p["lost_units"] or 0)["id"] if problems else None
            pages = {"overview": "/"} | ({"problem": f"/problem/{worst}"} if worst else {})
            server_ms = {name: timed(client, "GET", path, args.repeat) for name, path in pages.items()}
            static = timed(client, "GET", "/workbench/static/workbench.css", args.repeat)
            data = {name: timed(client, "POST", f"/api/{name}", args.repeat, body)
                    for name, body in (("yield", {"by": "station"}), ("pareto", {"top": 12}), ("problems", {}))}
        for name, t in server_ms.items():
            print(f"{name:>9}: {t['median_ms']:8.1f} ms median ({t['first_ms']:.0f} ms cold), {t['bytes']:,} bytes",
                  flush=True)
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
    worst_ms = max(t["median_ms"] for t in server_ms.values())
    print(json.dumps({
        "bench": "web", "units": units_served, "problems": len(problems), "repeat": args.repeat,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "server_ms": server_ms, "static_ms": static, "data_endpoints_ms": data, "browser": browser,
        "page_over_static": {k: round(v["median_ms"] / max(static["median_ms"], 1e-3), 1)
                             for k, v in server_ms.items()},
        "target_ms": TARGET_MS, "within_target": worst_ms < TARGET_MS,
    }))


if __name__ == "__main__":
    main()
