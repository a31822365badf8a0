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
