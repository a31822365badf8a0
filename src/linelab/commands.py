"""Each LineLab command is defined once: a pydantic parameter model, a result model, a function.

The CLI (Typer), the `--json` output, the REST API (FastAPI) and the Python API
(`linelab.call`) are all generated from that one definition, so they cannot drift apart.

A stage declares its commands in its own `<stage>/commands.py`:

    class TraceParams(BaseModel):
        serial: str = Field(..., description="unit serial", json_schema_extra={"argument": True})

    @command("trace", TraceParams)
    def trace(p: TraceParams, ctx: Context) -> TraceResult: ...
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich.console import Console

from linelab.errors import UserError

# Modules whose import registers commands; the order is the order of the loop.
COMMAND_MODULES = [
    "linelab.store.commands",
    "linelab.profile.commands",
    "linelab.connect.commands",
    "linelab.connect.service",
    "linelab.connect.opcua_commands",
    "linelab.twin.commands",
    "linelab.twin.publish",
    "linelab.monitor.commands",
    "linelab.monitor.chart_commands",
    "linelab.diagnose.commands",
    "linelab.experiment.commands",
    "linelab.knowhow.commands",
    "linelab.act.commands",
    "linelab.deploy.commands",
    "linelab.loop.commands",
    "linelab.loop.live",
]


class Result(BaseModel):
    """Base of every command result: JSON-serialisable, with a human rendering."""

    model_config = ConfigDict(extra="forbid")

    def render(self, console: Console) -> None:
        console.print_json(self.model_dump_json())

    def exit_code(self) -> int:
        """Non-zero tells scripts something needs attention (e.g. rows were quarantined)."""
        return 0


@dataclass
class CommandSpec:
    name: str
    params: type[BaseModel]
    func: Callable[[Any, Context], Result]
    needs_workspace: bool = True
    rest: bool = True  # offered over REST (False for what deletes data or runs a whole simulation session)
    writes: bool = True  # False: only reads, so it opens the workspace read-only beside other readers

    @property
    def summary(self) -> str:
        """The docstring's first paragraph, on one line (a sentence wrapped in the source is not cut)."""
        return " ".join((self.func.__doc__ or "").strip().split("\n\n")[0].split())

    @property
    def path(self) -> str:
        return "/api/" + self.name.replace(" ", "/")


REGISTRY: dict[str, CommandSpec] = {}


def command(
    name: str, params: type[BaseModel], *, workspace: bool = True, rest: bool = True, writes: bool = True
) -> Callable[[Callable[[Any, Context], Result]], Callable[[Any, Context], Result]]:
    """Register `func(params, ctx) -> Result` as the command `name` ("twin run" nests).

    A parameter that is a file or folder on the machine says so in its field, for the REST layer,
    which never lets a request name a server path: `json_schema_extra={"path": KIND}` with KIND
    "input" (a file the caller uploads), "output" (a file name; written inside the workspace),
    "output-dir" (a folder the server picks inside the workspace) or "name" (a built-in thing's
    name, never a path). `{"destructive": True}` marks a switch that deletes data: REST leaves it off.
    """

    def register(func: Callable[[Any, Context], Result]) -> Callable[[Any, Context], Result]:
        REGISTRY[name] = CommandSpec(name, params, func, workspace, rest, writes)
        return func

    return register


def load_all() -> dict[str, CommandSpec]:
    return load(COMMAND_MODULES)


def load(modules: list[str]) -> dict[str, CommandSpec]:
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A stage that is not built yet simply contributes no commands.
            if not exc.name or not module.startswith(exc.name):
                raise
    return REGISTRY


_REGISTERS = re.compile(r'@command\(\s*"([^"]+)"')


def modules_defining(word: str) -> list[str] | None:
    """The command modules that register `word` or `word ...` (a group), read from their source.

    Lets the CLI import only the stage a command needs, so a quick command does not pay for
    every stage's libraries. None when a module's source cannot be read (then load them all).
    """
    package = Path(__file__).parent
    found = []
    for module in COMMAND_MODULES:
        source = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
        try:
            names = _REGISTERS.findall(source.read_text(encoding="utf-8"))
        except OSError:
            return None
        if any(name.split(" ")[0] == word for name in names):
            found.append(module)
    return found


