"""The xiaozhi ESP32 device endpoint: ``WS /xiaozhi/v1/`` (protocols.md Part 1 and §5.1).

A device connects as it would to xiaozhi-esp32-server, says hello and then waits to be
spoken to. We are TTS only: uplink audio is parsed and dropped, and the text to speak
comes from the control API (``POST /v1/xiaozhi/devices/{id}/speak``, server/control.py),
from an in-band ``{"type":"speak",...}`` frame (gateways, test clients) or from another
part of the server through ``XiaozhiSession.open_turn`` (streamed LLM text).

One connection = one ``XiaozhiSession`` with three tasks, each the only owner of its state:

* the reader (the endpoint coroutine) parses frames and answers hello/ping/abort;
* the speaker plays ``Turn``s one after another: a speak while speaking queues behind the
  current turn (a barge-in ``abort`` drops the current and every queued turn);
* each turn's segments are synthesized by the shared executor, all submitted at once, and
  the speaker sends each segment's packets as soon as its job finishes, paced by
  ``pacing.Pacer`` (pre-buffer, then real time), with ``sentence_start`` in-band.

Turn on the wire: ``tts start`` (>= 100 ms before the first packet, and never before the
device's first ``listen`` after hello, or ``LISTEN_GRACE_S``), optionally ``llm`` with the
emotion label, ``sentence_start`` + 60 ms Opus packets per sentence with 200 ms of encoded
silence between sentences, then ``tts stop`` once the device has played the tail.

Bad input never ends the connection once the hello is done: it is answered with
``{"type":"error","code","message","session_id"}`` (firmware ignores unknown types, so this
is harmless to real devices). Before the hello, anything but a hello closes with 1008 and a
reason, as does an unsupported protocol version or a missing hello. An engine failure
skips that sentence (error frame) and the turn goes on. The connection closes after
``xiaozhi_idle_timeout_s`` without traffic either way while no turn is playing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..audio.stream import SpeechEncoder
from ..engine.base import Cancelled, SynthesisOptions
from ..engine.executor import ExecutorBusy, ExecutorClosed, SynthesisJob
from .emotion_forms import XIAOZHI_EMOTION_MAP, xiaozhi_emotion
from ..text.segment import IncrementalSplitter
from .http_errors import ApiError, invalid
from .pacing import Pacer
from .params import parse_emotion, parse_speed, require_text, resolve_voice

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # downlink Opus rate we announce (the firmware default)
FRAME_MS = 60
PROTOCOL_VERSIONS = (1, 2, 3)
START_GAP_S = 0.12  # tts start -> first packet: the device resets its decoder on entering Speaking
LISTEN_GRACE_S = 1.0  # speak this long after hello even if the device never sent `listen`
STOP_MARGIN_S = 0.12  # tts stop goes this long after the device has played the last packet
TURN_IDLE_END_S = 15.0  # an open turn that gets no text for this long is ended (it blocks later turns)
BAD_FRAME_REPORT_EVERY = 50  # report malformed uplink frames: the first, then every Nth

# xiaozhi `llm` message: the firmware reads `emotion`; `text` is the label's emoji.
EMOJI = {
    "neutral": "😶", "happy": "🙂", "laughing": "😆", "funny": "😂", "sad": "😔", "angry": "😠",
    "crying": "😭", "loving": "😍", "embarrassed": "😳", "surprised": "😯", "shocked": "😱",
    "thinking": "🤔", "winking": "😉", "cool": "😎", "relaxed": "😌", "delicious": "🤤",
    "kissy": "😘", "confident": "😏", "sleepy": "😴", "silly": "😜", "confused": "🙄",
}


# --- binary frames (§1.5) ----------------------------------------------------------------

class FrameError(ValueError):
    """A binary frame does not match the connection's protocol version."""


@dataclass(frozen=True)
class AudioFrame:
    payload: bytes
    timestamp_ms: int | None = None  # v2 only


