"""Files exported by an MES or a tester: CSV and Parquet, one table per file.

The table a file holds is named by `table=`, or read from the file name (`steps_0412.csv`),
or recognised from its columns. Files are read as text (`linelab.connect.reader`) and typed by the
store's validator, so a malformed value quarantines its row instead of failing the file.

With a line profile, a file whose name matches one of its `sources` is read and mapped as that
source says (`linelab.connect.mapping`): the export ingests as it is, with no rewriting.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from linelab.connect import mapping
from linelab.connect.reader import SUFFIXES, Export, columns_of, read_export
from linelab.errors import UserError
from linelab.profile.schema import Profile, Source
from linelab.profile.sources import plan
from linelab.store.schema import RECORD_TABLES
from linelab.store.validate import LINE
from linelab.store.workspace import IngestReport, Workspace, content_id


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


def expand(paths: list[Path]) -> list[Path]:
    """Files named directly, and the CSV/Parquet files inside named folders."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in SUFFIXES))
        else:
            out.append(p)
    return out


def _read(path: Path, source: Source | None) -> Export:
    try:
        return read_export(path, source.delimiter, source.encoding) if source else read_export(path)
    except (pa.ArrowException, csv.Error, UnicodeError, ValueError) as exc:  # a reader's own words, not a crash
        raise UserError(f"{path}: cannot read: {exc}") from exc


def _digest(path: Path) -> hashlib.blake2b:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def ingest_file(ws: Workspace, path: Path, table: str | None = None, profile: Profile | None = None,
                origin: str | None = None) -> IngestReport:
    """Ingest one file; its batches record `origin` as their source (default: `file:` and its full path)."""
    source = mapping.source_for(profile, path)
    export = _read(path, source)
    if source is not None:
        return ingest_mapped(ws, path, source, export, origin)
    data = export.table
    name = table or guess_table(path, [c for c in data.column_names if c != LINE])
    if name not in RECORD_TABLES:
        raise UserError(f"unknown table {name!r}; known: {', '.join(RECORD_TABLES)}")
    _required(path, name, [c for c in data.column_names if c != LINE])
    # The batch id is the file's content: re-ingesting the same file adds nothing.
    batch = f"{name}:{_digest(path).hexdigest()}"
    return ws.ingest_tables({name: data}, source=origin or f"file:{path.resolve()}", batch_ids={name: batch},
                            rejected={name: export.rejected})


def _required(path: Path, name: str, columns: list[str]) -> None:
    missing = [f.name for f in RECORD_TABLES[name] if not f.nullable and f.name not in columns]
    if missing:
        raise UserError(f"{path}: holds {name} but lacks the required column(s) {', '.join(missing)} "
                        f"(its columns: {', '.join(columns) or 'none'})")


def check_files(files: list[Path], profile: Profile | None, table: str | None = None) -> list[str]:
    """Why files cannot be ingested at all: unreadable, not a known table, or lacking required columns
    (or what their profile source names). Read from the headers only, before anything is stored.
    """
    problems: list[str] = []
    for path in files:
        source = mapping.source_for(profile, path)
        try:
            columns = columns_of(path, source.delimiter, source.encoding) if source else columns_of(path)
            if source is None:
                _required(path, table or guess_table(path, columns), columns)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if source is not None:
            problems += plan(source, columns).problems(source, str(path))
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


def ingest_mapped(ws: Workspace, path: Path, source: Source, export: Export | None = None,
                  origin: str | None = None) -> IngestReport:
    """Ingest one export through its profile source; quarantine entries name the export's column too."""
    raw = export if export is not None else _read(path, source)
    try:
        data = mapping.apply(source, raw.table, where=str(path))
    except duckdb.Error as exc:
        raise UserError(f"{path}: source '{source.name}' cannot be applied: {exc}") from exc
    name = source.table
    if source.derive and name == "units" and "unit_id" in data.column_names:
        data = mapping.derive_units(source, data, _stored_steps(ws, data))
    # The batch id is the file's content and the mapping that read it (and what was derived for it):
    # the same file read the same way adds nothing; the same units with newly derivable results update.
    h = _digest(path)
    h.update(source.model_dump_json().encode())
    batch = f"{name}:{h.hexdigest()}"
    if source.derive:
        batch += ":" + content_id(data, name)[:16]
    rep = ws.ingest_tables({name: data}, source=origin or f"file:{path.resolve()}", batch_ids={name: batch},
                           rejected={name: raw.rejected})
    columns = mapping.export_columns(source, [c for c in raw.table.column_names if c != LINE])
    for entry in rep.quarantine:  # the first few entries, for display
        entry["column"] = columns.get(entry["field"])
    return rep
