"""Files exported by an MES or a tester: CSV and Parquet, one table per file.

The table a file holds is named by `table=`, or read from the file name (`steps_0412.csv`),
or recognised from its columns. CSV columns are read as text and typed by the validator, so a
malformed value quarantines its row instead of failing the file.

With a line profile, a file whose name matches one of its `sources` is read and mapped as that
source says (`linelab.connect.mapping`): the export ingests as it is, with no rewriting.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from linelab.connect import mapping
from linelab.errors import UserError
from linelab.profile.schema import Profile, Source
from linelab.profile.sources import file_columns, plan, read_text
from linelab.store.schema import RECORD_TABLES
from linelab.store.workspace import IngestReport, Workspace, content_id

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


def ingest_file(ws: Workspace, path: Path, table: str | None = None, profile: Profile | None = None) -> IngestReport:
    source = mapping.source_for(profile, path)
    if source is not None:
        return ingest_mapped(ws, path, source)
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


def check_files(files: list[Path], profile: Profile | None) -> list[str]:
    """What the profile's sources name that these files lack (read from their headers only)."""
    problems: list[str] = []
    for path in files:
        source = mapping.source_for(profile, path)
        if source is not None:
            problems += plan(source, file_columns(path, source)).problems(source, str(path))
    return problems


def ingest_order(files: list[Path], profile: Profile | None) -> list[Path]:
    """Files whose source derives from other tables (units from steps) go last, after what they read."""
    def derives(path: Path) -> bool:
        source = mapping.source_for(profile, path)
        return bool(source and source.derive)

    return sorted(files, key=derives)


def _stored_steps(ws: Workspace, units: pa.Table) -> pa.Table:
    """The stored steps of the units in a batch (a key-range read: steps ingested earlier or just now)."""
    ids = pc.drop_null(units.column("unit_id"))
    if len(ids) == 0:
        return ws.query("SELECT unit_id, station, result, t_in, t_out FROM steps LIMIT 0")
    lo, hi = (v.as_py() for v in pc.min_max(ids).values())
    return ws.query("SELECT unit_id, station, result, t_in, t_out FROM steps WHERE unit_id BETWEEN ? AND ?",
                    [lo, hi])


def ingest_mapped(ws: Workspace, path: Path, source: Source) -> IngestReport:
    """Ingest one export through its profile source; quarantine entries name the export's column too."""
    raw = read_text(path, source)
    first_row = 2 if path.suffix.lower() not in (".parquet", ".pq") else 1
    data = mapping.apply(source, raw, first_row, str(path))
    name = source.table
    if source.derive and name == "units" and "unit_id" in data.column_names:
        data = mapping.derive_units(source, data, _stored_steps(ws, data))
    # The batch id is the file's content and the mapping that read it (and what was derived for it):
    # the same file read the same way adds nothing; the same units with newly derivable results update.
    h = hashlib.blake2b(path.read_bytes(), digest_size=16)
    h.update(source.model_dump_json().encode())
    batch = f"{name}:{h.hexdigest()}"
    if source.derive:
        batch += ":" + content_id(data, name)[:16]
    wide = mapping.ROW_COLUMN in data.column_names
    rep = ws.ingest_tables({name: data}, source=f"file:{path.resolve()}", first_row=0 if wide else first_row,
                           batch_ids={name: batch})
    columns = mapping.export_columns(source, raw.column_names)
    file_rows = data.column(mapping.ROW_COLUMN) if wide else None
    for entry in rep.quarantine:  # the first few entries, for display
        entry["column"] = columns.get(entry["field"])
        if file_rows is not None:
            entry["row"] = file_rows[int(entry["row"])].as_py()
    return rep
