"""Command start-up: wall time of quick commands against a bare Python start, in the same run.

    python bench/startup.py [--quick] [--repeats N] [--against SRC]

Runs `linelab quarantine --json`, `linelab problems --json` and `linelab model list --json` on an
initialised, empty workspace (so the time is start-up: imports, the CLI, opening the workspace) and
`python -c pass`, each N times, alternating so load on the machine hits all alike. Reports the
median and best wall time of each, their CPU time, and the commands' excess over bare Python.
Target: quarantine and problems each under 0.5 s (model list is reported beside them).

`--against SRC` also runs both commands from another copy of the sources (a `src` folder, e.g. from
`git archive OLD src | tar -x -C /tmp/old`), interleaved with these: before and after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.5


def wall(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run: on a shared machine the CPU time
    says what start-up costs, the wall time what a person waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 runs of each instead of 15")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--against", type=Path, default=None, help="another src folder to time beside this one")
    a = ap.parse_args()
    repeats = a.repeats or (5 if a.quick else 15)
    linelab = str(Path(sys.executable).parent / "linelab")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ws = str(Path(tmp) / "ws")
        wall([linelab, "init", "-w", ws, "--json"])
        runs = {
            "python_pass": [sys.executable, "-c", "pass"],
            "quarantine": [linelab, "quarantine", "--json", "-w", ws],
            "problems": [linelab, "problems", "--json", "-w", ws],
            "model_list": [linelab, "model", "list", "--json", "-w", ws],
        }
        if a.against is not None:
            # The same script and interpreter: only where `linelab` is imported from differs.
            other = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(a.against.resolve())!r}); "
                     "from linelab.cli import main; sys.argv[0] = 'linelab'; sys.exit(main())"]
            runs["quarantine_against"] = [*other, "quarantine", "--json", "-w", ws]
            runs["problems_against"] = [*other, "problems", "--json", "-w", ws]
            runs["model_list_against"] = [*other, "model", "list", "--json", "-w", ws]
        for argv in runs.values():  # warm the file cache once: the bench measures start-up, not disk
            wall(argv)
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(repeats):
            for name, argv in runs.items():
                seconds, cpu_seconds = wall(argv)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
    base = statistics.median(times["python_pass"])
    result: dict[str, object] = {"bench": "startup", "repeats": repeats, "target_s": TARGET_S}
    for name, values in times.items():
        median = statistics.median(values)
        result[f"{name}_median_s"] = round(median, 3)
        result[f"{name}_best_s"] = round(min(values), 3)
        result[f"{name}_cpu_median_s"] = round(statistics.median(cpu[name]), 3)
        if name != "python_pass":
            result[f"{name}_over_python_s"] = round(median - base, 3)
            result[f"{name}_ratio_to_python"] = round(median / base, 1)
            print(f"{name:>12}: median {median:.3f} s, best {min(values):.3f} s "
                  f"({median - base:+.3f} s over bare Python), CPU {statistics.median(cpu[name]):.3f} s",
                  file=sys.stderr)
    # A busy machine stretches wall times: the load before and after the runs.
    result["load_average_1min_before"] = round(load_before, 2)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    result["meets_target"] = all(statistics.median(times[n]) < TARGET_S for n in ("quarantine", "problems"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
