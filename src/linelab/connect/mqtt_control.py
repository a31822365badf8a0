"""Actions back to the line over MQTT: a Sparkplug command the line's edge node acknowledges.

Selected by the profile's control section:

    control:
      channel: mqtt
      options: {group: linelab, node: SMT-1, timeout_s: 10}   # optional: device, url

An action {"id", "kind", "params"} is sent as an NCMD (a DCMD when `device` is given) carrying the
String metric `Action`: the action as JSON. The edge node applies it and answers on its NDATA (or
DDATA) with the String metric `Action/Ack`: {"id", "status": "done" | "failed", "t": line time,
"error"?, ...}, its name given in full (the host need not know the node's aliases). Every
action ends acknowledged, failed or timed out, and is recorded in the workspace (artefact
kind "mqtt_action") when one is given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

from linelab.connect import mqtt as link
from linelab.connect.sparkplug.payload import STRING, Metric, PayloadError, Topic, decode, encode
from linelab.errors import UserError

ACTION_METRIC = "Action"
ACK_METRIC = "Action/Ack"
RECORD_KIND = "mqtt_action"


def _now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


class MqttControl:
    """The `Control` of act/control.py (structurally): apply(action) -> what the line answered."""

    name = "mqtt"

    def __init__(self, group: str, node: str, device: str | None = None, url: str | None = None,
                 timeout: float = 10.0, ws: Any = None) -> None:
        self.group, self.node, self.device = group, node, device
        self.url = link.broker_url(url)
        self.timeout = timeout
        self.ws = ws
        self.acks: dict[str, dict[str, Any]] = {}
        self.arrived = threading.Condition()
        self.client: mqtt.Client | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], ws: Any = None) -> MqttControl:
        """From the profile's `control.options` (channel mqtt)."""
        missing = [k for k in ("group", "node") if not options.get(k)]
        if missing:
            raise UserError(f"control channel mqtt needs options {', '.join(missing)} (the edge node to command)")
        return cls(str(options["group"]), str(options["node"]),
                   device=str(options["device"]) if options.get("device") else None,
                   url=str(options["url"]) if options.get("url") else None,
                   timeout=float(options.get("timeout_s", 10.0)), ws=ws)

    def _connect(self) -> mqtt.Client:
        if self.client is None:
            client = link.make_client()
            client.on_message = self._on_message
            answers = str(Topic(self.group, "DDATA" if self.device else "NDATA", self.node, self.device))
            link.start(client, self.url, on_connect=lambda c: c.subscribe(answers, qos=1))  # again after a reconnect
            self.client = client
        return self.client

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            metrics = decode(msg.payload).metrics
        except PayloadError:
            return
        for m in metrics:
            if m.name == ACK_METRIC and isinstance(m.value, str):
                try:
                    ack = json.loads(m.value)
                except json.JSONDecodeError:
                    continue
                if isinstance(ack, dict) and "id" in ack:
                    with self.arrived:
                        self.acks[str(ack["id"])] = ack
                        self.arrived.notify_all()

    def apply(self, action: Mapping[str, Any]) -> dict[str, Any]:
        client = self._connect()
        action_id = str(action["id"])
        body = {"id": action_id, "kind": action["kind"], "params": dict(action.get("params") or {})}
        kind = "DCMD" if self.device else "NCMD"
        sent = _now()
        client.publish(str(Topic(self.group, kind, self.node, self.device)),
                       encode([Metric(ACTION_METRIC, json.dumps(body), STRING)], seq=None), qos=1)
        with self.arrived:
            self.arrived.wait_for(lambda: action_id in self.acks, self.timeout)
            ack = self.acks.pop(action_id, None)
        if ack is None:
            result: dict[str, Any] = {"via": self.name, "status": "timed_out", "applied": False, "t": None,
                                      "error": f"no acknowledgement from {self.group}/{self.node} "
                                               f"within {self.timeout:g} s"}
        else:
            ok = ack.get("status") == "done"
            result = {"via": self.name, "status": "acknowledged" if ok else "failed", "applied": ok,
                      "t": ack.get("t"), **{k: v for k, v in ack.items() if k not in ("id", "status", "t")}}
        if self.ws is not None:
            self.ws.put_artifact(RECORD_KIND, action_id, {"action": body, "sent": sent, "answered": _now(),
                                                          **result}, status=result["status"])
        return result

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
