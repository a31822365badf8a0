"""Quick commands start fast: they answer without loading the heavy libraries other commands need.

Each command runs in a fresh Python, as a user's shell would start it; the probe reports which
heavy libraries the process loaded by the time the command had answered.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Libraries that cost tens to hundreds of milliseconds to import, none needed to list rows.
HEAVY = ("numpy", "pyarrow", "pandas", "scipy", "sklearn", "matplotlib", "plotly", "adbc_driver_manager")

PROBE = f"""
import json, sys
from linelab.cli import main
sys.argv = ["linelab", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({{"code": code, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}), file=sys.stderr)
"""


def linelab(*args: str) -> tuple[int, str, list[str]]:
    """Exit code, stdout, and the heavy libraries loaded, of one `linelab ARGS` in its own process."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], done.stdout, report["heavy"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("startup")
    csv = folder / "measurements.csv"
    csv.write_text("unit_id,station,name,value,t\nSN1,SPI,h,1.5,2026-01-05 06:00:00\nSN2,SPI,h,?,2026-01-05 06:00:01\n")
    ws = str(folder / "ws")
    code, _, _ = linelab("ingest", str(csv), "--json", "-w", ws)
    assert code == 1  # one row quarantined
    return ws


def test_quarantine_lists_its_rows_without_heavy_libraries(workspace: str) -> None:
    code, out, heavy = linelab("quarantine", "--json", "-w", workspace)
    body = json.loads(out)
    assert code == 0  # listing the quarantine is not itself a warning
    assert (body["total"], body["open"], body["resolved"]) == (1, 1, 0)
    assert body["rows"][0]["row"] == 3 and body["rows"][0]["field"] == "value"
    assert body["rows"][0]["resolved"] is False
    assert heavy == []


def test_problems_answers_without_heavy_libraries(workspace: str) -> None:
    code, out, heavy = linelab("problems", "--json", "-w", workspace)
    assert code == 0 and json.loads(out) == {"problems": []}
    assert heavy == []


def test_a_command_that_needs_arrow_still_gets_it(workspace: str) -> None:
    code, out, heavy = linelab("yield", "--json", "-w", workspace)
    assert code == 0 and "overall" in json.loads(out)
    assert "pyarrow" in heavy


def test_model_list_answers_without_the_model_libraries(workspace: str) -> None:
    # listing versions reads the registry; only training, scoring and export load scikit-learn and skops,
    # and only what builds or scores rows loads NumPy and Arrow
    code, out, heavy = linelab("model", "list", "--json", "-w", workspace)
    assert code == 0 and json.loads(out) == {"models": [], "deployments": []}
    assert heavy == []
