"""Tennessee Eastman Process (Braatz data set) through LineLab's own path.

load the .dat files → ingest as `signals` (one series per variable and run, t = sample
index × 3 min from a fixed epoch) → read back with `ws.query` → fit a multivariate monitor on
d00 (normal operation) → score each dNN_te run → alarms and the usual FDR/FAR figures.

Signal names carry the run ("d01_te:XMEAS_07") because a signal's identity is (name, t) and
every run restarts at sample 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from linelab.monitor.multivariate import PCAMonitor

EPOCH = datetime(2000, 1, 1)
SAMPLE = timedelta(minutes=3)
ONSET = 160  # samples 1..160 normal, fault from sample 161 on
VARIABLES = [f"XMEAS_{i:02d}" for i in range(1, 42)] + [f"XMV_{i:02d}" for i in range(1, 12)]
FAULTS = list(range(1, 22))
HARD_FAULTS = (3, 9, 15)

# Published PCA fault detection rates (%), see data/tep/REFERENCE.md.
PUBLISHED_T2 = [99.5, 98.3, 8.1, 28.9, 30.6, 99.3, 100, 97.5, 7.4, 49.8, 47.4, 99.0, 95.0, 99.0, 12.4,
                32.5, 81.6, 89.5, 8.4, 47.0, 39.4]
PUBLISHED_SPE = [99.8, 98.8, 7.8, 100, 31.3, 100, 100, 97.9, 6.0, 53.9, 73.3, 97.8, 95.4, 100, 8.8,
                 48.3, 93.9, 91.4, 29.1, 57.3, 51.1]


def default_model() -> PCAMonitor:
    """LineLab's TEP monitor: dynamic PCA (2 lags), cross-validated joint limits, EWMA on SPE."""
    return PCAMonitor(variance=0.9, alpha=0.01, limits="cv", lags=2, smoothing="ewma_spe", lam=0.05)


def run_names(data_dir: Path) -> list[str]:
    """Runs present in `data_dir`: 'd00' (training) and the dNN_te test runs."""
    names = ["d00"] if (data_dir / "d00.dat").exists() else []
    names += sorted(p.stem for p in data_dir.glob("d[0-9][0-9]_te.dat"))
    return names


def load_run(data_dir: Path, name: str) -> np.ndarray:
    """One run as (samples, 52); d00.dat is stored transposed (52 x 500)."""
    path = Path(data_dir) / f"{name}.dat"
    if not path.exists():
        raise FileNotFoundError(f"TEP file {path} not found")
    x = np.loadtxt(path)
    if x.shape[0] == len(VARIABLES) and x.shape[1] != len(VARIABLES):
        x = x.T
    if x.shape[1] != len(VARIABLES):
        raise ValueError(f"{path}: expected 52 variables, got shape {x.shape}")
    return x


def signals_table(run: str, x: np.ndarray) -> pa.Table:
    """Long-form signals (name, t, value) for one run."""
    n, p = x.shape
    names = np.array([f"{run}:{v}" for v in VARIABLES], dtype=object)
    t0 = np.datetime64(EPOCH, "us")
    times = t0 + np.arange(n) * np.timedelta64(int(SAMPLE.total_seconds() * 1e6), "us")
    return pa.table(
        {
            "name": pa.array(np.tile(names, n), pa.string()),
            "t": pa.array(np.repeat(times, p), pa.timestamp("us")),
            "value": pa.array(x.ravel(), pa.float64()),
        }
    )


def ingest_run(ws: Any, run: str, x: np.ndarray) -> int:
    """Ingest one run's signals; returns rows stored (0 when it was ingested before)."""
    rep = ws.ingest_tables({"signals": signals_table(run, x)}, source=f"tep:{run}")
    return rep.stored


def read_run(ws: Any, run: str) -> np.ndarray:
    """A run back from the workspace as (samples, 52), ordered by time."""
    tbl = ws.query(
        "SELECT name, epoch_us(t) AS us, value FROM signals WHERE name LIKE ? ORDER BY t, name",
        [f"{run}:%"],
    )
    if tbl.num_rows == 0:
        raise LookupError(f"no signals for TEP run {run!r} in the workspace")
    names = tbl.column("name").to_numpy(zero_copy_only=False)
    var = np.searchsorted(np.array(VARIABLES), np.char.partition(names.astype(str), ":")[:, 2])
    us = tbl.column("us").to_numpy()
    step = int(SAMPLE.total_seconds() * 1e6)
    idx = (us - int(np.datetime64(EPOCH, "us").astype(np.int64))) // step
    out = np.full((int(idx.max()) + 1, len(VARIABLES)), np.nan)
    out[idx, var] = tbl.column("value").to_numpy()
    return out


