"""The workbench's model pages: `/models` (every version and each station's deployment) and
`/model/{version}` (its live metrics per stage over time, stage changes, the units it scored).
Registered on the workbench's router by `linelab.api.pages`; the views are `linelab.web.model_views`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

if TYPE_CHECKING:
    from linelab.api.pages import Workbench


def add_model_pages(router: APIRouter, bench: Workbench, guarded: Any) -> None:
    from linelab.web import model_views

    @router.get("/models", response_class=HTMLResponse)
    def models(station: str | None = None) -> Response:
        return guarded(lambda ctx: bench.page("models.html", **model_views.models(bench, ctx, station or None)))()

    @router.get("/model/{version}", response_class=HTMLResponse)
    def model(version: str, by: str = "auto") -> Response:
        return guarded(lambda ctx: bench.page("model.html", **model_views.model(bench, ctx, version, by)))()
