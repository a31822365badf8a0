"""The workbench in a real browser (Debian's chromium, driven by Playwright) after a loop run.

A person opens the overview, follows a problem to its page (its chart, diagnosis, actions and
know-how), opens the control chart and the capability of the problem's measurement, searches the
know-how and drills down to a unit. Every chart must draw, the numbers shown must be those the
REST API gives, and no script may fail. Screenshots go to reports/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from served_app import serving

from linelab.loop.runner import LoopPolicy
from linelab.loop.session import run_session

CHROMIUM = os.environ.get("LINELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "reports" / "screenshots"


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")
    pytest.skip("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = tmp_path_factory.mktemp("dash") / "ws"
    run_session(ws, "recurring_nozzle", 1, 22_000, LoopPolicy(optimise_recipe=False))  # fixed ~16,400, verified 20 h on
    with serving(ws) as url:
        yield url


@pytest.fixture(scope="module")
def browser(served: str) -> Iterator[Any]:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A browser tab that records script errors and failed requests."""

    def __init__(self, browser: Any, base: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.base = base
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def plots_drawn(self, selector: str = ".plot") -> int:
        """Wait until every figure on the page is drawn; how many there are."""
        n = self.page.locator(selector).count()
        for i in range(n):
            self.page.locator(selector).nth(i).and_(self.page.locator("[data-rendered='1']")).wait_for(timeout=20_000)
            assert self.page.locator(selector).nth(i).locator(".main-svg").count() > 0
        return n

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def api(base: str, name: str, **body: Any) -> Any:
    r = httpx.post(f"{base}/api/{name}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_overview_problem_chart_capability_knowhow_and_unit(served: str, browser: Any) -> None:
    tab = Page(browser, served)
    p = tab.page
    # The overview: its numbers are the API's, its trend and Pareto draw.
    p.goto(served + "/")
    assert tab.plots_drawn() == 2
    overall = api(served, "yield", by="station")["overall"]
    assert p.locator("#kpi-units").inner_text() == f"{overall['units']:,}"
    assert p.locator("#kpi-fpy").inner_text() == f"{100 * overall['first_pass_yield']:.2f}%"
    problems = api(served, "problems")["problems"]
    assert p.locator("#problems tr").count() == len(problems) + 1
    tab.shot("overview")

    # The first-pass yield leads to the units it counts as failed: as many as the yield says.
    p.locator("#kpi-fpy-units").click()
    p.wait_for_url(re.compile(r"/units\?outcome=first_pass_fail"))
    failed = api(served, "units", outcome="first_pass_fail", limit=1)["count"]
    assert failed == round(overall["units"] * (1 - overall["first_pass_yield"]))
    assert p.locator("#count b").inner_text() == f"{failed:,} units"
    assert p.locator("#units a.unit").count() == min(failed, 100)
    tab.shot("units")
    p.goto(served + "/")

    # Follow the first problem to its page: chart, diagnosis, actions and know-how.
    first = problems[0]["id"]
    p.locator("#problems a", has_text=first).click()
    p.wait_for_url(re.compile(f"/problem/{first}$"))
    assert tab.plots_drawn() >= 2  # its chart and at least one evidence plot
    shown = api(served, "problem/show", id=first, plot="none")["problem"]
    assert p.locator("#units-affected").inner_text() == f"{shown['severity']['units_affected']:,}"
    causes = p.locator("#causes tr")
    assert causes.count() > 1
    entries = [e for e in api(served, "knowhow/list")["entries"] if e["problem_id"] == first]
    assert entries, "the loop wrote know-how for the problem it fixed"
    assert entries[0]["id"] in p.locator("#knowhow").inner_text()
    top = entries[0]["root_cause"]
    assert causes.nth(1).inner_text().split("\t")[1].startswith(f"{top['factor']}={top['level']}")
    assert p.locator("#actions").inner_text().count("ACT-") >= 1
    tab.shot("problem")

    # Its printable report: the page's button serves what `problem report` writes, and it loads nothing.
    requests: list[str] = []

    def note(r: Any) -> None:
        requests.append(r.url)

    p.on("request", note)
    p.locator("#problem-report").click()
    p.wait_for_url(re.compile(f"/problem/{first}/report$"))
    text = p.locator("body").inner_text()
    assert "Ranked causes and their evidence" in text and entries[0]["id"] in text
    assert f"{shown['severity']['yield_lost_units']:,g}" in p.locator("#seen").inner_text()
    assert requests == [p.url] and p.locator("svg").count() >= 2  # its chart and evidence, drawn inline
    p.remove_listener("request", note)
    tab.shot("problem-report")
    p.goto(f"{served}/problem/{first}")

    # Its measurement's control chart, by machine: the limits shown are the API's.
    p.locator("#series-chart").click()
    p.wait_for_url(re.compile(r"/chart\?"))
    assert tab.plots_drawn() >= 2
    series = p.locator("input[name=series]").input_value()
    chart = api(served, "chart", series=series, by="machine", points=2000)
    centres = [row.locator("td").nth(3).inner_text() for row in p.locator("#limits tr").all()[1:]]
    assert centres == [f"{g['centre']:.4g}" for g in chart["groups"]]
    flagged = [row.locator("td").nth(6).inner_text() for row in p.locator("#limits tr").all()[1:]]
    assert flagged == [f"{g['flagged']:,}" for g in chart["groups"]]
    tab.shot("chart")

    # A p chart from the same form.
    p.select_option("select[name=type]", "p")
    p.fill("input[name=series]", api(served, "yield", by="station")["rows"][0]["station"])
    p.locator("#chart-form button").click()
    p.wait_for_url(re.compile(r"type=p"))
    assert tab.plots_drawn() == 1

    # Capability of the measurement: histogram with spec limits, the API's indices.
    p.goto(f"{served}/capability?series={series}")
    assert tab.plots_drawn() >= 1
    cap = api(served, "capability", series=series)["studies"][0]
    row = p.locator("#capability-table tr").nth(1).inner_text()
    assert f"{cap['ppk']['value']:.2f}" in row and f"{cap['n']:,}" in row
    assert "LSL" in p.locator("#capability-1").inner_text()
    tab.shot("capability")

    # Search the know-how.
    p.goto(served + "/knowhow")
    word = entries[0]["signature"]["measurement"] or entries[0]["fix"]["action"]
    p.fill("input[name=q]", word)
    p.locator("#search-button").click()
    p.wait_for_selector("#matches table")
    found = api(served, "knowhow/search", text=word, top=10)["matches"]
    assert found and found[0]["entry_id"] in p.locator("#matches").inner_text()
    tab.shot("knowhow")

    # Its 8D report, served as the page the export writes: it loads nothing that is not there.
    p.goto(f"{served}/knowhow/8d?id={entries[0]['id']}")
    assert "D4 Root cause" in p.locator("body").inner_text()
    assert not tab.errors, tab.errors

    # Drill down to a unit behind the problem's onset: its genealogy, as `trace` gives it.
    p.goto(f"{served}/problem/{first}")
    p.locator("#facts a.unit").first.click()
    p.wait_for_url(re.compile(r"/unit/"))
    serial = p.url.rsplit("/", 1)[-1]
    traced = api(served, "trace", serial=serial)["tables"]
    assert p.locator(".table-steps tr").count() == len(traced["steps"]) + 1
    tab.shot("unit")

    p.goto(served + "/experiments")
    assert "no experiments designed yet" in p.locator("main").inner_text()

    p.goto(served + "/learning")
    assert tab.plots_drawn() == 1
    assert p.locator("#incidents tr").count() > 1
    assert not tab.errors, tab.errors


def test_a_fix_recorded_on_the_page_goes_through_problem_resolve(served: str, browser: Any) -> None:
    tab = Page(browser, served)
    p = tab.page
    first = api(served, "problems")["problems"][0]["id"]
    api(served, "problem/status", id=first, status="open", note="seen again on the line")
    p.goto(f"{served}/problem/{first}")
    p.fill("input[name=cause]", "the feeder was loose")  # a cause without its fix: refused, said on the page
    p.locator("#resolve-button").click()
    p.wait_for_selector("#form-error")
    assert "--fix" in p.locator("#form-error").inner_text()
    p.fill("textarea[name=note]", "closed from the workbench")
    p.locator("#resolve-button").click()
    p.wait_for_selector("#form-done")
    shown = api(served, "problem/show", id=first, plot="none")["problem"]
    assert shown["status"] == "resolved"
    assert shown["history"][-1]["note"] == "closed from the workbench"
    assert not tab.errors, tab.errors


def test_the_overview_updates_itself(served: str, browser: Any) -> None:
    tab = Page(browser, served)
    p = tab.page
    p.goto(served + "/?refresh=1")
    tab.plots_drawn()
    first = api(served, "problems")["problems"][0]["id"]
    assert first not in p.locator("#open-section").inner_text()
    api(served, "problem/status", id=first, status="open", note="seen again")
    p.locator("#open-problems", has_text=first).wait_for(timeout=15_000)  # no reload: the page fetched it
    assert tab.plots_drawn() == 2 and not tab.errors, tab.errors


def test_pages_answer_bad_requests_with_a_page_not_a_trace(served: str) -> None:
    r = httpx.get(f"{served}/problem/PRB-9999")
    assert r.status_code == 404 and "no problem" in r.text
    r = httpx.get(f"{served}/chart", params={"series": "no_such_reading"})
    assert r.status_code == 400 and "no measurement" in r.text
    assert httpx.get(f"{served}/workbench/static/..%2Fviews.py").status_code == 404
    # A form another web site posts (cross-site request forgery) changes nothing.
    first = api(served, "problems")["problems"][0]
    r = httpx.post(f"{served}/problem/{first['id']}/resolve", data={"note": "forged"},
                   headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert api(served, "problem/show", id=first["id"], plot="none")["problem"]["status"] == first["status"]
    assert httpx.get(f"{served}/static/plotly.js").status_code == 200
