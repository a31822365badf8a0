"""Every number leads to the units behind it: the overview's yields and its trend's points open the
list of the units they count (`linelab units`, POST /api/units and the /units page give the same
list), and each unit opens its genealogy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from linelab.api import create_app
from linelab.cli import build_app
from linelab.commands import call

FAILED_FIRST = {f"U{i:04d}" for i in range(0, 200, 10)}  # failed at TEST on the first visit
FAILED_FINAL = {f"U{i:04d}" for i in range(0, 200, 20)}  # half of them were not repaired


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drill")
    data = root / "data"
    data.mkdir()
    units = ["unit_id,product,line,t_start,t_end,result,first_pass"]
    steps = ["unit_id,station,machine,t_in,t_out,result,defect_code"]
    for i in range(400):  # 400 units over seven hours of one day
        serial = f"U{i:04d}"
        t = f"2026-02-02T{6 + i // 60:02d}:{i % 60:02d}:00"
        first, final = serial not in FAILED_FIRST, serial not in FAILED_FINAL
        units.append(f"{serial},P,L1,{t},{t},{'pass' if final else 'fail'},{first}")
        steps.append(f"{serial},TEST,T{1 + i % 2},{t},{t},{'pass' if first else 'fail'},{'' if first else 'OPEN'}")
    (data / "units.csv").write_text("\n".join(units) + "\n")
    (data / "steps.csv").write_text("\n".join(steps) + "\n")
    ws = root / "ws"
    call("ingest", workspace=ws, paths=[data])
    return ws


@pytest.fixture(scope="module")
def client(ws: Path) -> TestClient:
    return TestClient(create_app(ws), base_url="http://localhost")


def _listed(html: str) -> set[str]:
    if 'id="units"' not in html:
        assert "no unit matches" in html
        return set()
    table = html[html.index('id="units"'):]
    return set(re.findall(r'<a class="unit" href="/unit/([^"]+)">', table[:table.index("</table>")]))


def test_the_overviews_yields_open_the_units_they_count(client: TestClient) -> None:
    html = client.get("/overview").text
    fpy = re.search(r'<a id="kpi-fpy-units" href="([^"]+)">', html)
    final = re.search(r'<a id="kpi-final-units" href="([^"]+)">', html)
    assert fpy and final
    page = client.get(fpy.group(1).replace("&amp;", "&")).text
    assert _listed(page) == FAILED_FIRST and "20 units" in page
    page = client.get(final.group(1).replace("&amp;", "&")).text
    assert _listed(page) == FAILED_FINAL
    for serial in list(FAILED_FINAL)[:2]:
        assert client.get(f"/unit/{serial}").status_code == 200


def test_a_trend_point_opens_the_units_of_its_period(client: TestClient) -> None:
    html = client.get("/overview").text
    found = re.search(r'<script type="application/json" id="trend-data">(.*?)</script>', html, re.S)
    assert found
    trend = json.loads(found.group(1).replace("<\\/", "</"))["data"][0]
    assert len(trend["customdata"]) == len(trend["x"])
    for link, fpy, x in zip(trend["customdata"], trend["y"], trend["x"], strict=True):
        assert link.startswith("/units?")
        page = client.get(link).text
        shown = _listed(page)
        hour = int(x[11:13])  # the trend is by hour: 60 units an hour from 06:00
        expected = {s for s in FAILED_FIRST if 6 + int(s[1:]) // 60 == hour}
        assert shown == expected, unquote(link)
        units = 60 if hour < 12 else 40
        assert len(shown) == pytest.approx(units * (1 - fpy))  # the point's number, unit by unit


def test_units_is_one_list_in_the_terminal_and_over_rest(ws: Path, client: TestClient) -> None:
    out = CliRunner().invoke(build_app(["units"]), ["units", "--outcome", "final_fail", "--station", "TEST",
                                                    "--defect-code", "OPEN", "-w", str(ws)],
                             env={"COLUMNS": "80", "TERM": "dumb"})
    assert out.exit_code == 0, out.output
    assert "10 units" in out.stdout and max(map(len, out.stdout.splitlines())) <= 80
    assert set(re.findall(r"U\d{4}", out.stdout)) == FAILED_FINAL
    assert all("TEST" in line and "OPEN" in line for line in out.stdout.splitlines() if re.search(r"U\d{4}", line))
    body = client.post("/api/units", json={"outcome": "first_pass_fail", "limit": 5}).json()
    assert body["count"] == len(FAILED_FIRST) and len(body["units"]) == 5
    # why each failed: the station of its first failed visit and the defect recorded there
    assert {(u["failed_at"], u["defect_code"]) for u in body["units"]} == {("TEST", "OPEN")}
    page = client.get("/units?outcome=first_pass_fail").text
    row = page[page.index('href="/unit/U0000"'):]
    assert re.search(r"<td>TEST</td>\s*<td>OPEN</td>", row[:row.index("</tr>")])
    assert client.post("/api/units", json={"outcome": "sometimes"}).status_code == 422


def test_a_long_list_comes_a_hundred_units_a_page(client: TestClient) -> None:
    first = client.get("/units")
    assert first.status_code == 200
    assert "400 units" in first.text and "listed 1–100" in first.text and len(_listed(first.text)) == 100
    link = re.search(r'<a id="next" href="([^"]+)">', first.text)
    assert link
    last = client.get(link.group(1).replace("&amp;", "&")).text
    assert "listed 101–200" in last and not _listed(first.text) & _listed(last)


def test_a_pareto_bar_opens_the_units_behind_its_count(client: TestClient) -> None:
    # A bar is one defect at one station counted over every record: it opens those units (it opened a
    # u chart, a trend of a rate, not the units of the count), and their list leads on to that u chart.
    html = client.get("/overview").text
    found = re.search(r'<script type="application/json" id="pareto-data">(.*?)</script>', html, re.S)
    assert found
    bars = json.loads(found.group(1).replace("<\\/", "</"))["data"][0]
    assert bars["x"] == ["TEST/OPEN"] and bars["y"] == [len(FAILED_FIRST)]
    page = client.get(bars["customdata"][0]).text
    assert _listed(page) == FAILED_FIRST and f"{len(FAILED_FIRST)} units" in page
    u_chart = re.search(r'<a id="u-chart" href="([^"]+)">', page)
    assert u_chart and "type=u" in u_chart.group(1)
    assert client.get(u_chart.group(1).replace("&amp;", "&")).status_code == 200


ONSET, LATEST = "2026-02-02T07:00:00", "2026-02-02T08:59:00"  # units U0060 … U0179


@pytest.fixture(scope="module")
def problem(ws: Path) -> str:
    """A resolved problem of the failures at TEST over two hours, with the know-how written for it."""
    from linelab.store import Workspace

    with Workspace.open(ws) as w:
        w.put_artifact("problem", "PRB-0001", {
            "id": "PRB-0001", "status": "open", "kind": "defect_rate", "entity": "TEST/OPEN",
            "scope": {"station": "TEST", "defect_code": "OPEN"}, "onset": {"t": ONSET, "unit": "U0060"},
            "first_evidence": {"t": "2026-02-02T07:30:00", "unit": "U0090"},
            "latest_evidence": {"t": LATEST, "unit": "U0179"}, "signals": [], "history": [],
            "description": "first-pass failures at TEST with OPEN rose",
            "severity": {"units_affected": 120, "yield_lost_units": 6.0, "signals": 1}}, "open")
    call("problem resolve", workspace=ws, id="PRB-0001", cause="machine=T1", fix="reseat_probe",
         note="probe pins worn")
    return "PRB-0001"


def test_a_problems_units_lost_and_know_how_link_to_what_is_behind_them(client: TestClient, problem: str) -> None:
    html = client.get(f"/problem/{problem}").text
    lost = re.search(r'<dd id="units-lost"><a href="([^"]+)"[^>]*>6</a>', html)
    assert lost, html[html.index('id="units-lost"'):][:300]
    page = client.get(lost.group(1).replace("&amp;", "&")).text
    # the failures with OPEN at TEST from the onset to the latest evidence: the units lost are among them
    assert _listed(page) == {s for s in FAILED_FIRST if 60 <= int(s[1:]) < 180}
    ids = re.findall(r'<a class="knowhow" href="/knowhow#([^"]+)">', html)
    assert ids == ["KH-0001"]
    assert re.search(r'href="/knowhow#KH-0001">KH-0001</a>', html[html.index('id="next-step"'):])  # next step too
    assert 'id="KH-0001"' in client.get("/knowhow").text


def test_the_problem_report_through_the_cli_rest_and_the_page(ws: Path, client: TestClient, problem: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    ran = CliRunner().invoke(build_app(["problem"]), ["problem", "report", problem, "--out", str(out),
                                                      "-w", str(ws)], env={"COLUMNS": "80", "TERM": "dumb"})
    assert ran.exit_code == 0, ran.output
    assert str(out) in "".join(ran.stdout.split()) and "Nothing to do" in ran.stdout
    report = out.read_text()
    for section in ("What to do next", "What was seen, when, and what it cost", "Ranked causes and their evidence",
                    "Actions taken and their measured effect", "Know-how"):
        assert f"{section}</h2>" in report
    text = " ".join(re.sub(r"<[^>]+>", " ", report).split())
    assert "units lost 6" in text and "units affected 120" in text
    assert f"linelab units --outcome first_pass_fail --since {ONSET}" in text  # the units behind the number
    # its know-how, linked inside the report; offline and printable: nothing loaded, a print stylesheet
    assert 'href="#KH-0001"' in report and 'id="KH-0001"' in report and "machine=T1" in text
    assert "@media print" in report and "<script" not in report
    assert not re.search(r'(src|href)="(https?:)?//', report)

    body = client.post("/api/problem/report", json={"id": problem, "out": "meeting.html"}).json()
    assert body["file"].startswith("/outputs/") and body["file"].endswith("/meeting.html")
    served = client.get(body["file"])
    assert served.status_code == 200 and "Problem report — PRB-0001" in served.text
    assert body == {**call("problem report", workspace=ws, id=problem, out=tmp_path / "x.html").model_dump(),
                    "file": body["file"]}

    page = client.get(f"/problem/{problem}").text
    link = re.search(r'<a id="problem-report" class="button" href="([^"]+)"', page)
    assert link and link.group(1) == f"/problem/{problem}/report"
    shown = client.get(link.group(1))
    assert shown.status_code == 200 and 'id="KH-0001"' in shown.text
    assert client.get("/problem/PRB-9999/report").status_code == 404


def test_the_units_behind_a_machines_problem_are_that_machines(ws: Path, client: TestClient) -> None:
    # Every unit failing at TEST ran on T1 (the even units): a problem on T2 lists none of them, where
    # the list once held the whole station's failures.
    on = {m: call("units", workspace=ws, outcome="first_pass_fail", station="TEST", machine=m) for m in ("T1", "T2")}
    assert on["T1"].count == len(FAILED_FIRST) and on["T2"].count == 0
    assert call("units", workspace=ws, outcome="first_pass_fail", product="P").count == len(FAILED_FIRST)
    assert call("units", workspace=ws, outcome="first_pass_fail", product="Q").count == 0
    from linelab.store import Workspace

    with Workspace.open(ws) as w:
        w.put_artifact("problem", "PRB-0009", {
            "id": "PRB-0009", "status": "open", "kind": "defect_rate", "entity": "TEST/T2",
            "scope": {"station": "TEST", "machine": "T2"}, "onset": {"t": ONSET}, "first_evidence": {"t": ONSET},
            "latest_evidence": {"t": LATEST}, "signals": [], "history": [],
            "description": "first-pass failures at TEST on machine T2 rose",
            "severity": {"units_affected": 60, "yield_lost_units": 3.0, "signals": 1}}, "open")
    html = client.get("/problem/PRB-0009").text
    link = re.search(r'<dd id="units-lost"><a href="([^"]+)"', html)
    assert link and "machine=T2" in link.group(1)
    assert _listed(client.get(link.group(1).replace("&amp;", "&")).text) == set()
