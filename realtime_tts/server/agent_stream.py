"""Native streaming-text WebSocket for LLM agents: ``/v1/tts/stream`` (protocols.md §5.3).

An agent pushes text as its LLM produces it, in one or more *contexts* (turns) on one
socket, and gets audio back sentence by sentence while it is still writing. The messages and
their rules are ``AgentStreamProtocol``'s (``agent_protocol.py``, Sans-I/O; the wire format is
in docs/agent-stream.md); this module is the I/O around it.

Who owns what (one owner per task and per queue)::

    reader (the endpoint task) --protocol actions--> each context's SpeechStream (push/flush/end)
    reader --contexts in creation order--> ``order`` --> player task
    reader / player / idle watchdog --messages and frames--> ``outbox`` (bounded) --> writer task

* The **reader** feeds client frames to the protocol and performs its actions: it resolves a
  context's voice/emotion/speed on the codec pool and gives each context one ``SpeechStream``
  (``speech.py``: splitter, auto-flush timer, submission within a bounded lead, encoding off
  the loop, its own encoder, so every context is an independent audio stream).
* The **player** (``ContextPlayer``) plays contexts strictly in creation order, turning each
  stream's events into ``sentence_start``, audio frames, ``sentence_end``, ``flushed`` and ``done``.
* The **writer** (``SocketWriter``, which owns the outbox) is the only task that writes to the
  socket. It drops queued items of a cancelled context (nothing of a context follows its
  ``cancelled``) and acknowledges each audio frame the socket accepted to its stream:
  synthesis never runs more than ``max_lead_s`` ahead of what the client took. A client that accepts nothing for
  ``write_timeout_s`` is dropped (close 1008) and all its synthesis cancelled.
* The **watchdog** closes a socket that sent nothing for ``stream_idle_timeout_s`` while the
  player had nothing to do (an open context waiting for text counts as idle).

Cancellation always cleans up: ``cancel`` closes that context's stream (its jobs cancelled,
its encoder freed); a closed socket, a failed task or server shutdown closes every stream and
cancels every job of the socket (one executor owner per socket), and every task above is
cancelled and awaited.

Close codes: 1000 after an idle timeout (preceded by an ``idle_timeout`` error); 1001 when
synthesis is refused because the server is shutting down (uvicorn itself closes open sockets
with 1012 on shutdown); 1008 when the client reads nothing for ``write_timeout_s``; 1011 on
an internal error; a missing or wrong API key is refused at the upgrade (HTTP 401).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import anyio
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..audio.opus import FRAME_MS
from ..audio.stream import SpeechEncoder
from ..engine.base import SPEED_MAX, SPEED_MIN, Cancelled, SynthesisOptions
from ..engine.executor import ExecutorBusy, ExecutorClosed
from . import agent_protocol as proto
from .agent_protocol import (CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_POLICY, ENCODINGS,
                             MAX_CONTEXTS, SAMPLE_RATES, AgentStreamProtocol, StreamError, audio_frame)
from .capabilities import Notice, engine_notices
from .http_errors import ApiError
from .lifecycle import stream_of
from .params import parse_emotion, parse_speed, resolve_voice
from .speech import Failure, Marker, Sentence, SpeechStream, Tail

log = logging.getLogger(__name__)

PATH = "/v1/tts/stream"
OUTBOX_LIMIT = 256  # queued messages/frames before producers wait for the client to read
CLOSE_TIMEOUT_S = 2.0  # a close frame the client does not take in this long is abandoned
CLOSE = object()  # outbox: send the close frame and stop writing


@dataclass(eq=False)
class _Context:
    """The session's half of a context: its speech stream and what the player and writer track."""

    cid: str
    slot: int
    stream: SpeechStream
    output: proto.Output
    last_text_at: float
    first_cut_at: float | None = None  # when the text that completed the first segment arrived
    dropped: bool = False  # cancelled by the client: its queued items are not written
    frames_written: int = 0
    end_utterance: Callable[[], None] = lambda: None  # in flight for a drain until its last message is written


