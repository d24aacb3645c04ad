"""The xiaozhi ESP32 device endpoint: ``WS /xiaozhi/v1/`` (protocols.md Part 1 and §5.1).

A device connects as it would to xiaozhi-esp32-server, says hello and then waits to be
spoken to. We are TTS only: uplink audio is parsed and dropped, and the text to speak
comes from the control API (``POST /v1/xiaozhi/devices/{id}/speak``, server/control.py),
from an in-band ``{"type":"speak",...}`` frame (gateways, test clients) or from another
part of the server through ``XiaozhiSession.open_turn`` (streamed LLM text).

What the device says is decided by ``XiaozhiProtocol`` (``xiaozhi_protocol.py``, Sans-I/O);
this module is the I/O around it. One connection = one ``XiaozhiSession``, its tasks each the
only owner of their state:

* the reader (``DeviceReader``, a task the endpoint coroutine starts and awaits) feeds frames
  to the protocol, and the session performs its actions (in-band ``speak`` frames through
  ``InBandSpeech``, which holds a turn that arrives in pieces);
* the speaker (``TurnPlayer``, which owns the bounded turn queue) takes ``Turn``s one after
  another (a speak while speaking queues behind the current turn; a barge-in ``abort`` drops
  the current and every queued turn) and plays each in a playback task;
* each turn is one ``SpeechStream`` (``speech.py``): it cuts the text, synthesizes on the shared
  executor at most a bounded lead ahead of what the device has played (the pacer's virtual
  clock), encodes 60 ms Opus packets off the loop, and is closed when the turn ends. A queued
  turn cuts its text but synthesizes nothing until the speaker takes it.

Turn on the wire: ``tts start`` (>= 100 ms before the first packet, and never before the
device's first ``listen`` after hello, or ``LISTEN_GRACE_S``), optionally ``llm`` with the
emotion label, ``sentence_start`` + 60 ms Opus packets per sentence with 200 ms of encoded
silence between sentences, then ``tts stop`` once the device has played the tail.

Bad input never ends the connection once the hello is done: it is answered with
``{"type":"error","code","message","session_id"}`` (firmware ignores unknown types, so this
is harmless to real devices). Before the hello, anything but a hello closes with 1008 and a
reason, as does an unsupported protocol version or a missing hello. An engine failure
skips that sentence (error frame) and the turn goes on. The connection closes after
``xiaozhi_idle_timeout_s`` without traffic either way while no turn is playing, and a device
that accepts nothing for ``write_timeout_s`` is dropped (close 1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from ..audio.stream import SpeechEncoder
from ..engine.base import Cancelled, SynthesisOptions
from ..engine.executor import ExecutorBusy, ExecutorClosed
from .emotion_forms import XIAOZHI_EMOTION_MAP, xiaozhi_emotion
from . import xiaozhi_protocol as proto
from .http_errors import ApiError, invalid
from .lifecycle import stream_of
from .pacing import Pacer
from .capabilities import Notice, engine_notices
from .params import parse_emotion, parse_language, parse_speed, require_text, resolve_voice
from .speech import Failure, Sentence, SpeechStream, Tail
from .xiaozhi_protocol import (FRAME_MS, SAMPLE_RATE, AudioFrame, DeviceError, FrameError, XiaozhiProtocol,
                               pack_audio, parse_version, unpack_audio)

__all__ = ["AudioFrame", "FrameError", "SpeakRequest", "Turn", "XiaozhiSession", "pack_audio", "parse_speak",
           "parse_version", "unpack_audio", "xiaozhi_routes"]

log = logging.getLogger(__name__)

START_GAP_S = 0.12  # tts start -> first packet: the device resets its decoder on entering Speaking
LISTEN_GRACE_S = 1.0  # speak this long after hello even if the device never sent `listen`
STOP_MARGIN_S = 0.12  # tts stop goes this long after the device has played the last packet
TURN_IDLE_END_S = 15.0  # an open turn that gets no text for this long is ended (it blocks later turns)
MAX_QUEUED_TURNS = 16  # turns waiting behind the current one, per device
CLOSE_TIMEOUT_S = 2.0  # a close frame the client does not take in this long is abandoned

# xiaozhi `llm` message: the firmware reads `emotion`; `text` is the label's emoji.
EMOJI = {
    "neutral": "😶", "happy": "🙂", "laughing": "😆", "funny": "😂", "sad": "😔", "angry": "😠",
    "crying": "😭", "loving": "😍", "embarrassed": "😳", "surprised": "😯", "shocked": "😱",
    "thinking": "🤔", "winking": "😉", "cool": "😎", "relaxed": "😌", "delicious": "🤤",
    "kissy": "😘", "confident": "😏", "sleepy": "😴", "silly": "😜", "confused": "🙄",
}


# --- what to speak ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeakRequest:
    text: str
    options: SynthesisOptions
    emotion_label: str | None  # a xiaozhi label, also sent to the device as `llm.emotion`
    warnings: tuple[Notice, ...] = ()  # what the server will not do as asked (clamped, ignored)


def parse_speak(ctx, fields: dict, *, allow_empty: bool = False) -> SpeakRequest:
    """``{text, voice?, emotion?, speed?, language?}`` -> a request; bad fields raise ``ApiError``.

    ``emotion`` as one of the xiaozhi ``llm.emotion`` labels uses the device mapping
    (``xiaozhi_emotion``, §5.1 item 10) and is echoed to the device; any other spelling goes
    through the shared parser (vectors, the 8 IndexTTS2 labels, free text ...). Blocks on
    voice files: call it on the codec pool.
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
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=parse_language(ctx, fields))
    notices = [Notice("speed_clamped", warning)] if warning else []
    return SpeakRequest(text, options, label, tuple(notices + engine_notices(ctx.engine, options)))


