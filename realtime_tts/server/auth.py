"""Optional API keys, checked by one ASGI middleware in front of every route.

With no keys configured the server is open. With keys, every HTTP request needs
``Authorization: Bearer <key>`` (or ``X-API-Key``, or HTTP Basic with the key as
password) except the public paths (``/health`` for load balancers, the xiaozhi OTA
endpoint devices call before they have a token, and the browser page's static
files: the page itself holds no data and asks the user for a key, which it then
sends on every API call). WebSockets also take the key as an ``api_key`` or
``authorization`` query parameter, because browsers cannot set headers on a
WebSocket and ESP32 firmwares put it in the URL; so does ``POST /tts``, because
xiaozhi-esp32-server's ``index_stream`` provider sends no headers (its URL is all
it can configure). Query strings are masked in our logs (server/logging.py).

xiaozhi devices may instead present a device token: ``<sig>.<ts>``, the HMAC-SHA256
of ``"<client_id>|<device_id>|<ts>"`` (xiaozhi-esp32-server's format), handed out by
our OTA endpoint and valid for 30 days on the xiaozhi socket only.

A refused WebSocket gets a real HTTP 401 at the upgrade when the server supports
the ASGI denial-response extension (uvicorn does), else a close with code 1008.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import ConfigError, Settings
from .http_errors import ApiError

log = logging.getLogger(__name__)

# Paths served without a key: exact matches, then prefixes.
PUBLIC_PATHS = frozenset({"/health", "/", "/index.html", "/favicon.ico", "/xiaozhi/ota/", "/xiaozhi/ota"})
PUBLIC_PREFIXES = ("/static/",)
# HTTP paths that also take ``?api_key=`` (clients that can configure nothing but a URL).
QUERY_KEY_PATHS = frozenset({"/tts"})
XIAOZHI_PATHS = frozenset({"/xiaozhi/v1/", "/xiaozhi/v1"})
DEVICE_TOKEN_MAX_AGE_S = 30 * 24 * 3600  # as xiaozhi-esp32-server; devices fetch a fresh one at every boot


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
    if value[:6].lower() == "basic ":  # http://user:KEY@host/... : the password is the key
        try:
            _, _, password = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return password
    return value


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def request_key(scope: Scope) -> str | None:
    """The key a request presents, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return _bearer(value.decode("latin-1"))
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    if scope["type"] == "websocket" or scope["path"] in QUERY_KEY_PATHS:
        query = _query(scope)
        for param in ("api_key", "authorization"):
            if query.get(param):
                return _bearer(query[param][0])
    return None


# --- xiaozhi device tokens -------------------------------------------------------------------

def device_token_secret(settings: Settings) -> str:
    """The HMAC key of device tokens: ``xiaozhi_auth_key``, else derived from the API keys (stable
    across restarts); empty when no keys are configured (then no token is needed)."""
    keys = load_api_keys(settings)
    if not keys:
        return ""
    if settings.xiaozhi_auth_key:
        return settings.xiaozhi_auth_key
    return hmac.new(keys[0].encode(), b"realtime-tts xiaozhi device tokens", hashlib.sha256).hexdigest()


def _sign(secret: str, content: str) -> str:
    digest = hmac.new(secret.encode(), content.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def issue_device_token(secret: str, client_id: str, device_id: str, *, now: float | None = None) -> str:
    ts = int(time.time() if now is None else now)
    return f"{_sign(secret, f'{client_id}|{device_id}|{ts}')}.{ts}"


def verify_device_token(secret: str, token: str, client_id: str, device_id: str, *,
                        now: float | None = None, max_age_s: int = DEVICE_TOKEN_MAX_AGE_S) -> bool:
    sig, sep, ts = token.partition(".")
    if not (secret and sep and ts.isdigit()):
        return False
    if int(time.time() if now is None else now) - int(ts) > max_age_s:
        return False
    return hmac.compare_digest(sig.encode(), _sign(secret, f"{client_id}|{device_id}|{ts}").encode())


def _device_identity(scope: Scope) -> tuple[str, str]:
    """(client_id, device_id) as the xiaozhi session reads them: headers, else query parameters."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
    query = _query(scope)
    pick = lambda name: headers.get(name) or (query.get(name) or [""])[0]  # noqa: E731
    return pick("client-id"), pick("device-id")


class AuthMiddleware:
    """Refuses requests without a valid key (401, OpenAI error shape)."""

    def __init__(self, app: ASGIApp, *, keys: list[str], device_secret: str = "") -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]
        self._device_secret = device_secret

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def key_ok(self, key: str | None) -> bool:
        if key is None:
            return False
        given = key.encode()
        # Compare against every key so the time taken does not reveal which one nearly matched.
        return any([hmac.compare_digest(given, k) for k in self._keys])

    def device_token_ok(self, scope: Scope, token: str | None) -> bool:
        """A device token from our OTA endpoint, on the xiaozhi socket only."""
        if token is None or scope["type"] != "websocket" or scope["path"] not in XIAOZHI_PATHS:
            return False
        return verify_device_token(self._device_secret, token, *_device_identity(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._keys or scope["type"] not in ("http", "websocket") or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = request_key(scope)
        if self.key_ok(key) or self.device_token_ok(scope, key):
            await self.app(scope, receive, send)
            return
        message = "missing API key: send 'Authorization: Bearer <key>'" if key is None else "invalid API key"
        if scope["type"] == "websocket" or scope["path"] in QUERY_KEY_PATHS:
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
    return [Middleware(AuthMiddleware, keys=keys, device_secret=device_token_secret(settings))] if keys else []
