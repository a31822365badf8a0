"""`linelab chart` and `linelab capability` on a small series whose limits and indices are computed
here by hand: the chart learns its limits on phase I, flags the planted points by rule and names
the unit behind each; capability gives the textbook Cp/Cpk/Pp/Ppk and intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.stats import chi2, norm
from typer.testing import CliRunner

from linelab.api import create_app
from linelab.cli import build_app
from linelab.commands import call
from linelab.errors import UserError

N = 120
RNG = np.random.default_rng(7)
BASE = np.round(10 + 0.2 * RNG.standard_normal(N), 4)
VALUES = BASE.copy()
VALUES[100] = 13.0                      # far beyond 3 sigma: rule 1
VALUES[105:113] = 10.25                 # eight in a row above the centre: rule 2 (Western Electric)


def _csv(path: Path, header: str, rows: list[str]) -> None:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("charts")
    data = root / "data"
    data.mkdir()
    t0 = np.datetime64("2026-03-02T06:00:00")
    times = [str(t0 + np.timedelta64(60 * i, "s")) for i in range(N)]
    serial = [f"U{i:04d}" for i in range(N)]
    fails = {3, 30} | set(range(60, 72))  # two early failures, then twelve in a row
    _csv(data / "units.csv", "unit_id,product,line,t_start,t_end,result,first_pass",
         [f"{s},P,L1,{t},{t},{'fail' if i in fails else 'pass'},{i not in fails}"
          for i, (s, t) in enumerate(zip(serial, times, strict=True))])
    _csv(data / "steps.csv", "unit_id,station,machine,t_in,t_out,result,defect_code",
         [f"{s},GAUGE,{'G1' if i % 2 else 'G2'},{t},{t},{'fail' if i in fails else 'pass'},"
          f"{'BORE' if i in fails else ''}" for i, (s, t) in enumerate(zip(serial, times, strict=True))])
    _csv(data / "measurements.csv", "unit_id,station,name,value,t",
         [f"{s},GAUGE,bore_mm,{v},{t}" for s, v, t in zip(serial, VALUES, times, strict=True)])
    _csv(data / "specs.csv", "product,station,name,lsl,usl,target,unit", ["P,GAUGE,bore_mm,9.4,10.8,10.0,mm"])
    ws = root / "ws"
    call("ingest", workspace=ws, paths=[data])
    return ws


def test_imr_limits_come_from_phase_one_and_rules_flag_the_planted_points(ws: Path) -> None:
    r = call("chart", workspace=ws, series="bore_mm", type="imr", rules="western-electric", phase1=80)
    g = r.groups[0]
    phase = BASE[:80]
    sigma = np.abs(np.diff(phase)).mean() / 1.128
    assert g.phase1 == 80 and g.points == N
    assert g.centre == pytest.approx(phase.mean(), rel=1e-9)
    assert g.upper[0] == pytest.approx(phase.mean() + 3 * sigma, rel=1e-6)
    assert g.lower[0] == pytest.approx(phase.mean() - 3 * sigma, rel=1e-6)
    by_index = {v.index: v for v in g.violations}
    assert 1 in by_index[100].rules and by_index[100].unit_id == "U0100"
    assert 2 in by_index[112].rules  # the eighth point of the run completes the pattern
    assert r.unit == "mm" and r.series == "GAUGE/bore_mm"


def test_nelson_rules_use_a_run_of_nine_and_rule_numbers_can_be_chosen(ws: Path) -> None:
    nelson = call("chart", workspace=ws, series="GAUGE/bore_mm", rules="nelson", phase1=80).groups[0]
    assert not any(2 in v.rules for v in nelson.violations if v.index == 112)
    only1 = call("chart", workspace=ws, series="bore_mm", rules="1", phase1=80).groups[0]
    assert {r for v in only1.violations for r in v.rules} <= {0, 1}
    with pytest.raises(UserError, match="rules"):
        call("chart", workspace=ws, series="bore_mm", rules="bogus")
    # a number that names no rule was a ValueError: a 500 over REST and exit 3 on the CLI
    for nums in ("-1", "0", "1,9"):
        with pytest.raises(UserError, match="rule numbers 1..8"):
            call("chart", workspace=ws, series="bore_mm", rules=nums)
    client = TestClient(create_app(ws), base_url="http://localhost")
    rest = client.post("/api/chart", json={"series": "bore_mm", "rules": "-1"})
    assert rest.status_code == 400 and "rule numbers 1..8" in rest.json()["error"]["message"]


def test_xbar_r_chart_uses_subgroup_means_and_ranges(ws: Path) -> None:
    r = call("chart", workspace=ws, series="bore_mm", type="xbar-r", subgroup=5, phase1=16, rules="none")
    g = r.groups[0]
    sub = BASE[:80].reshape(16, 5)
    rbar = (sub.max(axis=1) - sub.min(axis=1)).mean()
    assert g.points == N // 5
    assert g.centre == pytest.approx(sub.mean(), rel=1e-9)
    assert g.upper[0] - g.centre == pytest.approx(3 * rbar / 2.326 / np.sqrt(5), rel=1e-3)
    assert g.spread is not None and g.spread.centre == pytest.approx(rbar)
    assert any(v.index == 20 for v in g.violations)  # the subgroup holding point 100


def test_p_chart_counts_failed_units_per_subgroup(ws: Path) -> None:
    r = call("chart", workspace=ws, series="GAUGE", type="p", subgroup=12, phase1=5, rules="none")
    g = r.groups[0]
    assert g.centre == pytest.approx(2 / 60)
    assert g.upper[0] == pytest.approx(2 / 60 + 3 * np.sqrt(2 / 60 * (1 - 2 / 60) / 12))
    assert g.value[5] == pytest.approx(1.0)  # units 60..71 all failed
    assert any(v.index == 5 for v in g.violations)
    u = call("chart", workspace=ws, series="GAUGE/BORE", type="u", subgroup=12, phase1=10, rules="none")
    assert u.groups[0].value[5] == pytest.approx(1.0)


def test_by_machine_gives_one_chart_per_machine(ws: Path) -> None:
    r = call("chart", workspace=ws, series="bore_mm", by="machine", phase1=30)
    assert [g.group for g in r.groups] == ["G1", "G2"]
    assert [g.points for g in r.groups] == [N // 2, N // 2]


def test_capability_matches_the_textbook_formulas(ws: Path) -> None:
    r = call("capability", workspace=ws, series="bore_mm")
    s = r.studies[0]
    x = VALUES
    sw, so = np.abs(np.diff(x)).mean() / 1.128, x.std(ddof=1)
    assert (r.lsl, r.usl, r.unit) == (9.4, 10.8, "mm")  # from the specs table
    assert s.cp.value == pytest.approx(1.4 / (6 * sw), rel=1e-3)
    assert s.cpk.value == pytest.approx(min(10.8 - x.mean(), x.mean() - 9.4) / (3 * sw), rel=1e-3)
    assert s.pp.value == pytest.approx(1.4 / (6 * so), rel=1e-9)
    assert s.ppk.value == pytest.approx(min(10.8 - x.mean(), x.mean() - 9.4) / (3 * so), rel=1e-9)
    nu = N - 1
    assert s.pp.low == pytest.approx(s.pp.value * np.sqrt(chi2.ppf(0.025, nu) / nu), rel=1e-9)
    half = norm.ppf(0.975) * np.sqrt(1 / (9 * N) + s.ppk.value**2 / (2 * nu))
    assert s.ppk.high == pytest.approx(s.ppk.value + half, rel=1e-9)
    assert s.observed_ppm == pytest.approx(1e6 / N)  # the one value at 13.0
    assert sum(s.histogram["counts"]) == N
    own = call("capability", workspace=ws, series="bore_mm", lsl=9.0, usl=11.0)
    assert own.studies[0].pp.value == pytest.approx(2.0 / (6 * so), rel=1e-9)


def test_cli_plots_and_json_and_rest_agree(ws: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    html, png = tmp_path / "c.html", tmp_path / "cap.png"
    out = runner.invoke(build_app(), ["chart", "bore_mm", "--phase1", "80", "--plot", str(html), "--json",
                                      "-w", str(ws)])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert html.read_text().count("Plotly.newPlot") == 1 and "bore_mm [mm]" in html.read_text()
    out = runner.invoke(build_app(), ["capability", "bore_mm", "--plot", str(png), "-w", str(ws)])
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:4] == b"\x89PNG" and "Ppk" in out.stdout
    client = TestClient(create_app(ws), base_url="http://localhost")
    rest = client.post("/api/chart", json={"series": "bore_mm", "phase1": 80})
    assert rest.status_code == 200
    assert rest.json()["groups"][0]["violations"] == body["groups"][0]["violations"]


def test_unknown_series_names_what_exists(ws: Path) -> None:
    with pytest.raises(UserError, match="GAUGE/bore_mm"):
        call("chart", workspace=ws, series="diameter")
    with pytest.raises(UserError, match="no station"):
        call("chart", workspace=ws, series="NOPE", type="p")
    with pytest.raises(UserError, match=r"\.html or \.png"):
        call("chart", workspace=ws, series="bore_mm", plot="x.pdf")


def test_capability_shows_every_index_at_80_columns(ws: Path) -> None:
    # With its interval beside each value the table was too wide: Pp, Ppk and ppm were left out.
    out = CliRunner().invoke(build_app(), ["capability", "bore_mm", "-w", str(ws)], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    text = str(out.stdout)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "not shown at this width" not in text
    for index in ("Cp", "Cpk", "Pp", "Ppk", "ppm", "95% confidence intervals"):
        assert index in text
    r = call("capability", workspace=ws, series="bore_mm").studies[0]
    assert f"{r.ppk.low:.2f}–{r.ppk.high:.2f}" in text


def test_stages_learn_their_own_limits_after_the_process_changed(tmp_path: Path) -> None:
    # A new recipe moved the bore 0.5 mm for good at point 150. Charted as one, every later point
    # broke the old limits or their runs; with a stage from the change, the new level learns limits
    # of its own and only the one wild bore after it is flagged.
    n, change = 300, 150
    rng = np.random.default_rng(3)
    values = np.round(10 + 0.05 * rng.standard_normal(n) + np.where(np.arange(n) >= change, 0.5, 0.0), 4)
    values[250] = 11.0
    t0 = np.datetime64("2026-03-02T06:00:00")
    times = [str(t0 + np.timedelta64(60 * i, "s")) for i in range(n)]
    data = tmp_path / "data"
    data.mkdir()
    _csv(data / "units.csv", "unit_id,product,line,t_start,t_end,result,first_pass",
         [f"U{i:04d},P,L1,{t},{t},pass,true" for i, t in enumerate(times)])
    _csv(data / "measurements.csv", "unit_id,station,name,value,t",
         [f"U{i:04d},GAUGE,bore_mm,{v},{t}" for i, (v, t) in enumerate(zip(values, times, strict=True))])
    ws = tmp_path / "ws"
    call("ingest", workspace=ws, paths=[data])

    whole = call("chart", workspace=ws, series="bore_mm", phase1=50).groups[0]
    assert whole.flagged > 100 and not whole.stages
    staged = call("chart", workspace=ws, series="bore_mm", phase1=50, stage_at=[times[change]]).groups[0]
    assert [st.start for st in staged.stages] == [0, change]
    assert abs(staged.stages[0].centre - 10.0) < 0.03 and abs(staged.stages[1].centre - 10.5) < 0.03
    assert [v.index for v in staged.violations if 1 in v.rules and v.index >= change] == [250]
    assert staged.flagged < whole.flagged / 5
    centre = staged.centre_line()
    assert centre[0] == staged.stages[0].centre and centre[-1] == staged.stages[1].centre
    assert staged.upper[change - 1] < 10.3 < staged.upper[change]  # the limits step with the stage

    client = TestClient(create_app(ws), base_url="http://localhost")
    rest = client.post("/api/chart", json={"series": "bore_mm", "phase1": 50, "stage_at": [times[change]]})
    assert rest.status_code == 200, rest.text
    assert [st["start"] for st in rest.json()["groups"][0]["stages"]] == [0, change]
    page = client.get("/chart", params={"series": "bore_mm", "phase1": "50", "stage_at": times[change]})
    assert page.status_code == 200 and page.text.count('<table class="stages">') == 1
    assert "10.5" in page.text.split('<table class="stages">')[1].split("</table>")[0]
    out = CliRunner().invoke(build_app(), ["chart", "bore_mm", "-w", str(ws), "--phase1", "50",
                                           "--stage-at", times[change]], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    assert "each with its own limits" in out.stdout