def pack_audio(version: int, payload: bytes, timestamp_ms: int = 0) -> bytes:
    """One Opus packet framed for binary protocol ``version`` (all header fields big-endian)."""
    if version == 1:
        return bytes(payload)
    if version == 2:
        return struct.pack(">HHIII", 2, 0, 0, timestamp_ms & 0xFFFFFFFF, len(payload)) + payload
    if version == 3:
        if len(payload) > 0xFFFF:
            raise FrameError(f"v3 payload of {len(payload)} bytes does not fit its 16-bit size field")
        return struct.pack(">BBH", 0, 0, len(payload)) + payload
    raise FrameError(f"unsupported protocol version {version}")


def unpack_audio(version: int, data: bytes) -> AudioFrame:
    """Parse one binary frame; ``FrameError`` names what is wrong with it."""
    if version == 1:
        return AudioFrame(bytes(data))
    if version == 2:
        if len(data) < 16:
            raise FrameError(f"v2 frame of {len(data)} bytes is shorter than its 16-byte header")
        ver, _type, _reserved, timestamp, size = struct.unpack_from(">HHIII", data)
        if ver != 2:
            raise FrameError(f"v2 frame header says version {ver}")
        if size != len(data) - 16:
            raise FrameError(f"v2 frame header says {size} payload bytes, frame has {len(data) - 16}")
        return AudioFrame(bytes(data[16:]), timestamp)
    if version == 3:
        if len(data) < 4:
            raise FrameError(f"v3 frame of {len(data)} bytes is shorter than its 4-byte header")
        _type, _reserved, size = struct.unpack_from(">BBH", data)
        if size != len(data) - 4:
            raise FrameError(f"v3 frame header says {size} payload bytes, frame has {len(data) - 4}")
        return AudioFrame(bytes(data[4:]))
    raise FrameError(f"unsupported protocol version {version}")


def parse_version(raw: Any) -> int:
    """A protocol version from a header string or a hello field; ``ValueError`` if unsupported."""
    try:
        version = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"protocol version {raw!r} is not a number; use 1, 2 or 3") from None
    if version not in PROTOCOL_VERSIONS:
        raise ValueError(f"unsupported protocol version {version}; use 1, 2 or 3")
    return version


# --- what to speak ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeakRequest:
    text: str
    options: SynthesisOptions
    emotion_label: str | None  # a xiaozhi label, also sent to the device as `llm.emotion`
    warnings: tuple[str, ...] = ()


def parse_speak(ctx, fields: dict, *, allow_empty: bool = False) -> SpeakRequest:
    """``{text, voice?, emotion?, speed?}`` -> a request; bad fields raise ``ApiError``.

    ``emotion`` as one of the xiaozhi ``llm.emotion`` labels uses the device mapping
    (``xiaozhi_emotion``, §5.1 item 10) and is echoed to the device; any other spelling goes
    through the shared parser (vectors, the 8 IndexTTS2 labels, free text ...).
    """
    if allow_empty and fields.get("text") in (None, ""):
        text = ""
    else:
        text = require_text(fields, "text", ctx.settings.max_text_chars)
    voice = resolve_voice(ctx, fields.get("voice"), param="voice")
    label = None
    emo = fields.get("emotion")
    if isinstance(emo, str) and emo.strip().lower() in XIAOZHI_EMOTION_MAP:
        label = emo.strip().lower()
        emotion = xiaozhi_emotion(label)
    else:
        emotion = parse_emotion(ctx, fields)
    speed, warning = parse_speed(fields)
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed)
    return SpeakRequest(text, options, label, (warning,) if warning else ())


