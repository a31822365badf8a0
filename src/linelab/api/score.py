"""`POST /score`: a station asks, per unit, what to do with it — the deployed models' routed decision.

The same function as `linelab model score --unit` (`linelab.deploy.scoring.score_unit`), on the
server's shared workspace handle, without the generic command layer: a station waits for this
answer before it moves the unit on. What a request would repeat is kept in the process: the
models (`registry.load`), the station's routing (`rollout.recent`, at most `RECENT_S` old) and
the recent units' records (`deploy.serving`; on a DuckDB workspace, which only this server can
write while it holds it, the last batch is asked again only after a write). The prediction rows
are stored by group commit: a writer thread appends the rows of every request of the last `FLUSH_S` seconds in one
transaction (one commit per request cost more than the rest of the request), and at shutdown;
so they are in the workspace within `FLUSH_S` of the answer (a killed server loses at most those).
`GET /score/ping` is the bare endpoint of the same server, for a station's health check and as
the latency baseline of the serving benchmark.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa
from fastapi import APIRouter
from pydantic import BaseModel, Field

from linelab.api.errors import ERROR_RESPONSES
from linelab.api.pool import WorkspacePool
from linelab.deploy import scoring, tables
from linelab.store.backend import DuckDBBackend

FLUSH_S = 0.2
log = logging.getLogger(__name__)


class ScoreRequest(BaseModel):
    station: str = Field(description="the station whose deployment decides")
    unit_id: str = Field(description="the unit's serial")
    features: dict[str, Any] | None = Field(None, description="the unit's readings and genealogy by the model's "
                                                              "feature names; default: read from the workspace")


class ScoreAnswer(BaseModel):
    unit_id: str
    station: str
    decision: str = Field(description="inspect | pass | none")
    version: str | None = Field(description="the model version whose decision applies (None: no model acts)")
    stage: str | None
    score: float | None
    shadow: dict[str, float] = Field(description="scores of the versions that scored without acting")


class PredictionWriter:
    """Group commit of the requests' prediction rows (see the module docstring)."""

    def __init__(self, pool: WorkspacePool, every_s: float = FLUSH_S) -> None:
        self.pool = pool
        self.every_s = every_s
        self._rows: list[pa.Table] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, rows: pa.Table) -> None:
        with self._lock:
            self._rows.append(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="linelab-score-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.flush()
            except Exception:  # kept for the next round: a busy or unreachable store is no reason to drop them
                log.exception("storing the scored units' predictions failed; retrying")

    def flush(self) -> int:
        """Store the rows waiting; returns how many."""
        with self._flushing:
            with self._lock:
                waiting, self._rows = self._rows, []
            if not waiting:
                return 0
            rows = pa.concat_tables(waiting)
            try:
                with self.pool.workspace() as ws:
                    tables.append(ws, tables.PREDICTIONS, rows)
            except BaseException:
                with self._lock:
                    self._rows[:0] = waiting
                raise
            return rows.num_rows

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()


def score_router(pool: WorkspacePool) -> APIRouter:
    writer = PredictionWriter(pool)

    def stop() -> None:
        writer.close()
        pool.close()  # the pool may have been closed before: the last rows opened it again

    router = APIRouter(tags=["deploy"], on_shutdown=[stop])

    @router.post("/score", response_model=ScoreAnswer, responses=ERROR_RESPONSES)
    def score(req: ScoreRequest) -> dict[str, Any]:
        """Score one unit with the station's live models; the decision is recorded and returned."""
        # read-only lease: its rows are written by the writer, whose lease moves the pool's generation
        with pool.workspace(read_only=True) as ws:
            # a DuckDB file open here is written by no other process: the generation says whether
            # anything was written since the last request (PostgreSQL: other processes write, ask)
            unchanged = pool.generation if isinstance(ws.backend, DuckDBBackend) else None
            return scoring.score_unit(ws, req.station, req.unit_id, req.features, store=writer.add,
                                      unchanged_since=unchanged)

    @router.get("/score/ping")
    def ping() -> dict[str, bool]:
        """The bare endpoint: answers at once."""
        return {"ok": True}

    return router
