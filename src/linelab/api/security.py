"""Who may talk to the server: the Host header is checked (no DNS rebinding from a web page) and,
with a token, every request must carry it (Authorization: Bearer TOKEN).

A browser cannot add a header to a page it opens, so `/?token=TOKEN` also works once: the answer
sets an HttpOnly, same-site cookie that the dashboard's own requests then carry.

A page on another site can still make a browser send a form or a body-less POST to a server on
loopback (no token, no preflight). The browser names that page in `Origin`: a request other than a
read (GET, HEAD, OPTIONS) whose Origin is not the server itself is refused (403). Clients that are
not browsers send no Origin and are not affected.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

MIN_TOKEN_LENGTH = 16
COOKIE = "linelab_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
READS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_names(bound: str | None, extra: Iterable[str] = ()) -> frozenset[str]:
    """Names a client may use to reach the server: loopback, the bound address, and `extra`."""
    names = {*LOOPBACK_NAMES, *(h.strip("[]").lower() for h in extra if h)}
    if bound and bound not in ("0.0.0.0", "::", ""):
        names.add(bound.strip("[]").lower())
    return frozenset(names)


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: Host check, then the token (when one is set)."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str], token: str | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the server offers none: refuse before any check
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _host_name(headers.get("host", ""))
        if host not in self.allowed_hosts:
            await _deny(send, 400, "bad_host", f"Host {host or '(none)'!r} is not one this server answers to "
                                               "(`linelab serve --allow-host NAME` adds one)")
            return
        origin = headers.get("origin")
        if scope.get("method", "GET") not in READS and origin is not None and not _same_origin(origin, headers):
            await _deny(send, 403, "cross_origin", f"a page at {origin!r} may not change this server's workspace; "
                                                   "open the dashboard from the server itself")
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        via_query = _query_token(scope)
        if self._ok(_bearer(headers)) or self._ok(_cookie(headers)):
            await self.app(scope, receive, send)
        elif self._ok(via_query):
            await self.app(scope, receive, _setting_cookie(send, self.token))
        else:
            await _deny(send, 401, "unauthorized", "this server needs its token: Authorization: Bearer TOKEN",
                        {"www-authenticate": "Bearer"})

    def _ok(self, given: str | None) -> bool:
        assert self.token is not None
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())


def _same_origin(origin: str, headers: dict[str, str]) -> bool:
    """Whether a browser's Origin is this server as the request reached it (scheme-less: a proxy may end TLS)."""
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == headers.get("host", "").strip().lower()


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _cookie(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _setting_cookie(send: Send, token: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode("latin-1"))]
        await send(message)

    return wrapped


async def _deny(send: Send, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
