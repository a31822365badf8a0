"""A PostgreSQL workspace: versioned schema, several processes at once, all-or-nothing batches
through a cut connection, and the user's commands answering as on DuckDB.

(tests/test_store.py runs every store test on both backends; these are what only a shared
database has.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from postgres_service import admin, fresh_schema, require_postgres, with_params

from linelab.commands import call
from linelab.errors import UserError
from linelab.store import Workspace
from linelab.store.migrations import LATEST, MIGRATIONS
from linelab.store.postgres import DatabaseUnavailable
from linelab.store.workspace import DB_FILE

T0 = 1_767_600_000_000_000  # 2026-01-05, in µs


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with fresh_schema(tmp_path / "files") as url_and_schema:
        yield url_and_schema


def measurements(first: int, n: int, unit_prefix: str = "SN") -> pa.Table:
    i = np.arange(first, first + n)
    return pa.table({
        "unit_id": pa.array([f"{unit_prefix}{k:07d}" for k in i]),
        "station": pa.array(["SPI"] * n),
        "name": pa.array(["paste_volume_pct"] * n),
        "value": pa.array(100.0 + np.sin(i)),
        "t": pa.array(T0 + i * 1_000_000, pa.timestamp("us")),
    })


def units(ids: list[str], result: list[str | None] | None = None) -> pa.Table:
    cols = {"unit_id": ids, "product": ["A"] * len(ids), "line": ["L1"] * len(ids),
            "t_start": pa.array([T0 + k for k in range(len(ids))], pa.timestamp("us"))}
    if result is not None:
        cols["result"] = result
    return pa.table(cols)


# -- schema ------------------------------------------------------------------------------------------
def test_the_schema_is_migrated_in_order_and_matches_what_the_code_reads(pg: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg
    with Workspace.open(url) as ws:
        replica = {t: ws.query(f"SELECT * FROM {t} LIMIT 0").schema for t in
                   ("units", "steps", "measurements", "params", "materials", "signals", "events", "specs",
                    "batches", "quarantine", "artifacts")}
    with admin() as con:
        versions = [r[0] for r in con.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY 1')]
        assert versions == [m.version for m in MIGRATIONS] and versions[-1] == LATEST
        pg_types = {"character varying": pa.string(), "double precision": pa.float64(), "bigint": pa.int64(),
                    "boolean": pa.bool_(), "timestamp without time zone": pa.timestamp("us")}
        for table, want in replica.items():
            cols = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = %s AND table_name = %s AND column_name <> '_rev'",
                               (schema, table)).fetchall()
            assert sorted((c, pg_types[t]) for c, t in cols) == sorted((f.name, f.type) for f in want), table
        # A second process opening the workspace migrates nothing again.
        Workspace.open(url).close()
        assert con.execute(f'SELECT count(*) FROM "{schema}".schema_version').fetchone() == (LATEST,)
        # A workspace made by a newer LineLab is refused, not guessed at.
        con.execute(f'INSERT INTO "{schema}".schema_version VALUES (%s, %s, now())', (LATEST + 1, "future"))
    with pytest.raises(UserError, match=f"version {LATEST + 1}, newer than this LineLab"):
        Workspace.open(url)


def test_a_duckdb_workspace_from_before_versioning_is_brought_up_to_date(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    con = duckdb.connect(str(folder / DB_FILE))
    for ddl in MIGRATIONS[0].duckdb:  # the tables as the first release made them, without schema_version
        con.execute(ddl)
    con.execute("INSERT INTO quarantine VALUES ('b1', 'old.csv', 'units', 3, 'unit_id', 'missing value', '{}', "
                "TIMESTAMP '2026-01-05 06:00:00')")
    con.close()
    with Workspace.open(folder) as ws:
        assert ws.scalar("SELECT max(version) FROM schema_version") == LATEST
        row = ws.query('SELECT batch_id, "key", resolved_batch FROM quarantine').to_pylist()
        assert row == [{"batch_id": "b1", "key": None, "resolved_batch": None}]


# -- several processes on one database ------------------------------------------------------------------
def test_an_open_workspace_sees_what_another_one_writes(pg: tuple[str, str]) -> None:
    url, _ = pg
    with Workspace.open(url) as writer, Workspace.open(url) as reader:
        assert reader.count("units") == 0
        writer.ingest_tables({"units": units(["SN1", "SN2"])}, source="a")
        assert reader.count("units") == 2  # appended rows are read incrementally
        writer.ingest_tables({"units": units(["SN1", "SN2"], ["pass", "fail"])}, source="late")
        assert reader.query("SELECT unit_id, result FROM units ORDER BY 1").to_pylist() == [
            {"unit_id": "SN1", "result": "pass"}, {"unit_id": "SN2", "result": "fail"}]  # a late result
        writer.put_artifact("problem", "P-1", {"status": "open"})
        writer.put_artifact("problem", "P-1", {"status": "resolved"})
        assert reader.list_artifacts("problem") == [{"status": "resolved"}]
        # The reader writes too, on top of what it has just seen; the writer sees that.
        reader.ingest_tables({"units": units(["SN3"])}, source="b")
        assert writer.query("SELECT unit_id FROM units ORDER BY 1").column(0).to_pylist() == ["SN1", "SN2", "SN3"]
        assert sorted(writer.query("SELECT seq FROM batches").column(0).to_pylist()) == [1, 2, 3]


WRITER = """
import sys
import numpy as np, pyarrow as pa
from linelab.store import Workspace
url, name, n_batches, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
T0 = {t0}
with Workspace.open(url) as ws:
    for b in range(n_batches):
        # Batch b of both writers holds the same rows: one stores them, the other finds them stored.
        i = np.arange(b * rows, (b + 1) * rows)
        batch = pa.table({{"unit_id": [f"SN{{k:07d}}" for k in i], "station": ["SPI"] * rows,
                          "name": ["paste_volume_pct"] * rows, "value": 100.0 + np.sin(i),
                          "t": pa.array(T0 + i * 1_000_000, pa.timestamp("us"))}})
        ws.ingest_tables({{"measurements": batch}}, source=name, batch_ids={{"measurements": f"{{name}}-{{b}}"}})