class Turn:
    """One stretch of speech from ``tts start`` to ``tts stop``; text may arrive in pieces.

    ``push`` cuts the text into segments (``stream``); ``end`` says no more text follows.
    Text that waits for a sentence boundary is flushed after ``max_buffer_delay_ms`` without
    new text, and an open turn that gets no text for ``TURN_IDLE_END_S`` is ended, so a
    forgotten ``end`` cannot hold the device. ``state``: queued, speaking, done, aborted or
    closed. ``await wait()`` returns the final state.
    """

    def __init__(self, session: XiaozhiSession, turn_id: str, options: SynthesisOptions,
                 emotion_label: str | None = None) -> None:
        settings = session.ctx.settings
        self.id = turn_id
        self.options = options
        self.emotion_label = emotion_label
        self.state = "queued"
        self.errors: list[str] = []  # segments the engine failed on (skipped)
        self.created_at = time.monotonic()
        self.first_text_at: float | None = None
        self.first_audio_at: float | None = None
        self.task: asyncio.Task | None = None  # the speaker's playback of this turn
        # In flight for a drain from now until it finishes (after `tts stop`, or when dropped).
        self._end_utterance = session.lifecycle_stream.begin_utterance()
        self.stream = SpeechStream(
            session.ctx, options, owner=session.owner, paused=True,
            encoder=lambda rate: SpeechEncoder(rate, SAMPLE_RATE, frame_ms=FRAME_MS, silence_ms=settings.silence_ms),
            flush_after_s=settings.max_buffer_delay_ms / 1000 or None, end_after_s=TURN_IDLE_END_S)
        self._max_chars = settings.max_text_chars
        self._done = asyncio.get_running_loop().create_future()

    @property
    def segments(self) -> list[str]:
        return self.stream.segments

    @property
    def ended(self) -> bool:
        return not self.stream.open

    @property
    def finished(self) -> bool:
        return self._done.done()

    def push(self, text: str) -> list[str]:
        """Add text; returns the segments cut now. ``ApiError`` on a closed or overlong turn."""
        if self.ended or self.finished:
            raise invalid(f"turn {self.id} has ended; start a new one", code="turn_ended")
        chars = self.stream.chars + len(text)
        if chars > self._max_chars:
            raise invalid(f"turn text would be {chars} characters; the limit is {self._max_chars}", param="text",
                          code="string_above_max_length")
        if text and self.first_text_at is None:
            self.first_text_at = time.monotonic()
        return self._refusable(self.stream.push, text)

    def flush(self) -> list[str]:
        """Synthesize the text still waiting for a sentence boundary."""
        return [] if self.finished else self._refusable(self.stream.flush)

    def end(self) -> list[str]:
        """No more text: the last segments are cut and playback ends after them."""
        return [] if self.finished else self._refusable(self.stream.end)

    def cancel(self, state: str = "aborted") -> None:
        """Drop all synthesis and playback of this turn and free its encoder (idempotent)."""
        self.stream.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.finish(state)

    async def wait(self) -> str:
        return await asyncio.shield(self._done)

    def describe(self) -> dict:
        return {"turn_id": self.id, "state": self.state, "segments": list(self.segments),
                "errors": list(self.errors)}

    def finish(self, state: str) -> None:
        if not self._done.done():
            self.state = state
            self._done.set_result(state)
        self._end_utterance()

    def _refusable(self, action, *args) -> list[str]:
        try:
            return action(*args)
        except (ExecutorBusy, ExecutorClosed):
            self.cancel("aborted")
            raise


