"""Files exported by an MES or a tester: CSV and Parquet, one table per file.

The table a file holds is named by `table=`, or read from the file name (`steps_0412.csv`),
or recognised from its columns. CSV columns are read as text and typed by the validator, so a
malformed value quarantines its row instead of failing the file.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from linelab.errors import UserError
from linelab.store.schema import RECORD_TABLES
from linelab.store.workspace import IngestReport, Workspace

SUFFIXES = {".csv", ".parquet", ".pq"}


def guess_table(path: Path, columns: list[str]) -> str:
    stem = path.name.lower()
    for name in sorted(RECORD_TABLES, key=len, reverse=True):
        if stem.startswith(name) or stem.startswith(name.rstrip("s")):
            return name
    have = set(columns)
    fits = [
        name
        for name, schema in RECORD_TABLES.items()
        if {f.name for f in schema if not f.nullable} <= have
    ]
    # Prefer the table whose columns the file covers most completely.
    fits.sort(key=lambda n: -len(have & set(RECORD_TABLES[n].names)) / len(RECORD_TABLES[n].names))
    if not fits:
        raise UserError(
            f"{path}: cannot tell which table this file holds from its name or its columns "
            f"({', '.join(columns)}); name it after a table ({', '.join(RECORD_TABLES)}) or pass --table"
        )
    return fits[0]


def read_file(path: Path) -> pa.Table:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh), [])
            return pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in header}, strings_can_be_null=True
                ),
            )
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from exc
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv or .parquet")


def expand(paths: list[Path]) -> list[Path]:
    """Files named directly, and the CSV/Parquet files inside named folders."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES))
        else:
            out.append(p)
    return out


def ingest_file(ws: Workspace, path: Path, table: str | None = None) -> IngestReport:
    data = read_file(path)
    name = table or guess_table(path, data.column_names)
    if name not in RECORD_TABLES:
        raise UserError(f"unknown table {name!r}; known: {', '.join(RECORD_TABLES)}")
    # The batch id is the file's content: re-ingesting the same file adds nothing.
    digest = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    first_row = 2 if path.suffix.lower() == ".csv" else 1  # CSV line 1 is the header
    return ws.ingest_tables(
        {name: data}, source=f"file:{path.resolve()}", first_row=first_row, batch_ids={name: f"{name}:{digest}"}
    )
