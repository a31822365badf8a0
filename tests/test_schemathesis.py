"""Generated REST calls (Schemathesis, from the app's own OpenAPI spec) never get a server error.

The calls go in-process to the app over a small simulated line. Operations that run a
simulation or a long analysis are left to their own tests; everything that reads, and the
bookkeeping that writes (actions, problem status, know-how, uploads), is fuzzed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from linelab.api import create_app
from linelab.commands import call

FUZZED = [
    "/api/commands", "/outputs/{name}",
    "/api/ingest", "/api/quarantine", "/api/yield", "/api/pareto", "/api/trace",
    "/api/problems", "/api/problem/show", "/api/problem/status", "/api/problem/resolve",
    "/api/act/propose", "/api/act/approve", "/api/act/reject", "/api/act/check", "/api/act/list",
    "/api/act/done",
    "/api/knowhow/list", "/api/knowhow/show", "/api/knowhow/search", "/api/knowhow/edit",
    "/api/knowhow/add", "/api/knowhow/watches",
    "/api/experiment/status", "/api/learning", "/api/twin/scenarios",
    "/api/profile/schema", "/api/profile/init", "/api/profile/check",
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ws = tmp_path_factory.mktemp("fuzz") / "ws"
    call("twin run", workspace=ws, units=2000, seed=3)
    app = create_app(ws, allowed_hosts=["testserver"])  # the name the in-process client sends
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return schema


@pytest.mark.parametrize("path", FUZZED)
def test_no_generated_call_gets_a_server_error(api_schema: Any, path: str) -> None:
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations()) if op.path == path]
    assert operations, path
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])
        def generated_calls(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        generated_calls()


def test_the_fuzzed_operations_are_the_ones_the_server_offers(tmp_path: Path) -> None:
    # A renamed or dropped command must not silently leave the fuzzing.
    paths = set(create_app(tmp_path / "ws").openapi()["paths"])
    assert set(FUZZED) <= paths, set(FUZZED) - paths
