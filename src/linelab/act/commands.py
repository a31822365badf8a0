"""Action commands: propose, approve, apply, reject, list, check."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.console import Console

from linelab.act import actions as act
from linelab.act.control import LineControl, Outbox
from linelab.commands import Context, Result, command
from linelab.errors import UserError
from linelab.model import Action
from linelab.profile.io import workspace_profile
from linelab.render import fmt, print_rows


class ActionResult(Result):
    action: Action

    def render(self, console: Console) -> None:
        a = self.action
        console.print(f"action [bold]{a.id}[/bold] {a.kind} {a.params or ''} — [bold]{a.status}[/bold]"
                      + (f" (problem {a.problem_id})" if a.problem_id else ""))
        exp = a.expected_effect
        if exp and exp.delta is not None:
            console.print(f"expected effect: first-pass yield {100 * exp.delta:+.2f} pt")
        obs = a.observed_effect
        if obs and obs.get("delta") is not None:
            lo, hi = obs["interval"]
            console.print(f"observed: {fmt(obs['before_yield'], 'yield')} -> {fmt(obs['after_yield'], 'yield')} "
                          f"({100 * obs['delta']:+.2f} pt [{100 * lo:+.2f}, {100 * hi:+.2f}]) — {obs['verdict']}")
        if a.applied:
            console.print(f"applied via {a.applied.get('via')} at {a.applied.get('t')}")
        if a.status == "failed":
            console.print(f"failed on the line: {a.history[-1].note if a.history else ''}")


def _params(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        # name=value pairs are friendlier on a command line than JSON
        out: dict[str, Any] = {}
        for part in text.split(","):
            name, sep, v = part.partition("=")
            if not sep:
                raise UserError(f"--params: give JSON or name=value pairs, got {text!r}") from None
            try:
                out[name.strip()] = float(v)
            except ValueError:
                out[name.strip()] = v.strip()
        return out
    if not isinstance(value, dict):
        raise UserError("--params: JSON must be an object")
    return value


parse_params = _params  # the same --params for every command that takes an action's arguments


class ProposeParams(BaseModel):
    kind: str = Field(..., description="an action the line's profile lists (`linelab profile show` shows them)",
                      json_schema_extra={"argument": True})
    params: str | None = Field(None, description='arguments: JSON ({"machine": "M2", "part": "N3"}) or '
                               "name=value pairs (machine=M2,part=N3)")
    problem_id: str | None = Field(None, description="the problem this action answers")
    expected_delta: float | None = Field(None, description="expected change of first-pass yield (0.01 = +1 pt)")
    window_units: int = Field(2000, gt=0, description="units before/after used to check the effect")
    source: Literal["person", "diagnosis", "knowhow", "experiment", "monitor"] = Field("person",
                                                                                        description="who proposes it")
    reason: str = Field("", description="why")


@command("act propose", ProposeParams)
def act_propose(p: ProposeParams, ctx: Context) -> ActionResult:
    """Propose an action on the line (checked against the line's profile now)."""
    a = act.propose(ctx.workspace, p.kind, _params(p.params), problem_id=p.problem_id,
                    expected_delta=p.expected_delta, window_units=p.window_units, source=p.source, by=p.source,
                    reason=p.reason)
    return ActionResult(action=Action.model_validate(a))


class IdParams(BaseModel):
    id: str = Field(..., description="action id (ACT-0001)", json_schema_extra={"argument": True})
    by: str = Field("operator", description="who does it")
    note: str = Field("", description="free text")


@command("act approve", IdParams)
def act_approve(p: IdParams, ctx: Context) -> ActionResult:
    """Approve a proposed action."""
    return ActionResult(action=Action.model_validate(act.approve(ctx.workspace, p.id, by=p.by, note=p.note)))


@command("act reject", IdParams)
def act_reject(p: IdParams, ctx: Context) -> ActionResult:
    """Reject a proposed or approved action."""
    return ActionResult(action=Action.model_validate(act.reject(ctx.workspace, p.id, by=p.by, note=p.note)))


class ApplyParams(BaseModel):
    id: str = Field(..., description="action id", json_schema_extra={"argument": True})
    via: Literal["auto", "simulator", "outbox", "line"] = Field(
        "auto", description="simulator: apply to the workspace's simulated line now; outbox: queue for a real "
                            "line; line: send it over the profile's control channel (opcua, mqtt) and wait for "
                            "the answer; auto: the simulator if the workspace holds one, else the line when "
                            "its channel is opcua or mqtt, else the outbox")
    by: str = Field("operator", description="who applies it")


@command("act apply", ApplyParams)
def act_apply(p: ApplyParams, ctx: Context) -> ActionResult:
    """Apply an approved action through the line's control interface (a simulator, the line's channel, the outbox)."""
    from linelab.act.simulation import open_workspace_line, workspace_simulation
    from linelab.connect.opcua_control import channel_control  # the OPC UA client: only to apply an action

    ws = ctx.workspace
    via = p.via
    profile = workspace_profile(ws.path)
    line = channel_control(profile, ws) if profile is not None and via in ("auto", "line") else None
    if via == "line" and line is None:
        raise UserError("the workspace's profile has no control channel to the line (control.channel opcua or mqtt)")
    if via == "auto":
        via = "simulator" if workspace_simulation(ws) is not None else "line" if line is not None else "outbox"
    if via == "line":
        control: Any = line
    elif via == "simulator":
        if workspace_simulation(ws) is None:
            raise UserError("the workspace holds no simulated line (`linelab twin run` makes one); use --via outbox")
        control = LineControl(open_workspace_line(ws).line)
    else:
        control = Outbox(ws)
    try:
        return ActionResult(action=Action.model_validate(act.apply(ws, p.id, control, by=p.by)))
    finally:
        if line is not None and hasattr(line, "close"):
            line.close()  # a channel's connection lives for this one action


class CheckParams(BaseModel):
    id: str = Field(..., description="action id", json_schema_extra={"argument": True})
    window_units: int | None = Field(None, gt=0, description="units before/after [default: the action's own]")


@command("act check", CheckParams)
def act_check(p: CheckParams, ctx: Context) -> ActionResult:
    """Check an applied action's effect: first-pass yield before vs after, with an interval."""
    act.check_effect(ctx.workspace, p.id, p.window_units)
    return ActionResult(action=Action.model_validate(act.get_action(ctx.workspace, p.id)))


class ListParams(BaseModel):
    status: str | None = Field(None, description="only this status (proposed, approved, sent, applied, rejected, "
                                                   "failed)")
    problem_id: str | None = Field(None, description="only actions for this problem")


class ListResult(Result):
    actions: list[Action]

    def render(self, console: Console) -> None:
        rows = [{"id": a.id, "action": " ".join([a.kind, *(f"{k}={v}" for k, v in (a.params or {}).items())]),
                 "status": a.status, "problem": a.problem_id or "—", "measured effect": _effect_text(a),
                 "source": a.source} for a in self.actions]
        print_rows(console, rows, "actions")


def _effect_text(a: Action) -> str:
    """First-pass yield before → after the action, with the change in points (or why there is none)."""
    obs = a.observed_effect or {}
    if obs.get("delta") is None:
        return obs.get("verdict") or "—"
    return (f"{fmt(obs['before_yield'], 'yield')} → {fmt(obs['after_yield'], 'yield')} "
            f"({100 * obs['delta']:+.2f} pt, {obs['verdict']})")


@command("act list", ListParams, writes=False)
def act_list(p: ListParams, ctx: Context) -> ListResult:
    """List actions with their status, problem, expected and observed effect."""
    from linelab.monitor.effect import effect_in_workspace

    ws = ctx.workspace
    listed = [Action.model_validate(a) for a in act.list_actions(ws, p.status, p.problem_id)]
    for a in listed:
        applied = a.applied or {}
        if a.status == "applied" and not a.observed_effect and applied.get("t"):
            # Not checked yet (`act check` stores it): measured here on the data around it, not stored.
            window = a.expected_effect.window_units if a.expected_effect else 2000
            a.observed_effect = {**effect_in_workspace(ws, applied["t"], window).as_dict(), "stored": False}
    return ListResult(actions=listed)


class DoneParams(BaseModel):
    id: str = Field(..., description="action id of an action sent through the outbox",
                    json_schema_extra={"argument": True})
    failed: bool = Field(False, description="the line could not carry it out")
    note: str = Field("", description="what was done, or why it failed")
    at: str | None = Field(None, description="when it took effect on the line, ISO 8601 (default now); its effect "
                           "is measured on the units started before vs after it")
    by: str = Field("operator", description="who acknowledges it (a person, or the line)")


@command("act done", DoneParams)
def act_done(p: DoneParams, ctx: Context) -> ActionResult:
    """Acknowledge an action sent through the outbox: done (applied at --at) or --failed."""
    done = act.acknowledge(ctx.workspace, p.id, failed=p.failed, note=p.note, at=p.at, by=p.by)
    return ActionResult(action=Action.model_validate(done))
