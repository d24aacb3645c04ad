"""Readiness, the stream load gauge and graceful drain: one ``Lifecycle`` per process.

A process is *starting* (engine loading, warming up), then *ready*, then *draining* once
told to stop (SIGTERM, or a Ray Serve replica stop), and the same rules hold with or
without Ray in front:

* ``GET /health`` says the process is alive (the app's route); ``GET /ready`` (answered
  here, before auth, like /health) is 200 only while warmed up and not draining, so a
  load balancer stops sending new work the moment a drain starts.
* Every open WebSocket and every streaming speech response is a *stream*; the load gauge
  is open streams / capacity (``max_streams``). Streams queued in front of the process
  (Ray's handle queue, HAProxy's server queue) are the front's own count: the Ray
  autoscaling policy adds them (``server/ray_serve.py``).
* Draining: a new WebSocket is accepted and closed at once with 1013 ("try again later")
  and a reason; a new speech request gets 503 ``server_draining`` with ``Retry-After``.
  Open sockets are closed with 1001 and a reconnect hint as soon as no utterance of theirs
  is in flight, and all of them at ``drain_timeout_s``.

Utterances are the sessions' to say: each finds its ``Stream`` at ``scope["rtts.stream"]``
(``stream_of(scope)``) and marks every turn or context from the moment it is accepted until
its last audio has been handed to the socket (``stream.begin_utterance()``, or ``with
stream.speaking(): ...``), and refuses new ones once ``stream.draining`` (so the set a drain
waits for only shrinks). A drain therefore waits exactly for what is being said, however
long a sentence takes to synthesize, and closes an idle socket at once.

``LifecycleMiddleware`` does all of this around the app: the endpoints see a client that
went away (``websocket.disconnect`` 1001, sends raising like a dropped client), which they
already handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from typing import Any, Awaitable, Callable

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0  # a close frame that cannot be written in this time is given up on
STREAMS_PER_BATCH_SLOT = 8  # the automatic capacity (max_streams = 0)
WATCH_PERIOD_S = 0.25  # how often stop signals without a callback of their own are polled
REFUSED_CODE, REFUSED_REASON = 1013, "server draining: reconnect, another replica will answer"
GOING_AWAY_CODE, GOING_AWAY_REASON = 1001, "server restarting: reconnect"
# POST routes whose response is synthesized speech: streams for the gauge, refused while draining.
SPEECH_PATHS = frozenset({"/v1/audio/speech", "/audio/speech", "/tts", "/tts_url", "/v1/tts"})
STREAM_SCOPE_KEY = "rtts.stream"


class Stream:
    """One open WebSocket or speech response, as the lifecycle sees it. Event loop only."""

    def __init__(self, kind: str, path: str, lifecycle: "Lifecycle | None" = None) -> None:
        self.kind, self.path = kind, path
        self.lifecycle = lifecycle  # None: a stream no lifecycle counts (a session run without the middleware)
        self.utterances = 0  # turns / contexts in flight, as the session reports them
        self.closer: Callable[[], Awaitable[None]] | None = None  # set for WebSockets
        self.closing = False

    @property
    def draining(self) -> bool:
        """The process is draining: a session refuses new utterances."""
        return self.lifecycle is not None and self.lifecycle.draining

    def begin_utterance(self) -> Callable[[], None]:
        """Mark an utterance in flight until the returned callable is called (once; again is a no-op)."""
        self.utterances += 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.utterances -= 1
                if self.lifecycle is not None:
                    self.lifecycle.changed()

        return end

    @contextlib.contextmanager
    def speaking(self):
        """``begin_utterance`` for a block."""
        end = self.begin_utterance()
        try:
            yield
        finally:
            end()

    @property
    def between_utterances(self) -> bool:
        return self.utterances == 0


def stream_of(scope: Scope) -> Stream:
    """The lifecycle's ``Stream`` of a socket; a detached one when the app runs without the middleware."""
    return scope.get(STREAM_SCOPE_KEY) or Stream("websocket", scope.get("path", ""))


