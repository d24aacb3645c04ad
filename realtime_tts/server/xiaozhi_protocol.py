"""The xiaozhi device protocol as a Sans-I/O object: frames in, actions out (protocols.md Part 1).

``XiaozhiProtocol`` holds everything the protocol decides, and nothing that does I/O: no
socket, no clock, no executor. The session (``xiaozhi.py``) feeds it what the device sent
(``receive_text``, ``receive_bytes``) and what time did (``hello_timed_out``, ``idle``), and
performs the actions it returns, in order:

* ``Send(message)``: a JSON message to the device (the session adds ``session_id``);
* ``Close(code, reason)``: close the connection;
* ``Opened(version)``: the hello was accepted: register the device (before our hello reply,
  which is the next action, so a control-API call made right after it finds the device);
* ``Listening(state, mode)``: the device sent ``listen``: turns may start;
* ``Abort(reason)``: barge-in;
* ``Speak(fields, more)``: an in-band ``speak``; its ``language`` is checked here (against the
  engine's languages), the session parses the other speech fields (voice, emotion, speed need
  the voice library), answers their errors with ``DeviceError`` and what the engine will not do
  (``warned``: an ignored voice or emotion, a clamped speed) with ``warning`` messages. The
  firmware logs a message type it does not know and goes on ("Unknown message type" in
  ``Application::OnIncomingJson``), so ``warning`` and ``error`` are harmless to devices.

Every text frame is read with the bounded reader (``inputs.loads_json``: size, depth, number
length, lone surrogates, NFC) and every field the protocol uses is type-checked, so anything a
device sends gets an ``error`` message (after the hello) or a 1008 close with a reason
(before it), never an exception. Everything it remembers (hello features, listen state) is
clean JSON, safe to show on ``GET /v1/xiaozhi/devices``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .agent_protocol import OPTION_FIELDS
from .capabilities import LanguageError, Notice, check_language
from .inputs import InputError, loads_json

SAMPLE_RATE = 24000  # downlink Opus rate we announce (the firmware default)
FRAME_MS = 60
PROTOCOL_VERSIONS = (1, 2, 3)
BAD_FRAME_REPORT_EVERY = 50  # report malformed uplink frames: the first, then every Nth
MAX_FIELD_CHARS = 64  # listen.state / mode / abort.reason and the like
AWAIT_HELLO, OPEN, CLOSED = "await_hello", "open", "closed"


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
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError(f"protocol version {raw!r} is not a number; use 1, 2 or 3")
    try:
        version = int(str(raw).strip()[:8])
    except ValueError:
        raise ValueError(f"protocol version {str(raw)[:20]!r} is not a number; use 1, 2 or 3") from None
    if version not in PROTOCOL_VERSIONS:
        raise ValueError(f"unsupported protocol version {version}; use 1, 2 or 3")
    return version


# --- actions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    message: dict
    metric: str | None = None  # error kind to count (rtts_errors_total)


@dataclass(frozen=True)
class Close:
    code: int
    reason: str
    metric: str | None = None


@dataclass(frozen=True)
class Opened:
    version: int


@dataclass(frozen=True)
class Listening:
    state: str | None
    mode: str | None


@dataclass(frozen=True)
class Abort:
    reason: str | None


@dataclass(frozen=True)
class Speak:
    fields: dict = field(hash=False)
    more: bool  # ``flush: false``: a piece of an open turn


Action = Send | Close | Opened | Listening | Abort | Speak


class DeviceError(Exception):
    """Something the device sent or asked for that cannot be served: an ``error`` message to it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def payload(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message}


