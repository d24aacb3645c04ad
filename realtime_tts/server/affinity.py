"""Voice affinity: which key routes a request, how a replica is chosen for it, and the warm LRU.

The routing key comes from what clients really send (devices and agent SDKs cannot add
Ray's multiplexing header), first match wins:

1. a xiaozhi socket (``/xiaozhi/...``): its ``Device-Id`` header or ``device-id`` query
   parameter, and the control API (``/v1/xiaozhi/devices/{id}/...``): the id in the path,
   so a control call reaches the replica holding that device's socket -> ``device:<id>``;
2. the ``X-Voice-Id`` header (OpenAI SDKs: ``extra_headers``; any HTTP client) -> ``voice:<id>``;
3. the ``voice`` query parameter (agent streams: ``/v1/tts/stream?voice=alice``) -> ``voice:<id>``.

A request with none of them (a voice named only inside a JSON body) has no key: it goes
to the least loaded replica, which loads the voice on a miss. The same precedence is in
deploy/haproxy/haproxy.cfg.

Replica choice is consistent hashing with a bounded load (the rule HAProxy's
``hash-balance-factor`` applies): walk the ring from the key's point and take the first
replica whose load is below ``ceil(factor * (total + 1) / n)`` (and below half its capacity
at least), so one hot voice spills to the next replica on the ring instead of queueing.
"""

from __future__ import annotations

import collections
import math
import re
import threading
from typing import Any, Callable, Hashable, Sequence
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import PRINCIPAL_SCOPE_KEY

_CONTROL_RE = re.compile(r"^/v1/xiaozhi/devices/([^/]+)(?:/|$)")
MAX_KEY_CHARS = 128


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1").strip() or None
    return None


def _query(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0].strip() or None if values else None


def routing_key(scope: Scope) -> str | None:
    """``device:<id>``, ``voice:<id>`` or None, from an ASGI scope (see the module docstring)."""
    path = scope.get("path", "")
    device = None
    if path.startswith("/xiaozhi/"):
        device = _header(scope, b"device-id") or _query(scope, "device-id")
    elif match := _CONTROL_RE.match(path):
        device = match.group(1)
    if device:
        return "device:" + device[:MAX_KEY_CHARS]
    voice = _header(scope, b"x-voice-id") or _query(scope, "voice")
    return "voice:" + voice[:MAX_KEY_CHARS] if voice else None


def bounded_choice(ranked: Sequence[Hashable], loads: dict, factor: float, floor: int = 1) -> list:
    """``ranked`` (ring order from the key) with replicas over the load bound moved to the back.

    ``loads``: replica -> streams in flight (unknown counts as 0). The bound is
    ``ceil(factor * (total + 1) / n)``: a replica may carry ``factor`` times the mean load,
    counting the request being placed, and never less than ``floor`` (so at light load,
    where spreading gains nothing and load counts lag by a request, affinity holds).
    """
    if not ranked:
        return []
    total = sum(loads.get(r) or 0 for r in ranked)
    bound = max(floor, math.ceil(factor * (total + 1) / len(ranked)))
    under = [r for r in ranked if (loads.get(r) or 0) < bound]
    return under + [r for r in ranked if r not in under]


class WarmVoices:
    """The voices a replica keeps warm, least recently used out first (thread-safe).

    ``load(voice_id)`` runs on a miss and its result is kept (today the voice record; once
    the engine's conditioning cache takes a store loader, that cache is this LRU).
    """

    def __init__(self, capacity: int, load: Callable[[str], Any] = lambda voice_id: None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity, self._load = capacity, load
        self._items: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def touch(self, voice_id: Hashable) -> bool:
        """Mark ``voice_id`` (under Ray: (tenant, voice id)) used; True on a hit, False when it had to be loaded."""
        with self._lock:
            if voice_id in self._items:
                self._items.move_to_end(voice_id)
                self.hits += 1
                return True
            self.misses += 1
        value = self._load(voice_id)
        with self._lock:
            self._items[voice_id] = value
            self._items.move_to_end(voice_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                self.evictions += 1
        return False

    def __contains__(self, voice_id: str) -> bool:
        return voice_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        with self._lock:
            return {"warm_voices": len(self._items), "voice_hits": self.hits, "voice_misses": self.misses,
                    "voice_evictions": self.evictions}


class AffinityMiddleware:
    """Touches the request's voice in the replica's LRU and says so: ``X-Voice-Cache: hit|miss``.

    Runs inside the auth middleware (``create_app(inner_middleware=...)``): the LRU is keyed by
    (tenant, voice id), so the header says nothing about another tenant's voices.
    """

    def __init__(self, app: ASGIApp, *, warm: WarmVoices, offload: Callable[..., Any]) -> None:
        self.app, self.warm, self.offload = app, warm, offload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = routing_key(scope) if scope["type"] in ("http", "websocket") else None
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if key is None or not key.startswith("voice:") or principal is None:
            await self.app(scope, receive, send)
            return
        hit = await self.offload(self.warm.touch, (principal.tenant, key[len("voice:"):]))  # a miss may read the store
        header = (b"x-voice-cache", b"hit" if hit else b"miss")

        async def send_marked(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_marked)
