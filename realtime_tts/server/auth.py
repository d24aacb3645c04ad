"""Optional API keys, checked by one ASGI middleware in front of every route.

With no keys configured the server is open. With keys, every HTTP request needs
``Authorization: Bearer <key>`` except the public paths (``/health`` for load
balancers, and the browser page's static files: the page itself holds no data and
asks the user for a key, which it then sends on every API call). WebSockets also
take the key as an ``api_key`` or ``authorization`` query parameter, because
browsers cannot set headers on a WebSocket and ESP32 firmwares put it in the URL.

A refused WebSocket gets a real HTTP 401 at the upgrade when the server supports
the ASGI denial-response extension (uvicorn does), else a close with code 1008.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from urllib.parse import parse_qs

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import ConfigError, Settings
from .http_errors import ApiError

log = logging.getLogger(__name__)

# Paths served without a key: exact matches, then prefixes.
PUBLIC_PATHS = frozenset({"/health", "/", "/index.html", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)


def load_api_keys(settings: Settings) -> list[str]:
    """Keys from ``api_keys`` plus ``api_keys_file`` (one per line, ``#`` comments)."""
    keys = [str(k).strip() for k in settings.api_keys if str(k).strip()]
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"api_keys_file: cannot read {path}: {e.strerror or e}") from None
        keys += [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    return keys


def _bearer(value: str) -> str:
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


def request_key(scope: Scope) -> str | None:
    """The key a request presents, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return _bearer(value.decode("latin-1"))
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    if scope["type"] == "websocket":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        for param in ("api_key", "authorization"):
            if query.get(param):
                return _bearer(query[param][0])
    return None


class AuthMiddleware:
    """Refuses requests without a valid key (401, OpenAI error shape)."""

    def __init__(self, app: ASGIApp, *, keys: list[str]) -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def key_ok(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        # Compare against every key so the time taken does not reveal which one nearly matched.
        return any([hmac.compare_digest(given, k) for k in self._keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._keys or scope["type"] not in ("http", "websocket") or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = request_key(scope)
        if self.key_ok(key):
            await self.app(scope, receive, send)
            return
        message = "missing API key: send 'Authorization: Bearer <key>'" if key is None else "invalid API key"
        if scope["type"] == "websocket":
            message += " (or the api_key query parameter)"
        error = ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        log.info("auth refused %s %s: %s", scope["type"], scope["path"], "no key" if key is None else "bad key")
        if scope["type"] == "http":
            await error.response()(scope, receive, send)
        else:
            await deny_websocket(scope, receive, send, error)


async def deny_websocket(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Refuse a WebSocket upgrade: HTTP status via the denial extension, else close 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error.body()).encode()
        await send({"type": "websocket.http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


def auth_middleware(settings: Settings) -> list[Middleware]:
    """The middleware list for ``Starlette(middleware=...)``: empty when no keys are set."""
    keys = load_api_keys(settings)
    return [Middleware(AuthMiddleware, keys=keys)] if keys else []