class XiaozhiProtocol:
    """One device connection's protocol state. Public: ``state``, ``version``, ``features``,
    ``uplink_audio_params``, ``listen_state``, ``listen_mode``, ``uplink_frames``, ``bad_frames``."""

    def __init__(self, header_version: str | None = None, *, max_message_bytes: int = 1 << 20,
                 languages: tuple[str, ...] | None = None, engine: str = "engine") -> None:
        self.languages = languages  # the engine's (Capabilities.languages; None: any language hint)
        self.engine = engine
        self.state = AWAIT_HELLO
        self.version = 1
        self.features: dict = {}
        self.uplink_audio_params: dict = {}
        self.listen_state: str | None = None
        self.listen_mode: str | None = None
        self.uplink_frames = 0
        self.bad_frames = 0
        self._header_version = header_version
        self._max_bytes = max_message_bytes

    # --- events from the session ---------------------------------------------------------------
    def connect(self) -> list[Action]:
        """The socket was accepted; a ``Protocol-Version`` header is checked here."""
        if self._header_version is not None:
            try:
                self.version = parse_version(self._header_version)
            except ValueError as e:
                return self._close(1008, f"Protocol-Version: {e}", "xiaozhi_bad_hello")
        return []

    def hello_timed_out(self, seconds: float) -> list[Action]:
        return self._close(1008, f"no hello message within {seconds:g} s", "xiaozhi_hello_timeout")

    def idle(self, seconds: float) -> list[Action]:
        return self._close(1000, f"idle for {seconds:g} s")

    def receive_bytes(self, data: bytes) -> list[Action]:
        if self.state != OPEN or not data:
            return []  # audio before the hello has nothing to attach to; empty frames mean nothing
        try:
            unpack_audio(self.version, data)
        except FrameError as e:
            self.bad_frames += 1
            if self.bad_frames % BAD_FRAME_REPORT_EVERY != 1:
                return []
            return [Send(DeviceError("invalid_frame", f"{e} (protocol version {self.version}; "
                                     f"{self.bad_frames} malformed frame(s) dropped so far)").payload(),
                         "xiaozhi_bad_frame")]
        self.uplink_frames += 1  # TTS only: uplink audio is accepted and dropped
        return []

    def receive_text(self, text: str) -> list[Action]:
        if self.state == CLOSED:
            return []
        try:
            message = loads_json(text, max_bytes=self._max_bytes, what="text frame")
        except InputError as e:
            if self.state == AWAIT_HELLO:
                return self._close(1008, f"expected a hello message first, got an unreadable frame: {e.message}",
                                   "xiaozhi_bad_hello")
            return [Send(DeviceError(e.code, e.message).payload(), "xiaozhi_bad_message")]
        if self.state == AWAIT_HELLO:
            return self._first_message(message)
        if not isinstance(message, dict):
            return [Send(DeviceError("invalid_message", "a JSON message must be an object with a 'type'").payload(),
                         "xiaozhi_bad_message")]
        kind = message.get("type")
        if kind is None:
            return [Send(DeviceError("invalid_message", "message has no 'type'").payload(), "xiaozhi_bad_message")]
        if not isinstance(kind, str):
            return [Send(DeviceError("invalid_message", f"'type' must be a string, got {_kind(kind)}").payload(),
                         "xiaozhi_bad_message")]
        handler = self._HANDLERS.get(kind)
        if handler is None:
            return [Send(DeviceError("unknown_type", f"unknown message type {kind[:40]!r} ignored").payload())]
        try:
            return handler(self, message)
        except _FieldError as e:
            return [Send(DeviceError("invalid_field", str(e)).payload(), "xiaozhi_bad_message")]
        except DeviceError as e:
            return [Send(e.payload(), "xiaozhi_bad_message")]

    def warned(self, notices: list[Notice]) -> list[Action]:
        """What a speak asked that the server will not do, as ``warning`` messages."""
        return [Send(n.payload()) for n in notices]

    def piece_warnings(self, fields: dict) -> list[Action]:
        """A later piece of an open in-band turn: its voice, emotion, speed or language cannot
        change the turn (its first speak set them), and the device's gateway is told so."""
        ignored = sorted(OPTION_FIELDS.intersection(fields))
        if not ignored:
            return []
        return self.warned([Notice("settings_ignored", f"{', '.join(ignored)} only apply on a turn's first speak; "
                                                       "ignored")])

    # --- messages -------------------------------------------------------------------------------
    def _first_message(self, message: Any) -> list[Action]:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind != "hello":
            got = "non-object JSON" if not isinstance(message, dict) else str(kind)[:40]
            return self._close(1008, f"expected a hello message first, got {got!r}", "xiaozhi_bad_hello")
        try:
            self._check_hello(message)
            if self._header_version is None and message.get("version") is not None:
                self.version = parse_version(message["version"])
        except (_FieldError, ValueError) as e:
            where = "" if isinstance(e, _FieldError) else "hello.version: "
            return self._close(1008, f"{where}{e}", "xiaozhi_bad_hello")
        self._remember_hello(message)
        self.state = OPEN
        return [Opened(self.version), Send(self.hello())]

    def _on_hello(self, message: dict) -> list[Action]:
        self._check_hello(message)
        self._remember_hello(message)
        return [Send(self.hello())]

    def _on_listen(self, message: dict) -> list[Action]:
        state = _optional_str(message, "state")
        mode = _optional_str(message, "mode")
        _optional_str(message, "text")
        self.listen_state = state if state is not None else self.listen_state
        self.listen_mode = mode if mode is not None else self.listen_mode
        return [Listening(self.listen_state, self.listen_mode)]

    def _on_abort(self, message: dict) -> list[Action]:
        return [Abort(_optional_str(message, "reason"))]

    def _on_speak(self, message: dict) -> list[Action]:
        flush = message.get("flush")
        if flush is not None and not isinstance(flush, bool):
            raise _FieldError("'flush' must be true or false")
        try:
            check_language(message.get("language"), self.languages, self.engine)
        except LanguageError as e:
            if not e.unsupported:
                raise _FieldError(e.message) from None
            raise DeviceError("unsupported_language", e.message) from None
        return [Speak(message, more=flush is False)]

    def _on_ping(self, message: dict) -> list[Action]:
        return [Send({"type": "pong"})]

    def _ignore(self, message: dict) -> list[Action]:
        return []  # mcp, iot: accepted and ignored (we are TTS only)

    _HANDLERS = {"hello": _on_hello, "listen": _on_listen, "abort": _on_abort, "speak": _on_speak,
                 "ping": _on_ping, "mcp": _ignore, "iot": _ignore}

    # --- helpers ---------------------------------------------------------------------------------
    def hello(self) -> dict:
        return {"type": "hello", "transport": "websocket", "version": self.version,
                "audio_params": {"format": "opus", "sample_rate": SAMPLE_RATE, "channels": 1,
                                 "frame_duration": FRAME_MS}}

    @staticmethod
    def _check_hello(message: dict) -> None:
        for name in ("features", "audio_params"):
            if message.get(name) is not None and not isinstance(message[name], dict):
                raise _FieldError(f"hello.{name} must be an object, got {_kind(message[name])}")
        if message.get("transport") is not None and not isinstance(message["transport"], str):
            raise _FieldError(f"hello.transport must be a string, got {_kind(message['transport'])}")

    def _remember_hello(self, message: dict) -> None:
        if isinstance(message.get("features"), dict):
            self.features = message["features"]
        if isinstance(message.get("audio_params"), dict):
            self.uplink_audio_params = message["audio_params"]

    def _close(self, code: int, reason: str, metric: str | None = None) -> list[Action]:
        self.state = CLOSED
        return [Close(code, reason, metric)]


class _FieldError(ValueError):
    """A field of a known message has the wrong type or size."""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _optional_str(message: dict, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise _FieldError(f"'{name}' of a {message['type']} message must be a string of at most "
                          f"{MAX_FIELD_CHARS} characters")
    return value
