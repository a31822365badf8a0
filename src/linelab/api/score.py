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
A request whose answer needs only what is held is answered on the event loop (about a millisecond
of CPU); one that must read the workspace (a unit not held, stages older than `RECENT_S`, a model
not loaded, the file closed while idle) goes to a worker thread: no request waits on the loop.
`GET /score/ping` is the bare endpoint of the same server, for a station's health check and as
the latency baseline of the serving benchmark.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linelab.api.errors import ERROR_RESPONSES
from linelab.api.pool import NotOpen, WorkspacePool
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
        self._rows: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._rows += rows
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
            rows = tables.rows_table(waiting)  # one table per commit, not one per request
            try:
                with self.pool.workspace(records=False) as ws:  # the stage's own table only
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

    def answer(req: ScoreRequest, held_only: bool) -> Response:
        # read-only lease: its rows are written by the writer, whose lease moves the pool's generation
        with pool.workspace(read_only=True, opening=not held_only) as ws:
            # a DuckDB file open here is written by no other process: the records' generation says
            # whether any of the line's records were written since the last request (the writer's
            # prediction rows are not: they do not make the last batch worth asking again);
            # PostgreSQL: other processes write, ask
            unchanged = pool.records_generation if isinstance(ws.backend, DuckDBBackend) else None
            out = scoring.score_unit(ws, req.station, req.unit_id, req.features, store=writer.add,
                                     unchanged_since=unchanged, held_only=held_only)
        return Response(json.dumps(ScoreAnswer(**out).model_dump(mode="json"), ensure_ascii=False, allow_nan=False,
                                   separators=(",", ":")).encode(), media_type="application/json")

    @router.post("/score", response_model=ScoreAnswer, responses=ERROR_RESPONSES)
    async def score(req: ScoreRequest) -> Response:
        """Score one unit with the station's live models; the decision is recorded and returned."""
        # On the event loop when everything it needs is held in memory (models, stages, the unit's
        # records: a millisecond of CPU, the usual case); a worker thread when the workspace must be
        # read. Handing every request to a thread cost more CPU than scoring it (GIL hand-overs).
        try:
            return answer(req, held_only=True)
        except (scoring.NotHeld, NotOpen):
            return await run_in_threadpool(answer, req, False)

    @router.get("/score/ping")
    async def ping() -> dict[str, bool]:
        """The bare endpoint: answers at once (on the event loop, as a request to /score does)."""
        return {"ok": True}

    return router