class Lifecycle:
    """State, open streams and the drain of one serving process. Use it on the event loop only."""

    def __init__(self, *, capacity: int, drain_timeout_s: float, replica_id: str,
                 warm: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity, self.drain_timeout_s, self.replica_id = capacity, drain_timeout_s, replica_id
        self.clock, self._warm = clock, warm
        self.streams: set[Stream] = set()
        self.drain_reason: str | None = None
        self.drained = asyncio.Event()
        self._drain_task: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._watches: list[tuple[Callable[[], bool], str]] = []
        self._watch_task: asyncio.Task | None = None

    @classmethod
    def for_context(cls, ctx) -> "Lifecycle":
        """The lifecycle of a ``ServerContext``: capacity and names from its settings."""
        settings = ctx.settings
        capacity = settings.max_streams or STREAMS_PER_BATCH_SLOT * getattr(ctx.executor, "max_batch", 1)
        replica_id = settings.replica_id or f"{socket.gethostname()}:{settings.port}"
        return cls(capacity=capacity, drain_timeout_s=settings.drain_timeout_s, replica_id=replica_id,
                   warm=ctx.ready.is_set)

    # -- state ----------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self.drain_reason is not None

    @property
    def ready(self) -> bool:
        return self._warm() and not self.draining

    @property
    def state(self) -> str:
        return "draining" if self.draining else "ready" if self._warm() else "starting"

    @property
    def load(self) -> float:
        """Open streams / capacity: 1.0 is a full replica."""
        return len(self.streams) / self.capacity

    def snapshot(self) -> dict:
        return {"status": self.state, "ready": self.ready, "replica": self.replica_id,
                "streams": len(self.streams), "capacity": self.capacity, "load": round(self.load, 4)}

    # -- streams --------------------------------------------------------------------
    def open(self, kind: str, path: str) -> Stream:
        stream = Stream(kind, path, self)
        self.streams.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        self.streams.discard(stream)
        self._changed.set()

    def changed(self) -> None:
        """A stream's utterances changed: a drain under way looks again."""
        self._changed.set()

    # -- drain ----------------------------------------------------------------------
    def watch(self, stopping: Callable[[], bool], reason: str) -> None:
        """Drain once ``stopping()`` turns true: for stop signals that come with no callback
        (a Ray replica's shutdown). Polled on the app's loop from its start-up on."""
        self._watches.append((stopping, reason))

    def start_watching(self) -> None:
        if self._watches and self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name="rtts-stop-watch")

    def stop_watching(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()

    async def _watch(self) -> None:
        while not self.draining:
            for stopping, reason in self._watches:
                if stopping():
                    self.start_drain(reason)
                    return
            await asyncio.sleep(WATCH_PERIOD_S)

    def start_drain(self, reason: str) -> asyncio.Task:
        """Stop taking new streams and close the open ones politely; idempotent."""
        if self._drain_task is None:
            self.drain_reason = reason
            log.info("draining (%s): %d streams open, up to %.0f s for utterances in flight",
                     reason, len(self.streams), self.drain_timeout_s)
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(), name="rtts-drain")
        return self._drain_task

    async def _drain(self) -> None:
        deadline = self.clock() + self.drain_timeout_s
        while self.streams:
            now = self.clock()
            late = now >= deadline
            for stream in [s for s in self.streams if s.closer is not None and not s.closing]:
                if late or stream.between_utterances:
                    stream.closing = True
                    await stream.closer()
            if late:
                break  # what is left are HTTP responses: the server's own shutdown ends them
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(0.1, max(0.0, deadline - now)))
        log.info("drained: %d streams left", len(self.streams))
        self.drained.set()


