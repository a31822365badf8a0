"""The PostgreSQL the tests use: LINELAB_PG_URL (default: the local server), one fresh schema per test.

Without a reachable server the tests that need it are skipped with the reason, except under CI
(CI=true), where a missing service is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

PG_URL = os.environ.get("LINELAB_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@cache
def _unreachable() -> str | None:
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


def require_postgres() -> str:
    problem = _unreachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required under CI: {problem}")
        pytest.skip(f"no PostgreSQL at {PG_URL} ({problem}); set LINELAB_PG_URL to run these tests")
    return PG_URL


def with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | params
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def admin() -> psycopg.Connection:
    return psycopg.connect(require_postgres(), autocommit=True)


@contextlib.contextmanager
def fresh_schema(files: Path) -> Iterator[tuple[str, str]]:
    """A workspace URL on a schema of its own (dropped afterwards), and the schema's name."""
    base = require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield with_params(base, schema=schema, files=str(files)), schema
    finally:
        with admin() as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