@dataclass
class FaultFigures:
    fault: int
    fdr: float  # % of samples 161..960 alarmed
    far: float  # % of samples 1..160 alarmed
    delay: int | None  # samples after onset to the first alarm
    published_t2: float
    published_spe: float


@dataclass
class TepResult:
    alarms: dict[str, np.ndarray]
    faults: list[FaultFigures] = field(default_factory=list)
    far_normal: float = 0.0  # % of d00_te alarmed
    model_state: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return tep_summary(self.faults, self.far_normal)


def fault_figures(alarms: dict[str, np.ndarray]) -> tuple[list[FaultFigures], float]:
    faults = []
    for f in FAULTS:
        a = alarms.get(f"d{f:02d}_te")
        if a is None:
            continue
        after = np.flatnonzero(a[ONSET:])
        faults.append(
            FaultFigures(
                fault=f,
                fdr=float(a[ONSET:].mean() * 100),
                far=float(a[:ONSET].mean() * 100),
                delay=int(after[0]) if after.size else None,
                published_t2=PUBLISHED_T2[f - 1],
                published_spe=PUBLISHED_SPE[f - 1],
            )
        )
    normal = alarms.get("d00_te")
    return faults, float(normal.mean() * 100) if normal is not None else float("nan")


def tep_summary(faults: list[FaultFigures], far_normal: float) -> dict[str, Any]:
    """Means over all faults and over those other than 3, 9, 15, next to the published ones."""

    def mean(vals: list[float]) -> float:
        return float(np.mean(vals)) if vals else float("nan")

    easy = [f for f in faults if f.fault not in HARD_FAULTS]
    return {
        "fdr_mean_21": mean([f.fdr for f in faults]),
        "fdr_mean_18": mean([f.fdr for f in easy]),
        "far_fault_runs": mean([f.far for f in faults]),
        "far_d00_te": far_normal,
        "published_t2_mean_21": mean([f.published_t2 for f in faults]),
        "published_spe_mean_21": mean([f.published_spe for f in faults]),
        "published_t2_mean_18": mean([f.published_t2 for f in easy]),
        "published_spe_mean_18": mean([f.published_spe for f in easy]),
    }


def score_runs(train: np.ndarray, runs: dict[str, np.ndarray], model: PCAMonitor | None = None) -> TepResult:
    """Fit on `train` and score every run from a fresh copy of the fitted monitor."""
    fitted = (model or default_model()).fit(train)
    alarms = {name: copy.deepcopy(fitted).update(x).alarm.astype(np.int8) for name, x in runs.items()}
    faults, far0 = fault_figures(alarms)
    return TepResult(alarms, faults, far0, fitted.state)


def monitor_tep(
    data_dir: str | Path,
    workspace: str | Path | Any,
    model: PCAMonitor | None = None,
    runs: list[str] | None = None,
) -> TepResult:
    """load → ingest → read back → fit on d00 → score the test runs → alarms and figures.

    `workspace` is an open Workspace or a path (opened and closed here). `runs` limits the
    test runs (e.g. ["d00_te", "d01_te"]); default: every dNN_te file in `data_dir`.
    """
    from linelab.store import Workspace

    data_dir = Path(data_dir)
    opened = None if hasattr(workspace, "ingest_tables") else Workspace.open(workspace)
    ws = opened if opened is not None else workspace
    try:
        tests = runs or [r for r in run_names(data_dir) if r != "d00"]
        for run in ["d00", *tests]:
            ingest_run(ws, run, load_run(data_dir, run))
        train = read_run(ws, "d00")
        data = {run: read_run(ws, run) for run in tests}
    finally:
        if opened is not None:
            opened.close()
    return score_runs(train, data, model)


def write_alarm_files(result: TepResult, out_dir: str | Path) -> list[Path]:
    """One file per run, `dNN_te.alarms`: one 0/1 per line, one line per sample."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for run, a in sorted(result.alarms.items()):
        path = out / f"{run}.alarms"
        path.write_text("".join("1\n" if v else "0\n" for v in a.tolist()))
        paths.append(path)
    return paths
