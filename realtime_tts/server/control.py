"""Control API for connected xiaozhi devices (protocols.md §5.1 item 9a).

* ``GET  /v1/xiaozhi/devices``                     -> the connected devices
* ``POST /v1/xiaozhi/devices/{device_id}/speak``   -> ``{text, voice?, emotion?, speed?, language?}``; 202 once
  queued (``?wait=true``: 200 when the turn has finished, with its final state)
* ``POST /v1/xiaozhi/devices/{device_id}/abort``   -> stop the device's speech now

A speak while the device is speaking is queued behind the current turn; ``queued_ahead``
in the answer says how many turns play first. Errors use OpenAI's shape; a device that is
not connected is a 404 ``device_not_connected``.

Devices are the caller's tenant's (server/auth.py): the registry is keyed by (tenant, device
id), so a device of another tenant is "not connected" here even when its id is the same, and
the listing shows only the tenant's devices (an admin that names no tenant: every tenant's).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import capabilities
from .auth import principal_of
from .http_errors import ApiError, api_endpoint
from .params import read_json
from .xiaozhi import XiaozhiSession, parse_speak

JSON_BODY_LIMIT = 1024 * 1024


def _session(ctx, request: Request) -> XiaozhiSession:
    device_id = request.path_params["device_id"]
    session = ctx.devices.get((principal_of(request.scope).tenant, device_id))
    if session is None:
        raise ApiError(404, f"xiaozhi device {device_id!r} is not connected (GET /v1/xiaozhi/devices lists "
                            "the connected ones)", param="device_id", code="device_not_connected")
    return session


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def control_routes(ctx) -> list:
    @api_endpoint
    async def devices(request: Request) -> JSONResponse:
        principal = principal_of(request.scope)
        sessions = [s for (tenant, _), s in list(ctx.devices.items()) if principal.sees_all or tenant == principal.tenant]
        return JSONResponse({"object": "list", "data": [s.describe() for s in sessions]})

    @api_endpoint
    async def speak(request: Request) -> JSONResponse:
        # The body first: malformed input is a 400 whether or not the device is connected.
        body = await read_json(request, max(JSON_BODY_LIMIT, 2 * ctx.settings.max_upload_bytes))
        session = _session(ctx, request)
        spoken = await ctx.codec.run(parse_speak, ctx.for_request(request.scope), body)  # voices may be read from disk
        ahead = session.queued_turns + (session.current_turn is not None)
        turn = session.speak(spoken)
        answer = {"object": "xiaozhi.speak", "device_id": session.device_id, "session_id": session.session_id,
                  "turn_id": turn.id, "segments": list(turn.segments), "queued_ahead": ahead,
                  "warnings": [n.describe() for n in spoken.warnings]}
        headers = capabilities.header(list(spoken.warnings))
        if _truthy(request.query_params.get("wait")):
            answer["state"] = await turn.wait()
            answer["errors"] = list(turn.errors)
            return JSONResponse(answer, status_code=200, headers=headers)
        answer["state"] = turn.state
        return JSONResponse(answer, status_code=202, headers=headers)

    @api_endpoint
    async def abort(request: Request) -> JSONResponse:
        session = _session(ctx, request)
        dropped = await session.abort("control_api")
        return JSONResponse({"object": "xiaozhi.abort", "device_id": session.device_id,
                             "session_id": session.session_id, "dropped_turns": dropped})

    return [
        Route("/v1/xiaozhi/devices", devices, methods=["GET"]),
        Route("/v1/xiaozhi/devices/{device_id}/speak", speak, methods=["POST"]),
        Route("/v1/xiaozhi/devices/{device_id}/abort", abort, methods=["POST"]),
    ]