class Turn:
    """One stretch of speech from ``tts start`` to ``tts stop``; text may arrive in pieces.

    ``push`` cuts the text into segments and submits each to the executor at once;
    ``end`` says no more text follows. Text that waits for a sentence boundary is flushed
    after ``max_buffer_delay_ms`` without new text, and an open turn that gets no text for
    ``TURN_IDLE_END_S`` is ended, so a forgotten ``end`` cannot hold the device. ``state``: queued, speaking, done,
    aborted or closed. ``await wait()`` returns the final state.
    """

    def __init__(self, session: XiaozhiSession, turn_id: str, options: SynthesisOptions,
                 emotion_label: str | None = None) -> None:
        settings = session.ctx.settings
        self.session = session
        self.id = turn_id
        self.options = options
        self.emotion_label = emotion_label
        self.state = "queued"
        self.chars = 0
        self.segments: list[str] = []
        self.errors: list[str] = []  # segments the engine failed on (skipped)
        self.created_at = time.monotonic()
        self.first_text_at: float | None = None
        self.first_audio_at: float | None = None
        self.ended = False
        self.task: asyncio.Task | None = None  # the speaker's playback of this turn
        self._splitter = IncrementalSplitter(settings.max_segment_chars, settings.first_clause_min_chars)
        self._max_chars = settings.max_text_chars
        self._flush_delay = settings.max_buffer_delay_ms / 1000
        self._flush_timer: asyncio.TimerHandle | None = None
        self._end_timer: asyncio.TimerHandle | None = None
        self._items: asyncio.Queue[tuple[str, SynthesisJob] | None] = asyncio.Queue()
        self._jobs: list[SynthesisJob] = []
        self._done = asyncio.get_running_loop().create_future()

    @property
    def finished(self) -> bool:
        return self._done.done()

    def push(self, text: str) -> list[str]:
        """Add text; returns the segments submitted now. ``ApiError`` on a closed or overlong turn."""
        if self.ended or self.finished:
            raise invalid(f"turn {self.id} has ended; start a new one", code="turn_ended")
        if self.chars + len(text) > self._max_chars:
            raise invalid(f"turn text would be {self.chars + len(text)} characters; the limit is "
                          f"{self._max_chars}", param="text", code="string_above_max_length")
        self.chars += len(text)
        if text and self.first_text_at is None:
            self.first_text_at = time.monotonic()
        segments = self._submit(self._splitter.push(text))
        self._arm_flush()
        return segments

    def flush(self) -> list[str]:
        """Synthesize the text still waiting for a sentence boundary."""
        if self.ended or self.finished:
            return []
        return self._submit(self._splitter.flush())

    def end(self) -> list[str]:
        """No more text: the last segments are submitted and playback ends after them."""
        if self.ended:
            return []
        self.ended = True
        self._cancel_flush()
        segments = [] if self.finished else self._submit(self._splitter.end())
        self._items.put_nowait(None)
        return segments

    def cancel(self, state: str = "aborted") -> None:
        """Drop all synthesis and playback of this turn (idempotent)."""
        self._cancel_flush()
        for job in self._jobs:
            job.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._finish(state)

    async def wait(self) -> str:
        return await asyncio.shield(self._done)

    def describe(self) -> dict:
        return {"turn_id": self.id, "state": self.state, "segments": list(self.segments),
                "errors": list(self.errors)}

    # --- internals -------------------------------------------------------------------------
    def _submit(self, segments: list[str]) -> list[str]:
        out = []
        for text in segments:
            try:
                job = self.session.ctx.executor.submit(text, self.options, owner=self.session.owner)
            except (ExecutorBusy, ExecutorClosed):
                self.cancel("aborted")
                raise
            self._jobs.append(job)
            self.segments.append(text)
            self._items.put_nowait((text, job))
            out.append(text)
        return out

    def _arm_flush(self) -> None:
        self._cancel_flush()
        if self.ended or self.finished:
            return
        loop = asyncio.get_running_loop()
        if self._splitter.pending:
            self._flush_timer = loop.call_later(self._flush_delay, self._timed_flush)
        self._end_timer = loop.call_later(TURN_IDLE_END_S, self._timed_end)

    def _timed_end(self) -> None:
        self._end_timer = None
        if not self.ended:
            log.info("turn %s: no text for %g s; ending it", self.id, TURN_IDLE_END_S)
            try:
                self.end()
            except (ExecutorBusy, ExecutorClosed) as e:
                log.warning("turn %s: final segments refused: %s", self.id, e)
                self.cancel("aborted")

    def _timed_flush(self) -> None:
        self._flush_timer = None
        try:
            self.flush()
        except (ExecutorBusy, ExecutorClosed) as e:
            log.warning("turn %s: auto-flush refused: %s", self.id, e)

    def _cancel_flush(self) -> None:
        for timer in (self._flush_timer, self._end_timer):
            if timer is not None:
                timer.cancel()
        self._flush_timer = self._end_timer = None

    def _finish(self, state: str) -> None:
        if not self._done.done():
            self.state = state
            self._done.set_result(state)
            self._items.put_nowait(None)  # wakes a speaker waiting for text



