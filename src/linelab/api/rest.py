"""REST routes generated from the command registry, with no way for a request to name a server path.

A command's parameter model marks its file parameters (see `linelab.commands.command`); here:
- "input" fields become file uploads (multipart/form-data; the other parameters travel as JSON
  in the `params` part), saved inside the workspace for the call and removed after it;
- "output" fields take a bare file name, "output-dir" fields are chosen by the server: both are
  written in a fresh folder under WORKSPACE/outputs/, and the answer links them as /outputs/...;
- "name" fields accept a plain name (a built-in scenario), never a path;
- destructive switches are left out, and commands registered with rest=False are not offered.
"""

from __future__ import annotations

import inspect
import json
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from annotated_types import Ge, Le
from fastapi import Body, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model
from pydantic.fields import FieldInfo
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from linelab.api.errors import ERROR_RESPONSES, UPLOAD_RESPONSES
from linelab.api.pool import WorkspacePool
from linelab.commands import CommandSpec, Context, Result
from linelab.errors import NotFound, UserError

OUTPUTS = "outputs"
UPLOADS = ".uploads"
FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
PLAIN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
JSON_SAFE_INT = 2**53 - 1


def path_kind(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    kind = extra.get("path")
    return str(kind) if kind else None


def is_destructive(info: FieldInfo) -> bool:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return bool(extra.get("destructive"))


@dataclass
class RestShape:
    """How one command's parameters travel over REST."""

    body: type[BaseModel]  # the JSON parameters a request may send
    inputs: dict[str, bool] = field(default_factory=dict)  # upload field -> takes several files
    outputs: dict[str, str] = field(default_factory=dict)  # field -> "output" | "output-dir"


def _takes_list(annotation: Any) -> bool:
    return "list[" in str(annotation) or getattr(annotation, "__origin__", None) is list


def _bounded(annotation: Any) -> Any:
    """JSON numbers as a request may send them: integers a JSON client holds exactly, finite floats.

    (A 20-digit limit would otherwise reach the database and fail there, as a server error.)
    """
    if annotation is int:
        return Annotated[int, Ge(-JSON_SAFE_INT), Le(JSON_SAFE_INT)]
    if annotation is float:
        return Annotated[float, Field(allow_inf_nan=False)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        return Union[tuple(_bounded(a) for a in args)]  # noqa: UP007 (built at run time)
    if origin is list and args:
        return list[_bounded(args[0])]  # type: ignore[misc]
    return annotation


def rest_shape(params: type[BaseModel]) -> RestShape:
    fields: dict[str, Any] = {}
    shape = RestShape(body=params)
    for name, info in params.model_fields.items():
        kind = path_kind(info)
        if is_destructive(info):
            continue
        if kind == "input":
            shape.inputs[name] = _takes_list(info.annotation)
            continue
        if kind == "output-dir":
            shape.outputs[name] = kind
            continue
        if kind == "output":
            shape.outputs[name] = kind
            default = Path(info.default).name if isinstance(info.default, str | Path) else None
            fields[name] = (str | None, Field(default, description=f"{info.description or ''} (a file name: "
                                              "it is written inside the workspace and linked in the answer)",
                                              pattern=FILE_NAME))
            continue
        if kind == "name":
            plain = Annotated[str, StringConstraints(pattern=PLAIN_NAME)]
            annotation: Any = plain | None if info.default is None else plain
            fields[name] = (annotation, Field(info.default, description=f"{info.description or ''} (a name)"))
            continue
        fields[name] = (_bounded(info.annotation), info)
    shape.body = create_model(
        params.__name__, __config__=ConfigDict(extra="forbid"), __doc__=params.__doc__,
        __module__=params.__module__, **fields)
    return shape


def _request_folder(root: Path, where: str, spec: CommandSpec) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return root / where / f"{spec.name.replace(' ', '-')}-{stamp}-{secrets.token_hex(4)}"


def _safe_file_name(name: str | None) -> str:
    base = Path(name or "").name
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" ")
    return base if base and not base.startswith(".") else "upload"


def _save_uploads(files: dict[str, list[UploadFile]], folder: Path,
                  names: dict[Path, str]) -> dict[str, list[Path]]:
    """Each upload saved in `folder`; `names` gets each saved copy's name as it was sent."""
    saved: dict[str, list[Path]] = {}
    n = 0
    for name, uploads in files.items():
        for upload in uploads:
            # One folder per file keeps each file's own name (ingest reads a table from it).
            target = folder / str(n) / _safe_file_name(upload.filename)
            n += 1
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)
            saved.setdefault(name, []).append(target)
            names[target] = target.name
    return saved


