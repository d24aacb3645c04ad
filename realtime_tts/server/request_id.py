"""``x-request-id`` on every HTTP response (and on WebSocket upgrade answers).

Clients quote it in bug reports and agent frameworks attach it to their traces
(LiveKit's OpenAI plugin reads it; the openai SDK exposes it as ``request_id``).
A well-formed id sent by the client (or a proxy in front) is kept, so one id
follows a request through every hop; otherwise a fresh one is made. Handlers
find it in ``request.state.request_id``.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_VALID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
# Messages that start a response whose headers we can extend.
_STARTS = ("http.response.start", "websocket.accept", "websocket.http.response.start")


def incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER and _VALID.match(value):
            return value.decode("ascii")
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        raw = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] in _STARTS:
                headers = [(k, v) for k, v in message.get("headers") or () if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, raw)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