class ConnectionGone(Exception):
    """The socket is closed or closing; stop sending."""


# --- one connection ------------------------------------------------------------------------

class DeviceSocket:
    """The only way to a device's socket: JSON messages (with the session id), audio frames and
    the close, one write at a time, each bounded by ``write_timeout_s``. A device that accepts
    nothing for that long is closed with 1008 and ``on_timeout`` ends its session."""

    def __init__(self, ctx, ws: WebSocket, session_id: str, name: str, on_timeout) -> None:
        self.ctx = ctx
        self.ws = ws
        self.session_id = session_id
        self.name = name  # the device id, for logs
        self.on_timeout = on_timeout
        self.closing = False
        self.last_write = time.monotonic()
        self._lock = asyncio.Lock()
        self._closed = False

    async def send_json(self, message: dict) -> None:
        text = json.dumps({**message, "session_id": self.session_id}, ensure_ascii=False)
        await self._send({"type": "websocket.send", "text": text})

    async def send_error(self, error: DeviceError) -> None:
        await self.send_json(error.payload())

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame once (best effort: the client may be gone, or not reading)."""
        self.closing = True
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason.encode()[:120].decode(errors="ignore")),
                                   CLOSE_TIMEOUT_S)

    async def _send(self, message: dict) -> None:
        if self.closing:
            raise ConnectionGone()
        timeout = self.ctx.settings.write_timeout_s
        async with self._lock:
            try:
                await asyncio.wait_for(self.ws.send(message), timeout)
            except asyncio.TimeoutError:
                await self._timed_out(timeout)
                raise ConnectionGone() from None
            except Exception as e:  # client gone mid-send (disconnect, reset)
                raise ConnectionGone() from e
        self.last_write = time.monotonic()

    async def _timed_out(self, timeout: float) -> None:
        self.ctx.metrics.write_timeouts.labels("xiaozhi").inc()
        log.warning("xiaozhi %s: the device accepted nothing for %g s; dropping it", self.name or "?", timeout)
        self.closing = True
        self.on_timeout()
        await self.close(1008, f"write timeout: nothing was read for {timeout:g} s")


class XiaozhiSession:
    """One connected device. Public: ``device_id``, ``tenant``, ``client_id``, ``session_id``, ``version``,
    ``features``, ``uplink_audio_params``, ``listen_state``, ``listen_mode``, ``connected_at``,
    ``current_turn``, ``queued_turns``, ``uplink_frames``, ``bad_frames``, ``loop``, ``closing``; ``speak``,
    ``open_turn``, ``abort``, ``close``, ``describe``."""

    def __init__(self, ctx, websocket: WebSocket) -> None:
        self.ctx = ctx.for_request(websocket.scope)  # voices of the device's tenant only
        self.lifecycle_stream = stream_of(websocket.scope)  # where turns are marked in flight for a drain
        self.tenant = self.ctx.principal.tenant  # the registry key is (tenant, device id)
        self.ws = websocket
        self.loop = asyncio.get_running_loop()
        self.session_id = str(uuid.uuid4())
        self.owner = f"xiaozhi-{self.session_id[:12]}"
        self.connected_at = time.time()
        headers, query = websocket.headers, websocket.query_params
        self.device_id = headers.get("device-id") or query.get("device-id") or ""
        self.client_id = headers.get("client-id") or query.get("client-id") or ""
        engine = ctx.engine
        self.protocol = XiaozhiProtocol(headers.get("protocol-version") or query.get("protocol-version"),
                                        max_message_bytes=1024 * 1024 + ctx.settings.max_upload_bytes * 4 // 3,
                                        languages=engine.capabilities().languages if engine is not None else None,
                                        engine=engine.name if engine is not None else ctx.engine_name)
        self._turn_count = 0
        self._closing = False
        self.socket = DeviceSocket(ctx, websocket, self.session_id, self.device_id, self._write_timed_out)
        self.reader = DeviceReader(self, self._perform)  # frames in: the hello deadline, the idle timeout
        self.player = TurnPlayer(self)  # the turn queue, the turn playing and the speaker task
        self.in_band = InBandSpeech(self, self._perform)
        self._reader_task: asyncio.Task | None = None

    # --- protocol state, for the control API and tests -----------------------------------------
    version = property(lambda self: self.protocol.version)
    features = property(lambda self: self.protocol.features)
    uplink_audio_params = property(lambda self: self.protocol.uplink_audio_params)
    listen_state = property(lambda self: self.protocol.listen_state)
    listen_mode = property(lambda self: self.protocol.listen_mode)
    uplink_frames = property(lambda self: self.protocol.uplink_frames)
    bad_frames = property(lambda self: self.protocol.bad_frames)

    @property
    def current_turn(self) -> Turn | None:
        return self.player.current

    @property
    def queued_turns(self) -> int:
        return self.player.queued

    @property
    def closing(self) -> bool:
        return self._closing

    def describe(self) -> dict:
        return {"device_id": self.device_id, "tenant": self.tenant, "client_id": self.client_id,
                "session_id": self.session_id,
                "protocol_version": self.version, "features": self.features,
                "listen_state": self.listen_state, "listen_mode": self.listen_mode,
                "connected_at": int(self.connected_at),
                "speaking": self.current_turn is not None, "queued_turns": self.queued_turns}

    # --- speech API (call on the server's event loop) ------------------------------------------
    def open_turn(self, options: SynthesisOptions, emotion_label: str | None = None) -> Turn:
        """A new turn, queued behind the current one; feed it with ``push`` and ``end``."""
        turn = self._new_turn(options, emotion_label)
        self.player.enqueue(turn)
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
        self.player.enqueue(turn)
        return turn

    async def abort(self, reason: str | None = None) -> int:
        """Barge-in: drop the current and every queued turn; the device gets `tts stop` at once.

        Returns how many turns were dropped.
        """
        dropped = self._drop_queued("aborted")
        self.ctx.executor.cancel_owner(self.owner)
        turn = self.current_turn
        if turn is not None and not turn.finished:
            log.info("xiaozhi %s: abort (%s) while speaking", self.device_id, reason or "button")
            turn.cancel("aborted")  # the speaker sends `tts stop`
            dropped += 1
        else:
            with contextlib.suppress(ConnectionGone):
                await self.socket.send_json({"type": "tts", "state": "stop"})
        return dropped

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (idempotent): drops all speech, then the socket."""
        if self._closing:
            return
        self._closing = True
        self._drop_all("closed")
        self.player.cancel()
        await self.socket.close(code, reason)

    def _new_turn(self, options: SynthesisOptions, emotion_label: str | None) -> Turn:
        if self.lifecycle_stream.draining:
            raise ApiError(503, "the server is draining for a restart: this device will be asked to reconnect "
                                "once its current turn ends; speak again then", code="server_draining",
                           type="server_error", headers={"Retry-After": "1"})
        if self._closing:
            raise ApiError(409, f"device {self.device_id!r} is disconnecting", code="device_closing")
        if self.player.full:
            raise ApiError(409, f"device {self.device_id!r} already has {MAX_QUEUED_TURNS} turns waiting; abort or "
                                "wait for them", code="too_many_turns")
        self._turn_count += 1
        return Turn(self, f"{self.session_id[:8]}-{self._turn_count}", options, emotion_label)

    def _drop_queued(self, state: str) -> int:
        dropped = self.player.drop_queued(state)
        self.in_band.drop(state)
        return dropped

    def _drop_all(self, state: str) -> None:
        """The queued turns, then the one playing (its playback task cancelled)."""
        self._drop_queued(state)
        if self.current_turn is not None:
            self.current_turn.cancel(state)

    # --- connection lifecycle ------------------------------------------------------------------
    async def run(self) -> None:
        await self.ws.accept()
        # The reader is a task of its own so that a write timeout in the speaker can stop it:
        # a client that does not read may not send either, and nothing else would wake it.
        self._reader_task = asyncio.create_task(self.reader.run(), name=f"xiaozhi-reader-{self.session_id[:8]}")
        try:
            await asyncio.wait({self._reader_task})
        finally:
            self._reader_task.cancel()
            await asyncio.wait({self._reader_task})
            await self._cleanup()

    async def _cleanup(self) -> None:
        self._closing = True
        self._drop_all("closed")
        await self.player.stop()
        if self.device_id and self.ctx.devices.get((self.tenant, self.device_id)) is self:
            del self.ctx.devices[self.tenant, self.device_id]
        await self.socket.close(1000, "")
        log.info("xiaozhi %s: disconnected", self.device_id or "?")

    async def _perform(self, actions: list) -> bool:
        """Carry out the protocol's actions in order; False once the connection is closed."""
        for action in actions:
            if getattr(action, "metric", None):
                self.ctx.metrics.error(action.metric)
            if isinstance(action, proto.Send):
                await self.socket.send_json(action.message)
            elif isinstance(action, proto.Close):
                log.info("xiaozhi %s: closing (%d): %s", self.device_id or "?", action.code, action.reason)
                await self.close(action.code, action.reason)
                return False
            elif isinstance(action, proto.Opened):
                await self._register()
            elif isinstance(action, proto.Listening):
                self.player.device_listening()
            elif isinstance(action, proto.Abort):
                await self.abort(action.reason)
            elif isinstance(action, proto.Speak):
                await self.in_band.speak(action.fields, action.more)
        return True

    def _write_timed_out(self) -> None:
        """The device stopped reading: everything of this session stops now."""
        self._closing = True
        self._drop_all("closed")
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()  # a client that does not read may not send either

    async def _register(self) -> None:
        if not self.device_id:
            self.device_id = f"anonymous-{self.session_id[:8]}"
            log.warning("xiaozhi: a device connected without Device-Id; calling it %s", self.device_id)
            self.socket.name = self.device_id
        hello_at = time.monotonic()
        # Keyed by tenant: the same Device-Id under another tenant is another device, never a takeover.
        previous = self.ctx.devices.get((self.tenant, self.device_id))
        self.ctx.devices[self.tenant, self.device_id] = self
        if previous is not None and previous is not self:
            log.info("xiaozhi %s: new connection replaces the old one", self.device_id)
            await previous.close(1000, "replaced by a newer connection from the same device")
        # Registered and speaking-ready before the device sees our hello (the next action).
        self.player.start(hello_at)
        log.info("xiaozhi %s: connected (client %s, protocol v%d, session %s)", self.device_id,
                 self.client_id or "?", self.version, self.session_id)