"""

READER = """
import json, sys, time
from linelab.store import Workspace
url, rows, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = []
with Workspace.open(url, read_only=True) as ws:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # One query, so both numbers come from the same state of the replica.
        n, stored = ws.query("SELECT (SELECT count(*) FROM measurements), "
                             "(SELECT coalesce(sum(n_rows), 0) FROM batches)").to_pylist()[0].values()
        seen.append([int(n), int(stored)])
        if n >= expected:
            break
        time.sleep(0.01)
print(json.dumps(seen))
"""


def test_two_writers_and_a_reader_at_once_store_every_row_once(pg: tuple[str, str]) -> None:
    url, schema = pg
    n_batches, rows = 8, 2_000
    Workspace.open(url).close()  # made once; the processes then race only on data
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = textwrap.dedent(WRITER.format(t0=T0))
    reader = subprocess.Popen([sys.executable, "-c", READER, url, str(rows), str(n_batches * rows)],
                              stdout=subprocess.PIPE, text=True, env=env)
    writers = [subprocess.Popen([sys.executable, "-c", writer, url, name, str(n_batches), str(rows)], env=env)
               for name in ("w1", "w2")]
    assert [w.wait(timeout=180) for w in writers] == [0, 0]
    out, _ = reader.communicate(timeout=180)
    assert reader.returncode == 0
    seen = json.loads(out)
    # The reader only ever saw whole batches, each with its batches row, and never a count going back.
    counts = [n for n, _ in seen]
    assert all(n % rows == 0 for n in counts) and counts == sorted(counts)
    assert all(n == stored for n, stored in seen)
    assert counts[-1] == n_batches * rows
    with admin() as con:
        assert con.execute(f'SELECT count(*), count(DISTINCT (unit_id, t)) FROM "{schema}".measurements').fetchone() \
            == (n_batches * rows, n_batches * rows)
        batches = con.execute(f'SELECT seq, source, n_rows, n_duplicates FROM "{schema}".batches').fetchall()
    assert len(batches) == 2 * n_batches and len({b[0] for b in batches}) == 2 * n_batches  # one seq each
    assert sum(b[2] for b in batches) == n_batches * rows and sum(b[3] for b in batches) == n_batches * rows
    for name in ("w1", "w2"):  # each writer's batches all landed, stored or found stored
        assert sum(1 for b in batches if b[1] == name) == n_batches


# -- a cut connection ---------------------------------------------------------------------------------------
def test_a_connection_cut_mid_copy_stores_nothing_and_a_retry_stores_the_batch_once(pg: tuple[str, str]) -> None:
    url, schema = pg
    batch = measurements(0, 50_000)
    with Workspace.open(url) as ws, admin() as blocker, admin() as killer:
        ws.ingest_tables({"units": units(["SN0000000"])}, source="before")
        # Hold the table so the COPY is certainly under way (sent, waiting) when the connection is cut.
        blocker.execute("BEGIN")
        blocker.execute(f'LOCK TABLE "{schema}".measurements IN ACCESS EXCLUSIVE MODE')
        failure: list[BaseException] = []

        def ingest() -> None:
            try:
                ws.ingest_tables({"measurements": batch}, source="cut")
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                failure.append(exc)

        worker = threading.Thread(target=ingest)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            copying: list[tuple[int, ...]] = []
            while not copying and time.monotonic() < deadline:
                copying = killer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'COPY%%' "
                    "AND query LIKE %s AND wait_event_type = 'Lock'", (f"%{schema}%measurements%",)).fetchall()
                time.sleep(0.01)
            assert copying, "the ingest never reached its COPY"
            killer.execute("SELECT pg_terminate_backend(%s)", (copying[0][0],))
        finally:
            blocker.execute("ROLLBACK")
            worker.join(timeout=60)
        assert len(failure) == 1 and isinstance(failure[0], DatabaseUnavailable), failure
        assert "nothing of the interrupted transaction was stored" in str(failure[0])
        with admin() as con:
            assert con.execute(f'SELECT count(*) FROM "{schema}".measurements').fetchone() == (0,)
            assert con.execute(f'SELECT count(*) FROM "{schema}".batches').fetchone() == (1,)
        assert ws.count("measurements") == 0  # the replica rolled back too
        # The same workspace reconnects; the retry stores the batch, and a second retry adds nothing.
        rep = ws.ingest_tables({"measurements": batch}, source="cut")
        assert rep.stored == batch.num_rows
        again = ws.ingest_tables({"measurements": batch}, source="cut")
        assert again.tables[0].skipped_batch and again.stored == 0
    with admin() as con:
        assert con.execute(f'SELECT count(*), count(DISTINCT (unit_id, t)) FROM "{schema}".measurements').fetchone() \
            == (batch.num_rows, batch.num_rows)


# -- opening ------------------------------------------------------------------------------------------------
def test_bad_addresses_and_read_only_use_say_what_is_wrong(pg: tuple[str, str], tmp_path: Path) -> None:
    url, _ = pg
    closed_port = with_params(require_postgres().replace(":5432", ":1"), files=str(tmp_path / "x"))
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL"):
        Workspace.open(closed_port)
    with pytest.raises(UserError, match="schema 'Bad-Name'"):
        Workspace.open(with_params(url, schema="Bad-Name"))
    with pytest.raises(UserError, match="no workspace at"):
        Workspace.open(with_params(url, schema="never_made"), create=False)
    Workspace.open(url).close()
    with Workspace.open(url, read_only=True) as ws, pytest.raises(UserError, match="read-only"):
        ws.put_artifact("problem", "P-1", {"status": "open"})


# -- the user's commands ----------------------------------------------------------------------------------
def test_the_commands_answer_on_postgres_as_on_duckdb(pg: tuple[str, str], tmp_path: Path) -> None:
    url, _ = pg
    answers = {}
    for name, where in (("duckdb", str(tmp_path / "duck")), ("postgres", url)):
        run = call("twin run", workspace=where, units=600, seed=3)
        assert run.units == 600
        with Workspace.open(where) as ws:
            serial = str(ws.scalar("SELECT min(unit_id) FROM units"))
        csv = tmp_path / f"steps_{name}.csv"
        csv.write_text("unit_id,station,machine,t_in,t_out,result,defect_code\n"
                       "XX1,AOI,AOI1,2026-01-05 06:00:00,2026-01-05 06:01:00,pass,\n"
                       "XX2,AOI,AOI1,not a time,2026-01-05 06:01:00,pass,\n")
        ingested = call("ingest", workspace=where, paths=[csv], table="steps")
        answers[name] = {
            "yield": call("yield", workspace=where, by="machine").model_dump(),
            "pareto": call("pareto", workspace=where).model_dump(),
            "trace": call("trace", workspace=where, serial=serial).model_dump(),
            "ingest": (ingested.model_dump()["stored"], ingested.model_dump()["quarantined"]),
            "quarantine": [(r["row"], r["field"]) for r in call("quarantine", workspace=where).model_dump()["rows"]],
            "monitor": call("monitor run", workspace=where).model_dump(exclude={"seconds"}),
            "problems": call("problems", workspace=where).model_dump(),
        }
    assert answers["postgres"]["ingest"] == (1, 1)
    for key in answers["duckdb"]:
        assert answers["postgres"][key] == answers["duckdb"][key], key


def test_without_a_server_the_tests_skip_with_the_reason_but_under_ci_they_fail(tmp_path: Path) -> None:
    require_postgres()  # runs where the others do; what it checks is the rule they all follow
    (tmp_path / "test_needs_postgres.py").write_text(
        "from postgres_service import require_postgres\n\n"
        "def test_needs_postgres():\n    require_postgres()\n\n"
        "def test_needs_nothing():\n    pass\n")
    args = [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "test_needs_postgres.py"]
    env = {**os.environ, "LINELAB_PG_URL": "postgresql://postgres@127.0.0.1:1/test",
           "PYTHONPATH": str(Path(__file__).parent)}
    local = subprocess.run(args, cwd=tmp_path, env={**env, "CI": "false"}, capture_output=True, text=True)
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout, local.stdout
    assert "no PostgreSQL at postgresql://postgres@127.0.0.1:1/test" in local.stdout
    ci = subprocess.run(args, cwd=tmp_path, env={**env, "CI": "true"}, capture_output=True, text=True)
    assert ci.returncode == 1 and "1 failed, 1 passed" in ci.stdout and "required under CI" in ci.stdout, ci.stdout


def test_a_connection_dropped_while_idle_is_replaced_without_the_user_noticing(pg: tuple[str, str]) -> None:
    url, schema = pg
    with Workspace.open(url) as ws, admin() as con:
        ws.ingest_tables({"units": units(["SN1"])}, source="a")

        def cut_idle() -> None:
            pids = con.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                               (f"linelab {schema}",)).fetchall()
            assert pids
            for (pid,) in pids:
                con.execute("SELECT pg_terminate_backend(%s)", (pid,))

        cut_idle()
        assert ws.count("units") == 1  # a read reconnects
        cut_idle()
        assert ws.ingest_tables({"units": units(["SN2"])}, source="b").stored == 1  # so does a write
        assert con.execute(f'SELECT count(*) FROM "{schema}".units').fetchone() == (2,)


def test_threads_share_one_workspace_and_its_replica(pg: tuple[str, str]) -> None:
    url, schema = pg
    errors: list[BaseException] = []
    with Workspace.open(url) as ws:
        def write(k: int) -> None:
            try:
                for b in range(5):
                    ws.ingest_tables({"measurements": measurements((k * 5 + b) * 500, 500)}, source=f"t{k}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def read() -> None:
            try:
                for _ in range(40):
                    n, stored = ws.query("SELECT (SELECT count(*) FROM measurements), "
                                         "(SELECT coalesce(sum(n_rows), 0) FROM batches)").to_pylist()[0].values()
                    assert n == stored and n % 500 == 0  # never inside another thread's transaction
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(3)] + \
                  [threading.Thread(target=read) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert ws.count("measurements") == 3 * 5 * 500
    with admin() as con:
        assert con.execute(f'SELECT count(*) FROM "{schema}".measurements').fetchone() == (3 * 5 * 500,)


def test_the_server_answers_from_a_postgres_workspace(pg: tuple[str, str]) -> None:
    from fastapi.testclient import TestClient

    from linelab.api import create_app

    url, _ = pg
    steps = ("unit_id,station,machine,t_in,result,defect_code\n"
             "SN1,AOI,A1,2026-01-05 06:00:00,fail,BRIDGE\nSN2,AOI,A1,2026-01-05 06:01:00,pass,\n")
    with TestClient(create_app(url), base_url="http://localhost") as client:
        stored = client.post("/api/ingest", files=[("paths", ("steps.csv", steps.encode(), "text/csv"))])
        assert stored.status_code == 200 and stored.json()["stored"] == 2, stored.text
        assert client.post("/api/pareto", json={}).json()["rows"][0]["defect_code"] == "BRIDGE"
        # Another process writes; the server's shared replica sees it at the next request.
        with Workspace.open(url) as other:
            other.ingest_tables({"steps": pa.table({
                "unit_id": ["SN3"], "station": ["AOI"], "t_in": pa.array([T0], pa.timestamp("us")),
                "result": ["fail"], "defect_code": ["BRIDGE"]})}, source="other")
        assert client.post("/api/pareto", json={}).json()["rows"][0]["defects"] == 2


def test_a_corrected_record_resolves_its_quarantine_entry_in_the_database(pg: tuple[str, str], tmp_path: Path) -> None:
    url, schema = pg
    header = "unit_id,station,name,value,t\n"
    rows = [f"SN{i},TEST,vout_v,3.30{i},2026-01-05 06:0{i}:00\n" for i in range(3)]
    bad = tmp_path / "measurements_1.csv"
    bad.write_text(header + rows[0] + rows[1].replace("3.301", "oops") + rows[2])
    assert call("ingest", workspace=url, paths=[bad]).model_dump()["quarantined"] == 1
    fixed = tmp_path / "measurements_1_fixed.csv"
    fixed.write_text(header + "".join(rows))
    assert call("ingest", workspace=url, paths=[fixed]).model_dump()["resolved"] == 1
    with admin() as con:  # the entry was updated in place in PostgreSQL, not duplicated
        assert con.execute(f'SELECT count(*), count(resolved_batch) FROM "{schema}".quarantine').fetchone() == (1, 1)
    with Workspace.open(url) as other:
        assert other.query("SELECT field, resolved_batch IS NOT NULL AS r FROM quarantine").to_pylist() == [
            {"field": "value", "r": True}]
        assert other.count("measurements") == 3


def test_an_update_whose_rows_the_key_cannot_name_rewrites_the_table_exactly(pg: tuple[str, str]) -> None:
    """Events' key has nullable parts: rows with a null there cannot be matched by key, so the
    table is rewritten from the replica; PostgreSQL must end up holding the same rows."""
    url, schema = pg
    events = pa.table({"t": pa.array([T0, T0 + 1], pa.timestamp("us")), "kind": ["hold", "release"],
                       "station": [None, "AOI"], "machine": pa.nulls(2, pa.string()),
                       "target": pa.nulls(2, pa.string()), "detail": ["a", "b"]})
    with Workspace.open(url) as ws:
        ws.ingest_tables({"events": events}, source="e")
        ws.backend.execute("UPDATE events SET detail = 'changed' WHERE kind = ?", ["hold"])
        mine = ws.query("SELECT kind, station, detail, batch FROM events ORDER BY kind").to_pylist()
    with admin() as con:
        stored = con.execute(f'SELECT kind, station, detail, batch FROM "{schema}".events ORDER BY kind').fetchall()
    assert [tuple(r.values()) for r in mine] == stored == [("hold", None, "changed", 1), ("release", "AOI", "b", 1)]
    with Workspace.open(url) as other:  # and a fresh replica reads the same
        assert other.query("SELECT kind, station, detail, batch FROM events ORDER BY kind").to_pylist() == mine


def test_rows_that_fail_part_way_through_a_streamed_insert_store_nothing(pg: tuple[str, str]) -> None:
    """An INSERT ... SELECT streams DuckDB's rows into one COPY as they are computed: a row that fails
    after the first blocks were sent aborts the COPY, so the transaction stores none of them."""
    url, schema = pg
    with Workspace.open(url) as ws:
        backend: Any = ws.backend
        started: list[str] = []
        copy_stream = backend._copy_stream

        def spy(table: str) -> Any:
            started.append(table)
            return copy_stream(table)

        backend._copy_stream = spy
        with pytest.raises((duckdb.Error, OSError), match="Could not convert"):  # as DuckDB streams it
            backend.execute("INSERT INTO measurements SELECT 'U' || i, 'SPI', 'x', "
                            "CAST(CASE WHEN i = 299999 THEN 'bad' ELSE '1.5' END AS DOUBLE), "
                            "TIMESTAMP '2026-01-05' + to_microseconds(i), 1 FROM range(300000) AS r(i)")
        assert started == ["measurements"]  # the COPY was under way when the row failed
        assert ws.count("measurements") == 0  # the replica rolled back
        with admin() as con:
            assert con.execute(f'SELECT count(*) FROM "{schema}".measurements').fetchone() == (0,)
        # The workspace goes on: the next batch is stored whole, in PostgreSQL as in the replica.
        assert ws.ingest_tables({"measurements": measurements(0, 40_000)}, source="after").stored == 40_000
    with admin() as con:
        assert con.execute(f'SELECT count(*) FROM "{schema}".measurements').fetchone() == (40_000,)


# -- replicas find new record rows by their batch (schema version 5) ---------------------------------------
def test_a_workspace_of_the_old_layout_is_migrated_in_place_and_its_replicas_stay_exact(pg: tuple[str, str]) -> None:
    """Before version 5 every record row carried `_rev` (and a block-range index on it); version 5 drops
    it, indexes `batch` instead and marks each table's greatest batch. A workspace written by the old
    layout keeps its rows, and replicas then find what is appended by batch, each row once."""
    url, schema = pg
    with admin() as con:  # the schema of version 4, holding what LineLab of that version wrote
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(f'SET search_path TO "{schema}"')
        con.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR, applied TIMESTAMP)")
        for step in MIGRATIONS[:4]:
            for ddl in step.postgres:
                con.execute(ddl)
            con.execute("INSERT INTO schema_version VALUES (%s, %s, now())", (step.version, step.description))
        con.execute("INSERT INTO units (unit_id, product, line, t_start, batch, _rev) VALUES "
                    "('SN1', 'A', 'L1', '2026-01-05', 1, 1), ('SN2', 'A', 'L1', '2026-01-05', 1, 1)")
        con.execute("INSERT INTO measurements (unit_id, station, name, value, t, batch, _rev) VALUES "
                    "('SN1', 'SPI', 'x', 1.0, '2026-01-05', 2, 2), ('SN2', 'SPI', 'x', 2.0, '2026-01-05', 2, 2), "
                    "('SN3', 'SPI', 'x', 3.0, '2026-01-05', NULL, 2)")
        con.execute("INSERT INTO batches VALUES (1, 'b1', 'old', 'units', 2, 0, 0, now(), 1), "
                    "(2, 'b2', 'old', 'measurements', 3, 0, 0, now(), 2)")
        con.execute("SELECT setval('batch_seq', 2)")
        con.execute("UPDATE store_state SET rev = 2")
        con.execute("UPDATE store_tables SET appended_rev = 1 WHERE table_name = 'units'")
        con.execute("UPDATE store_tables SET appended_rev = 2 WHERE table_name IN ('measurements', 'batches')")
    with Workspace.open(url) as writer, Workspace.open(url, read_only=True) as reader:
        assert reader.count("units") == 2 and reader.count("measurements") == 3
        with admin() as con:
            assert con.execute(f'SELECT max(version) FROM "{schema}".schema_version').fetchone() == (LATEST,)
            assert con.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = %s "
                               "AND column_name = '_rev' ORDER BY 1", (schema,)).fetchall() == [
                (t,) for t in sorted(("specs", "batches", "quarantine", "artifacts", "deploy_predictions",
                                      "deploy_verdicts", "line_summary"))]
            assert con.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexname LIKE "
                               "'%%\\_batch' ORDER BY 1", (schema,)).fetchall() == [
                (f"{t}_batch",) for t in sorted(("units", "steps", "measurements", "params", "materials",
                                                 "signals", "events"))]
            marks = dict(con.execute(f'SELECT table_name, appended_batch FROM "{schema}".store_tables').fetchall())
            assert marks["units"] == 1 and marks["measurements"] == 2 and marks["steps"] == 0
        loads: list[tuple[str, int | None]] = []
        backend: Any = reader.backend
        load = backend._load

        def spy(table: str, since: int | None) -> None:
            loads.append((table, since))
            load(table, since)

        backend._load = spy
        writer.ingest_tables({"units": units(["SN3", "SN4"]), "measurements": measurements(0, 5, "SN")},
                             source="new")
        assert reader.query("SELECT unit_id, batch FROM units ORDER BY 1").to_pylist() == [
            {"unit_id": "SN1", "batch": 1}, {"unit_id": "SN2", "batch": 1},
            {"unit_id": "SN3", "batch": 3}, {"unit_id": "SN4", "batch": 3}]
        assert reader.count("measurements") == 8 and reader.count("measurements", "batch = 4") == 5
        assert ("units", 1) in loads and ("measurements", 2) in loads  # only the rows past each mark were read
    with admin() as con:
        assert con.execute(f'SELECT count(*) FROM "{schema}".measurements').fetchone() == (8,)


def test_an_append_below_the_mark_makes_other_replicas_read_the_table_whole(pg: tuple[str, str]) -> None:
    """Rows appended with a batch not above the table's mark (or none) would not be found by `batch > mark`:
    the commit says the table was rewritten, and the other replicas read it whole."""
    url, _ = pg
    with Workspace.open(url) as writer, Workspace.open(url) as reader:
        writer.ingest_tables({"units": units(["SN1", "SN2"])}, source="a")
        writer.ingest_tables({"units": units(["SN3"])}, source="b")
        assert reader.count("units") == 3
        writer.backend.execute("INSERT INTO units (unit_id, batch) VALUES ('OLD', 1), ('NONE', NULL)")
        assert sorted(reader.query("SELECT unit_id FROM units").column(0).to_pylist()) == [
            "NONE", "OLD", "SN1", "SN2", "SN3"]
        writer.backend.execute("UPDATE units SET batch = 9 WHERE unit_id = 'SN1'")  # the mark rises with it
        writer.backend.execute("INSERT INTO units (unit_id, batch) VALUES ('NINE', 9)")
        writer.ingest_tables({"units": units(["SN5"])}, source="c")
        assert reader.query("SELECT unit_id, batch FROM units ORDER BY 1").to_pylist() == \
            writer.query("SELECT unit_id, batch FROM units ORDER BY 1").to_pylist()
        assert reader.count("units") == 7


SPLIT_WRITER = """
import sys
import numpy as np, pyarrow as pa
from linelab.store import Workspace
url, prefix, n_batches, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
T0 = {t0}
with Workspace.open(url) as ws:
    for b in range(n_batches):
        i = np.arange(b * rows, (b + 1) * rows)
        ids = [f"{{prefix}}{{k:07d}}" for k in i]
        ws.ingest_tables({{"units": pa.table({{"unit_id": ids[:10], "product": ["A"] * 10, "line": ["L1"] * 10,
                                              "t_start": pa.array(T0 + i[:10], pa.timestamp("us"))}}),
                          "measurements": pa.table({{"unit_id": ids, "station": ["SPI"] * rows,
                                                    "name": ["x"] * rows, "value": 1.0 + np.sin(i),
                                                    "t": pa.array(T0 + i * 1_000_000, pa.timestamp("us"))}})}},
                         source=prefix)
