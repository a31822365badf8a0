"""MQTT plumbing shared by the connector, the control channel and the twin's publisher.

Broker URLs are `mqtt://host:port` (default: $LINELAB_MQTT_URL, else mqtt://127.0.0.1:1883).
Clients speak MQTT 5 so a subscriber can take a large window of unacknowledged QoS 1 messages
(Receive Maximum): the connector acknowledges a message only once it is stored.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from linelab.errors import UserError

DEFAULT_URL = "mqtt://127.0.0.1:1883"
URL_ENV = "LINELAB_MQTT_URL"


def broker_url(url: str | None = None) -> str:
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def host_port(url: str | None = None) -> tuple[str, int]:
    u = urlparse(broker_url(url))
    if u.scheme not in ("mqtt", "tcp", "") or not u.hostname:
        raise UserError(f"broker URL {url!r}: expected mqtt://host:port")
    return u.hostname, u.port or 1883


def make_client(client_id: str = "", manual_ack: bool = False) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                       manual_ack=manual_ack)


def connect_properties(session_expiry: int = 0, receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    if session_expiry:
        props.SessionExpiryInterval = session_expiry
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


class Connected:
    """Waits for a client's (re)connection; paho reconnects by itself after a broker restart."""

    def __init__(self, client: mqtt.Client, then: Callable[[mqtt.Client], object] | None = None) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self.then = then  # run on every connection (subscriptions, births): a new broker knows none of them
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                    props: object = None) -> None:
        self.reason = str(rc)
        if not getattr(rc, "is_failure", False):
            if self.then is not None:
                self.then(client)
            self.event.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: object,
                       props: object = None) -> None:
        self.event.clear()

    def wait(self, url: str, timeout: float = 10.0) -> None:
        if not self.event.wait(timeout):
            raise UserError(f"cannot connect to the MQTT broker at {broker_url(url)}"
                            + (f" ({self.reason})" if self.reason else "") + f" within {timeout:.0f} s")


def start(client: mqtt.Client, url: str | None, props: Properties | None = None, clean_start: bool = True,
          timeout: float = 10.0, on_connect: Callable[[mqtt.Client], object] | None = None) -> Connected:
    """Connect in the background (retrying while the broker is down) and wait for the first connection;
    `on_connect` runs on it and on every reconnection."""
    host, port = host_port(url)
    connected = Connected(client, on_connect)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.connect(host, port, keepalive=15, clean_start=clean_start, properties=props)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise UserError(f"cannot connect to the MQTT broker at {host}:{port}: {exc}") from None
            time.sleep(0.2)
    client.loop_start()
    connected.wait(broker_url(url), max(0.5, deadline - time.monotonic()))
    return connected
