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
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# Modules whose import registers commands; the order is the order of the loop.
COMMAND_MODULES = [
    "linelab.store.commands",
    "linelab.profile.commands",
    "linelab.connect.commands",
    "linelab.twin.commands",
    "linelab.monitor.commands",
    "linelab.diagnose.commands",
    "linelab.experiment.commands",
    "linelab.knowhow.commands",
    "linelab.act.commands",
    "linelab.loop.commands",
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

    @property
    def summary(self) -> str:
        return (self.func.__doc__ or "").strip().splitlines()[0] if self.func.__doc__ else ""

    @property
    def path(self) -> str:
        return "/api/" + self.name.replace(" ", "/")


REGISTRY: dict[str, CommandSpec] = {}


def command(
    name: str, params: type[BaseModel], *, workspace: bool = True
) -> Callable[[Callable[[Any, Context], Result]], Callable[[Any, Context], Result]]:
    """Register `func(params, ctx) -> Result` as the command `name` ("twin run" nests)."""

    def register(func: Callable[[Any, Context], Result]) -> Callable[[Any, Context], Result]:
        REGISTRY[name] = CommandSpec(name, params, func, workspace)
        return func

    return register


def load_all() -> dict[str, CommandSpec]:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A stage that is not built yet simply contributes no commands.
            if not exc.name or not module.startswith(exc.name):
                raise
    return REGISTRY


@dataclass
class Context:
    """What a command may use besides its parameters: the workspace, progress, a console."""

    workspace_path: Path | None = None
    show_progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _workspace: Any = None

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            from linelab.store import Workspace

            self._workspace = Workspace.open(self.workspace_path)
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
    ctx = Context(workspace_path=Path(workspace) if workspace else None, show_progress=False)
    try:
        return spec.func(spec.params(**params), ctx)
    finally:
        ctx.close()
