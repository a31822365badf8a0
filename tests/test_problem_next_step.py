"""A problem's page says what to do next, and offers the line's remedy for its top-ranked cause as
a button that proposes it (`act propose`, waiting for approval), then says what the action waits for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from linelab.api import create_app
from linelab.commands import call
from linelab.store import Workspace


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A simulated line with a worn part, watched by the monitor: one problem, not yet diagnosed."""
    ws = tmp_path_factory.mktemp("next") / "ws"
    call("twin run", workspace=ws, scenario="nozzle_wear", units=16_000)
    call("monitor run", workspace=ws)
    problems: Any = call("problems", workspace=ws)
    assert problems.problems
    return ws, problems.problems[0]["id"]


def _next(html: str) -> str:
    box = html[html.index('id="next-step"'):]
    return " ".join(re.sub(r"<[^>]+>", " ", box[:box.index("</section>")]).split())


def test_the_problem_page_leads_from_diagnosis_to_a_proposed_action(found: tuple[Path, str]) -> None:
    ws, pid = found
    client = TestClient(create_app(ws), base_url="http://localhost")
    assert "diagnose" in _next(client.get(f"/problem/{pid}").text).lower()

    client.post(f"/problem/{pid}/diagnose")
    html = client.get(f"/problem/{pid}").text
    with Workspace.open(ws) as w:  # the diagnosis the page's button stored
        stored = w.get_artifact("diagnosis", pid)
    assert stored is not None
    top = stored["diagnosis"]["causes"][0]
    said = _next(html)
    assert f"{top['factor']}={top['level']}" in said and "propose" in said
    form = html[html.index('id="next-step"'):]
    kind = re.search(r'name="kind" value="([^"]+)"', form)
    assert kind and f'action="/problem/{pid}/act"' in form and 'id="propose-button"' in form

    done = client.post(f"/problem/{pid}/act", data={"kind": kind.group(1),
                                                     "params": re.search(r'name="params" value="([^"]*)"', form)
                                                     .group(1)})  # type: ignore[union-attr]
    assert done.status_code == 200 and 'id="form-done"' in done.text
    actions: Any = call("act list", workspace=ws, problem_id=pid)
    (action,) = actions.actions
    assert action.kind == kind.group(1) and action.status == "proposed" and action.source == "diagnosis"
    said = _next(done.text)
    assert action.id in said and "approve" in said and "propose-button" not in done.text[done.text.index(
        'id="next-step"'):done.text.index('id="next-step"') + 2000]


def test_a_proposal_from_another_site_is_refused(found: tuple[Path, str]) -> None:
    ws, pid = found
    client = TestClient(create_app(ws), base_url="http://localhost")
    r = client.post(f"/problem/{pid}/act", data={"kind": "anything"}, headers={"origin": "http://elsewhere.example"})
    assert r.status_code == 403


def test_the_problem_report_draws_the_chart_in_the_measurements_units_and_says_the_pages_next_step(
        found: tuple[Path, str], tmp_path: Path) -> None:
    from linelab.monitor.chart_commands import spec_unit

    ws, pid = found
    with Workspace.open(ws) as w:
        diagnosed = w.get_artifact("diagnosis", pid)
        scope = w.get_artifact("problem", pid)["scope"]  # type: ignore[index]
        unit = spec_unit(w, scope["station"], scope["measurement"])
    if diagnosed is None:
        call("diagnose", workspace=ws, problem_id=pid)
    res: Any = call("problem report", workspace=ws, id=pid, out=tmp_path / "r.html")
    report = (tmp_path / "r.html").read_text()
    assert unit and f"{scope['measurement']}" in report
    chart = report[report.index('<figure id="chart">'):]
    assert re.search(rf"{scope['measurement']}[^<]*\[{re.escape(unit)}\]</text>", chart)  # the value axis
    assert "onset</text>" in chart and "detected</text>" in chart
    with Workspace.open(ws) as w:
        top = w.get_artifact("diagnosis", pid)["diagnosis"]["causes"][0]  # type: ignore[index]
    causes = report[report.index('<table class="causes">'):]
    first = re.search(r"<tr><td>1</td><td><b>([^<]+)</b>", causes)
    assert first and first.group(1) == f"{top['factor']}={top['level']}"
    assert report.count("<svg") == 1 + min(3, sum(1 for _ in re.finditer(r"<tr><td>\d+</td>", causes)))
    # the report's next step is the page's
    page = TestClient(create_app(ws), base_url="http://localhost").get(f"/problem/{pid}").text
    assert res.next_step in _next(page)
    assert res.next_step.replace("`", "") in " ".join(re.sub(r"<[^>]+>", "", report).split())  # commands as code
