"""The engineers' workbench: server-rendered pages over the same command functions as the CLI.

Every page runs registered commands (`linelab.commands`) with one workspace context per request,
and renders their results with Jinja2 templates from the package (`linelab/web/templates`).
Plots are Plotly figures drawn in the browser from JSON embedded in the page, with plotly.js
served from the installed package, so the pages work with no internet. Data endpoints stay the
generated `/api/...` ones; these routes only render.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Hashable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import plotly.graph_objects as go
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from linelab.commands import Context, Result, load_all
from linelab.errors import NotFound, UserError
from linelab.render import number

STATIC = {"workbench.css": "text/css", "workbench.js": "application/javascript"}


def _env() -> Environment:
    env = Environment(loader=PackageLoader("linelab.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["pct"] = lambda v, d=2: "—" if v is None else f"{100 * v:.{d}f}%"
    env.filters["num"] = number
    env.filters["when"] = lambda v: "—" if not v else str(v)[:16].replace("T", " ")
    env.filters["q"] = lambda v: quote(str(v), safe="")
    env.filters["tojson_figure"] = lambda fig: fig.to_json() if isinstance(fig, go.Figure) else json.dumps(fig)
    return env


class Workbench:
    """Runs commands for the pages: one workspace context per page, closed when the page is done."""

    def __init__(self, root: Path, pool: Any = None) -> None:
        self.root = root
        self.pool = pool
        self.env = _env()
        self._memo: dict[str, tuple[Hashable, Any]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def context(self, read_only: bool = False) -> Iterator[Context]:
        """`read_only`: the page writes nothing, so the pool keeps the API's cached answers."""
        ctx = Context(workspace_path=self.root, show_progress=False)
        try:
            if self.pool is not None:
                with self.pool.workspace(read_only=read_only) as ws:
                    ctx._workspace = ws
                    yield ctx
                    ctx._workspace = None
            else:
                yield ctx
        finally:
            ctx.close()

    def run(self, ctx: Context, name: str, **params: Any) -> Result:
        """The command `name` exactly as the CLI and REST run it (the same function)."""
        spec = load_all()[name]
        try:
            values = spec.params(**{k: v for k, v in params.items() if v is not None})
        except ValidationError as exc:
            raise UserError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        return spec.func(values, ctx)

    def cached(self, ctx: Context, name: str, **params: Any) -> Result:
        """`run` for a command that reads only ingested records (yield, pareto): its result is kept until
        the next ingest batch, so a page reloaded on a million-unit line does not scan it again."""
        key = name + repr(sorted(params.items()))
        return self.memo(ctx, key, lambda _: self.run(ctx, name, **params))

    def memo(self, ctx: Context, key: str, compute: Any, version: Hashable | None = None) -> Any:
        """`compute(workspace)` kept until the next ingest batch (results, the series lists of forms), or
        until `version` changes when it is given (what else the answer depends on)."""
        if version is None:
            version = ctx.workspace.last_batch_seq()
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute(ctx.workspace)
        with self._lock:
            self._memo[key] = (version, value)
        return value

    def attempt(self, ctx: Context, name: str, **params: Any) -> tuple[Result | None, str | None]:
        """Run a command whose absence is normal (no loop run yet, no know-how): (result, why not)."""
        try:
            return self.run(ctx, name, **params), None
        except UserError as exc:
            return None, str(exc)

    def page(self, template: str, **values: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(**values)
        return HTMLResponse(html)


def cross_site(request: Request) -> bool:
    """A form posted from another site's page (its Origin is not this server): a browser on the
    engineer's desk must not let any web page it opens resolve problems here."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False  # not a browser form (curl, scripts): the host and token checks apply as to the API
    return urlsplit(origin).netloc != request.headers.get("host", "")


def _error_page(bench: Workbench, exc: UserError) -> HTMLResponse:
    page = bench.page("error.html", title="not found" if isinstance(exc, NotFound) else "cannot show this",
                      message=str(exc))
    page.status_code = 404 if isinstance(exc, NotFound) else 400
    return page


def pages_router(root: Path, pool: Any = None) -> APIRouter:
    """The workbench's routes for the workspace at `root` (a `WorkspacePool` is used when given)."""
    from linelab.web import views

    bench = Workbench(root, pool)
    for name in bench.env.list_templates():  # compiled now, not on the first visit of each page
        bench.env.get_template(name)
    router = APIRouter(include_in_schema=False)

    def guarded(build: Any, read_only: bool = False) -> Any:
        """`build(ctx)` with its error page. `read_only`: the page runs only commands that declare
        they write nothing, so the API's cached answers stay valid after it."""
        def handler(*args: Any, **kwargs: Any) -> Response:
            try:
                with bench.context(read_only) as ctx:
                    return build(ctx, *args, **kwargs)
            except UserError as exc:
                return _error_page(bench, exc)
        return handler

    @router.get("/workbench/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:  # a fixed list: no request names a file of its own
            return Response("not found", status_code=404)
        body = (resources.files("linelab.web") / "static" / name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=3600"})

    @router.get("/", response_class=HTMLResponse)
    @router.get("/overview", response_class=HTMLResponse)
    def overview(refresh: int = 30) -> Response:
        # The page refreshes its numbers every `refresh` seconds (at least 1; 0 turns it off).
        every = max(1, refresh) if refresh else None
        return guarded(lambda ctx: bench.page("overview.html", **(views.overview(bench, ctx) | {"refresh": every})),
                       read_only=True)()

    @router.get("/problem/{problem_id}", response_class=HTMLResponse)
    def problem(problem_id: str, error: str | None = None, done: str | None = None) -> Response:
        return guarded(lambda ctx: bench.page("problem.html", error=error, done=done,
                                              **views.problem(bench, ctx, problem_id)))()

    @router.get("/problem/{problem_id}/report", response_class=HTMLResponse)
    def problem_report(problem_id: str) -> Response:
        """The printable report `linelab problem report` writes, served as it is written."""
        def build(ctx: Context) -> Response:
            out = Path(ctx.workspace.path) / "reports" / f"{problem_id}-report.html"
            res = bench.run(ctx, "problem report", id=problem_id, out=out)
            return HTMLResponse(Path(res.file).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
        return guarded(build, read_only=True)()

    @router.post("/problem/{problem_id}/resolve")
    def resolve(request: Request, problem_id: str, cause: str = Form(""), fix: str = Form(""),
                params: str = Form(""), note: str = Form("")) -> Response:
        if cross_site(request):
            return Response("a form from another site cannot change this workspace", status_code=403)
        target = f"/problem/{quote(problem_id)}"
        try:
            with bench.context() as ctx:
                res = bench.run(ctx, "problem resolve", id=problem_id, cause=cause.strip() or None,
                                fix=fix.strip() or None, params=params.strip() or None, note=note.strip())
        except UserError as exc:
            return RedirectResponse(f"{target}?error={quote(str(exc))}#resolve", status_code=303)
        entry = getattr(res, "entry", None)
        said = f"resolved; know-how {entry['id']} written" if entry else "resolved"
        return RedirectResponse(f"{target}?done={quote(said)}", status_code=303)

    @router.post("/problem/{problem_id}/diagnose")
    def diagnose(request: Request, problem_id: str) -> Response:
        if cross_site(request):
            return Response("a form from another site cannot change this workspace", status_code=403)
        target = f"/problem/{quote(problem_id)}"
        try:
            with bench.context() as ctx:
                bench.run(ctx, "diagnose", problem_id=problem_id)
        except UserError as exc:
            return RedirectResponse(f"{target}?error={quote(str(exc))}", status_code=303)
        return RedirectResponse(f"{target}#diagnosis", status_code=303)

    @router.post("/problem/{problem_id}/act")
    def propose(request: Request, problem_id: str, kind: str = Form(...), params: str = Form(""),
                reason: str = Form("")) -> Response:
        if cross_site(request):
            return Response("a form from another site cannot change this workspace", status_code=403)
        target = f"/problem/{quote(problem_id)}"
        try:
            with bench.context() as ctx:
                res = bench.run(ctx, "act propose", kind=kind, params=params.strip() or None, problem_id=problem_id,
                                source="diagnosis", reason=reason.strip())
        except UserError as exc:
            return RedirectResponse(f"{target}?error={quote(str(exc))}", status_code=303)
        said = f"{res.action.id} proposed: it waits for approval"  # type: ignore[attr-defined]
        return RedirectResponse(f"{target}?done={quote(said)}#next-step", status_code=303)

    @router.get("/chart", response_class=HTMLResponse)
    def chart(request: Request) -> Response:
        form = dict(request.query_params)
        return guarded(lambda ctx: bench.page("chart.html", **views.chart(bench, ctx, form)))()

    @router.get("/capability", response_class=HTMLResponse)
    def capability(request: Request) -> Response:
        form = dict(request.query_params)
        return guarded(lambda ctx: bench.page("capability.html", **views.capability(bench, ctx, form)))()

    @router.get("/knowhow", response_class=HTMLResponse)
    def knowhow(q: str | None = None) -> Response:
        return guarded(lambda ctx: bench.page("knowhow.html", **views.knowhow(bench, ctx, q)))()

    @router.get("/knowhow/8d", response_class=HTMLResponse)
    def export_8d(id: str | None = None) -> Response:
        def build(ctx: Context) -> Response:
            out = Path(ctx.workspace.path) / "reports" / "8d"
            res = bench.run(ctx, "knowhow export", id=id, out=out)
            return HTMLResponse(Path(res.files["html"]).read_text())  # type: ignore[attr-defined]
        return guarded(build)()

    @router.get("/experiments", response_class=HTMLResponse)
    def experiments() -> Response:
        return guarded(lambda ctx: bench.page("experiments.html", **views.experiments(bench, ctx)))()

    @router.get("/experiment/{exp_id}", response_class=HTMLResponse)
    def experiment(exp_id: str) -> Response:
        return guarded(lambda ctx: bench.page("experiment.html", **views.experiment(bench, ctx, exp_id)))()

    @router.get("/learning", response_class=HTMLResponse)
    def learning() -> Response:
        return guarded(lambda ctx: bench.page("learning.html", **views.learning(bench, ctx)))()

    from linelab.api.model_pages import add_model_pages

    add_model_pages(router, bench, guarded)

    @router.get("/units", response_class=HTMLResponse)
    def units(request: Request) -> Response:
        form = dict(request.query_params)
        return guarded(lambda ctx: bench.page("units.html", **views.units(bench, ctx, form)), read_only=True)()

    @router.get("/unit/{serial}", response_class=HTMLResponse)
    def unit(serial: str) -> Response:
        return guarded(lambda ctx: bench.page("unit.html", **views.trace(bench, ctx, serial=serial)))()

    @router.get("/lot/{lot}", response_class=HTMLResponse)
    def lot(lot: str) -> Response:
        return guarded(lambda ctx: bench.page("unit.html", **views.trace(bench, ctx, lot=lot)))()

    return router

