"""The `linelab` command line, generated from the command registry (see `linelab.commands`).

Each pydantic parameter field becomes an option (or a positional argument), every command
gets `--json` and `--workspace`, and user mistakes print one clear line instead of a traceback.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console

from linelab.commands import CommandSpec, Context, load, load_all, modules_defining
from linelab.errors import UserError


def _cli_type(annotation: Any) -> Any:
    """Typer needs plain types: drop `| None` (None is the default instead)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation


def _parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    required = info.is_required()
    default = ... if required else info.get_default(call_default_factory=True)  # a factory's value, not Undefined
    help_text = info.description or ""
    if extra.get("argument"):
        marker = typer.Argument(default, help=help_text, show_default=not required)
    elif info.annotation is bool:
        flag = name.replace("_", "-")
        marker = typer.Option(default, f"--{flag}/--no-{flag}", help=help_text)
    else:
        marker = typer.Option(default, f"--{name.replace('_', '-')}", help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=marker,
                             annotation=_cli_type(info.annotation))


def _fail(message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": message}))
    Console(stderr=True).print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _runner(spec: CommandSpec) -> Any:
    def run(**kwargs: Any) -> None:
        as_json = kwargs.pop("json_out")
        workspace = kwargs.pop("workspace", None)
        values = {k: v for k, v in kwargs.items() if v is not None}
        try:
            params = spec.params(**values)
        except ValidationError as exc:
            problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                 for e in exc.errors())
            _fail(problems, as_json)
            return
        ctx = Context(workspace_path=workspace, show_progress=True, read_only=not spec.writes)
        try:
            result = spec.func(params, ctx)
        except UserError as exc:
            _fail(str(exc), as_json)
            return
        finally:
            ctx.close()
        if as_json:
            print(result.model_dump_json())
        else:
            result.render(Console())
        code = result.exit_code()
        if code:
            raise typer.Exit(code)

    fields = spec.params.model_fields
    params = [_parameter(n, f) for n, f in fields.items()]
    params.append(inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                    default=typer.Option(False, "--json", help="print one JSON object")))
    if spec.needs_workspace:
        params.append(inspect.Parameter(
            "workspace", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
            default=typer.Option(None, "--workspace", "-w", envvar="LINELAB_WORKSPACE",
                                 help="workspace folder or postgresql:// URL [default: ./linelab-workspace]")))
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__doc__ = spec.func.__doc__
    run.__name__ = spec.name.replace(" ", "_")
    return run


