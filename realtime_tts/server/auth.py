"""API keys and tenants, checked by one ASGI middleware in front of every route.

With no keys configured the server is open, and every request acts for the default tenant.
With keys, every HTTP request needs ``Authorization: Bearer <key>`` (or ``X-API-Key``, or
HTTP Basic with the key as password) except the public paths (``/health`` for load
balancers and the browser page's static files: the page itself holds no data and asks the
user for a key, which it then sends on every API call). WebSockets also take the key as an
``api_key`` or ``authorization`` query parameter, because browsers cannot set headers on a
WebSocket and ESP32 firmwares put it in the URL; so do ``POST /tts`` (xiaozhi-esp32-server's
``index_stream`` provider can configure nothing but a URL) and the xiaozhi OTA endpoint. Query
strings are masked in our logs (server/logging.py); keys never reach a log.

Tenants. Every key belongs to one tenant, or is an admin key (``KeyTable``): plain keys
(``api_keys`` and the lines of ``api_keys_file`` before any section, today's format) are the
``default`` tenant's; ``api_tenants`` and ``[tenant NAME]`` sections of the file name others;
``admin_keys`` and the ``[admin]`` section are admin keys. The middleware resolves the
request's ``Principal`` once and puts it in the scope (``principal_of(scope)``); voices and
xiaozhi devices are namespaced by it. An admin acts for the tenant named by ``X-Tenant`` (or
the ``tenant`` query parameter), and without one for the default tenant, with listings that
show every tenant; any other key naming a tenant not its own is refused (403).

The xiaozhi OTA endpoint is public (devices call it before they have a token) but takes a key
(the ``api_key`` query parameter of the OTA URL): its device tokens are then that key's
tenant's; without a key it hands out the default tenant's, as before tenants. A device token
is ``<sig>.<ts>`` (the HMAC-SHA256 of ``"<client_id>|<device_id>|<ts>"``, xiaozhi-esp32-server's
format) for the default tenant and ``<sig>.<ts>.<tenant>`` (the HMAC of
``"<client_id>|<device_id>|<ts>|<tenant>"``) for another, valid for 30 days on the xiaozhi
socket only.

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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import ConfigError, Settings
from .http_errors import ApiError
from .voice_store import DEFAULT_TENANT, TENANT_RE

log = logging.getLogger(__name__)

# Paths served without a key: exact matches, then prefixes.
PUBLIC_PATHS = frozenset({"/health", "/", "/index.html", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/",)
OTA_PATHS = frozenset({"/xiaozhi/ota/", "/xiaozhi/ota"})  # a key is optional there (see the module doc)
# HTTP paths that also take ``?api_key=`` (clients that can configure nothing but a URL).
QUERY_KEY_PATHS = frozenset({"/tts"}) | OTA_PATHS
XIAOZHI_PATHS = frozenset({"/xiaozhi/v1/", "/xiaozhi/v1"})
DEVICE_TOKEN_MAX_AGE_S = 30 * 24 * 3600  # as xiaozhi-esp32-server; devices fetch a fresh one at every boot
PRINCIPAL_SCOPE_KEY = "rtts.principal"
_SECTION_RE = re.compile(r"^\[\s*(admin|tenant\s+(\S+))\s*\]$")


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: one tenant's voices and devices."""

    tenant: str
    admin: bool = False
    sees_all: bool = False  # an admin that named no tenant: listings show every tenant's


OPEN = Principal(DEFAULT_TENANT)  # no keys configured


