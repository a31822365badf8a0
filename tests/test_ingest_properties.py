"""Properties of ingest over generated exports (hypothesis): idempotent, order-free, conserving, format-blind.

Records are drawn from a small key space so that repeats are common; a record's value is a
function of its key, so repeats are true duplicates (conflicts are the corpus tests' business).
Some rows are bad in ways every format can express (blank id, non-finite value).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linelab.connect.files import ingest_file
from linelab.store import Workspace
from linelab.store.schema import RECORD_TABLES

T0 = dt.datetime(2026, 1, 5, 6, 0, 0)
BAD = {"blank_id": ("unit_id", "   "), "infinite": ("value", float("inf")), "nan": ("value", float("nan"))}
# (unit, station, name, time) indices, and for a bad row what is wrong with it.
rows_strategy = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 1), st.integers(0, 1), st.integers(0, 3),
              st.sampled_from([None] * 6 + list(BAD))),
    min_size=1, max_size=40)
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def record(key: tuple[int, int, int, int, str | None]) -> dict:
    u, s, n, t, bad = key
    rec = {"unit_id": f"SN{u}", "station": f"S{s}", "name": f"m{n}", "value": round(1 + u / 7 + s / 3 + n + t / 11, 6),
           "t": T0 + dt.timedelta(seconds=t, microseconds=17 * t)}
    if bad:
        field, value = BAD[bad]
        rec[field] = value
    return rec


def write_csv(path: Path, recs: list[dict], comment: str | None = None) -> Path:
    """The records as CSV; `comment` adds a column LineLab does not read (another file, the same records)."""
    extra = "" if comment is None else f",{comment}"
    lines = ["unit_id,station,name,value,t" + (",comment" if extra else "")]
    lines += [f"{r['unit_id']},{r['station']},{r['name']},{r['value']!r},{r['t'].isoformat(sep=' ')}{extra}"
              for r in recs]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, recs: list[dict]) -> Path:
    table = pa.Table.from_pylist(recs, schema=RECORD_TABLES["measurements"])
    pq.write_table(table.set_column(4, "t", table.column("t").cast(pa.timestamp("ns"))), path)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """One workspace for all examples, emptied before each (opening a fresh one per example is slow)."""
    with Workspace.open(tmp_path_factory.mktemp("props") / "ws") as w:
        yield w


def empty(ws: Workspace) -> None:
    for table in ("measurements", "batches", "quarantine"):
        ws.backend.execute(f"DELETE FROM {table}")


def snapshot(ws: Workspace) -> tuple[list, list]:
    stored = ws.query("SELECT * EXCLUDE (batch) FROM measurements ORDER BY ALL").to_pylist()
    quarantined = ws.query('SELECT regexp_extract(source, \'[^/]*$\') AS file, "row", field FROM quarantine '
                           "ORDER BY ALL").to_pylist()
    return stored, quarantined


def ingest_all(ws: Workspace, paths: list[Path]) -> list:
    with ws.ingest_transaction():
        return [ingest_file(ws, p).tables[0] for p in paths]


def split(keys: list, parts: int) -> list[list]:
    return [keys[i::parts] for i in range(parts)]


@SETTINGS
@given(keys=rows_strategy, parts=st.integers(1, 3))
def test_every_row_is_stored_a_duplicate_or_quarantined(ws: Workspace, tmp_path: Path, keys: list, parts: int) -> None:
    empty(ws)
    files = [write_csv(tmp_path / f"measurements_c{i}.csv", [record(k) for k in chunk])
             for i, chunk in enumerate(split(keys, parts))]
    reports = ingest_all(ws, files)
    good = {k[:4] for k in keys if k[4] is None}
    assert sum(r.received for r in reports) == len(keys)
    assert sum(r.stored for r in reports) == len(good) == ws.count("measurements")
    assert sum(r.quarantined for r in reports) == sum(k[4] is not None for k in keys) == ws.count("quarantine")
    assert sum(r.duplicates for r in reports) == len(keys) - len(good) - ws.count("quarantine")
    assert all(min(r.stored, r.duplicates, r.quarantined, r.updated) >= 0 for r in reports)


@SETTINGS
@given(keys=rows_strategy, parts=st.integers(1, 3))
def test_ingest_is_idempotent_and_order_free(ws: Workspace, tmp_path: Path, keys: list, parts: int) -> None:
    files = [write_csv(tmp_path / f"measurements_o{i}.csv", [record(k) for k in chunk])
             for i, chunk in enumerate(split(keys, parts))]
    empty(ws)
    ingest_all(ws, files)
    forward = snapshot(ws)
    again = ingest_all(ws, files)  # the same files: nothing new
    assert all(r.skipped_batch for r in again) and snapshot(ws) == forward
    merged = write_csv(tmp_path / "measurements_merged.csv", [record(k) for k in keys], comment="re-export")
    (rep,) = ingest_all(ws, [merged])  # the same records in a new file: all known already
    assert rep.stored == 0 and rep.quarantined == sum(k[4] is not None for k in keys)
    assert snapshot(ws)[0] == forward[0]

    empty(ws)
    ingest_all(ws, files[::-1])
    assert snapshot(ws) == forward


@SETTINGS
@given(keys=rows_strategy)
def test_csv_and_parquet_of_the_same_rows_give_the_same_store(ws: Workspace, tmp_path: Path, keys: list) -> None:
    recs = [record(k) for k in keys]
    empty(ws)
    ingest_all(ws, [write_csv(tmp_path / "measurements_same.csv", recs)])
    from_csv = snapshot(ws)
    empty(ws)
    ingest_all(ws, [write_parquet(tmp_path / "measurements_same.parquet", recs)])
    from_parquet = snapshot(ws)
    assert from_parquet[0] == from_csv[0]
    assert [(q["row"], q["field"]) for q in from_parquet[1]] == [(q["row"] - 1, q["field"]) for q in from_csv[1]]
