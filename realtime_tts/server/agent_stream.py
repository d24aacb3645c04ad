"""Native streaming-text WebSocket for LLM agents: ``/v1/tts/stream`` (protocols.md §5.3).

An agent pushes text as its LLM produces it, in one or more *contexts* (turns) on one
socket, and gets audio back sentence by sentence while it is still writing.

Client -> server (JSON text frames)::

    {"type":"config", "voice", "emotion", "speed", "output":{"encoding","sample_rate","frame_ms"},
     "audio_transport":"binary"|"base64", "max_buffer_delay_ms", "sentence_timestamps"}
    {"type":"text", "context_id", "text", ["end":true], [voice/emotion/speed on a context's first text]}
    {"type":"flush", "context_id", ["flush_id"]}      {"type":"end", "context_id"}
    {"type":"cancel", ["context_id"]}                  {"type":"keepalive"}

Server -> client: ``ready``, ``context_started`` (context_id -> binary slot), ``sentence_start``
(text, audio_ms), audio, ``sentence_end``, ``flushed``, ``done``, ``cancelled``, ``warning``,
``error`` ({"code","message","context_id"?}). Binary audio frames carry an 8-byte header:
version 0x01, kind 0x00 (audio), slot (u16 BE), sequence within the context (u32 BE).

Who owns what (one owner per task and per queue)::

    reader (the endpoint task) --contexts in creation order--> ``order`` --> player task
    reader / auto-flush timer --segments, flush and end marks--> ``Turn.items`` --> player task
    reader / player / idle watchdog --messages and frames--> ``outbox`` --> writer task

* The **reader** parses client messages, feeds each context's ``IncrementalSplitter`` and
  submits every segment to the executor the moment it is cut (synthesis runs ahead of
  playback). Each context owns one **auto-flush timer** task (``max_buffer_delay_ms``).
* The **player** plays contexts strictly in creation order: it awaits each segment's job,
  encodes it with the context's own ``SpeechEncoder`` (so every context is an independent
  audio stream: a decoder may be reset per context) and queues the frames.
* The **writer** is the only task that writes to the socket. It drops queued items of a
  cancelled context, so nothing of a context follows its ``cancelled``.
* The **watchdog** closes a socket that sent nothing for ``stream_idle_timeout_s`` while the
  player had nothing to do (an open context waiting for text counts as idle); the writer
  drops a client that reads nothing for that long.

Cancellation always cleans up: ``cancel`` cancels that context's jobs; a closed socket,
a failed task or server shutdown cancels every job of the socket (one executor owner per
socket) and every task above is cancelled and awaited.

Close codes: 1000 after an idle timeout (preceded by an ``idle_timeout`` error); 1001 when
synthesis is refused because the server is shutting down (uvicorn itself closes open sockets
with 1012 on shutdown); 1011 on an internal error; a missing or wrong API key is refused at
the upgrade (HTTP 401, or close 1008 where the server cannot send a denial response).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..audio.opus import FRAME_MS, OPUS_RATES
from ..audio.stream import SpeechEncoder
from ..engine.base import SPEED_MAX, SPEED_MIN, Cancelled, SynthesisOptions
from ..engine.executor import ExecutorBusy, ExecutorClosed, SynthesisJob
from ..text.segment import IncrementalSplitter, has_content
from .http_errors import ApiError
from .params import parse_emotion, parse_speed, resolve_voice

log = logging.getLogger(__name__)

PATH = "/v1/tts/stream"
HEADER = struct.Struct(">BBHI")  # version, kind, context slot, sequence: 8 bytes
FORMAT_VERSION = 1
KIND_AUDIO = 0

ENCODINGS = ("pcm_s16le", "opus")
SAMPLE_RATES = {"pcm_s16le": (8000, 16000, 22050, 24000, 44100, 48000), "opus": OPUS_RATES}
TRANSPORTS = ("binary", "base64")
DEFAULT_OUTPUT = {"encoding": "pcm_s16le", "sample_rate": 24000, "frame_ms": 20}

MAX_CONTEXTS = 16  # contexts created but not yet fully played, per socket
MAX_CONTEXT_ID_CHARS = 128
MAX_BUFFER_DELAY_MS = 60000
OUTBOX_LIMIT = 256  # queued messages/frames before producers wait for the client to read
REMEMBERED_CONTEXTS = 256  # finished context ids kept for clear errors on reuse

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011

# Fields that choose the voice, emotion and speed (all the spellings params.py understands).
OPTION_FIELDS = frozenset({
    "voice", "emotion", "speed", "duration_factor", "emo_vector", "emo_vec", "emotion_vector",
    "emo_text", "emotion_text", "instructions", "emo_ref", "emo_audio_prompt", "emotion_voice",
    "emotion_prompt", "emo_ref_path", "emo_alpha", "emo_weight", "emotion_alpha", "emo_control_method",
})

# Context states. OPEN takes text; ENDED waits for its audio; the last three are final.
OPEN, ENDED, DONE, CANCELLED, FAILED = "open", "ended", "done", "cancelled", "failed"
FINAL = (DONE, CANCELLED, FAILED)
_STATE_WORDS = {ENDED: "has already ended", DONE: "is finished", CANCELLED: "was cancelled", FAILED: "failed"}


class StreamError(Exception):
    """A client message that cannot be served: becomes an ``error`` message, the socket stays."""

    def __init__(self, code: str, message: str, context_id: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.context_id = context_id
        self.extra = extra

    def payload(self) -> dict:
        out = {"type": "error", "code": self.code, "message": self.message}
        if self.context_id is not None:
            out["context_id"] = self.context_id
        return {**out, **self.extra}


@dataclass(frozen=True)
class Output:
    encoding: str
    sample_rate: int
    frame_ms: int

    def describe(self) -> dict:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1, "frame_ms": self.frame_ms}


@dataclass
class Segment:
    index: int
    text: str
    job: SynthesisJob


@dataclass
class FlushMark:
    flush_id: Any


END = object()  # Turn.items: no more segments
WAKE = object()  # Turn.items: the context was aborted; the player must look at its state


@dataclass
class Out:
    """One outbox item (a failed context's audio already queued is still delivered, then the error)."""

    payload: Any  # dict (JSON) or bytes (binary frame)
    turn: Turn | None = None  # dropped if this context is cancelled before the item is written
    audio: bool = False


CLOSE = object()  # outbox: send the close frame and stop writing


@dataclass(eq=False)
class Turn:
    """One context: its splitter, its jobs, and the items its player consumes in order."""

    context_id: str
    slot: int
    options: SynthesisOptions
    splitter: IncrementalSplitter
    state: str = OPEN
    items: asyncio.Queue = field(default_factory=asyncio.Queue)
    jobs: list[SynthesisJob] = field(default_factory=list)
    chars: int = 0
    segments: int = 0
    flushes: int = 0
    timer: asyncio.Task | None = None
    last_text_at: float = 0.0
    first_cut_at: float | None = None  # when the text that completed the first segment arrived
    first_audio_sent: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def abort(self, state: str) -> None:
        """Cancel (client) or fail (server): drop buffered text, cancel its jobs, wake the player."""
        self.state = state
        self.stop_timer()
        for job in reversed(self.jobs):  # queued ones first: the worker must not start them
            job.cancel()
        self.items.put_nowait(WAKE)



class StreamSession:
    """One socket: the reader, player, writer and watchdog tasks and the state they share."""

    def __init__(self, ctx, websocket: WebSocket) -> None:
        self.ctx = ctx
        self.ws = websocket
        self.settings = ctx.settings
        self.id = uuid.uuid4().hex[:16]
        self.owner = f"stream-{self.id}"
        self.output = Output(**DEFAULT_OUTPUT)
        self.transport = "binary"
        self.sentence_events = True
        self.buffer_delay_ms = self.settings.max_buffer_delay_ms
        self.default_fields: dict = {}  # option fields of the last config, merged under a context's own
        self.defaults: tuple[SynthesisOptions, str | None] | None = None  # parsed default_fields
        self.turns: dict[str, Turn] = {}  # contexts not yet in a final state
        self.finished: collections.OrderedDict[str, str] = collections.OrderedDict()  # id -> final state
        self.order: asyncio.Queue[Turn] = asyncio.Queue()  # reader -> player, in creation order
        self.outbox: asyncio.Queue[Out | object] = asyncio.Queue(OUTBOX_LIMIT)  # -> writer
        self.unplayed = 0  # contexts created and not yet retired by the player
        self.playing = False  # the player is working on an item (not waiting for the client's text)
        self.timers: set[asyncio.Task] = set()  # every context's auto-flush task, until it ends
        self.next_slot = 0
        self.last_activity = time.monotonic()
        self.closing = False

    # --- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        tasks = [asyncio.create_task(self._read(), name=f"{self.owner}-reader"),
                 asyncio.create_task(self._play(), name=f"{self.owner}-player"),
                 asyncio.create_task(self._write(), name=f"{self.owner}-writer"),
                 asyncio.create_task(self._watch_idle(), name=f"{self.owner}-watchdog")]
        try:
            await self._send(self._ready())
            # The watchdog only queues a close; the session ends when the client leaves, the
            # writer has sent the close (or lost the client), or a task fails.
            done, _ = await asyncio.wait(tasks[:3], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("agent stream %s: %s failed", self.id, task.get_name(), exc_info=task.exception())
                    await self._close_now(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await self._cleanup(tasks)

    async def _cleanup(self, tasks: list[asyncio.Task]) -> None:
        for turn in list(self.turns.values()):
            turn.abort(CANCELLED)
        self.turns.clear()
        self.ctx.executor.cancel_owner(self.owner)
        timers = list(self.timers)  # includes auto-flushes that already fired and are submitting
        for task in tasks + timers:
            task.cancel()
        # Shielded: under a cancelled ASGI task (server or test-client teardown) the wait must
        # still finish, so no task of this socket outlives it.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, *timers, return_exceptions=True)

    async def _close_now(self, code: int, reason: str) -> None:
        """Close from here (the writer is gone or failed): best effort."""
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        """Close after everything already queued for the client has been written."""
        if not self.closing:
            self.closing = True
            await self.outbox.put((CLOSE, code, reason))

    # --- writer: the only task that writes to the socket ----------------------------------------
    async def _write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, tuple) and item[0] is CLOSE:
                _, code, reason = item
                with contextlib.suppress(Exception):
                    await self.ws.close(code, reason)
                return
            turn = item.turn
            if turn is not None and turn.state == CANCELLED:
                continue
            try:
                # A client that reads nothing for the idle timeout is treated as gone.
                if isinstance(item.payload, bytes):
                    await asyncio.wait_for(self.ws.send_bytes(item.payload), self.settings.stream_idle_timeout_s)
                else:
                    text = json.dumps(item.payload, ensure_ascii=False)
                    await asyncio.wait_for(self.ws.send_text(text), self.settings.stream_idle_timeout_s)
            except Exception as e:  # the client is gone: end the session
                log.debug("agent stream %s: send failed: %s", self.id, e)
                return
            if item.audio and not turn.first_audio_sent:
                turn.first_audio_sent = True
                if turn.first_cut_at is not None:
                    self.ctx.metrics.observe_ttfa("stream", time.monotonic() - turn.first_cut_at)

    async def _send(self, payload: dict, turn: Turn | None = None, *, audio: bool = False) -> None:
        if turn is not None and turn.state in (CANCELLED, FAILED):
            return  # nothing of a context follows its ``cancelled`` or ``error``
        await self.outbox.put(Out(payload, turn, audio))

    async def _error(self, err: StreamError) -> None:
        self.ctx.metrics.error(f"stream_{err.code}")
        log.info("agent stream %s: %s: %s", self.id, err.code, err.message)
        await self._send(err.payload())

    def _ready(self) -> dict:
        s = self.settings
        return {
            "type": "ready", "session_id": self.id, "output": self.output.describe(),
            "audio_transport": self.transport, "sentence_timestamps": self.sentence_events,
            "max_buffer_delay_ms": self.buffer_delay_ms, "engine": self.ctx.engine.name,
            "limits": {
                "max_text_chars": s.max_text_chars, "max_segment_chars": s.max_segment_chars,
                "max_contexts": MAX_CONTEXTS, "idle_timeout_s": s.stream_idle_timeout_s,
                "speed_range": [SPEED_MIN, SPEED_MAX], "encodings": list(ENCODINGS),
                "sample_rates": {k: list(v) for k, v in SAMPLE_RATES.items()}, "frame_ms": list(FRAME_MS),
            },
        }

    # --- watchdog ------------------------------------------------------------------------------
    async def _watch_idle(self) -> None:
        idle = self.settings.stream_idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, self.last_activity + idle - time.monotonic()))
            if self.playing:  # audio is still being made or sent: not idle
                self.last_activity = time.monotonic()
                continue
            if time.monotonic() - self.last_activity >= idle:
                await self._error(StreamError("idle_timeout", f"no message for {idle:g} s; closing "
                                              "(send {\"type\":\"keepalive\"} to keep the socket open)"))
                await self._close(CLOSE_NORMAL, "idle timeout")
                return  # the writer sends the close; the client's answer ends the session

    # --- reader ----------------------------------------------------------------------------------
    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            self.last_activity = time.monotonic()
            try:
                if message.get("text") is None:
                    raise StreamError("binary_not_supported", "binary frames are not accepted; send JSON text "
                                      "messages ({\"type\":\"text\",\"context_id\":...,\"text\":...})")
                await self._handle(message["text"])
            except StreamError as e:
                await self._error(e)

    async def _handle(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise StreamError("invalid_json", f"message is not valid JSON: {e}") from None
        if not isinstance(msg, dict):
            raise StreamError("invalid_json", "a message must be a JSON object with a 'type'")
        kind = msg.get("type")
        handler = {"config": self._on_config, "text": self._on_text, "flush": self._on_flush,
                   "end": self._on_end, "cancel": self._on_cancel, "keepalive": self._on_keepalive}.get(kind)
        cid = msg.get("context_id")
        try:
            if handler is None:
                what = "'type' is missing" if kind is None else f"unknown message type {kind!r}"
                raise StreamError("unknown_type", f"{what}; use config, text, flush, end, cancel or keepalive")
            try:
                await handler(msg)
            except ApiError as e:  # from the shared field parsers (voice, emotion, speed)
                raise StreamError(e.code or "invalid_value", e.message, param=e.param) from None
        except StreamError as e:  # every error about a message names its context, when it has one
            if e.context_id is None and isinstance(cid, str) and 0 < len(cid) <= MAX_CONTEXT_ID_CHARS:
                e.context_id = cid
            raise

    async def _on_keepalive(self, msg: dict) -> None:
        pass  # receiving it already reset the idle timer

    async def _on_config(self, msg: dict) -> None:
        if self.unplayed:
            raise StreamError("config_locked", "config can only change while no context is open or playing "
                              "(send it first, or after the last 'done')")
        output = msg.get("output", {})
        if output is None:
            output = {}
        if not isinstance(output, dict):
            raise StreamError("invalid_field", "'output' must be an object like "
                              "{\"encoding\":\"pcm_s16le\",\"sample_rate\":24000}", param="output")
        encoding = output.get("encoding", self.output.encoding)
        if encoding not in ENCODINGS:
            raise StreamError("unsupported_encoding", f"output.encoding {encoding!r} is not supported; use "
                              f"{' or '.join(ENCODINGS)}", param="output.encoding")
        # A new encoding without a rate starts from the default rate (valid for every encoding).
        default_rate = DEFAULT_OUTPUT["sample_rate"] if "encoding" in output else self.output.sample_rate
        rate = output.get("sample_rate", default_rate)
        if isinstance(rate, bool) or rate not in SAMPLE_RATES[encoding]:
            raise StreamError("unsupported_sample_rate", f"output.sample_rate {rate!r} is not supported for "
                              f"{encoding}; use one of {list(SAMPLE_RATES[encoding])}", param="output.sample_rate")
        frame_ms = output.get("frame_ms", self.output.frame_ms)
        if isinstance(frame_ms, bool) or frame_ms not in FRAME_MS:
            raise StreamError("invalid_field", f"output.frame_ms {frame_ms!r} is not supported; use one of "
                              f"{list(FRAME_MS)}", param="output.frame_ms")
        transport = msg.get("audio_transport", self.transport)
        if transport not in TRANSPORTS:
            raise StreamError("invalid_field", f"audio_transport {transport!r} is not one of {', '.join(TRANSPORTS)}",
                              param="audio_transport")
        delay = msg.get("max_buffer_delay_ms", self.buffer_delay_ms)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_BUFFER_DELAY_MS:
            raise StreamError("invalid_field", f"max_buffer_delay_ms must be a number 0-{MAX_BUFFER_DELAY_MS} "
                              "(0 turns auto-flush off)", param="max_buffer_delay_ms")
        timestamps = msg.get("sentence_timestamps", self.sentence_events)
        if not isinstance(timestamps, bool):
            raise StreamError("invalid_field", "sentence_timestamps must be true or false", param="sentence_timestamps")
        fields = {k: v for k, v in msg.items() if k in OPTION_FIELDS}
        defaults = await asyncio.to_thread(self._parse_options, fields) if fields else None
        # Everything checked: apply all at once.
        self.output = Output(encoding, int(rate), int(frame_ms))
        self.transport = transport
        self.buffer_delay_ms = delay
        self.sentence_events = timestamps
        self.default_fields, self.defaults = fields, defaults
        await self._send(self._ready())
        if defaults is not None and defaults[1]:
            await self._send({"type": "warning", "code": "speed_clamped", "message": defaults[1]})

    def _parse_options(self, fields: dict) -> tuple[SynthesisOptions, str | None]:
        """Voice, emotion and speed in any accepted spelling (runs in a thread: voices may be decoded)."""
        voice = resolve_voice(self.ctx, fields.get("voice"))
        emotion = parse_emotion(self.ctx, fields)
        speed, warning = parse_speed(fields)
        return SynthesisOptions(voice=voice, emotion=emotion, speed=speed), warning

    def _context_id(self, msg: dict, *, required: bool = True) -> str | None:
        cid = msg.get("context_id")
        if cid is None and not required:
            return None
        if not isinstance(cid, str) or not cid or len(cid) > MAX_CONTEXT_ID_CHARS:
            raise StreamError("invalid_field", f"'{msg.get('type')}' needs 'context_id': a non-empty string of at "
                              f"most {MAX_CONTEXT_ID_CHARS} characters", param="context_id")
        return cid

    def _live_turn(self, cid: str, action: str) -> Turn:
        turn = self.turns.get(cid)
        if turn is not None and turn.state == OPEN:
            return turn
        if turn is not None or cid in self.finished:
            state = turn.state if turn is not None else self.finished[cid]
            raise StreamError("context_ended", f"cannot {action} context {cid!r}: it {_STATE_WORDS[state]}; "
                              "use a new context_id", cid)
        raise StreamError("unknown_context", f"cannot {action} context {cid!r}: no text was sent to it", cid)

    async def _on_text(self, msg: dict) -> None:
        cid = self._context_id(msg)
        text = msg.get("text", "")
        if not isinstance(text, str):
            raise StreamError("invalid_field", "'text' must be a string", cid, param="text")
        end = msg.get("end", False)
        if not isinstance(end, bool):
            raise StreamError("invalid_field", "'end' must be true or false", cid, param="end")
        received_at = time.monotonic()
        turn = self.turns.get(cid)
        if turn is None and cid not in self.finished:
            if len(text) > self.settings.max_text_chars:
                raise self._too_long(cid, len(text))
            turn = await self._open(cid, msg)
        else:
            turn = self._live_turn(cid, "add text to")
            ignored = sorted(OPTION_FIELDS.intersection(msg))
            if ignored:
                await self._send({"type": "warning", "code": "settings_ignored", "context_id": cid,
                                  "message": f"{', '.join(ignored)} only apply on a context's first text; ignored"})
        if turn.chars + len(text) > self.settings.max_text_chars:
            raise self._too_long(cid, turn.chars + len(text))
        turn.chars += len(text)
        turn.last_text_at = received_at
        if text:
            await self._submit(turn, turn.splitter.push(text))
            self._arm_timer(turn)
        if end and turn.state == OPEN:
            await self._end(turn)

    def _too_long(self, cid: str, chars: int) -> StreamError:
        return StreamError("text_too_long", f"context {cid!r} would hold {chars} characters; the limit is "
                           f"{self.settings.max_text_chars} per context (this piece was dropped)", cid)

    async def _open(self, cid: str, msg: dict) -> Turn:
        if not self.ctx.ready.is_set():
            raise StreamError("not_ready", "the model is still loading; retry when GET /health returns 200", cid)
        if self.unplayed >= MAX_CONTEXTS:
            raise StreamError("too_many_contexts", f"{self.unplayed} contexts are already open or playing (limit "
                              f"{MAX_CONTEXTS}); end or cancel one first", cid)
        own = {k: v for k, v in msg.items() if k in OPTION_FIELDS}
        try:
            if own:
                options, warning = await asyncio.to_thread(self._parse_options, {**self.default_fields, **own})
            else:
                if self.defaults is None:
                    self.defaults = await asyncio.to_thread(self._parse_options, {})
                options, warning = self.defaults
        except ApiError as e:
            raise StreamError(e.code or "invalid_value", e.message, cid, param=e.param) from None
        s = self.settings
        turn = Turn(cid, self.next_slot, options, IncrementalSplitter(s.max_segment_chars, s.first_clause_min_chars))
        self.next_slot = (self.next_slot + 1) % 65536
        self.turns[cid] = turn
        self.unplayed += 1
        self.order.put_nowait(turn)
        await self._send({"type": "context_started", "context_id": cid, "slot": turn.slot})
        if warning and own:
            await self._send({"type": "warning", "code": "speed_clamped", "context_id": cid, "message": warning})
        return turn

    async def _submit(self, turn: Turn, segments: list[str]) -> None:
        """Queue each segment on the executor now: synthesis runs ahead of playback."""
        for text in segments:
            if turn.state not in (OPEN, ENDED):
                return
            try:
                job = self.ctx.executor.submit(text, turn.options, owner=self.owner)
            except ExecutorBusy as e:
                await self._fail(turn, "server_busy", f"{e}; this context was stopped, retry later")
                return
            except ExecutorClosed:
                await self._fail(turn, "shutting_down", "the server is shutting down")
                await self._close(CLOSE_GOING_AWAY, "server shutting down")
                return
            if turn.first_cut_at is None:
                turn.first_cut_at = turn.last_text_at
            turn.jobs.append(job)
            turn.items.put_nowait(Segment(turn.segments, text, job))
            turn.segments += 1

    def _arm_timer(self, turn: Turn) -> None:
        """(Re)start the context's auto-flush: buffered text is spoken after a pause in the text."""
        turn.stop_timer()
        if self.buffer_delay_ms > 0 and has_content(turn.splitter.pending):
            turn.timer = asyncio.create_task(self._auto_flush(turn, self.buffer_delay_ms / 1000))
            self.timers.add(turn.timer)
            turn.timer.add_done_callback(self.timers.discard)

    async def _auto_flush(self, turn: Turn, delay: float) -> None:
        await asyncio.sleep(delay)
        turn.timer = None  # from here on nobody cancels it: the flush below must complete
        if turn.state == OPEN:
            await self._submit(turn, turn.splitter.flush())

    async def _on_flush(self, msg: dict) -> None:
        cid = self._context_id(msg)
        turn = self._live_turn(cid, "flush")
        turn.stop_timer()
        turn.last_text_at = time.monotonic()
        await self._submit(turn, turn.splitter.flush())
        turn.flushes += 1
        flush_id = msg.get("flush_id", turn.flushes)
        if turn.state == OPEN:
            turn.items.put_nowait(FlushMark(flush_id))

    async def _on_end(self, msg: dict) -> None:
        cid = self._context_id(msg)
        await self._end(self._live_turn(cid, "end"))

    async def _end(self, turn: Turn) -> None:
        turn.stop_timer()
        turn.last_text_at = time.monotonic()
        await self._submit(turn, turn.splitter.end())
        if turn.state == OPEN:
            turn.state = ENDED
            turn.items.put_nowait(END)

    async def _on_cancel(self, msg: dict) -> None:
        cid = self._context_id(msg, required=False)
        if cid is None:
            targets = list(self.turns.values())
            if not targets:
                await self._send({"type": "cancelled", "context_id": None})
        else:
            turn = self.turns.get(cid)
            if turn is None:
                if cid not in self.finished:
                    raise StreamError("unknown_context", f"cannot cancel context {cid!r}: no text was sent to it", cid)
                targets = []  # already over: acknowledge, nothing to stop
                await self._send({"type": "cancelled", "context_id": cid})
            else:
                targets = [turn]
        for turn in targets:
            turn.abort(CANCELLED)
            self._finish(turn)
            await self._send({"type": "cancelled", "context_id": turn.context_id})

    def _finish(self, turn: Turn) -> None:
        """A context reached a final state: forget its live state, remember its id."""
        self.turns.pop(turn.context_id, None)
        self.finished[turn.context_id] = turn.state
        while len(self.finished) > REMEMBERED_CONTEXTS:
            self.finished.popitem(last=False)

    async def _fail(self, turn: Turn, code: str, message: str, **extra: Any) -> None:
        turn.abort(FAILED)
        self._finish(turn)
        await self._error(StreamError(code, message, turn.context_id, **extra))

    # --- player: contexts in creation order, segments in text order ---------------------------
    async def _play(self) -> None:
        while True:
            turn = await self.order.get()
            try:
                await self._play_turn(turn)
            finally:
                self.unplayed -= 1
                self.playing = False
                self.last_activity = time.monotonic()

    async def _play_turn(self, turn: Turn) -> None:
        out = self.output
        encoder: SpeechEncoder | None = None
        seq = 0
        position_s = 0.0  # where the next sentence starts in this context's audio
        while not turn.final:
            self.playing = False
            self.last_activity = max(self.last_activity, time.monotonic())
            item = await turn.items.get()
            self.playing = True
            if turn.final:
                return
            if isinstance(item, Segment):
                try:
                    audio = await item.job.result()
                except Cancelled:
                    if not turn.final:  # not ours: the executor stopped it
                        if not self.ctx.ready.is_set():
                            await self._fail(turn, "shutting_down", "the server is shutting down")
                            await self._close(CLOSE_GOING_AWAY, "server shutting down")
                        else:
                            await self._fail(turn, "synthesis_cancelled", "the server cancelled this context's "
                                             "synthesis", index=item.index)
                    return
                except Exception as e:
                    await self._fail(turn, "synthesis_failed", f"sentence {item.index} could not be "
                                     f"synthesized: {e}", index=item.index)
                    return
                if turn.final:
                    return
                if encoder is None:
                    encoder = SpeechEncoder(audio.sample_rate, out.sample_rate, encoding=out.encoding,
                                            frame_ms=out.frame_ms, silence_ms=self.settings.silence_ms)
                frames = await asyncio.to_thread(encoder.segment, audio.pcm)
                if self.sentence_events:
                    await self._send({"type": "sentence_start", "context_id": turn.context_id, "index": item.index,
                                      "text": item.text, "audio_ms": round(position_s * 1000)}, turn)
                for frame in frames:
                    await self._send_audio(turn, seq, frame)
                    seq += 1
                position_s += audio.duration + self.settings.silence_ms / 1000
                if self.sentence_events:
                    await self._send({"type": "sentence_end", "context_id": turn.context_id, "index": item.index,
                                      "duration_ms": round(audio.duration * 1000)}, turn)
            elif isinstance(item, FlushMark):
                await self._send({"type": "flushed", "context_id": turn.context_id, "flush_id": item.flush_id}, turn)
            elif item is END:
                for frame in encoder.finish() if encoder is not None else []:
                    await self._send_audio(turn, seq, frame)
                    seq += 1
                turn.state = DONE
                self._finish(turn)
                await self._send({"type": "done", "context_id": turn.context_id, "audio_ms": seq * out.frame_ms,
                                  "chars": turn.chars, "sentences": turn.segments})

    async def _send_audio(self, turn: Turn, seq: int, frame: bytes) -> None:
        if self.transport == "base64":
            payload: Any = {"type": "audio", "context_id": turn.context_id, "seq": seq,
                            "data": base64.b64encode(frame).decode("ascii")}
        else:
            payload = HEADER.pack(FORMAT_VERSION, KIND_AUDIO, turn.slot, seq & 0xFFFFFFFF) + frame
        await self._send(payload, turn, audio=True)


def stream_routes(ctx) -> list:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        session = StreamSession(ctx, websocket)
        log.info("agent stream %s opened", session.id)
        with ctx.metrics.connection("stream"):
            await session.run()
        log.info("agent stream %s closed", session.id)

    return [WebSocketRoute(PATH, endpoint)]
