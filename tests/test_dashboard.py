"""The dashboard in a real browser (Debian's chromium, driven by Playwright) after a loop run:
its plots draw, its tables fill from the REST API, and no script fails on the page."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from linelab.api import create_app
from linelab.loop.runner import LoopPolicy
from linelab.loop.session import run_session

CHROMIUM = os.environ.get("LINELAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")
    pytest.skip("chromium is not installed (`make browser`, or set LINELAB_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = tmp_path_factory.mktemp("dash") / "ws"
    run_session(ws, "recurring_nozzle", 1, 20_000, LoopPolicy(optimise_recipe=False))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_dashboard_draws_the_learning_curve_and_the_incident_table(served: str) -> None:
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(served)
        # The learning curve: one line per run (no loop, LineLab's loop, the oracle).
        page.wait_for_selector("#learning .scatterlayer .trace", timeout=20_000)
        assert page.locator("#learning .scatterlayer .trace").count() == 3
        # The incident table: the nozzle problem, when it began, was detected and fixed, and by what.
        rows = page.locator("#incidents tr")
        rows.nth(1).wait_for(timeout=10_000)
        assert "onset" in rows.nth(0).inner_text()
        assert any("replace_nozzle" in rows.nth(i).inner_text() for i in range(1, rows.count()))
        # The problems the monitor found and the know-how the loop wrote are listed too.
        page.wait_for_selector("#problems table", timeout=10_000)
        page.wait_for_selector("#knowhow table", timeout=10_000)
        assert "KH-0001" in page.locator("#knowhow").inner_text()
        page.wait_for_selector("#yield .main-svg", timeout=10_000)
        browser.close()
    assert not errors, errors
