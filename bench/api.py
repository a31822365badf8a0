"""REST latency under load: LineLab's endpoints beside a bare FastAPI endpoint on the same server.

    python bench/api.py [--quick] [--units N] [--clients 8] [--seconds S] [--workspace DIR]

Makes a twin workspace (`linelab twin run`, 260,000 units; 30,000 with --quick) and runs the
monitor over it, then serves it with `linelab`'s app in a separate process (uvicorn, loopback)
with one extra route, POST /bench/bare, that returns a constant on the event loop: the server's own
floor. N concurrent clients (asyncio, keep-alive) call each endpoint in turn for S seconds:
POST /api/yield, POST /api/problems, a problem's page data (POST /api/problem/show, no chart) and
the bare endpoint. Reports p50/p99 latency and requests/s of each, and each one's p50/p99 against
the bare endpoint's, and the client's own CPU per request (plain keep-alive connections, not httpx:
the load generator must cost less than what it measures). Targets: p99 <= 100 ms, and within 5x of
the bare endpoint. The server keeps read-only answers until the data may have changed; --no-cache
measures every read computed afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

P99_TARGET_MS = 100.0
RATIO_TARGET = 5.0

SERVER = textwrap.dedent("""
    import sys
    import uvicorn
    from linelab.api import create_app

    app = create_app(sys.argv[1])
    if sys.argv[3] == "no-cache":
        app.state.pool.cache_size = 0  # every read computed afresh

    @app.post("/bench/bare")
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def linelab(*args: str) -> dict[str, Any]:
    exe = str(Path(sys.executable).parent / "linelab")
    done = subprocess.run([exe, *args, "--json"], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"linelab {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def make_workspace(ws: Path, units: int) -> None:
    if (ws / "linelab.duckdb").exists():
        print(f"using the workspace at {ws}", file=sys.stderr)
        return
    start = time.perf_counter()
    linelab("twin", "run", "-w", str(ws), "--units", str(units))
    print(f"twin run: {units:,} units in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    start = time.perf_counter()
    ran = linelab("monitor", "run", "-w", str(ws))
    print(f"monitor run: {len(ran.get('problems_opened', []))} problem(s) in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection that sends one prepared request again and again.

    A plain asyncio stream, not httpx: httpx's client cost about 1.5 ms of CPU per request, three
    times the server's own cost for a kept answer, so on a small machine the client, not the
    server, set the latencies. Here a request costs the client a few tens of microseconds.
    """

    def __init__(self, port: int, path: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.port = port
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    async def call(self) -> int:
        """Send the request, read the whole answer; its status code."""
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise SystemExit("an answer without Content-Length: this client reads only those")
        await self.reader.readexactly(length)
        return status


async def load(port: int, path: str, body: dict[str, Any], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def one_client(until: float) -> None:
        nonlocal errors
        async with Connection(port, path, body) as connection:
            while time.perf_counter() < until:
                start = time.perf_counter()
                status = await connection.call()
                elapsed = time.perf_counter() - start
                if status != 200:
                    errors += 1
                latencies.append(elapsed)

    warm_until = time.perf_counter() + min(1.0, seconds / 5)
    await asyncio.gather(*(one_client(warm_until) for _ in range(clients)))
    latencies.clear()
    errors = 0
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one_client(start + seconds) for _ in range(clients)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors,
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "rps": round(len(ordered) / wall, 1),
        "client_cpu_ms": round(1000 * cpu / max(1, len(ordered)), 3),
    }


async def measure(port: int, clients: int, seconds: float) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        problems = (await client.post("/api/problems", json={})).json()["problems"]
    if not problems:
        raise SystemExit("the monitor found no problem in the workspace: no problem page to measure")
    endpoints: dict[str, tuple[str, dict[str, Any]]] = {
        "bare": ("/bench/bare", {}),
        "yield": ("/api/yield", {}),
        "problems": ("/api/problems", {}),
        "problem_page": ("/api/problem/show", {"id": problems[0]["id"], "plot": "none"}),
    }
    results = {}
    for name, (path, body) in endpoints.items():
        results[name] = await load(port, path, body, clients, seconds)
        print(f"{name:>13}: {results[name]}", file=sys.stderr)
    return results


def wait_for(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server stopped before answering")
        try:
            if httpx.post(f"http://127.0.0.1:{port}/bench/bare", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30,000 units and 5 s per endpoint")
    ap.add_argument("--units", type=int, default=None, help="units in the workspace [260,000]")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None, help="seconds of load per endpoint [15]")
    ap.add_argument("--workspace", type=Path, default=None, help="reuse (or make and keep) this workspace")
    ap.add_argument("--no-cache", action="store_true", help="compute every read afresh (no kept answers)")
    a = ap.parse_args()
    units = a.units or (30_000 if a.quick else 260_000)
    seconds = a.seconds or (5.0 if a.quick else 15.0)
    with tempfile.TemporaryDirectory() as tmp:
        ws = a.workspace or Path(tmp) / "ws"
        make_workspace(ws, units)
        port = free_port()
        cache = "no-cache" if a.no_cache else "cache"
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(ws), str(port), cache])
        try:
            wait_for(port, server)
            results = asyncio.run(measure(port, a.clients, seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
    bare = results["bare"]
    summary: dict[str, Any] = {"bench": "api", "units": units, "clients": a.clients, "seconds": seconds,
                               "kept_answers": not a.no_cache,
                               "load_average_1min": round(os.getloadavg()[0], 2)}
    met = True
    for name, r in results.items():
        for key, value in r.items():
            summary[f"{name}_{key}"] = value
        if name != "bare":
            summary[f"{name}_p50_vs_bare"] = round(r["p50_ms"] / bare["p50_ms"], 1)
            summary[f"{name}_p99_vs_bare"] = round(r["p99_ms"] / bare["p99_ms"], 1)
            met &= r["p99_ms"] <= P99_TARGET_MS and r["p99_ms"] <= RATIO_TARGET * bare["p99_ms"]
            met &= r["errors"] == 0
    summary["meets_target"] = met
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