# --- one connection ------------------------------------------------------------------------

class ConnectionGone(Exception):
    """The socket is closed or closing; stop sending."""


class XiaozhiSession:
    """One connected device. Public: ``device_id``, ``client_id``, ``session_id``, ``version``,
    ``features``, ``uplink_audio_params``, ``listen_state``, ``listen_mode``, ``connected_at``,
    ``current_turn``, ``queued_turns``, ``uplink_frames``, ``bad_frames``; ``speak``,
    ``open_turn``, ``abort``, ``close``, ``describe``."""

    def __init__(self, ctx, websocket: WebSocket) -> None:
        self.ctx = ctx
        self.ws = websocket
        settings = ctx.settings
        self.session_id = str(uuid.uuid4())
        self.owner = f"xiaozhi-{self.session_id[:12]}"
        self.connected_at = time.time()
        headers, query = websocket.headers, websocket.query_params
        self.device_id = headers.get("device-id") or query.get("device-id") or ""
        self.client_id = headers.get("client-id") or query.get("client-id") or ""
        self._version_raw = headers.get("protocol-version") or query.get("protocol-version")
        self.version = 1
        self.features: dict = {}
        self.uplink_audio_params: dict = {}
        self.listen_state: str | None = None
        self.listen_mode: str | None = None
        self.current_turn: Turn | None = None
        self.uplink_frames = 0
        self.bad_frames = 0
        self._turns: asyncio.Queue[Turn] = asyncio.Queue()
        self._inband: Turn | None = None  # the open turn of in-band `speak` with flush:false
        self._turn_count = 0
        self._listening = asyncio.Event()
        self._hello_at: float | None = None
        self._t0 = time.monotonic()  # session clock for v2 timestamps
        self._last_activity = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._socket_closed = False
        self._speaker: asyncio.Task | None = None
        self._encoder = SpeechEncoder(ctx.engine.sample_rate, SAMPLE_RATE, frame_ms=FRAME_MS,
                                      silence_ms=settings.silence_ms)
        self._encoder_lock = threading.Lock()  # encoding runs in a worker thread

    # --- public API -------------------------------------------------------------------------
    @property
    def queued_turns(self) -> int:
        return self._turns.qsize()

    def describe(self) -> dict:
        return {"device_id": self.device_id, "client_id": self.client_id, "session_id": self.session_id,
                "protocol_version": self.version, "features": self.features,
                "listen_state": self.listen_state, "listen_mode": self.listen_mode,
                "connected_at": int(self.connected_at),
                "speaking": self.current_turn is not None, "queued_turns": self.queued_turns}

    def open_turn(self, options: SynthesisOptions, emotion_label: str | None = None) -> Turn:
        """A new turn, queued behind the current one; feed it with ``push`` and ``end``.

        Call it and the turn's methods on the server's event loop.
        """
        turn = self._new_turn(options, emotion_label)
        self._turns.put_nowait(turn)
        return turn

    def speak(self, request: SpeakRequest) -> Turn:
        """Queue a whole text as one turn (behind the current one); returns the turn."""
        turn = self._new_turn(request.options, request.emotion_label)
        try:
            turn.push(request.text)
            turn.end()
            if not turn.segments:
                raise invalid("the text has nothing speakable in it", param="text", code="empty_input")
        except BaseException:
            turn.cancel("aborted")
            raise
        self._turns.put_nowait(turn)
        return turn

    def _new_turn(self, options: SynthesisOptions, emotion_label: str | None) -> Turn:
        if self._closing:
            raise ApiError(409, f"device {self.device_id!r} is disconnecting", code="device_closing")
        self._turn_count += 1
        return Turn(self, f"{self.session_id[:8]}-{self._turn_count}", options, emotion_label)

    async def abort(self, reason: str | None = None) -> int:
        """Barge-in: drop the current and every queued turn; the device gets `tts stop` at once.

        Returns how many turns were dropped.
        """
        dropped = 0
        while not self._turns.empty():
            self._turns.get_nowait().cancel("aborted")
            dropped += 1
        self._inband = None
        self.ctx.executor.cancel_owner(self.owner)
        turn = self.current_turn
        if turn is not None and not turn.finished:
            log.info("xiaozhi %s: abort (%s) while speaking", self.device_id, reason or "button")
            turn.cancel("aborted")  # the speaker resets the encoder and sends `tts stop`
            dropped += 1
        else:
            with contextlib.suppress(ConnectionGone):
                await self._send_json({"type": "tts", "state": "stop"})
        return dropped

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent): drops all speech, then the socket."""
        if self._closing:
            return
        self._closing = True
        self._drop_all("closed")
        if self._speaker is not None:
            self._speaker.cancel()
        await self._close_socket(code, reason)

    async def _close_socket(self, code: int, reason: str) -> None:
        if self._socket_closed:
            return
        self._socket_closed = True
        with contextlib.suppress(Exception):  # the client may be gone already
            await self.ws.close(code, reason.encode()[:120].decode(errors="ignore"))

    # --- connection lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        await self.ws.accept()
        if self._version_raw is not None:
            try:
                self.version = parse_version(self._version_raw)
            except ValueError as e:
                await self.close(1008, f"Protocol-Version: {e}")
                return
        try:
            if not await self._handshake():
                return
            # Registered and speaking-ready before the device sees our hello, so a control-API
            # call made right after the device connects finds it.
            await self._register()
            self._speaker = asyncio.create_task(self._speak_loop(), name=f"xiaozhi-speaker-{self.device_id}")
            await self._send_hello()
            await self._read_loop()
        except ConnectionGone:
            pass
        finally:
            self._closing = True
            self._drop_all("closed")
            if self._speaker is not None:
                self._speaker.cancel()
                await asyncio.wait({self._speaker})
            if self.device_id and self.ctx.devices.get(self.device_id) is self:
                del self.ctx.devices[self.device_id]
            await self._close_socket(1000, "")
            log.info("xiaozhi %s: disconnected", self.device_id or "?")

    async def _receive(self, timeout: float) -> dict | None:
        """The next ASGI message, or None when ``timeout`` passes first."""
        try:
            return await asyncio.wait_for(self.ws.receive(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            return None

    async def _handshake(self) -> bool:
        """Wait for the device hello; False when the connection is over."""
        timeout = self.ctx.settings.xiaozhi_hello_timeout_s
        deadline = time.monotonic() + timeout
        while True:
            message = await self._receive(deadline - time.monotonic())
            if message is None:
                self.ctx.metrics.error("xiaozhi_hello_timeout")
                await self.close(1008, f"no hello message within {timeout:g} s")
                return False
            if message["type"] == "websocket.disconnect":
                return False
            if message.get("bytes") is not None:
                continue  # audio before hello: nothing to attach it to
            try:
                hello = json.loads(message.get("text") or "")
            except json.JSONDecodeError:
                hello = None
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                kind = hello.get("type") if isinstance(hello, dict) else "non-JSON text"
                self.ctx.metrics.error("xiaozhi_bad_hello")
                await self.close(1008, f"expected a hello message first, got {str(kind)[:40]!r}")
                return False
            if self._version_raw is None and hello.get("version") is not None:
                try:
                    self.version = parse_version(hello["version"])
                except ValueError as e:
                    self.ctx.metrics.error("xiaozhi_bad_hello")
                    await self.close(1008, f"hello.version: {e}")
                    return False
            elif hello.get("version") is not None and str(hello["version"]).strip() != str(self.version):
                log.warning("xiaozhi %s: hello version %r differs from Protocol-Version %d; using the header",
                            self.device_id, hello["version"], self.version)
            self._remember_hello(hello)
            return True

    def _remember_hello(self, hello: dict) -> None:
        if isinstance(hello.get("features"), dict):
            self.features = hello["features"]
        if isinstance(hello.get("audio_params"), dict):
            self.uplink_audio_params = hello["audio_params"]
        self._hello_at = time.monotonic()

    async def _send_hello(self) -> None:
        await self._send_json({"type": "hello", "transport": "websocket", "version": self.version,
                               "audio_params": {"format": "opus", "sample_rate": SAMPLE_RATE, "channels": 1,
                                                "frame_duration": FRAME_MS}})

    async def _register(self) -> None:
        if not self.device_id:
            self.device_id = f"anonymous-{self.session_id[:8]}"
            log.warning("xiaozhi: a device connected without Device-Id; calling it %s", self.device_id)
        previous = self.ctx.devices.get(self.device_id)
        self.ctx.devices[self.device_id] = self
        if previous is not None and previous is not self:
            log.info("xiaozhi %s: new connection replaces the old one", self.device_id)
            await previous.close(1000, "replaced by a newer connection from the same device")
        log.info("xiaozhi %s: connected (client %s, protocol v%d, session %s)", self.device_id,
                 self.client_id or "?", self.version, self.session_id)

    async def _read_loop(self) -> None:
        idle = self.ctx.settings.xiaozhi_idle_timeout_s
        while not self._closing:
            message = await self._receive(self._last_activity + idle - time.monotonic())
            if message is None:
                busy = self.current_turn is not None or self.queued_turns
                if not busy and time.monotonic() - self._last_activity >= idle:
                    await self.close(1000, f"idle for {idle:g} s")
                    return
                if busy:  # a turn waiting for slow synthesis is not idle
                    self._last_activity = time.monotonic()
                continue
            if message["type"] == "websocket.disconnect":
                return
            self._last_activity = time.monotonic()
            try:
                if message.get("bytes") is not None:
                    await self._on_binary(message["bytes"])
                elif message.get("text") is not None:
                    await self._on_text(message["text"])
            except ConnectionGone:
                return

    async def _on_binary(self, data: bytes) -> None:
        if not data:
            return
        try:
            unpack_audio(self.version, data)
        except FrameError as e:
            self.bad_frames += 1
            if self.bad_frames % BAD_FRAME_REPORT_EVERY == 1:
                self.ctx.metrics.error("xiaozhi_bad_frame")
                log.info("xiaozhi %s: malformed uplink frame: %s", self.device_id, e)
                await self._send_error("invalid_frame", f"{e} (protocol version {self.version}; "
                                       f"{self.bad_frames} malformed frame(s) dropped so far)")
            return
        self.uplink_frames += 1  # TTS only: uplink audio is accepted and dropped

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as e:
            await self._send_error("invalid_json", f"text frame is not valid JSON: {e}")
            return
        if not isinstance(message, dict):
            await self._send_error("invalid_message", "a JSON message must be an object with a 'type'")
            return
        kind = message.get("type")
        if kind == "hello":
            self._remember_hello(message)
            await self._send_hello()
        elif kind == "listen":
            self.listen_state = message.get("state", self.listen_state)
            self.listen_mode = message.get("mode", self.listen_mode)
            self._listening.set()
        elif kind == "abort":
            await self.abort(message.get("reason"))
        elif kind == "speak":
            await self._on_speak(message)
        elif kind == "ping":
            await self._send_json({"type": "pong"})
        elif kind in ("mcp", "iot"):
            log.debug("xiaozhi %s: ignoring %s message", self.device_id, kind)
        elif kind is None:
            await self._send_error("invalid_message", "message has no 'type'")
        else:
            log.debug("xiaozhi %s: unknown message type %r", self.device_id, kind)
            await self._send_error("unknown_type", f"unknown message type {str(kind)[:40]!r} ignored")

    async def _on_speak(self, message: dict) -> None:
        """In-band ``speak``: a whole turn, or with ``flush: false`` a piece of an open turn."""
        more = message.get("flush") is False
        try:
            if self._inband is not None and not self._inband.finished:
                turn = self._inband
                text = message.get("text") or ""
                if not isinstance(text, str):
                    raise invalid("'text' must be a string", param="text")
                turn.push(text)
                if not more:
                    self._inband = None
                    turn.end()
                return
            request = parse_speak(self.ctx, message, allow_empty=more)
            for warning in request.warnings:
                await self._send_json({"type": "warning", "code": "speed_clamped", "message": warning})
            if more:
                self._inband = self.open_turn(request.options, request.emotion_label)
                self._inband.push(request.text)
            else:
                self.speak(request)
        except ApiError as e:
            self.ctx.metrics.error("xiaozhi_bad_request")
            await self._send_error(e.code or "invalid_request", e.message)
        except ExecutorBusy as e:
            self.ctx.metrics.error("busy")
            await self._send_error("server_busy", str(e))
        except ExecutorClosed as e:
            await self._send_error("shutting_down", str(e))

    # --- the speaker ------------------------------------------------------------------------------
    def _drop_all(self, state: str) -> None:
        while not self._turns.empty():
            self._turns.get_nowait().cancel(state)
        if self.current_turn is not None:
            self.current_turn.cancel(state)
        self._inband = None
        self.ctx.executor.cancel_owner(self.owner)

    async def _speak_loop(self) -> None:
        while True:
            turn = await self._turns.get()
            if turn.finished:
                continue
            self.current_turn = turn
            turn.task = asyncio.create_task(self._play(turn))
            try:
                await asyncio.wait({turn.task})
            except asyncio.CancelledError:  # the session is closing: stop playback first
                turn.task.cancel()
                await asyncio.wait({turn.task})
                raise
            finally:
                self.current_turn = None
            error = None if turn.task.cancelled() else turn.task.exception()
            if isinstance(error, ConnectionGone) or self._closing:
                turn.cancel("closed")
                return
            if error is not None:
                log.error("xiaozhi %s: playback failed", self.device_id, exc_info=error)
                self.ctx.metrics.error("xiaozhi_internal")
                turn.cancel("aborted")
            if turn.state == "aborted":  # barge-in: fresh codec state, and the device waits for stop
                await asyncio.to_thread(self._reset_encoder)
                try:
                    await self._send_json({"type": "tts", "state": "stop"})
                except ConnectionGone:
                    return

    async def _wait_until_listening(self) -> None:
        """Connecting->Speaking is ignored by the firmware: wait for its first `listen`."""
        if self._listening.is_set() or self._hello_at is None:
            return
        remaining = self._hello_at + LISTEN_GRACE_S - time.monotonic()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=max(0.0, remaining))

    async def _play(self, turn: Turn) -> None:
        turn.state = "speaking"
        settings = self.ctx.settings
        await self._wait_until_listening()
        await self._send_json({"type": "tts", "state": "start"})
        not_before = time.monotonic() + START_GAP_S
        if turn.emotion_label:
            await self._send_json({"type": "llm", "emotion": turn.emotion_label,
                                   "text": EMOJI.get(turn.emotion_label, "🙂")})
        pacer = Pacer(frame_ms=FRAME_MS, prebuffer_packets=settings.xiaozhi_prebuffer_packets,
                      max_lead_ms=settings.xiaozhi_max_lead_ms)
        subtitle: str | None = None
        while True:
            item = await turn._items.get()
            if item is None:
                if turn.finished:
                    return
                break
            text, job = item
            try:
                audio = await job.result()
            except Cancelled:
                if turn.finished:
                    return
                turn.errors.append(text)  # cancelled from elsewhere (executor shutting down)
                continue
            except Exception as e:  # this sentence is lost; the turn goes on
                log.warning("xiaozhi %s: segment %r failed: %s", self.device_id, text[:60], e)
                self.ctx.metrics.error("engine_error")
                turn.errors.append(text)
                await self._send_error("engine_error", f"synthesis failed for {text[:60]!r}: {e}")
                continue
            if audio.sample_rate != self._encoder.input_rate:
                raise RuntimeError(f"engine returned {audio.sample_rate} Hz, expected {self._encoder.input_rate}")
            subtitle = text
            packets = await asyncio.to_thread(self._encode, audio.pcm)
            subtitle = await self._send_packets(turn, packets, pacer, not_before, subtitle)
        tail = await asyncio.to_thread(self._encode, None)
        await self._send_packets(turn, tail, pacer, not_before, None)
        if pacer.drained_at is not None:
            await asyncio.sleep(max(0.0, pacer.drained_at + STOP_MARGIN_S - time.monotonic()))
        await self._send_json({"type": "tts", "state": "stop"})
        turn._finish("done")

    async def _send_packets(self, turn: Turn, packets: list[bytes], pacer: Pacer, not_before: float,
                            subtitle: str | None) -> str | None:
        """Send packets on the pacer's schedule; the pending subtitle goes with the first one."""
        for packet in packets:
            wait = max(pacer.due(), not_before) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if subtitle is not None:
                await self._send_json({"type": "tts", "state": "sentence_start", "text": subtitle})
                subtitle = None
            timestamp = int((time.monotonic() - self._t0) * 1000)
            await self._send_bytes(pack_audio(self.version, packet, timestamp))
            pacer.sent()
            if turn.first_audio_at is None:
                turn.first_audio_at = time.monotonic()
                self.ctx.metrics.observe_ttfa("xiaozhi", turn.first_audio_at - (turn.first_text_at or turn.created_at))
        return subtitle

    def _encode(self, pcm) -> list[bytes]:
        with self._encoder_lock:
            return self._encoder.finish() if pcm is None else self._encoder.segment(pcm)

    def _reset_encoder(self) -> None:
        with self._encoder_lock:
            self._encoder.reset()

    # --- sending ------------------------------------------------------------------------------------
    async def _send_json(self, message: dict) -> None:
        await self._send({"type": "websocket.send", "text": json.dumps({**message, "session_id": self.session_id},
                                                                       ensure_ascii=False)})

    async def _send_error(self, code: str, message: str) -> None:
        await self._send_json({"type": "error", "code": code, "message": message})

    async def _send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def _send(self, message: dict) -> None:
        if self._closing:
            raise ConnectionGone()
        async with self._send_lock:
            try:
                await self.ws.send(message)
            except Exception as e:  # client gone mid-send (disconnect, reset)
                raise ConnectionGone() from e
        self._last_activity = time.monotonic()


def xiaozhi_routes(ctx) -> list:
    async def endpoint(websocket: WebSocket) -> None:
        session = XiaozhiSession(ctx, websocket)
        with ctx.metrics.connection("xiaozhi"):
            await session.run()

    return [WebSocketRoute("/xiaozhi/v1/", endpoint), WebSocketRoute("/xiaozhi/v1", endpoint)]