class DeviceReader:
    """The reader task's loop: the device's frames through the protocol, whose actions the session
    performs. It ends on a disconnect or a close, when no hello comes within
    ``xiaozhi_hello_timeout_s``, and after ``xiaozhi_idle_timeout_s`` without traffic either way
    while no turn plays or waits."""

    def __init__(self, session: XiaozhiSession, perform) -> None:
        self.session = session
        self.protocol = session.protocol
        self._perform = perform  # the session's: False once the connection is closed
        self._last_activity = time.monotonic()

    async def run(self) -> None:
        try:
            if await self._perform(self.protocol.connect()) and await self._handshake():
                await self._read_loop()
        except ConnectionGone:
            pass

    async def _receive(self, timeout: float) -> dict | None:
        """The next ASGI message, or None when ``timeout`` passes first."""
        try:
            return await asyncio.wait_for(self.session.ws.receive(), timeout=max(0.0, timeout))
        except asyncio.TimeoutError:
            return None

    async def _handshake(self) -> bool:
        """Wait for the device hello; False when the connection is over."""
        timeout = self.session.ctx.settings.xiaozhi_hello_timeout_s
        deadline = time.monotonic() + timeout
        while self.protocol.state == proto.AWAIT_HELLO:
            message = await self._receive(deadline - time.monotonic())
            if message is None:
                await self._perform(self.protocol.hello_timed_out(timeout))
                return False
            if not await self._feed(message):
                return False
        return self.protocol.state == proto.OPEN

    async def _read_loop(self) -> None:
        session = self.session
        idle = session.ctx.settings.xiaozhi_idle_timeout_s
        while not session.closing:
            last = max(self._last_activity, session.socket.last_write)
            message = await self._receive(last + idle - time.monotonic())
            if message is None:
                if session.current_turn is not None or session.queued_turns:
                    self._last_activity = time.monotonic()  # a turn waiting for slow synthesis is not idle
                elif time.monotonic() - max(self._last_activity, session.socket.last_write) >= idle:
                    await self._perform(self.protocol.idle(idle))
                    return
                continue
            self._last_activity = time.monotonic()
            if not await self._feed(message):
                return

    async def _feed(self, message: dict) -> bool:
        """One ASGI message through the protocol; False when the connection is over."""
        if message["type"] == "websocket.disconnect":
            return False
        if message.get("bytes") is not None:
            return await self._perform(self.protocol.receive_bytes(message["bytes"]))
        if message.get("text") is not None:
            return await self._perform(self.protocol.receive_text(message["text"]))
        return True


