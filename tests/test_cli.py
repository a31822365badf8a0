"""The CLI a user and their scripts rely on: `--json` output, exit codes, errors without tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from linelab.cli import build_app

runner = CliRunner()
app = build_app()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_ingest_json_reports_counts_and_exits_nonzero_on_quarantine(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    csv = tmp_path / "measurements.csv"
    csv.write_text("unit_id,station,name,value,t\nSN1,SPI,h,1.5,2026-01-05 06:00:00\nSN2,SPI,h,?,2026-01-05 06:00:01\n")
    code, out = run("ingest", str(csv), "--json", "-w", ws)
    body = json.loads(out)
    assert code == 1
    assert (body["stored"], body["quarantined"]) == (1, 1)
    assert body["quarantine"][0]["row"] == 3 and body["quarantine"][0]["field"] == "value"
    code, out = run("ingest", str(csv), "--json", "-w", ws)
    assert code == 0 and json.loads(out)["files"][0]["already_ingested"] is True


def test_user_mistakes_get_one_clear_line(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "-w", ws])
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
    code, out = run("yield", "--by", "colour", "--json", "-w", ws)
    assert code == 2 and "choose one of" in json.loads(out)["error"]
    code, out = run("trace", "SN404", "--json", "-w", ws)
    assert code == 2 and "no unit" in json.loads(out)["error"]


def test_init_lists_the_core_tables(tmp_path: Path) -> None:
    code, out = run("init", "--json", "-w", str(tmp_path / "ws"))
    assert code == 0
    assert {"units", "steps", "measurements", "materials", "events"} <= set(json.loads(out)["tables"])


def test_twin_run_json_fills_the_workspace_and_is_idempotent(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    code, out = run("twin", "run", "--scenario", "nozzle_wear", "--units", "3000", "--chunk", "1000",
                    "--json", "-w", ws)
    body = json.loads(out)
    assert code == 0 and body["units"] == 3000 and body["rows"]["units"] == 3000
    assert 0.85 < body["first_pass_yield"] <= 1.0
    assert body["problems"][0]["type"] == "nozzle_wear"
    code, out = run("yield", "--by", "machine", "--json", "-w", ws)
    machines = {r["machine"] for r in json.loads(out)["rows"]}
    assert {"P1", "P2"} <= machines
    code, out = run("twin", "run", "--scenario", "clean", "--units", "10", "--json", "-w", ws)
    assert code == 2 and "already holds" in json.loads(out)["error"]
    code, out = run("twin", "scenarios", "--json")
    assert {"clean", "default"} <= {s["name"] for s in json.loads(out)["scenarios"]}
    code, out = run("trace", "SN00000042", "--json", "-w", ws)
    genealogy = json.loads(out)["tables"]
    assert {s["station"] for s in genealogy["steps"]} >= {"PRINT", "PLACE", "REFLOW", "AOI", "TEST"}
    lot = genealogy["materials"][0]["lot"]
    code, out = run("trace", "--lot", lot, "--json", "-w", ws)
    assert "SN00000042" in {u["unit_id"] for u in json.loads(out)["tables"]["units"]}


def test_a_fault_of_linelabs_own_exits_3_with_one_line_never_1_or_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 means rows were quarantined and 2 a mistake in the input: a crash must say it is neither."""
    from linelab import cli
    from linelab.commands import call
    from linelab.store import queries

    call("init", workspace=tmp_path / "ws")

    def broken(*_: object) -> None:
        raise RuntimeError("the store gave no answer")

    monkeypatch.setattr(queries, "overall_yield", broken)
    monkeypatch.delenv("LINELAB_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["linelab", "yield", "--json", "-w", str(tmp_path / "ws")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out = capsys.readouterr()
    assert exited.value.code == 3
    assert "Traceback" not in out.out + out.err and "RuntimeError: the store gave no answer" in out.err
    assert "LINELAB_DEBUG" in json.loads(out.out)["error"]
    monkeypatch.setenv("LINELAB_DEBUG", "1")  # for a bug report, the traceback on request
    with pytest.raises(SystemExit):
        cli.main()
    assert "Traceback" in capsys.readouterr().err
