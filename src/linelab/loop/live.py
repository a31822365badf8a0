"""`linelab run`: the live line watched continuously — the MQTT connector storing what arrives, the
monitor run over it every few seconds, problems opened as the data come in.

Both work in the connector's thread on one workspace: after a flush, once `--monitor-every`
seconds have passed, the monitor runs over the batches stored since its last run (its state is
saved by each run, as `linelab monitor run` saves it). The status file of `linelab connect
status` also carries the monitor's counts and the problems it opened.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.commands import Context, Result, command
from linelab.connect.service import STATUS_FILE, ConnectParams, load_live_profile, stopped_by_signals, write_status
from linelab.connect.sparkplug.connector import Connector, Settings
from linelab.render import print_rows


class RunParams(ConnectParams):
    monitor_every: float = Field(10.0, gt=0, description="seconds between monitor runs over the new data")
    reference_hours: float | None = Field(None, gt=0, description="the monitor's reference period "
                                                                  "[default: the monitor's]")


class RunResult(Result):
    broker: str
    connector: dict[str, Any]
    monitor_runs: int
    records_monitored: int
    problems_opened: list[dict[str, Any]]

    def render(self, console: Console) -> None:
        console.print(f"{self.connector.get('stored', 0):,} record(s) stored from {self.broker}; "
                      f"{self.monitor_runs} monitor run(s) over {self.records_monitored:,} record(s)")
        print_rows(console, self.problems_opened, "problems opened")


class _Watch(BaseModel):
    runs: int = 0
    records: int = 0
    opened: list[dict[str, Any]] = []
    last: float = 0.0


@command("run", RunParams, rest=False)
def run(p: RunParams, ctx: Context) -> RunResult:
    """Watch the live line: store what arrives over MQTT and run the monitor on it continuously."""
    from linelab.monitor import problems as pb  # the detectors' libraries: only here
    from linelab.monitor.engine import EngineConfig, MonitorEngine

    profile = load_live_profile(p.profile, ctx.workspace_path)
    ws = ctx.workspace
    connector = Connector(ws, profile, Settings(url=p.broker, client_id=p.client_id, batch_rows=p.batch_rows,
                                                batch_seconds=p.batch_seconds, reorder_timeout=p.reorder_timeout,
                                                session_expiry=p.session_expiry))
    config = EngineConfig() if p.reference_hours is None else EngineConfig(reference_hours=p.reference_hours)
    watch = _Watch(last=time.monotonic())
    status_path = Path(ws.path) / STATUS_FILE

    def monitor(force: bool = False) -> None:
        if not force and time.monotonic() - watch.last < p.monitor_every:
            return
        watch.last = time.monotonic()
        if ws.last_batch_seq() <= MonitorEngine.load(ws, config).last_seq:
            return
        rep = MonitorEngine.load(ws, config).run(ws)
        watch.runs += 1
        watch.records += sum(rep.records.values())
        opened = set(rep.problems_opened)
        watch.opened += [{"id": x["id"], "about": x["entity"], "description": x["description"]}
                         for x in pb.list_problems(ws) if x["id"] in opened]

    def report(c: Connector) -> None:
        monitor()
        write_status(status_path, c, True, {"monitor_runs": watch.runs, "problems_opened": watch.opened})

    connector.on_report = report
    try:
        with stopped_by_signals(connector):
            status = connector.run(p.seconds, p.max_records)
            monitor(force=True)
    finally:
        write_status(status_path, connector, False, {"monitor_runs": watch.runs, "problems_opened": watch.opened})
    return RunResult(broker=connector.url, connector=asdict(status), monitor_runs=watch.runs,
                     records_monitored=watch.records, problems_opened=watch.opened)