"""


def test_two_writers_committing_at_once_leave_a_replica_with_every_row_exactly_once(pg: tuple[str, str]) -> None:
    """Two processes ingest distinct rows at once while this one's replica keeps catching up, by batch:
    batch numbers are drawn under the lock that orders the commits, so the replica ends holding each
    committed row once (none missed, none read twice), as a fresh replica and the database do."""
    url, schema = pg
    n_batches, rows = 12, 3_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = textwrap.dedent(SPLIT_WRITER.format(t0=T0))
    with Workspace.open(url, read_only=True) as reader:
        backend: Any = reader.backend
        loads: list[tuple[str, int | None]] = []
        load = backend._load

        def spy(table: str, since: int | None) -> None:
            loads.append((table, since))
            load(table, since)

        backend._load = spy
        writers = [subprocess.Popen([sys.executable, "-c", writer, url, prefix, str(n_batches), str(rows)], env=env)
                   for prefix in ("A", "B")]
        deadline = time.monotonic() + 180
        while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
            found = reader.query("SELECT count(*) AS n, count(DISTINCT (unit_id, t)) AS d FROM measurements")
            assert found.column("n")[0] == found.column("d")[0]  # never a row twice
            time.sleep(0.005)
        assert [w.wait(timeout=60) for w in writers] == [0, 0]
        total = 2 * n_batches * rows
        mine = reader.query("SELECT unit_id, t, batch FROM measurements ORDER BY unit_id, t").to_pylist()
        assert len(mine) == total and len({(r["unit_id"], r["t"]) for r in mine}) == total
        assert reader.count("units") == 2 * n_batches * 10
        # It caught up by batch, never by reading a table whole: each commit's batches lay above the last mark.
        by_batch = [since for t, since in loads if t in ("units", "measurements")]
        assert by_batch and None not in by_batch
        with admin() as con:
            stored = con.execute(f'SELECT unit_id, t, batch FROM "{schema}".measurements ORDER BY unit_id, t')
            assert [tuple(r.values()) for r in mine] == stored.fetchall()
            seqs = con.execute(f'SELECT seq, table_name FROM "{schema}".batches ORDER BY seq').fetchall()
        assert len(seqs) == 4 * n_batches and len({s for s, _ in seqs}) == 4 * n_batches
    with Workspace.open(url, read_only=True) as fresh:
        assert fresh.query("SELECT unit_id, t, batch FROM measurements ORDER BY unit_id, t").to_pylist() == mine