@dataclass
class _Out:
    payload: Any  # dict (JSON) or bytes (binary frame); None: nothing to write, only ``after``
    context: _Context | None = None
    audio: bool = False
    after: Callable[[], None] | None = None  # run by the writer once everything before it was written


class StreamSession:
    """One socket: the reader, player, writer and watchdog tasks and the state they share."""

    def __init__(self, ctx, websocket: WebSocket) -> None:
        self.ctx = ctx.for_request(websocket.scope)  # voices resolve in the caller's tenant only
        self.lifecycle_stream = stream_of(websocket.scope)  # where contexts are marked in flight for a drain
        self.ws = websocket
        self.settings = ctx.settings
        self.id = uuid.uuid4().hex[:16]
        self.owner = f"stream-{self.id}"
        engine = ctx.engine
        self.protocol = AgentStreamProtocol(
            max_text_chars=self.settings.max_text_chars, buffer_delay_ms=self.settings.max_buffer_delay_ms,
            max_message_bytes=1024 * 1024 + self.settings.max_upload_bytes * 4 // 3,
            languages=engine.capabilities().languages if engine is not None else None,
            engine=engine.name if engine is not None else ctx.engine_name)
        self.defaults: tuple[SynthesisOptions, list[Notice]] | None = None  # parsed default option fields
        self.contexts: dict[str, _Context] = {}  # every context not yet retired by the player
        self.order: asyncio.Queue[_Context] = asyncio.Queue()  # reader -> player, in creation order
        self.writer = SocketWriter(websocket, self.ctx, self.id)  # the outbox -> the socket
        self.current: _Context | None = None  # the context the player works on
        self.last_activity = time.monotonic()
        self.closing = False

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        tasks = [asyncio.create_task(self._read(), name=f"{self.owner}-reader"),
                 asyncio.create_task(ContextPlayer(self).run(), name=f"{self.owner}-player"),
                 asyncio.create_task(self.writer.run(), name=f"{self.owner}-writer"),
                 asyncio.create_task(self._watch_idle(), name=f"{self.owner}-watchdog")]
        try:
            await self._send(self.protocol.ready(self._ready_extra()))
            # The watchdog only queues a close; the session ends when the client leaves, the
            # writer has sent the close (or lost the client), or a task fails.
            done, _ = await asyncio.wait(tasks[:3], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("agent stream %s: %s failed", self.id, task.get_name(), exc_info=task.exception())
                    await self.writer.close_now(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await self._cleanup(tasks)

    async def _cleanup(self, tasks: list[asyncio.Task]) -> None:
        streams = [context.stream for context in self.contexts.values()]
        for stream in streams:
            stream.close()
        self.ctx.executor.cancel_owner(self.owner)
        for task in tasks:
            task.cancel()
        # Shielded: under a cancelled ASGI task (server or test-client teardown) the wait must
        # still finish, so no task of this socket outlives it.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)
            for stream in streams:
                await stream.aclose()  # encoders freed before the session is gone
        self.contexts.clear()

    async def _close(self, code: int, reason: str) -> None:
        """Close after everything already queued for the client has been written."""
        if not self.closing:
            self.closing = True
            await self.writer.put((CLOSE, code, reason))

    def _ready_extra(self) -> dict:
        s, engine = self.settings, self.ctx.engine
        return {"session_id": self.id, "engine": engine.name, "capabilities": engine.capabilities().as_dict(),
                "limits": {
            "max_text_chars": s.max_text_chars, "max_segment_chars": s.max_segment_chars,
            "max_contexts": MAX_CONTEXTS, "idle_timeout_s": s.stream_idle_timeout_s,
            "speed_range": [SPEED_MIN, SPEED_MAX], "encodings": list(ENCODINGS),
            "sample_rates": {k: list(v) for k, v in SAMPLE_RATES.items()}, "frame_ms": list(FRAME_MS)}}

    # --- reader: protocol actions ----------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_activity = time.monotonic()
            if message.get("text") is not None:
                await self._perform(self.protocol.receive_text(message["text"]))
            else:
                await self._perform(self.protocol.receive_bytes(message.get("bytes") or b""))

    async def _perform(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, proto.Send):
                await self._send(action.payload)
            elif isinstance(action, proto.Configure):
                await self._configure(action)
            elif isinstance(action, proto.Open):
                await self._open(action)
            elif isinstance(action, proto.Cancel):
                context = self.contexts.get(action.context_id)
                if context is not None:
                    context.dropped = True
                    context.stream.close()
            elif isinstance(action, proto.Close):
                await self._close(action.code, action.reason)
            else:
                await self._on_text_action(action)

    async def _on_text_action(self, action) -> None:
        context = self.contexts.get(action.context_id)
        if context is None or self.protocol.is_final(context.cid):
            return
        stream = context.stream
        context.last_text_at = time.monotonic()
        try:
            if isinstance(action, proto.Push):
                cut = stream.push(action.text)
            elif isinstance(action, proto.Flush):
                cut = stream.flush()
                stream.mark(action.flush_id)
            else:
                cut = stream.end()
        except ExecutorBusy as e:
            await self._fail(context, "server_busy", f"{e}; this context was stopped, retry later")
            return
        except ExecutorClosed:
            await self._fail(context, "shutting_down", "the server is shutting down")
            await self._close(CLOSE_GOING_AWAY, "server shutting down")
            return
        if cut and context.first_cut_at is None:
            context.first_cut_at = context.last_text_at

    async def _configure(self, action: proto.Configure) -> None:
        try:
            defaults = await self.ctx.codec.run(self._parse_options, action.fields) if action.fields else None
        except ApiError as e:
            await self._perform(self.protocol.refused(StreamError(e.code or "invalid_value", e.message,
                                                                  param=e.param)))
            return
        self.defaults = defaults
        await self._perform(self.protocol.configured(action.config, action.fields, ready=self._ready_extra(),
                                                     warnings=defaults[1] if defaults else ()))

    async def _open(self, action: proto.Open) -> None:
        with self.lifecycle_stream.speaking():  # in flight while its options resolve, too
            await self._open_context(action)

    async def _open_context(self, action: proto.Open) -> None:
        cid = action.context_id
        try:
            if self.lifecycle_stream.draining:
                raise StreamError("server_draining", "the server is draining for a restart: this socket closes "
                                  "once its contexts in flight are done; reconnect and open this context there", cid)
            if not self.ctx.ready.is_set():
                raise StreamError("not_ready", "the model is still loading; retry when GET /health returns 200", cid)
            if action.fields:
                fields = {**self.protocol.default_fields, **action.fields}
                options, warnings = await self.ctx.codec.run(self._parse_options, fields)
            else:  # the connection's defaults: their warnings are said once (after `config`, or here)
                fresh = self.defaults is None
                if fresh:
                    self.defaults = await self.ctx.codec.run(self._parse_options, {})
                options, warnings = self.defaults[0], self.defaults[1] if fresh else ()
        except ApiError as e:
            await self._perform(self.protocol.refused(StreamError(e.code or "invalid_value", e.message, cid,
                                                                  param=e.param)))
            return
        except StreamError as e:
            await self._perform(self.protocol.refused(e))
            return
        actions = self.protocol.opened(cid, action, warnings=warnings)
        slot = self.protocol.contexts[cid].slot
        context = _Context(cid, slot, self._new_stream(options), self.protocol.config.output, time.monotonic(),
                           end_utterance=self.lifecycle_stream.begin_utterance())
        self.contexts[cid] = context
        self.order.put_nowait(context)
        await self._perform(actions)

    def _new_stream(self, options: SynthesisOptions) -> SpeechStream:
        out, settings = self.protocol.config.output, self.settings
        delay = self.protocol.config.buffer_delay_ms
        return SpeechStream(
            self.ctx, options, owner=self.owner, flush_after_s=delay / 1000 if delay > 0 else None,
            encoder=lambda rate: SpeechEncoder(rate, out.sample_rate, encoding=out.encoding, frame_ms=out.frame_ms,
                                               silence_ms=settings.silence_ms))

    def _parse_options(self, fields: dict) -> tuple[SynthesisOptions, list[Notice]]:
        """Voice, emotion and speed in any accepted spelling (on the codec pool: voices may be decoded),
        the language the protocol checked, and what of it the server will not do."""
        voice = resolve_voice(self.ctx, fields.get("voice"))
        emotion = parse_emotion(self.ctx, fields)
        speed, warning = parse_speed(fields)
        options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=fields.get("language"))
        notices = [Notice("speed_clamped", warning)] if warning else []
        return options, notices + engine_notices(self.ctx.engine, options)

    async def _fail(self, context: _Context, code: str, message: str, **extra: Any) -> None:
        context.stream.close()
        await self._perform(self.protocol.failed(context.cid, code, message, **extra))

    async def _send(self, payload: dict) -> None:
        if payload.get("type") == "error":
            self.ctx.metrics.error(f"stream_{payload['code']}")
            log.info("agent stream %s: %s: %s", self.id, payload["code"], payload["message"])
        await self.writer.put(_Out(payload))

    # --- watchdog ------------------------------------------------------------------------------
    def _busy(self) -> bool:
        """Audio is being made or sent (an open context waiting for text does not count)."""
        current = self.current
        return self.writer.has_queued or (current is not None and not current.stream.waiting_for_text)

    async def _watch_idle(self) -> None:
        idle = self.settings.stream_idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, self.last_activity + idle - time.monotonic()))
            if self._busy():
                self.last_activity = time.monotonic()
                continue
            if time.monotonic() - self.last_activity >= idle:
                await self._send(StreamError("idle_timeout", f"no message for {idle:g} s; closing (send "
                                             "{\"type\":\"keepalive\"} to keep the socket open)").payload())
                await self._close(CLOSE_NORMAL, "idle timeout")
                return  # the writer sends the close; the client's answer ends the session


