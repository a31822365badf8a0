"""Actions back to the line over OPC UA: a method call or a variable write, acknowledged or not.

The profile's control section picks this channel and says where each action goes:

    control:
      channel: opcua
      options:
        url: opc.tcp://plc1:4840
        object: ns=2;s=Line          # the object whose methods are called [default: the Objects folder]
        timeout_s: 5                  # an action not acknowledged in this time has timed out
        "method:set_recipe": ns=2;s=Line.SetRecipe   # called with the action's parameters, in the
                                                      # order the profile's action declares them
        "write:set_speed": ns=2;s=Line.Speed          # written with the action's one parameter

`OpcUaControl.apply(action)` has the shape of the act stage's control protocol: it returns what
happened, `status` acknowledged (the server answered Good; `applied` true, `t` the time it did),
timed_out or failed (with the server's status code or the connection error), so the action's
record says which. Given a workspace, every answer is also recorded there (artefact kind
"opcua_action", with the action, when it was sent and when answered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua

from linelab.errors import UserError
from linelab.profile.schema import Profile

OBJECTS_FOLDER = "i=85"
RECORD_KIND = "opcua_action"


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


class OpcUaControl:
    """The line's control channel over OPC UA."""

    name = "opcua"

    def __init__(self, options: Mapping[str, Any], param_order: Mapping[str, list[str]] | None = None,
                 ws: Any = None) -> None:
        url = options.get("url")
        if not isinstance(url, str) or not url:
            raise UserError("control channel opcua: control.options.url (opc.tcp://host:port) is missing")
        self.url = url
        self.object = str(options.get("object") or OBJECTS_FOLDER)
        self.timeout_s = float(options.get("timeout_s", 5.0))
        self.routes: dict[str, tuple[str, str]] = {}
        for key, value in options.items():
            how, _, kind = key.partition(":")
            if how in ("method", "write") and kind:
                self.routes[kind] = (how, str(value))
        self.param_order = dict(param_order or {})
        self.ws = ws

    @classmethod
    def from_profile(cls, profile: Profile, ws: Any = None) -> OpcUaControl:
        if profile.control.channel != "opcua":
            raise UserError(f"the profile's control channel is {profile.control.channel}, not opcua")
        return cls(profile.control.options, {a.name: [p.name for p in a.params] for a in profile.actions}, ws)

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        """Send one action and wait for its answer (from a thread without a running event loop)."""
        sent = _now()
        result = asyncio.run(self.send(action))
        if self.ws is not None and action.get("id"):
            body = {"id": action["id"], "kind": action["kind"], "params": dict(action.get("params") or {})}
            self.ws.put_artifact(RECORD_KIND, str(action["id"]), {"action": body, "sent": sent, "answered": _now(),
                                                                 **result}, status=result["status"])
        return result

    def _args(self, kind: str, params: Mapping[str, Any]) -> list[Any]:
        order = self.param_order.get(kind) or list(params)
        return [_plain(params[n]) for n in order if n in params]

    async def send(self, action: Mapping[str, Any]) -> dict[str, Any]:
        kind = str(action["kind"])
        params = dict(action.get("params") or {})
        route = self.routes.get(kind)
        out: dict[str, Any] = {"via": self.name, "t": None, "applied": False}
        if route is None:
            return {**out, "status": "failed",
                    "error": f"no OPC UA route for action {kind!r}: add control.options 'method:{kind}' or "
                             f"'write:{kind}' to the profile"}
        how, node = route
        out["node"] = node
        client = Client(self.url, timeout=self.timeout_s)
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.connect()
                try:
                    if how == "method":
                        answer = await client.get_node(self.object).call_method(
                            ua.NodeId.from_string(node), *self._args(kind, params))
                        out["output"] = _plain(answer)
                    else:
                        args = self._args(kind, params)
                        if len(args) != 1:
                            raise UserError(f"action {kind!r} writes one value; it has {len(args)} parameters")
                        target = client.get_node(node)
                        vtype = await target.read_data_type_as_variant_type()
                        await target.write_value(ua.DataValue(ua.Variant(_as(vtype, args[0]), vtype)))
                        out["written"] = args[0]
                finally:
                    await client.disconnect()
        except TimeoutError:
            return {**out, "status": "timed_out", "error": f"no acknowledgement within {self.timeout_s:g} s"}
        except ua.UaStatusCodeError as exc:
            return {**out, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        except (OSError, ConnectionError, ua.UaError, UserError, ValueError) as exc:
            return {**out, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        return {**out, "status": "acknowledged", "applied": True, "t": _now()}


def _plain(v: Any) -> Any:
    """JSON-friendly values both ways: numbers as floats for the server, answers as text or lists."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def _as(vtype: ua.VariantType, v: Any) -> Any:
    """A parameter as the variable's own type (a server refuses a Double written to an Int32)."""
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return float(v)
    if vtype == ua.VariantType.Boolean:
        return bool(v)
    if vtype == ua.VariantType.String:
        return str(v)
    if vtype.name.startswith(("Int", "UInt", "SByte", "Byte")):
        return int(v)
    return v


def channel_control(profile: Profile, ws: Any = None) -> Any:
    """The control of a profile whose channel reaches the line itself (opcua, mqtt); None otherwise."""
    if profile.control.channel == "opcua":
        return OpcUaControl.from_profile(profile, ws)
    if profile.control.channel == "mqtt":
        from linelab.connect.mqtt_control import MqttControl

        return MqttControl.from_options(profile.control.options, ws)
    return None
