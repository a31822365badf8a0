"""The interactive API docs (Swagger UI) served from files shipped in the package: no internet needed."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}


def add_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="LineLab API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon-32x32.png")

    for name, media_type in ASSETS.items():
        app.get(f"/static/docs/{name}", include_in_schema=False)(_asset(name, media_type))


def _asset(name: str, media_type: str) -> Callable[[], Response]:
    def asset() -> Response:
        data = (resources.files("linelab.api") / "static" / "swagger-ui" / name).read_bytes()
        return Response(data, media_type=media_type, headers={"cache-control": "max-age=86400"})

    return asset
