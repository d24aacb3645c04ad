"""The xiaozhi OTA endpoint: where a device (or py-xiaozhi) learns our WebSocket URL.

At boot the firmware POSTs its system info to its OTA URL (``CONFIG_OTA_URL``; a GET
when it has no body) with ``Device-Id`` and ``Client-Id`` headers, and copies the
answer's ``websocket`` object (``url``, ``token``) into its settings (protocols.md
§1.1). We answer in xiaozhi-esp32-server's shape:

    {"server_time": {"timestamp": <ms>, "timezone_offset": <minutes>},
     "firmware": {"version": <the device's own>, "url": ""},
     "websocket": {"url": "ws://<host>/xiaozhi/v1/", "token": <device token or "">}}

The firmware version is echoed back and ``url`` is empty, so a device never tries to
upgrade; there is no ``activation`` and no ``mqtt`` object, so it goes straight to the
WebSocket. With API keys on, ``token`` is a device token (server/auth.py) bound to the
device's ``Client-Id``, ``Device-Id`` and tenant; it opens the xiaozhi socket and nothing
else. The tenant is the one of the key in the OTA URL (``.../xiaozhi/ota/?api_key=KEY``);
without a key, the default tenant's (as before tenants), or 401 when no plain key exists,
so nobody can obtain a token for a tenant's device without that tenant's key.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .auth import PRINCIPAL_SCOPE_KEY, device_token_secret, issue_device_token, load_key_table
from .http_errors import ApiError, api_endpoint, invalid
from .voice_store import DEFAULT_TENANT
from .inputs import InputError, loads_json
from .params import limited_receive

log = logging.getLogger(__name__)

OTA_BODY_LIMIT = 64 * 1024  # the firmware's system info is a few KiB
WS_PATH = "/xiaozhi/v1/"


def websocket_url(request: Request, configured: str) -> str:
    """The URL a device should connect to: configured, else the host and scheme it reached us on."""
    if configured:
        return configured
    scheme = "wss" if request.url.scheme in ("https", "wss") else "ws"
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{scheme}://{host}{WS_PATH}"


def firmware_version(body: bytes) -> str:
    """``application.version`` from the device's system info ("" when absent or unreadable: the
    body is optional, so malformed JSON, a lone surrogate or deep nesting only lose the version)."""
    try:
        info = loads_json(body, max_bytes=OTA_BODY_LIMIT, what="OTA body") if body.strip() else {}
    except InputError:
        return ""
    app = info.get("application") if isinstance(info, dict) else None
    version = app.get("version") if isinstance(app, dict) else None
    return version if isinstance(version, str) else ""


def timezone_offset_minutes() -> int:
    offset = datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def ota_routes(ctx) -> list[Route]:
    secret = device_token_secret(ctx.settings)
    default_tenant_open = DEFAULT_TENANT in load_key_table(ctx.settings).tenants  # plain keys: today's OTA

    @api_endpoint
    async def ota(request: Request):
        request = Request(request.scope, limited_receive(request, OTA_BODY_LIMIT))
        body = await request.body() if request.method == "POST" else b""
        device_id = request.headers.get("device-id", "").strip()
        client_id = request.headers.get("client-id", "").strip()
        token = ""
        if secret:
            principal = request.scope.get(PRINCIPAL_SCOPE_KEY)  # set when the OTA URL carries a key
            if principal is None and not default_tenant_open:
                raise ApiError(401, "this server has tenants: put your tenant's API key in the OTA URL "
                                    "(.../xiaozhi/ota/?api_key=KEY)", code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})
            if not device_id:
                raise invalid("the Device-Id header is required: device tokens are bound to it",
                              param="Device-Id", code="missing_device_id")
            tenant = principal.tenant if principal is not None else DEFAULT_TENANT
            token = issue_device_token(secret, client_id, device_id, tenant=tenant)
        url = websocket_url(request, ctx.settings.xiaozhi_websocket_url)
        log.info("xiaozhi OTA: device %s sent to %s", device_id or "?", url,
                 extra={"device_id": device_id, "client_id": client_id, "token_issued": bool(token)})
        return JSONResponse({
            "server_time": {"timestamp": int(time.time() * 1000), "timezone_offset": timezone_offset_minutes()},
            "firmware": {"version": firmware_version(body), "url": ""},
            "websocket": {"url": url, "token": token},
        })

    return [Route(path, ota, methods=["GET", "POST"]) for path in ("/xiaozhi/ota/", "/xiaozhi/ota")]
