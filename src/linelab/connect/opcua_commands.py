"""`linelab connect opcua` and `linelab connect cfx`: the OPC UA and IPC-CFX connectors as services.

Each runs until stopped (Ctrl-C, SIGTERM) or for `--seconds`, configured by the line profile's
sources with an `opcua:` or a `cfx:` section, and reports what it stored.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.connect.cfx import cfx_sources
from linelab.connect.cfx_amqp import CfxConnector, amqp_url
from linelab.connect.opcua import OpcUaConnector, opcua_sources
from linelab.errors import UserError
from linelab.profile.io import load_profile, profile_path
from linelab.profile.schema import Profile
from linelab.render import print_rows
from linelab.store.workspace import resolve_path

T = TypeVar("T")


class LiveParams(BaseModel):
    seconds: float | None = Field(None, gt=0, description="stop after this many seconds [default: run until stopped]")
    sources: list[str] = Field(default_factory=list, description="only these profile sources [default: all of "
                                                                 "the connector's kind]")
    profile: Path | None = Field(None, description="line profile [default: the workspace's profile.yaml]",
                                 json_schema_extra={"path": "input"})
    flush_seconds: float = Field(0.5, gt=0, description="store what arrived at least this often")


class LiveResult(Result):
    connector: str
    sources: list[dict[str, Any]]
    totals: dict[str, int]

    def render(self, console: Console) -> None:
        print_rows(console, self.sources, f"{self.connector} sources")
        print_rows(console, [{"what": k, "count": v} for k, v in self.totals.items()], "records")

    def exit_code(self) -> int:
        return 1 if self.totals.get("quarantined") else 0


def _profile(p: LiveParams, ctx: Context) -> Profile:
    found = p.profile if p.profile is not None else profile_path(resolve_path(ctx.workspace_path))
    if found is None:
        raise UserError("the workspace has no profile.yaml: give --profile")
    return load_profile(found)


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[T]], seconds: float | None) -> T:
    """Run a connector until SIGINT/SIGTERM or `seconds`, whichever comes first."""

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        if seconds is not None:
            loop.call_later(seconds, stop.set)
        return await main(stop)

    return asyncio.run(runner())


@command("connect opcua", LiveParams, rest=False)
def connect_opcua(p: LiveParams, ctx: Context) -> LiveResult:
    """Subscribe to the line's OPC UA servers (the profile's opcua sources) and store what they publish."""
    sources = opcua_sources(_profile(p, ctx), p.sources or None)
    if not sources:
        raise UserError("the profile has no source with an `opcua:` section")
    connector = OpcUaConnector(ctx.workspace, sources, flush_s=p.flush_seconds)
    report = run_until_stopped(connector.run, p.seconds)
    rows = [{"source": s.source, "url": s.url, "connects": s.connects, "gaps": s.gaps, "backfilled": s.backfilled,
             "bad_nodes": ", ".join(f"{k} ({v})" for k, v in s.bad_nodes.items())} for s in report.sources]
    return LiveResult(connector="opcua", sources=rows, totals=report.totals)


@command("connect cfx", LiveParams, rest=False)
def connect_cfx(p: LiveParams, ctx: Context) -> LiveResult:
    """Read the line's IPC-CFX messages from its AMQP broker (the profile's cfx sources) and store them."""
    profile = _profile(p, ctx)
    sources = [s for s in cfx_sources(profile) if not p.sources or s.name in p.sources]
    if not sources:
        raise UserError("the profile has no source with a `cfx:` section" +
                        (f" named {', '.join(p.sources)}" if p.sources else ""))
    connector = CfxConnector(ctx.workspace, profile, sources, flush_s=p.flush_seconds)
    reports = run_until_stopped(connector.run, p.seconds)
    rows = [{"source": r.source, "broker": amqp_url(s.cfx).rsplit("@", 1)[-1], "queue": r.queue,
             "messages": r.messages, "bad": r.bad, "ignored": r.ignored, "incomplete": r.incomplete,
             "open": r.open} for r, s in zip(reports, sources, strict=True)]
    return LiveResult(connector="cfx", sources=rows, totals=connector.totals())