# What each command group is for (a group with a command of its own shows that command's summary).
GROUP_HELP = {
    "profile": "The line profile: draft it from exports, check it, its JSON Schema.",
    "connect": "The live line: store what its MQTT, OPC UA or IPC-CFX sources publish; the connector's status.",
    "twin": "The simulated SMT line: its scenarios, and a run into a workspace of its own.",
    "monitor": "Run the detectors over new data; the Tennessee Eastman benchmark.",
    "problem": "One problem: show it, move its status, resolve it (with its know-how).",
    "experiment": "Split runs, designed experiments and recipe optimisation: design, run, analyse, verdict.",
    "act": "Actions through the line's control interface: propose, approve, apply, acknowledge, check, list.",
    "knowhow": "The ledger of solved problems: list, show, search, add, edit, 8D export, watches.",
    "model": "Quality models on the line: train, deploy in stages (shadow, canary, full), score, judge, roll back.",
}


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The CLI; given the arguments it will run, only the stage modules that command needs are imported."""
    app = typer.Typer(help="LineLab: the production line as its own R&D lab.", no_args_is_help=True,
                      pretty_exceptions_enable=False, add_completion=False)
    groups: dict[str, typer.Typer] = {}
    needed = modules_defining(argv[0]) if argv and not argv[0].startswith("-") else None
    registry = load(needed) if needed else load_all()
    group_names = {name.split(" ")[0] for name in registry if " " in name}
    for name, spec in registry.items():
        words = name.split(" ")
        if len(words) == 1 and name in group_names:
            continue  # becomes the group's own callback below
        if len(words) == 1:
            app.command(name, help=spec.summary)(_runner(spec))
            continue
        group = groups.get(words[0])
        if group is None:
            own = registry.get(words[0])
            listed = "commands: " + ", ".join(n.split(" ", 1)[1] for n in registry if n.startswith(words[0] + " "))
            group = typer.Typer(no_args_is_help=own is None,
                                help=own.summary if own else GROUP_HELP.get(words[0], listed))
            if own is not None:
                callback = _runner(own)

                def group_callback(typer_ctx: typer.Context, _cb: Any = callback, **kw: Any) -> None:
                    if typer_ctx.invoked_subcommand is None:
                        _cb(**kw)

                sig = inspect.signature(callback)
                group_callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                    [inspect.Parameter("typer_ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                       annotation=typer.Context), *sig.parameters.values()])
                group_callback.__annotations__ = {"typer_ctx": typer.Context, **callback.__annotations__}
                group.callback(invoke_without_command=True)(group_callback)
            groups[words[0]] = group
            app.add_typer(group, name=words[0])
        group.command(" ".join(words[1:]), help=spec.summary)(_runner(spec))
    _add_serve(app)
    return app


def _add_serve(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", help="address to listen on (loopback unless a --token is set)"),
        port: int = typer.Option(8000, help="port"),
        workspace: Path | None = typer.Option(None, "--workspace", "-w", envvar="LINELAB_WORKSPACE",
                                              help="workspace folder or postgresql:// URL "
                                                   "[default: ./linelab-workspace]"),
        token: str | None = typer.Option(None, "--token", envvar="LINELAB_TOKEN",
                                         help="secret every request must carry (Authorization: Bearer TOKEN); "
                                              "required unless HOST is a loopback address"),
        allow_host: list[str] = typer.Option([], "--allow-host",
                                             help="another name clients reach the server by (Host header; "
                                                  "repeatable); HOST, localhost and loopback are always allowed"),
    ) -> None:
        """Serve the REST API and the dashboard (http://HOST:PORT/)."""
        from linelab.api.security import MIN_TOKEN_LENGTH, is_loopback

        if not is_loopback(host) and not token:
            _fail(f"serving on {host} (not a loopback address) needs a token: --token TOKEN or LINELAB_TOKEN "
                  "(every request then sends Authorization: Bearer TOKEN)", False)
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            _fail(f"the token is too short: use at least {MIN_TOKEN_LENGTH} characters "
                  "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())')", False)
        import uvicorn

        from linelab.api import create_app

        shown = "localhost" if is_loopback(host) else host
        query = "?token=…" if token else ""
        Console(stderr=True).print(f"dashboard: http://{shown}:{port}/{query}   API docs: http://{shown}:{port}/docs")
        uvicorn.run(create_app(workspace, token=token, host=host, allowed_hosts=allow_host),
                    host=host, port=port, log_level="warning")


# Exit codes: 0 done, 1 the command's own verdict (rows quarantined, errors found), 2 a mistake in
# the input or the call, 3 an unexpected failure (a fault of LineLab's own, or the machine's), 130 interrupted.
FAULT_EXIT = 3


def _fault(exc: Exception) -> None:
    """A failure no user error explains: one line saying so (the traceback with LINELAB_DEBUG=1), exit 3."""
    message = (f"unexpected failure ({type(exc).__name__}: {exc}), not a verdict on the input; "
               f"LINELAB_DEBUG=1 shows where it happened (a fault of LineLab's own unless the machine explains it)")
    if "--json" in sys.argv[1:]:
        print(json.dumps({"error": message}))
    if os.environ.get("LINELAB_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(FAULT_EXIT)


def main() -> None:
    try:
        build_app(sys.argv[1:])()
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last net: a crash must not read as exit 1 (quarantine)
        _fault(exc)
