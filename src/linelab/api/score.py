"""`POST /score`: a station asks, per unit, what to do with it — the deployed models' routed decision.

The same function as `linelab model score --unit` (`linelab.deploy.scoring.score_unit`), on the
server's shared workspace handle, without the generic command layer: a station waits for this
answer before it moves the unit on. `GET /score/ping` is the bare endpoint of the same server,
for a station's health check and as the latency baseline of the serving benchmark.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from linelab.api.errors import ERROR_RESPONSES
from linelab.api.pool import WorkspacePool
from linelab.deploy import scoring


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


def score_router(pool: WorkspacePool) -> APIRouter:
    router = APIRouter(tags=["deploy"])

    @router.post("/score", response_model=ScoreAnswer, responses=ERROR_RESPONSES)
    def score(req: ScoreRequest) -> dict[str, Any]:
        """Score one unit with the station's live models; the decision is recorded and returned."""
        with pool.workspace() as ws:
            return scoring.score_unit(ws, req.station, req.unit_id, req.features)

    @router.get("/score/ping")
    def ping() -> dict[str, bool]:
        """The bare endpoint: answers at once."""
        return {"ok": True}

    return router