class _GuardedWebSocket:
    """The ASGI receive/send pair of one WebSocket, with the lifecycle's hold on it."""

    def __init__(self, lifecycle: Lifecycle, stream: Stream, receive: Receive, send: Send) -> None:
        self.lifecycle, self.stream = lifecycle, stream
        self._receive, self._send = receive, send
        self._lock = asyncio.Lock()
        self._closed_for_drain = asyncio.Event()
        self.accepted = self.closed = False
        stream.closer = self.close_for_drain

    async def receive(self) -> Message:
        if self._closed_for_drain.is_set():
            return {"type": "websocket.disconnect", "code": GOING_AWAY_CODE}
        incoming = asyncio.ensure_future(self._receive())
        drained = asyncio.ensure_future(self._closed_for_drain.wait())
        try:
            await asyncio.wait({incoming, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            if not incoming.done():
                incoming.cancel()
        if not incoming.done() or incoming.cancelled():
            return {"type": "websocket.disconnect", "code": GOING_AWAY_CODE}
        return incoming.result()

    async def send(self, message: Message) -> None:
        if self._closed_for_drain.is_set():
            if message["type"] == "websocket.close":
                return
            raise ConnectionResetError("the server closed this socket to drain")  # as a dropped client
        kind = message["type"]
        if kind == "websocket.accept":
            headers = list(message.get("headers") or [])
            headers.append((b"x-replica-id", self.lifecycle.replica_id.encode()))
            message = {**message, "headers": headers}
        async with self._lock:
            await self._send(message)
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.close":
            self.closed = True

    async def close_for_drain(self) -> None:
        """Close with 1001 and a reconnect hint; the app sees the client leave."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    async with self._lock:
                        await self._send({"type": "websocket.close", "code": GOING_AWAY_CODE,
                                          "reason": GOING_AWAY_REASON})
        self._closed_for_drain.set()


class LifecycleMiddleware:
    """Outermost middleware: /ready, X-Replica-Id on every response, stream counting, drain refusals."""

    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle) -> None:
        self.app, self.lifecycle = app, lifecycle
        self._replica_header = (b"x-replica-id", lifecycle.replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            self.lifecycle.start_watching()
            try:
                await self.app(scope, receive, send)
            finally:
                self.lifecycle.stop_watching()
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self.lifecycle
        if scope["path"] == "/ready" and scope["method"] in ("GET", "HEAD"):
            await self._json(send, 200 if lifecycle.ready else 503, lifecycle.snapshot())
            return
        speech = scope["method"] == "POST" and scope["path"] in SPEECH_PATHS
        if speech and lifecycle.draining:
            body = {"error": {"message": "server draining for a restart: retry, another replica will answer",
                              "type": "server_error", "param": None, "code": "server_draining"}}
            await self._json(send, 503, body, [(b"retry-after", b"1"), (b"connection", b"close")])
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._replica_header]}
            await send(message)

        stream = lifecycle.open("http", scope["path"]) if speech else None
        try:
            await self.app(scope, receive, send_named)
        finally:
            if stream is not None:
                lifecycle.close(stream)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        lifecycle = self.lifecycle
        if lifecycle.draining:
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept", "headers": [self._replica_header]})
                await send({"type": "websocket.close", "code": REFUSED_CODE, "reason": REFUSED_REASON})
            return
        stream = lifecycle.open("websocket", scope["path"])
        guard = _GuardedWebSocket(lifecycle, stream, receive, send)
        scope[STREAM_SCOPE_KEY] = stream
        try:
            await self.app(scope, guard.receive, guard.send)
        finally:
            lifecycle.close(stream)

    async def _json(self, send: Send, status: int, body: dict, extra: list | None = None) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   self._replica_header, *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM meaning "drain, then exit" (a second SIGTERM or SIGINT: exit now)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGTERM and self._loop is not None and not self.lifecycle.draining and not self.should_exit:
            self._loop.call_soon_threadsafe(self._drain_then_exit)
            return
        super().handle_exit(sig, frame)

    def _drain_then_exit(self) -> None:
        if self.lifecycle.draining:
            return
        task = self.lifecycle.start_drain("SIGTERM")
        task.add_done_callback(lambda _: setattr(self, "should_exit", True))