def _as_sent(text: str, names: dict[Path, str]) -> str:
    """Text naming the server's copies of uploaded files, with each named as it was sent instead."""
    for path, name in names.items():
        for form in {str(path), str(path.resolve())}:
            text = text.replace(form, name)
    return text


def _links(value: Any, outputs: Path) -> Any:
    """Server paths under WORKSPACE/outputs in an answer become /outputs/... links."""
    if isinstance(value, dict):
        return {k: _links(v, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_links(v, outputs) for v in value]
    if isinstance(value, str) and value.startswith(str(outputs) + "/"):
        return "/outputs/" + value[len(str(outputs)) + 1:]
    return value


@dataclass
class _RequestContext(Context):
    """A command's context in the server: the workspace comes from the app's pool, when asked for."""

    pool: WorkspacePool | None = None
    _lease: ExitStack = field(default_factory=ExitStack)

    @property
    def workspace(self) -> Any:
        if self._workspace is None:
            assert self.pool is not None
            self._workspace = self._lease.enter_context(self.pool.workspace(read_only=self.read_only))
        return self._workspace

    def close(self) -> None:
        self._workspace = None
        self._lease.close()


def _invalid(exc: ValidationError, prefix: str = "") -> RequestValidationError:
    return RequestValidationError([{"loc": (prefix, *e["loc"]) if prefix else e["loc"], "msg": e["msg"],
                                    "type": e["type"]} for e in exc.errors()])


def _call(spec: CommandSpec, params: BaseModel, pool: WorkspacePool, workspace: Any = None,
          uploads: dict[Path, str] | None = None) -> Result:
    ctx = _RequestContext(workspace_path=pool.root, show_progress=False, read_only=not spec.writes, pool=pool,
                          _workspace=workspace, uploads=uploads or {})
    try:
        return spec.func(params, ctx)
    except UserError as exc:
        if uploads:  # the message names an uploaded file as it was sent, not the server's copy
            raise type(exc)(_as_sent(str(exc), uploads)) from None
        raise
    finally:
        ctx.close()
        if spec.writes:
            pool.changed()  # it may have written by path, not through its lease


def _runner(spec: CommandSpec, shape: RestShape,
            pool: WorkspacePool) -> tuple[Callable[..., Response], Callable[[BaseModel], Response | None]]:
    """The command's call, and the answer kept for a read's parameters where there is one."""
    root = pool.root
    reads = not spec.writes and not shape.inputs

    def answer(body: BaseModel, files: dict[str, list[UploadFile]], workspace: Any = None) -> tuple[bytes, bool]:
        """The command's answer as JSON, and whether it may be kept (it wrote no output file)."""
        values = body.model_dump(exclude_unset=True)
        with ExitStack() as cleanup:
            out_dir = None
            if shape.outputs:
                out_dir = _request_folder(root, OUTPUTS, spec)
                for name, kind in shape.outputs.items():
                    if kind == "output-dir":
                        values[name] = out_dir / name
                    elif getattr(body, name, None):
                        values[name] = out_dir / getattr(body, name)
            uploads: dict[Path, str] = {}
            if shape.inputs:
                upload_dir = _request_folder(root, UPLOADS, spec)
                cleanup.callback(shutil.rmtree, upload_dir, True)
                for name, paths in _save_uploads(files, upload_dir, uploads).items():
                    values[name] = paths if shape.inputs[name] else paths[0]
            try:
                params = spec.params(**values)
            except ValidationError as exc:
                raise _invalid(exc, "body") from None
            result = _call(spec, params, pool, workspace, uploads)
            if out_dir is None:
                return _as_sent(result.model_dump_json(), uploads).encode(), True
            wrote = out_dir.exists() and any(out_dir.iterdir())
            if out_dir.exists() and not wrote:
                out_dir.rmdir()
            linked = _links(result.model_dump(mode="json"), root / OUTPUTS)
            return _as_sent(json.dumps(linked, ensure_ascii=False, separators=(",", ":")), uploads).encode(), not wrote

    def run(body: BaseModel, files: dict[str, list[UploadFile]]) -> Response:
        if not reads:
            content = answer(body, files)[0]
        else:  # a read: kept while the workspace cannot have changed (see WorkspacePool.answer)
            content = pool.answer((spec.name, body.model_dump_json()), lambda ws: answer(body, files, ws))
        return Response(content, media_type="application/json")

    def kept(body: BaseModel) -> Response | None:
        content = pool.kept((spec.name, body.model_dump_json())) if reads else None
        return None if content is None else Response(content, media_type="application/json")

    return run, kept


def _endpoint(spec: CommandSpec, shape: RestShape, pool: WorkspacePool) -> Callable[..., Any]:
    run, kept = _runner(spec, shape, pool)
    model = shape.body
    required = any(f.is_required() for f in model.model_fields.values())
    if not shape.inputs:
        body_param = Body(...) if required else Body(default_factory=model)

        async def endpoint(params: Any = body_param) -> Response:
            # A kept answer is sent from the event loop; anything to compute runs in a worker thread
            # (handing every request to a thread cost more CPU than sending a kept answer).
            held = kept(params)
            return held if held is not None else await run_in_threadpool(run, params, {})

        endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, default=body_param, annotation=model)])
    else:
        described = f"the other parameters as a JSON object ({model.__name__} in the schemas)"
        params_part = Form(... if required else "{}", description=described)
        uploads: dict[str, tuple[Any, Any]] = {}
        for name, many in shape.inputs.items():
            info = spec.params.model_fields[name]
            kind: Any = list[UploadFile] if many else UploadFile
            if info.is_required():
                uploads[name] = (kind, File(..., description=info.description))
            else:
                uploads[name] = (kind | None, File(None, description=info.description))

        files_required = any(spec.params.model_fields[n].is_required() for n in shape.inputs)

        async def endpoint(request: Request, **kw: Any) -> Response:  # type: ignore[misc]
            kind = request.headers.get("content-type", "")
            if kind.startswith("application/json") and not files_required:
                text, where = await request.body(), "body"  # no files: the parameters alone, as elsewhere
            elif kind.startswith("multipart/form-data"):
                text, where = kw.pop("params").encode(), "params"
            else:
                raise HTTPException(415, "send multipart/form-data: the files as uploads, the other "
                                         f"parameters as JSON in the `params` part ({model.__name__})")
            try:
                body = model.model_validate_json(text or b"{}")
            except ValidationError as exc:
                raise _invalid(exc, where) from None
            files = {n: (f if isinstance(f, list) else [f]) for n, f in kw.items() if f and n != "params"}
            return await run_in_threadpool(run, body, files)

        endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("params", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=params_part),
            *[inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=marker)
              for n, (t, marker) in uploads.items()]])
    endpoint.__name__ = spec.name.replace(" ", "_")
    endpoint.__doc__ = spec.func.__doc__
    return endpoint


