"""`linelab connect mqtt`: the MQTT connector as a long-lived service, configured by the profile's mqtt sources.

It runs until stopped (Ctrl-C, SIGTERM), or for `--seconds` / `--max-records`. While it runs it
writes its status to `connect-status.json` in the workspace folder after each flush, which
`linelab connect status` prints (the workspace's database may be the connector's while it runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.connect.live import live_sources
from linelab.connect.sparkplug.connector import SESSION_EXPIRY_S, Connector, Settings, Status
from linelab.errors import UserError
from linelab.profile.io import load_profile, profile_path
from linelab.profile.schema import Profile
from linelab.render import print_rows
from linelab.store.workspace import resolve_path

STATUS_FILE = "connect-status.json"


class ConnectParams(BaseModel):
    seconds: float | None = Field(None, gt=0, description="stop after this many seconds [default: run until stopped]")
    max_records: int | None = Field(None, gt=0, description="stop once this many records have arrived")
    broker: str | None = Field(None, description="mqtt://host:port [default: the profile's, $LINELAB_MQTT_URL, "
                                                 "or mqtt://127.0.0.1:1883]")
    client_id: str = Field("linelab-host", description="MQTT client id: the broker keeps this id's session (and "
                                                       "the messages that arrive while it is down)")
    profile: Path | None = Field(None, description="line profile [default: the workspace's profile.yaml]",
                                 json_schema_extra={"path": "input"})
    batch_rows: int = Field(50_000, gt=0, description="flush to the store after this many rows")
    batch_seconds: float = Field(0.25, gt=0, description="... or once the first has waited this many seconds "
                                 "(longer while messages queue up: three times what a flush takes)")
    reorder_timeout: float = Field(2.0, gt=0, description="seconds a Sparkplug message ahead of its turn waits "
                                                          "for the ones before it before the gap is declared")
    session_expiry: int = Field(SESSION_EXPIRY_S, gt=0, description="seconds the broker keeps the connector's "
                                                                    "session (and its messages) while it is down")


class ConnectResult(Result):
    broker: str
    sources: list[str]
    topics: list[str]
    status: dict[str, Any]

    def render(self, console: Console) -> None:
        console.print(f"connected to [bold]{self.broker}[/bold] for sources {', '.join(self.sources)}")
        print_rows(console, [{"what": k, "value": v if not isinstance(v, list) else ", ".join(v)}
                             for k, v in self.status.items()], "connector status")


def load_live_profile(path: Path | None, workspace: Path | None) -> Profile:
    """The given profile, else the workspace's."""
    if path is not None:
        return load_profile(path)
    found = profile_path(resolve_path(workspace))
    if found is None:
        raise UserError("the workspace has no profile.yaml: give --profile, a profile whose sources have an "
                        "`mqtt:` section")
    return load_profile(found)


@contextlib.contextmanager
def stopped_by_signals(connector: Connector) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT stop the connector cleanly (it flushes what it holds)
    instead of killing the process; the previous handlers come back afterwards. Signals can
    only be caught on the main thread, so elsewhere (a server's worker) nothing changes."""
    restore = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore.append((sig, signal.signal(sig, lambda *_: connector.stop.set())))
    try:
        yield
    finally:
        for sig, handler in restore:
            signal.signal(sig, handler)


def write_status(path: Path, connector: Connector, running: bool, extra: dict[str, Any] | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"running": running, "pid": os.getpid(), "broker": connector.url,
                               "topics": connector.topics, **asdict(connector.status), **(extra or {})},
                              indent=1, default=str))
    tmp.replace(path)


@command("connect mqtt", ConnectParams, rest=False)
def connect_mqtt(p: ConnectParams, ctx: Context) -> ConnectResult:
    """Connect to the live line over MQTT (Sparkplug B or JSON, the profile's mqtt sources) and store what arrives."""
    profile = load_live_profile(p.profile, ctx.workspace_path)
    settings = Settings(url=p.broker, client_id=p.client_id, batch_rows=p.batch_rows,
                        batch_seconds=p.batch_seconds, reorder_timeout=p.reorder_timeout,
                        session_expiry=p.session_expiry)
    ws = ctx.workspace
    connector = Connector(ws, profile, settings)
    status_path = Path(ws.path) / STATUS_FILE
    connector.on_report = lambda c: write_status(status_path, c, True)
    try:
        with stopped_by_signals(connector):
            status = connector.run(p.seconds, p.max_records)
    finally:
        write_status(status_path, connector, False)
    return ConnectResult(broker=connector.url, sources=[s.name for s in live_sources(profile)],
                         topics=connector.topics, status=asdict(status))


class StatusParams(BaseModel):
    pass


class StatusResult(Result):
    status: dict[str, Any] | None

    def render(self, console: Console) -> None:
        if self.status is None:
            console.print("no connector has run on this workspace")
            return
        print_rows(console, [{"what": k, "value": v if not isinstance(v, list) else ", ".join(map(str, v))}
                             for k, v in self.status.items()], "connector status")


@command("connect status", StatusParams, writes=False)
def connect_status(p: StatusParams, ctx: Context) -> StatusResult:
    """The live connector's status (running or last run): records, stored, duplicates, gaps, quarantined."""
    path = resolve_path(ctx.workspace_path) / STATUS_FILE
    if not path.exists():
        return StatusResult(status=None)
    return StatusResult(status=json.loads(path.read_text()))


__all__ = ["ConnectParams", "ConnectResult", "Status", "connect_mqtt", "connect_status"]