class WorkspaceBusy(UserError):
    """Another process holds the workspace longer than a command may wait (REST answers 503)."""


# How long a command waits for a workspace another process is writing (DuckDB allows one writer).
BUSY_WAIT_S = float(os.environ.get("LINELAB_BUSY_WAIT", "30"))
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def _held_by(exc: BaseException) -> str | None:
    """Who holds the workspace's lock, if that is why it could not be opened."""
    text = f"{exc} {exc.__cause__ or ''}"
    if "Could not set lock" not in text and "Conflicting lock" not in text:
        return None
    found = _LOCK_HOLDER.search(text)
    return f"PID {found.group(2)}, {Path(found.group(1)).name}" if found else "another process"


def _behind(ws: Any) -> bool:
    """A DuckDB file written by an older LineLab, opened read-only (so not migrated)."""
    from linelab.store.backend import DuckDBBackend
    from linelab.store.migrations import LATEST

    if not isinstance(ws.backend, DuckDBBackend):
        return False
    try:
        version = ws.rows("SELECT coalesce(max(version), 0) AS v FROM schema_version")[0]["v"]
    except Exception:  # no version table: older than versioning itself
        return True
    return int(version or 0) < LATEST


def open_workspace(path: str | Path | None, *, read_only: bool = False, wait_s: float | None = None,
                   say: Callable[[str], None] | None = None) -> Any:
    """Open a workspace; while another process holds it, retry for a bounded time, then fail clearly."""
    from linelab.store.workspace import Workspace, resolve_path

    wait = BUSY_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait
    delay = 0.05
    told = False
    while True:
        try:
            opened = Workspace.open(path, read_only=read_only)
            if read_only and _behind(opened):
                opened.close()
                read_only = False  # a reader cannot bring an older file up to date: open it to write, once
                continue
            return opened
        except UserError as exc:
            if read_only and "different configuration" in str(exc):
                read_only = False  # this process writes the file already (a server): share its connection
                continue
            holder = _held_by(exc)
            if holder is None:
                raise
            if time.monotonic() >= deadline:
                raise WorkspaceBusy(f"workspace {resolve_path(path)} is busy (held by {holder}); "
                                    f"gave up after {wait:g} s (LINELAB_BUSY_WAIT sets the wait)") from None
            if say is not None and not told:
                say(f"workspace busy (held by {holder}), retrying for up to {wait:g} s")
                told = True
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)


@dataclass
class Context:
    """What a command may use besides its parameters: the workspace, progress, a console."""

    workspace_path: Path | None = None
    show_progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _workspace: Any = None
    read_only: bool = False  # the command only reads: open the workspace shared with other readers
    # Files a request uploaded (the server's copy -> the name it was sent by): what the command records.
    uploads: dict[Path, str] = field(default_factory=dict)

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            self._workspace = open_workspace(
                self.workspace_path, read_only=self.read_only,
                say=lambda m: self.console.print(f"[yellow]{m}[/yellow]", highlight=False))
        return self._workspace

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.close()
            self._workspace = None

    @contextlib.contextmanager
    def progress(self, total: float | None, description: str) -> Iterator[Callable[[float], None]]:
        """A progress bar on stderr (so `--json` stdout stays clean); yields `advance(n)`."""
        if not (self.show_progress and sys.stderr.isatty()):
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def call(name: str, workspace: str | Path | None = None, **params: Any) -> Result:
    """Python API: run a command by name, e.g. `call("yield", by="machine")`."""
    spec = load_all()[name]
    ctx = Context(workspace_path=Path(workspace) if workspace else None, show_progress=False,
                  read_only=not spec.writes)
    try:
        return spec.func(spec.params(**params), ctx)
    finally:
        ctx.close()
