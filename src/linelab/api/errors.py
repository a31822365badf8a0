"""One error shape for every answer that is not a success: `{"error": {"type", "message", "field"?}}`.

User mistakes answer 400, unknown names 404, parameters that do not fit the schema 422, a workspace
another process holds 503; the same shape for the router's own 404/405 and the security checks.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from linelab.commands import WorkspaceBusy
from linelab.errors import NotFound, UserError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_response(status: int, type_: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"type": type_, "message": message}
    if field:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


# Declared on every command's route so the OpenAPI spec shows what each status carries.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a mistake in the request (the message says which), or a Host "
                                                 "this server does not answer to"},
    401: {"model": ErrorResponse, "description": "the server has a token and the request did not carry it"},
    403: {"model": ErrorResponse, "description": "a browser page on another site tried to change the workspace"},
    404: {"model": ErrorResponse, "description": "a named thing does not exist"},
    422: {"model": ErrorResponse, "description": "a parameter does not fit the schema (`field` names it)"},
    503: {"model": ErrorResponse, "description": "the workspace is busy (another process writes it)"},
}

# Commands that take files answer 415 to a body that is not multipart/form-data.
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    415: {"model": ErrorResponse, "description": "files are uploaded as multipart/form-data"}}

_STATUS_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 415: "unsupported_media_type"}


def _field(loc: Any) -> str:
    # "body" / "query" are where, not what: the field is the rest of the path.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts)


def validation_error(errors: list[Any]) -> JSONResponse:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    message = "; ".join(f"{_field(e.get('loc', ())) or 'body'}: {e.get('msg', 'invalid')}" for e in errors)
    return error_response(422, "validation_error", message or "invalid request", field or None)


def install(app: FastAPI) -> None:
    @app.exception_handler(WorkspaceBusy)
    async def busy(_: Request, exc: WorkspaceBusy) -> JSONResponse:
        # The server's own folders and processes are none of a client's business: the message the CLI
        # prints (the workspace's path, the process holding it) stays in the server's log.
        log.warning("%s", exc)
        return error_response(503, "busy", "the workspace is busy: another process is writing it; retry in a few "
                                           "seconds", headers={"retry-after": "5"})

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return error_response(404, "not_found", str(exc))
        return error_response(400, "user_error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(list(exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the request's fault: the same shape, and no internals in the answer.
        return error_response(500, "internal_error", f"the server failed on this request ({type(exc).__name__})")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, _STATUS_TYPES.get(exc.status_code, "http_error"),
                              str(exc.detail), headers=getattr(exc, "headers", None))