def unmarked_paths(params: type[BaseModel]) -> list[str]:
    """Path parameters that do not say what they are: the server cannot know how to take them."""
    return [name for name, info in params.model_fields.items()
            if "Path" in str(info.annotation) and not path_kind(info) and not is_destructive(info)]


def add_command_routes(app: FastAPI, specs: list[CommandSpec], pool: WorkspacePool) -> list[CommandSpec]:
    """Routes for the commands; returns those offered."""
    offered = []
    for spec in specs:
        unmarked = unmarked_paths(spec.params)
        if unmarked:  # never let a request name a server path: such a command stays on the CLI
            warnings.warn(f"`{spec.name}` is not offered over REST: mark its path parameter(s) "
                          f"{', '.join(unmarked)} with json_schema_extra={{'path': ...}}", stacklevel=2)
            continue
        shape = rest_shape(spec.params)
        returns = get_type_hints(spec.func).get("return")
        responses: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, **(UPLOAD_RESPONSES if shape.inputs else {})}
        app.post(spec.path, summary=spec.summary, response_model=returns, responses=responses)(
            _endpoint(spec, shape, pool))
        offered.append(spec)
    return offered


def add_output_route(app: FastAPI, root: Path) -> None:
    @app.get("/outputs/{name:path}", responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]},
             response_class=FileResponse)
    def output(name: str) -> FileResponse:
        """A file a command wrote for a request (a chart, a report): the links in its answer."""
        base = (root / OUTPUTS).resolve()
        try:
            path = (base / name).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            raise NotFound(f"no output {name!r}") from None
        if not path.is_relative_to(base) or not path.is_file():
            raise NotFound(f"no output {name!r}")
        return FileResponse(path)

