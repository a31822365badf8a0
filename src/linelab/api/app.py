"""The REST API, a thin layer over the command registry (the same definitions as the CLI).

`POST /api/yield` with body `{"by": "machine"}` returns exactly what `linelab yield --by machine
--json` prints. User mistakes answer 400 (404 for unknown names) with `{"error": ...}`.
"""

from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

from fastapi import Body, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from linelab.commands import CommandSpec, Context, load_all
from linelab.errors import NotFound, UserError
from linelab.store.workspace import resolve_path


def _endpoint(spec: CommandSpec, workspace: Path) -> Any:
    params_model = spec.params

    # The body model is only known at run time; no postponed annotations in this module.
    def endpoint(params: params_model = Body(default_factory=params_model)) -> Any:  # type: ignore[valid-type]
        ctx = Context(workspace_path=workspace, show_progress=False)
        try:
            return spec.func(params, ctx)
        finally:
            ctx.close()

    endpoint.__name__ = spec.name.replace(" ", "_")
    endpoint.__doc__ = spec.func.__doc__
    return endpoint


def create_app(workspace: str | Path | None = None) -> FastAPI:
    root = resolve_path(workspace)
    app = FastAPI(title="LineLab", description="The production line as its own R&D lab.")

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404 if isinstance(exc, NotFound) else 400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        return (resources.files("linelab.web") / "dashboard.html").read_text()

    @app.get("/static/plotly.js", include_in_schema=False)
    def plotly_js() -> Response:
        # Served from the installed plotly package: the dashboard works with no internet.
        from plotly.offline import get_plotlyjs

        return Response(get_plotlyjs(), media_type="application/javascript",
                        headers={"cache-control": "max-age=86400"})

    @app.get("/api/commands")
    def commands() -> list[dict[str, str]]:
        return [{"name": s.name, "path": s.path, "summary": s.summary} for s in load_all().values()]

    for spec in load_all().values():
        returns = get_type_hints(spec.func).get("return")
        app.post(spec.path, summary=spec.summary, response_model=returns)(
            _endpoint(spec, root)
        )
    return app