class TurnPlayer:
    """A session's turns and its speaker task: the bounded queue of turns waiting behind the
    current one (``MAX_QUEUED_TURNS``), the turn playing (``current``) and the task that takes
    them in order and plays each in a playback task. The session queues turns and drops the
    waiting ones; only the speaker task takes a turn out to play it, and sets ``current``."""

    def __init__(self, session: XiaozhiSession) -> None:
        self.session = session
        self.ctx = session.ctx
        self.current: Turn | None = None
        self._queue: asyncio.Queue[Turn] = asyncio.Queue(MAX_QUEUED_TURNS)
        self._task: asyncio.Task | None = None
        self._listening = asyncio.Event()  # the device sent `listen` since its hello
        self._hello_at: float | None = None
        self._t0 = time.monotonic()  # session clock for v2 timestamps

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        return self._queue.full()

    def enqueue(self, turn: Turn) -> None:
        self._queue.put_nowait(turn)

    def drop_queued(self, state: str) -> int:
        """Cancel every turn still waiting; how many there were."""
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait().cancel(state)
            dropped += 1
        return dropped

    def device_listening(self) -> None:
        self._listening.set()

    def start(self, hello_at: float) -> None:
        """Start the speaker task once the device is registered (the listen grace runs from ``hello_at``)."""
        self._hello_at = hello_at
        self._task = asyncio.create_task(self.run(), name=f"xiaozhi-speaker-{self.session.device_id}")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the speaker task and wait for it; the turn it was playing has its encoder freed."""
        current = self.current
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        if current is not None:
            await current.stream.aclose()

    async def run(self) -> None:
        session = self.session
        while True:
            turn = await self._queue.get()
            if turn.finished:
                continue  # dropped while queued: its stream is closed already
            self.current = turn
            turn.task = asyncio.create_task(self._play(turn), name=f"xiaozhi-turn-{turn.id}")
            error = None
            try:
                await asyncio.wait({turn.task})
            except asyncio.CancelledError:  # the session is closing: stop playback first
                turn.task.cancel()
                await asyncio.wait({turn.task})
                raise
            finally:
                # the outcome is read here, so a speaker cancelled from now on still retrieves it
                if turn.task.done() and not turn.task.cancelled():
                    error = turn.task.exception()
                self.current = None
                await asyncio.shield(turn.stream.aclose())
            if isinstance(error, ConnectionGone) or session.closing:
                turn.cancel("closed")
                return
            if error is not None:
                log.error("xiaozhi %s: playback failed", session.device_id, exc_info=error)
                self.ctx.metrics.error("xiaozhi_internal")
                turn.cancel("aborted")
            if turn.state == "aborted":  # barge-in: the device waits for stop
                try:
                    await session.socket.send_json({"type": "tts", "state": "stop"})
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
        session, settings = self.session, self.ctx.settings
        turn.state = "speaking"
        turn.stream.resume()
        await self._wait_until_listening()
        await session.socket.send_json({"type": "tts", "state": "start"})
        not_before = time.monotonic() + START_GAP_S
        if turn.emotion_label:
            await session.socket.send_json({"type": "llm", "emotion": turn.emotion_label,
                                      "text": EMOJI.get(turn.emotion_label, "🙂")})
        pacer = Pacer(frame_ms=FRAME_MS, prebuffer_packets=settings.xiaozhi_prebuffer_packets,
                      max_lead_ms=settings.xiaozhi_max_lead_ms)
        async for event in turn.stream:
            if isinstance(event, Sentence):
                await self._send_packets(turn, event.data, pacer, not_before, event.text)
            elif isinstance(event, Tail):
                await self._send_packets(turn, event.data or [], pacer, not_before, None)
            elif isinstance(event, Failure) and not await self._lost(turn, event):
                turn.finish("aborted")  # the speaker sends `tts stop`
                return
        if turn.stream.cancelled:
            return
        if pacer.drained_at is not None:
            await asyncio.sleep(max(0.0, pacer.drained_at + STOP_MARGIN_S - time.monotonic()))
        await session.socket.send_json({"type": "tts", "state": "stop"})
        turn.finish("done")

    async def _lost(self, turn: Turn, failure: Failure) -> bool:
        """A sentence could not be made: skip it (True) or give the turn up (False: refused)."""
        session, error = self.session, failure.error
        turn.errors.append(failure.text)
        if isinstance(error, (ExecutorBusy, ExecutorClosed)):
            self.ctx.metrics.error("busy" if isinstance(error, ExecutorBusy) else "xiaozhi_shutting_down")
            code = "server_busy" if isinstance(error, ExecutorBusy) else "shutting_down"
            await session.socket.send_error(DeviceError(code, str(error)))
            return False
        if not isinstance(error, Cancelled):  # cancelled by the executor: nothing to tell the device
            log.warning("xiaozhi %s: segment %r failed: %s", session.device_id, failure.text[:60], error)
            self.ctx.metrics.error("engine_error")
            await session.socket.send_error(
                DeviceError("engine_error", f"synthesis failed for {failure.text[:60]!r}: {error}"))
        return True

    async def _send_packets(self, turn: Turn, packets: list[bytes], pacer: Pacer, not_before: float,
                            subtitle: str | None) -> None:
        """Send packets on the pacer's schedule; the subtitle goes with the first one."""
        session = self.session
        for packet in packets:
            wait = max(pacer.due(), not_before) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if subtitle is not None:
                await session.socket.send_json({"type": "tts", "state": "sentence_start", "text": subtitle})
                subtitle = None
            timestamp = int((time.monotonic() - self._t0) * 1000)
            await session.socket.send_bytes(pack_audio(session.version, packet, timestamp))
            rebuffers = pacer.rebuffers
            pacer.sent()
            if pacer.rebuffers > rebuffers:  # the device had played everything: the listener heard a gap
                self.ctx.metrics.underruns.labels("xiaozhi").inc()
            turn.stream.acknowledge(pacer.packets * pacer.frame_s - pacer.lead())  # played on the device
            if turn.first_audio_at is None:
                turn.first_audio_at = time.monotonic()
                self.ctx.metrics.observe_ttfa("xiaozhi", turn.first_audio_at - (turn.first_text_at or turn.created_at))


