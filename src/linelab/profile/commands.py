"""Profile commands: draft a line profile (init), check it against the data (check), its JSON Schema."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.profile.check import Finding, check_line, check_sources
from linelab.profile.draft import draft_from_facts, draft_from_files, expand
from linelab.profile.facts import LineFacts, file_facts, workspace_facts
from linelab.profile.io import PROFILE_FILE, load_profile, profile_path, save_profile
from linelab.profile.schema import Profile
from linelab.store.workspace import resolve_path, workspace_exists


def _workspace_has_data(ctx: Context) -> bool:
    return workspace_exists(ctx.workspace_path)


class InitParams(BaseModel):
    paths: list[Path] | None = Field(None, description="export files or folders to draft from "
                              "[default: the ingested workspace]",
                                      json_schema_extra={"argument": True, "path": "input"})
    out: Path | None = Field(None, description=f"where to write the profile [default: the workspace's {PROFILE_FILE}]",
                             json_schema_extra={"path": "output"})
    force: bool = Field(False, description="overwrite a profile that is already there",
                        json_schema_extra={"destructive": True})


class InitResult(Result):
    path: str
    drafted_from: str
    sources: list[dict[str, Any]]
    stations: list[str]
    products: list[str]
    readings: dict[str, list[str]] = Field(description="reading names by drafted role")
    guesses: list[str]
    checks: list[str]
    profile: dict[str, Any]

    def render(self, console: Console) -> None:
        console.print(f"drafted a line profile from {self.drafted_from} into [bold]{self.path}[/bold]")
        console.print("[bold]guessed[/bold]")
        for g in self.guesses:
            console.print(f"  • {g}", highlight=False)
        if self.checks:
            console.print("[bold yellow]for a person to check[/bold yellow]")
            for c in self.checks:
                console.print(f"  • {c}", highlight=False)
        console.print(f"then `linelab profile check` compares {self.path} with the data")


@command("profile init", InitParams)
def profile_init(p: InitParams, ctx: Context) -> InitResult:
    """Draft a line profile from export files or the ingested workspace: column map, stations, roles."""
    target = p.out or resolve_path(ctx.workspace_path) / PROFILE_FILE
    existing = target if p.out else profile_path(resolve_path(ctx.workspace_path))
    if existing is not None and existing.exists() and not p.force:
        raise UserError(f"{existing} exists; pass --force to overwrite it (or --out to write elsewhere)")
    if p.paths:
        draft = draft_from_files(p.paths)
        origin = ", ".join(str(x) for x in p.paths)
    else:
        if not _workspace_has_data(ctx):
            raise UserError(f"no workspace at {resolve_path(ctx.workspace_path)}: give export files to draft from")
        draft = draft_from_facts(workspace_facts(ctx.workspace))
        origin = f"the workspace {resolve_path(ctx.workspace_path)}"
    save_profile(draft.profile, target)
    roles: dict[str, list[str]] = {}
    for r in draft.profile.line.readings:
        roles.setdefault(r.role, []).append(r.name)
    return InitResult(
        path=str(target), drafted_from=origin,
        sources=[{"name": s.name, "table": s.table, "files": s.files, "columns": s.columns}
                 for s in draft.profile.sources],
        stations=draft.profile.line.station_order, products=draft.profile.line.products, readings=roles,
        guesses=draft.guesses, checks=draft.checks,
        profile=draft.profile.model_dump(mode="json", exclude_defaults=True),
    )


class CheckParams(BaseModel):
    paths: list[Path] | None = Field(None, description="export files or folders to check the profile "
                              "against [default: the ingested workspace]",
                                      json_schema_extra={"argument": True, "path": "input"})
    profile: Path | None = Field(None, description=f"the profile [default: the workspace's {PROFILE_FILE}]",
                                 json_schema_extra={"path": "input"})


class FindingRow(BaseModel):
    level: str
    topic: str
    message: str


class CheckResult(Result):
    profile: str
    checked_against: str
    errors: int
    warnings: int
    findings: list[FindingRow]
    data: dict[str, int] = Field(description="rows per table the check read")

    def render(self, console: Console) -> None:
        console.print(f"profile [bold]{self.profile}[/bold] checked against {self.checked_against}")
        for f in self.findings:
            colour = "red" if f.level == "error" else "yellow"
            console.print(f"  [{colour}]{f.level:<7}[/{colour}] {f.message}", highlight=False)
        if not self.findings:
            console.print("  [green]nothing missing[/green]: the profile fits the data")
        else:
            console.print(f"{self.errors} error(s), {self.warnings} warning(s)")

    def exit_code(self) -> int:
        return 1 if self.errors else 0


@command("profile check", CheckParams)
def profile_check(p: CheckParams, ctx: Context) -> CheckResult:
    """Check the line profile against export files or the workspace; say what is missing, in plain words."""
    path = p.profile or profile_path(resolve_path(ctx.workspace_path))
    if path is None:
        raise UserError(f"the workspace {resolve_path(ctx.workspace_path)} has no profile ({PROFILE_FILE}); "
                        "`linelab profile init` drafts one, or pass --profile FILE")
    profile = load_profile(path)
    findings: list[Finding] = []
    if p.paths:
        files = expand(p.paths)
        found, readable = check_sources(profile, files)
        findings += found
        facts = file_facts(readable)
        against = ", ".join(str(x) for x in p.paths)
    elif _workspace_has_data(ctx):
        ws = ctx.workspace
        ingested = [Path(s[len("file:"):]) for s in ws.query(
            "SELECT DISTINCT source FROM batches WHERE source LIKE 'file:%' ORDER BY source").column(0).to_pylist()]
        found, _ = check_sources(profile, [f for f in ingested if f.exists()])
        findings += found
        facts = workspace_facts(ws)
        against = f"the workspace {ws.path}"
    else:
        facts = LineFacts()
        against = "nothing (no files given and no workspace)"
        findings.append(Finding("warning", "data", "no data to check against: give export files or ingest them"))
    findings += check_line(profile, facts)
    rows = [FindingRow(level=f.level, topic=f.topic, message=f.message) for f in findings]
    rows.sort(key=lambda f: f.level != "error")
    return CheckResult(profile=str(path), checked_against=against, findings=rows,
                       errors=sum(f.level == "error" for f in rows), warnings=sum(f.level == "warning" for f in rows),
                       data={k: v for k, v in facts.tables.items() if v})


class SchemaParams(BaseModel):
    out: Path | None = Field(None, description="file to write the JSON Schema to [default: print it]",
                             json_schema_extra={"path": "output"})


class SchemaResult(Result):
    path: str | None
    json_schema: dict[str, Any]

    def render(self, console: Console) -> None:
        if self.path:
            console.print(f"wrote the profile's JSON Schema to [bold]{self.path}[/bold] "
                          "(point your editor's YAML language server at it)")
        else:
            console.print_json(json.dumps(self.json_schema))


@command("profile schema", SchemaParams, workspace=False)
def profile_schema(p: SchemaParams, ctx: Context) -> SchemaResult:
    """Write the line profile's JSON Schema, for editors (YAML language servers) and validators."""
    schema = Profile.model_json_schema()
    schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
    schema.setdefault("title", "LineLab line profile")
    if p.out is not None:
        p.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.out.parent, prefix=".schema-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(schema, f, indent=2)
        os.replace(tmp, p.out)
    return SchemaResult(path=str(p.out) if p.out else None, json_schema=schema)
