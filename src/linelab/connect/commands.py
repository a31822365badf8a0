"""Connect commands: ingest files (CSV, Parquet), as they are or through the line profile's sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.connect import mapping
from linelab.connect.files import check_files, expand, ingest_file, ingest_order
from linelab.errors import UserError
from linelab.profile.io import load_profile, profile_path
from linelab.profile.schema import Profile
from linelab.render import print_rows
from linelab.store.ingest import awaiting_unit
from linelab.store.schema import RECORD_TABLES
from linelab.store.workspace import resolve_path

Rows = list[dict[str, Any]]


class IngestParams(BaseModel):
    paths: list[Path] = Field(..., description="CSV or Parquet files, or folders of them",
                              json_schema_extra={"argument": True, "path": "input"})
    table: str | None = Field(None, description=f"table the files hold ({', '.join(RECORD_TABLES)}); "
                              "default: from the file name or its columns")
    profile: Path | None = Field(None, description="line profile whose sources map the exports "
                                 "[default: the workspace's profile.yaml, if it has one]",
                                 json_schema_extra={"path": "input"})


class FileIngest(BaseModel):
    path: str
    table: str
    source: str | None = None  # the profile source that mapped it
    received: int
    stored: int
    updated: int
    duplicates: int
    quarantined: int
    awaiting_unit: int = Field(0, description="rows stored whose unit is not in the workspace yet (late data)")
    resolved: int = Field(0, description="earlier quarantine entries this file's records resolved")
    already_ingested: bool


class IngestResult(Result):
    files: list[FileIngest]
    stored: int
    quarantined: int
    awaiting_unit: int = 0
    resolved: int = 0
    quarantine: Rows = Field(description="first quarantined rows of each file, with file, row, field (and the "
                                         "export's column, for a file mapped by the profile) and reason")

    def render(self, console: Console) -> None:
        print_rows(console, [f.model_dump() for f in self.files], "ingest")
        if self.quarantine:
            print_rows(console, self.quarantine, "quarantined rows (first of each file)", limit=30)
            console.print(f"[yellow]{self.quarantined:,} row(s) quarantined[/yellow]; "
                          "see `linelab quarantine` for all of them")
        console.print(f"{self.stored:,} row(s) stored")
        if self.awaiting_unit:
            console.print(f"{self.awaiting_unit:,} of the rows stored await their unit (kept; they join it when the "
                          "unit's record is ingested)")
        if self.resolved:
            console.print(f"{self.resolved:,} earlier quarantine entr(y/ies) resolved by corrected records")

    def exit_code(self) -> int:
        return 1 if self.quarantined else 0


def ingest_profile(p: IngestParams, ctx: Context) -> Profile | None:
    if p.profile is not None:
        return load_profile(p.profile)
    found = profile_path(resolve_path(ctx.workspace_path))
    return load_profile(found) if found is not None else None


@command("ingest", IngestParams)
def ingest(p: IngestParams, ctx: Context) -> IngestResult:
    """Ingest CSV/Parquet files in one transaction: bad rows are quarantined with line, field and reason;
    re-ingest adds nothing."""
    if p.table and p.table not in RECORD_TABLES:
        raise UserError(f"unknown table {p.table!r}; known: {', '.join(RECORD_TABLES)}")
    files = expand(p.paths)
    if not files:
        raise UserError("no CSV or Parquet files found in " + ", ".join(map(str, p.paths)))
    profile = ingest_profile(p, ctx)
    problems = check_files(files, profile, p.table)
    if problems:  # before anything is stored
        raise UserError("cannot ingest:\n  " + "\n  ".join(problems))
    done: list[FileIngest] = []
    quarantine: Rows = []
    seqs: list[dict[str, list[int]]] = []
    ws = ctx.workspace
    with ctx.progress(len(files), "ingesting") as advance, ws.ingest_transaction():
        for path in ingest_order(files, profile):
            source = mapping.source_for(profile, path)
            uploaded = ctx.uploads.get(path)  # a file sent to the server: named as it was sent
            rep = ingest_file(ws, path, p.table, profile, f"upload:{uploaded}" if uploaded else None)
            t = rep.tables[0]
            done.append(FileIngest(path=uploaded or str(path), table=t.table, source=source.name if source else None,
                                   received=t.received, stored=t.stored, updated=t.updated,
                                   duplicates=t.duplicates, quarantined=t.quarantined, resolved=t.resolved,
                                   already_ingested=t.skipped_batch))
            quarantine.extend({"file": uploaded or str(path), **q} for q in rep.quarantine)
            seqs.append({t.table: [t.seq]} if t.seq is not None else {})
            advance(1)
        # Counted once every file is in: a unit ingested in the same call is no longer awaited.
        for f, seq in zip(done, seqs, strict=True):
            f.awaiting_unit = awaiting_unit(ws, seq) if seq else 0
    return IngestResult(files=done, stored=sum(f.stored for f in done),
                        quarantined=sum(f.quarantined for f in done), quarantine=quarantine,
                        awaiting_unit=sum(f.awaiting_unit for f in done), resolved=sum(f.resolved for f in done))