class InBandSpeech:
    """In-band ``speak`` frames of one session (gateways, test clients): each a whole turn, or
    with ``flush: false`` a piece of one open turn, which this object holds until its last piece
    or until the session drops it."""

    def __init__(self, session: XiaozhiSession, perform) -> None:
        self.session = session
        self._perform = perform  # the session's: carries out protocol actions (warnings) in order
        self._open: Turn | None = None

    async def speak(self, fields: dict, more: bool) -> None:
        with self.session.lifecycle_stream.speaking():  # in flight while its voice is being resolved, too
            await self._speak(fields, more)

    def drop(self, state: str) -> None:
        """Forget the open turn, cancelling it unless it is playing (the session cancels that one)."""
        turn, self._open = self._open, None
        if turn is not None and not turn.finished and turn is not self.session.current_turn:
            turn.cancel(state)

    async def _speak(self, fields: dict, more: bool) -> None:
        session, ctx = self.session, self.session.ctx
        try:
            if self._open is not None and not self._open.finished:
                turn = self._open
                text = fields.get("text") or ""
                if not isinstance(text, str):
                    raise invalid("'text' must be a string", param="text")
                turn.push(text)
                await self._perform(session.protocol.piece_warnings(fields))
                if not more:
                    self._open = None
                    turn.end()
                return
            request = await ctx.codec.run(parse_speak, ctx, fields, allow_empty=more)
            await self._perform(session.protocol.warned(list(request.warnings)))
            if more:
                self._open = session.open_turn(request.options, request.emotion_label)
                self._open.push(request.text)
            else:
                session.speak(request)
        except ApiError as e:
            ctx.metrics.error("xiaozhi_bad_request")
            await session.socket.send_error(DeviceError(e.code or "invalid_request", e.message))
        except ExecutorBusy as e:
            ctx.metrics.error("busy")
            await session.socket.send_error(DeviceError("server_busy", str(e)))
        except ExecutorClosed as e:
            await session.socket.send_error(DeviceError("shutting_down", str(e)))


def xiaozhi_routes(ctx) -> list:
    async def endpoint(websocket: WebSocket) -> None:
        session = XiaozhiSession(ctx, websocket)
        with ctx.metrics.connection("xiaozhi"):
            await session.run()

    return [WebSocketRoute("/xiaozhi/v1/", endpoint), WebSocketRoute("/xiaozhi/v1", endpoint)]