class SocketWriter:
    """The socket's bounded outbox (``OUTBOX_LIMIT``) and the writer task's loop, the only code
    that writes to the socket: items in the order queued, none of a context the client cancelled,
    each audio frame the socket accepted acknowledged to its stream (so synthesis stays within
    ``max_lead_s`` of what the client took). A client that accepts nothing for
    ``write_timeout_s`` is closed with 1008 and the loop ends, which ends the session."""

    def __init__(self, websocket: WebSocket, ctx, session_id: str) -> None:
        self.ws = websocket
        self.ctx = ctx
        self.session_id = session_id  # for logs
        self.outbox: asyncio.Queue[_Out | tuple] = asyncio.Queue(OUTBOX_LIMIT)

    @property
    def has_queued(self) -> bool:
        return not self.outbox.empty()

    async def put(self, item: _Out | tuple) -> None:
        """Queue a message, a frame or ``(CLOSE, code, reason)``; waits while the outbox is full."""
        await self.outbox.put(item)

    async def close_now(self, code: int, reason: str) -> None:
        """Close without waiting for the outbox (the writer is done, gone or failed): best effort."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT_S)

    async def run(self) -> None:
        timeout = self.ctx.settings.write_timeout_s
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple) and item[0] is CLOSE:
                await self.close_now(item[1], item[2])
                return
            if item.after is not None:
                item.after()
                continue
            context = item.context
            if context is not None and context.dropped:
                continue
            data = item.payload
            message = ({"type": "websocket.send", "bytes": data} if isinstance(data, bytes)
                       else {"type": "websocket.send", "text": json.dumps(data, ensure_ascii=False)})
            try:
                await asyncio.wait_for(self.ws.send(message), timeout)
            except asyncio.TimeoutError:
                self.ctx.metrics.write_timeouts.labels("stream").inc()
                log.warning("agent stream %s: the client read nothing for %g s; dropping it", self.session_id, timeout)
                await self.close_now(CLOSE_POLICY, f"write timeout: nothing was read for {timeout:g} s")
                return
            except Exception as e:  # the client is gone: end the session
                log.debug("agent stream %s: send failed: %s", self.session_id, e)
                return
            if item.audio:
                self._written(context)

    def _written(self, context: _Context) -> None:
        context.frames_written += 1
        context.stream.acknowledge(context.frames_written * context.output.frame_ms / 1000)
        if context.frames_written == 1:
            started = context.first_cut_at if context.first_cut_at is not None else context.last_text_at
            self.ctx.metrics.observe_ttfa("stream", time.monotonic() - started)


class ContextPlayer:
    """The player task of one socket: contexts strictly in creation order, each stream's events
    turned into ``sentence_start``, audio frames, ``sentence_end``, ``flushed`` and ``done``."""

    def __init__(self, session: StreamSession) -> None:
        self.session = session

    async def run(self) -> None:
        session = self.session
        while True:
            context = await session.order.get()
            session.current = context
            try:
                await self._play_context(context)
                # Its last message is queued: once the writer has written it, it is no longer in flight.
                await session.writer.put(_Out(None, context, after=context.end_utterance))
            finally:
                session.current = None
                context.stream.close()
                session.contexts.pop(context.cid, None)
                session.protocol.retired()
                session.last_activity = time.monotonic()

    async def _play_context(self, context: _Context) -> None:
        session = self.session
        seq, events = 0, session.protocol.config.sentence_events
        async for event in context.stream:
            if isinstance(event, Sentence):
                if events:
                    await self._send_for(context, {"type": "sentence_start", "context_id": context.cid,
                                                   "index": event.index, "text": event.text,
                                                   "audio_ms": round(event.offset * 1000)})
                seq = await self._send_frames(context, seq, event.data)
                if events:
                    await self._send_for(context, {"type": "sentence_end", "context_id": context.cid,
                                                   "index": event.index, "duration_ms": round(event.duration * 1000)})
            elif isinstance(event, Marker):
                await self._send_for(context, {"type": "flushed", "context_id": context.cid, "flush_id": event.value})
            elif isinstance(event, Failure):
                await self._lost(context, event)
                return
            elif isinstance(event, Tail):
                seq = await self._send_frames(context, seq, event.data or [])
                await session._perform(session.protocol.done(
                    context.cid, audio_ms=seq * context.output.frame_ms, sentences=len(context.stream.segments)))
                return

    async def _lost(self, context: _Context, failure: Failure) -> None:
        session, error = self.session, failure.error
        if isinstance(error, ExecutorBusy):
            await session._fail(context, "server_busy", f"{error}; this context was stopped, retry later")
        elif isinstance(error, ExecutorClosed) or (isinstance(error, Cancelled) and not session.ctx.ready.is_set()):
            await session._fail(context, "shutting_down", "the server is shutting down")
            await session._close(CLOSE_GOING_AWAY, "server shutting down")
        elif isinstance(error, Cancelled):
            await session._fail(context, "synthesis_cancelled", "the server cancelled this context's synthesis",
                                index=failure.index)
        else:
            await session._fail(context, "synthesis_failed",
                                f"sentence {failure.index} could not be synthesized: {error}", index=failure.index)

    async def _send_frames(self, context: _Context, seq: int, frames: list[bytes]) -> int:
        session = self.session
        for frame in frames:
            if session.protocol.config.transport == "base64":
                payload: Any = {"type": "audio", "context_id": context.cid, "seq": seq,
                                "data": base64.b64encode(frame).decode("ascii")}
            else:
                payload = audio_frame(context.slot, seq, frame)
            await self._send_for(context, payload, audio=True)
            seq += 1
        return seq

    async def _send_for(self, context: _Context, payload: Any, *, audio: bool = False) -> None:
        session = self.session
        if context.dropped or session.protocol.is_final(context.cid):
            return  # nothing of a context follows its ``cancelled`` or ``error``
        await session.writer.put(_Out(payload, context, audio))


def stream_routes(ctx) -> list:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        session = StreamSession(ctx, websocket)
        log.info("agent stream %s opened", session.id)
        with ctx.metrics.connection("stream"):
            await session.run()
        log.info("agent stream %s closed", session.id)

    return [WebSocketRoute(PATH, endpoint)]
