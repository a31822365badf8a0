"""The REST API, a thin layer over the command registry (the same definitions as the CLI).

`POST /api/yield` with body `{"by": "machine"}` returns exactly what `linelab yield --by machine
--json` prints. Every error answers `{"error": {"type", "message", "field"?}}` (see `errors`); no
request names a server path (see `rest`); the Host header and, when set, a token are checked
(see `security`).
"""

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from linelab.api import errors
from linelab.api.docs import add_docs
from linelab.api.pages import pages_router
from linelab.api.pool import WorkspacePool
from linelab.api.rest import add_command_routes, add_output_route
from linelab.api.score import score_router
from linelab.api.security import Guard, allowed_host_names
from linelab.commands import CommandSpec, load_all
from linelab.store.workspace import resolve_path


def create_app(workspace: str | Path | None = None, *, token: str | None = None, host: str | None = None,
               allowed_hosts: list[str] | tuple[str, ...] = ()) -> FastAPI:
    """The app for one workspace. `host` is the address it is bound to; `allowed_hosts` adds names."""
    root = resolve_path(workspace).absolute()
    pool = WorkspacePool(root)
    app = FastAPI(title="LineLab", description="The production line as its own R&D lab.",
                  docs_url=None, redoc_url=None)
    app.state.pool = pool
    app.router.add_event_handler("shutdown", pool.close)
    errors.install(app)
    add_docs(app)
    app.include_router(pages_router(root, pool))  # the workbench pages, before the bare dashboard route

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        return (resources.files("linelab.web") / "dashboard.html").read_text()

    @app.get("/static/plotly.js", include_in_schema=False)
    def plotly_js() -> Response:
        # Served from the installed plotly package: the dashboard works with no internet.
        from plotly.offline import get_plotlyjs

        return Response(get_plotlyjs(), media_type="application/javascript",
                        headers={"cache-control": "max-age=86400"})

    offered: list[CommandSpec] = []

    @app.get("/api/commands")
    def commands() -> list[dict[str, str]]:
        """The commands this server offers: name, path and summary."""
        return [{"name": s.name, "path": s.path, "summary": s.summary} for s in offered]

    app.include_router(score_router(pool))
    offered += add_command_routes(app, [s for s in load_all().values() if s.rest], pool)
    add_output_route(app, root)
    app.add_middleware(Guard, allowed_hosts=allowed_host_names(host, allowed_hosts), token=token)
    return app