def principal_of(scope: Scope) -> Principal:
    """The request's principal, set by ``AuthMiddleware`` (which every app built by create_app has)."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        raise RuntimeError(f"no principal in the scope of {scope.get('path')}: the auth middleware must run first")
    return principal


# --- keys ----------------------------------------------------------------------------------

@dataclass
class KeyTable:
    """Every accepted key -> its tenant (None for an admin key). Keys are never logged."""

    owners: dict[str, str | None] = field(default_factory=dict)

    def add(self, key: str, tenant: str | None, where: str) -> None:
        key = str(key).strip()
        if not key:
            return
        if tenant is not None and not TENANT_RE.match(tenant):
            raise ConfigError(f"{where}: tenant {tenant!r} is not 1-32 lowercase letters, digits, '_' or '-'")
        if key in self.owners and self.owners[key] != tenant:
            def name(owner: str | None) -> str:
                return "the admin keys" if owner is None else f"tenant {owner!r}"
            raise ConfigError(f"{where}: a key is listed for both {name(self.owners[key])} and {name(tenant)} "
                              "(each key belongs to one tenant)")
        self.owners[key] = tenant

    @property
    def keys(self) -> list[str]:
        return list(self.owners)

    @property
    def tenants(self) -> set[str]:
        return {t for t in self.owners.values() if t is not None}

    def __bool__(self) -> bool:
        return bool(self.owners)


def _read_keys_file(table: KeyTable, path: Path) -> None:
    """One key per line (``#`` comments); ``[tenant NAME]`` and ``[admin]`` start sections."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"api_keys_file: cannot read {path}: {e.strerror or e}") from None
    tenant: str | None = DEFAULT_TENANT
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        section = _SECTION_RE.match(line)
        if section:
            tenant = None if section.group(1) == "admin" else section.group(2)
            if tenant is not None and not TENANT_RE.match(tenant):
                raise ConfigError(f"api_keys_file {path}, line {number}: tenant {tenant!r} is not 1-32 lowercase "
                                  "letters, digits, '_' or '-'")
            continue
        table.add(line, tenant, f"api_keys_file {path}, line {number}")


def load_key_table(settings: Settings) -> KeyTable:
    """Keys from ``api_keys`` (default tenant), ``api_tenants``, ``admin_keys`` and ``api_keys_file``."""
    table = KeyTable()
    for key in settings.api_keys:
        table.add(key, DEFAULT_TENANT, "api_keys")
    if not isinstance(settings.api_tenants, dict):
        raise ConfigError("api_tenants must map each tenant to a list of keys")
    for tenant, keys in settings.api_tenants.items():
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list):
            raise ConfigError(f"api_tenants: the keys of {tenant!r} must be a list")
        for key in keys:
            table.add(key, str(tenant), "api_tenants")
    for key in settings.admin_keys:
        table.add(key, None, "admin_keys")
    if settings.api_keys_file:
        _read_keys_file(table, Path(settings.api_keys_file))
    return table


def load_api_keys(settings: Settings) -> list[str]:
    """Every accepted key, in the order configured."""
    return load_key_table(settings).keys


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


def requested_tenant(scope: Scope) -> str | None:
    """The tenant a request asks to act for: ``X-Tenant``, else the ``tenant`` query parameter."""
    for name, value in scope.get("headers", ()):
        if name == b"x-tenant":
            return value.decode("latin-1").strip() or None
    values = _query(scope).get("tenant")
    return values[0].strip() or None if values else None


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


def _token_content(client_id: str, device_id: str, ts: str, tenant: str) -> str:
    # The default tenant's tokens are xiaozhi-esp32-server's, byte for byte.
    return f"{client_id}|{device_id}|{ts}" + ("" if tenant == DEFAULT_TENANT else f"|{tenant}")


def issue_device_token(secret: str, client_id: str, device_id: str, *, tenant: str = DEFAULT_TENANT,
                       now: float | None = None) -> str:
    ts = str(int(time.time() if now is None else now))
    token = f"{_sign(secret, _token_content(client_id, device_id, ts, tenant))}.{ts}"
    return token if tenant == DEFAULT_TENANT else f"{token}.{tenant}"


def verify_device_token(secret: str, token: str, client_id: str, device_id: str, *,
                        now: float | None = None, max_age_s: int = DEVICE_TOKEN_MAX_AGE_S) -> str | None:
    """The tenant a valid device token was issued for; None when it is not valid."""
    sig, _, rest = token.partition(".")
    ts, dot, tenant = rest.partition(".")
    if not (secret and sig and ts.isdigit()) or (dot and not TENANT_RE.match(tenant)):
        return None
    tenant = tenant or DEFAULT_TENANT
    if int(time.time() if now is None else now) - int(ts) > max_age_s:
        return None
    expected = _sign(secret, _token_content(client_id, device_id, ts, tenant))
    return tenant if hmac.compare_digest(sig.encode(), expected.encode()) else None


def _device_identity(scope: Scope) -> tuple[str, str]:
    """(client_id, device_id) as the xiaozhi session reads them: headers, else query parameters."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
    query = _query(scope)
    pick = lambda name: headers.get(name) or (query.get(name) or [""])[0]  # noqa: E731
    return pick("client-id"), pick("device-id")


# --- the middleware ---------------------------------------------------------------------------

class AuthMiddleware:
    """Resolves every request's ``Principal`` into the scope, or refuses it (401/403, OpenAI error shape)."""

    def __init__(self, app: ASGIApp, *, keys: KeyTable | list[str], device_secret: str = "") -> None:
        self.app = app
        table = keys if isinstance(keys, KeyTable) else KeyTable({k: DEFAULT_TENANT for k in keys})
        self._keys = [(k.encode(), owner) for k, owner in table.owners.items()]
        self._device_secret = device_secret

    def is_public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def owner(self, key: str | None) -> tuple[bool, str | None]:
        """(known, its tenant or None for an admin key)."""
        if key is None:
            return False, None
        given, known, owner = key.encode(), False, None
        for candidate, tenant in self._keys:  # every key: the time taken does not say which one nearly matched
            if hmac.compare_digest(given, candidate):
                known, owner = True, tenant
        return known, owner

    def device_tenant(self, scope: Scope, token: str | None) -> str | None:
        """The tenant of a device token from our OTA endpoint, on the xiaozhi socket only."""
        if token is None or scope["type"] != "websocket" or scope["path"] not in XIAOZHI_PATHS:
            return None
        return verify_device_token(self._device_secret, token, *_device_identity(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.principal(scope)
        except ApiError as error:
            key = request_key(scope)
            log.info("auth refused %s %s: %s", scope["type"], scope["path"],
                     "no key" if key is None else error.code)
            if scope["type"] == "http":
                await error.response()(scope, receive, send)
            else:
                await deny_websocket(scope, receive, send, error)
            return
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    def principal(self, scope: Scope) -> Principal | None:
        """Who the request acts for; None only on the OTA path without a key. ``ApiError`` to refuse."""
        if not self._keys:
            return _acting_for(DEFAULT_TENANT, scope)
        key = request_key(scope)
        if key is None and scope["path"] in OTA_PATHS:
            return None
        known, owner = self.owner(key)
        if known:
            return _acting_for(owner, scope)
        device_tenant = self.device_tenant(scope, key)
        if device_tenant is not None:
            return Principal(device_tenant)
        message = "missing API key: send 'Authorization: Bearer <key>'" if key is None else "invalid API key"
        if scope["type"] == "websocket" or scope["path"] in QUERY_KEY_PATHS:
            message += " (or the api_key query parameter)"
        raise ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def _acting_for(owner: str | None, scope: Scope) -> Principal:
    """The principal of a key of ``owner`` (None: an admin key), given the tenant the request names."""
    requested = requested_tenant(scope)
    if requested is not None and not TENANT_RE.match(requested):
        raise ApiError(400, f"tenant {requested!r} is not 1-32 lowercase letters, digits, '_' or '-'",
                       param="X-Tenant", code="invalid_tenant")
    if owner is None:
        return Principal(requested or DEFAULT_TENANT, admin=True, sees_all=requested is None)
    if requested is not None and requested != owner:
        raise ApiError(403, f"this API key cannot act for tenant {requested!r}; leave X-Tenant out or use an "
                            "admin key", param="X-Tenant", code="tenant_forbidden")
    return Principal(owner)


async def deny_websocket(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Refuse a WebSocket upgrade: HTTP status via the denial extension, else close 1008."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
        await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


def auth_middleware(settings: Settings) -> list[Middleware]:
    """The middleware list for ``Starlette(middleware=...)``: always one, which sets every request's
    principal (with no keys configured, the open server's default tenant)."""
    return [Middleware(AuthMiddleware, keys=load_key_table(settings), device_secret=device_token_secret(settings))]
