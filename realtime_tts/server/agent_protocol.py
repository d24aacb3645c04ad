"""The agent stream protocol (``/v1/tts/stream``) as a Sans-I/O object: messages in, actions out.

``AgentStreamProtocol`` decides everything about the client's messages and keeps the state of
the socket's contexts; it does no I/O (no socket, executor, clock or voice library). The
session (``agent_stream.py``) feeds it the client's frames and what happened to the contexts
it plays, and performs the actions it returns, in order:

* ``Send(payload)``: a JSON message to the client;
* ``Configure(config, fields)``: new connection defaults, checked except the voice/emotion/speed
  ``fields``, which the session resolves (the voice library) before calling ``configured`` or
  ``refused``;
* ``Open(context_id, fields, text, end)``: a new context; the session resolves its options,
  then calls ``opened`` (which answers ``context_started`` and the ``Push``/``End`` to perform)
  or ``refused``;
* ``Push(context_id, text)``, ``Flush(context_id, flush_id)``, ``End(context_id)``,
  ``Cancel(context_id)``: work on a context's speech stream;
* ``Close(code, reason)``.

Every frame is read with the bounded JSON reader (``inputs.loads_json``) and every field is
type-checked: anything a client sends gets an ``error`` message (code, message, the context
when there is one) and the socket stays usable. The wire format of server messages (the
8-byte binary audio header, ``sentence_start``...) is here too.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..audio.opus import FRAME_MS, OPUS_RATES
from .capabilities import LanguageError, Notice, check_language
from .inputs import InputError, loads_json

HEADER = struct.Struct(">BBHI")  # version, kind, context slot, sequence: 8 bytes
FORMAT_VERSION = 1
KIND_AUDIO = 0

ENCODINGS = ("pcm_s16le", "opus")
SAMPLE_RATES = {"pcm_s16le": (8000, 16000, 22050, 24000, 44100, 48000), "opus": OPUS_RATES}
TRANSPORTS = ("binary", "base64")
DEFAULT_OUTPUT = {"encoding": "pcm_s16le", "sample_rate": 24000, "frame_ms": 20}
MESSAGE_TYPES = ("config", "text", "flush", "end", "cancel", "keepalive")

MAX_CONTEXTS = 16  # contexts created but not yet fully played, per socket
MAX_CONTEXT_ID_CHARS = 128
MAX_BUFFER_DELAY_MS = 60000
REMEMBERED_CONTEXTS = 256  # finished context ids kept for clear errors on reuse

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # the client broke a rule we cannot work around (did not read: write timeout)
CLOSE_INTERNAL_ERROR = 1011

# Fields that choose the voice, emotion, speed and language (all the spellings params.py understands).
OPTION_FIELDS = frozenset({
    "voice", "emotion", "speed", "duration_factor", "language", "emo_vector", "emo_vec", "emotion_vector",
    "emo_text", "emotion_text", "instructions", "emo_ref", "emo_audio_prompt", "emotion_voice",
    "emotion_prompt", "emo_ref_path", "emo_alpha", "emo_weight", "emotion_alpha", "emo_control_method",
})

# Context states. OPEN takes text; ENDED waits for its audio; the last three are final.
OPEN, ENDED, DONE, CANCELLED, FAILED = "open", "ended", "done", "cancelled", "failed"
_STATE_WORDS = {ENDED: "has already ended", DONE: "is finished", CANCELLED: "was cancelled", FAILED: "failed"}


@dataclass(frozen=True)
class Output:
    encoding: str
    sample_rate: int
    frame_ms: int

    def describe(self) -> dict:
        return {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1, "frame_ms": self.frame_ms}


@dataclass(frozen=True)
class Config:
    output: Output
    transport: str
    buffer_delay_ms: float
    sentence_events: bool


# --- actions ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    payload: dict


@dataclass(frozen=True)
class Configure:
    config: Config
    fields: dict = field(hash=False)


@dataclass(frozen=True)
class Open:
    context_id: str
    fields: dict = field(hash=False)
    text: str = ""
    end: bool = False


@dataclass(frozen=True)
class Push:
    context_id: str
    text: str


@dataclass(frozen=True)
class Flush:
    context_id: str
    flush_id: Any


@dataclass(frozen=True)
class End:
    context_id: str


@dataclass(frozen=True)
class Cancel:
    context_id: str


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Action = Send | Configure | Open | Push | Flush | End | Cancel | Close


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


@dataclass
class Context:
    slot: int
    state: str = OPEN
    chars: int = 0
    flushes: int = 0


class AgentStreamProtocol:
    """One socket's protocol state. Public: ``config``, ``contexts`` (id -> ``Context``, not final),
    ``unplayed`` (contexts created and not yet retired by the player), ``default_fields``."""

    def __init__(self, *, max_text_chars: int, buffer_delay_ms: float, max_message_bytes: int = 1 << 20,
                 languages: tuple[str, ...] | None = None, engine: str = "engine") -> None:
        self.languages = languages  # the engine's (Capabilities.languages; None: any language hint)
        self.engine = engine
        self.config = Config(Output(**DEFAULT_OUTPUT), "binary", buffer_delay_ms, True)
        self.default_fields: dict = {}
        self.contexts: dict[str, Context] = {}
        self.finished: collections.OrderedDict[str, str] = collections.OrderedDict()  # id -> final state
        self.unplayed = 0
        self.max_text_chars = max_text_chars
        self._max_bytes = max_message_bytes
        self._opening: dict[str, int] = {}  # Open sent, waiting for opened/refused: id -> chars
        self._next_slot = 0

    # --- client messages ----------------------------------------------------------------------
    def receive_bytes(self, data: bytes) -> list[Action]:
        return self._error(StreamError("binary_not_supported", "binary frames are not accepted; send JSON text "
                                       "messages ({\"type\":\"text\",\"context_id\":...,\"text\":...})"))

    def receive_text(self, raw: str) -> list[Action]:
        try:
            msg = loads_json(raw, max_bytes=self._max_bytes)
        except InputError as e:
            code = "invalid_json" if e.code in ("invalid_json", "invalid_utf8") else e.code
            return self._error(StreamError(code, e.message))
        if not isinstance(msg, dict):
            return self._error(StreamError("invalid_json", "a message must be a JSON object with a 'type'"))
        cid = msg.get("context_id")
        try:
            kind = msg.get("type")
            if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
                what = ("'type' is missing" if kind is None else f"'type' must be a string, got {_kind(kind)}"
                        if not isinstance(kind, str) else f"unknown message type {kind[:40]!r}")
                raise StreamError("unknown_type", f"{what}; use {', '.join(MESSAGE_TYPES)}")
            return getattr(self, f"_on_{kind}")(msg)
        except StreamError as e:  # every error about a message names its context, when it has one
            if e.context_id is None and isinstance(cid, str) and 0 < len(cid) <= MAX_CONTEXT_ID_CHARS:
                e.context_id = cid
            return self._error(e)

    def _on_keepalive(self, msg: dict) -> list[Action]:
        return []  # receiving it already reset the idle timer

    def _on_config(self, msg: dict) -> list[Action]:
        if self.unplayed or self._opening:
            raise StreamError("config_locked", "config can only change while no context is open or playing "
                              "(send it first, or after the last 'done')")
        config = self.config
        output = msg.get("output")
        output = {} if output is None else output
        if not isinstance(output, dict):
            raise StreamError("invalid_field", "'output' must be an object like "
                              "{\"encoding\":\"pcm_s16le\",\"sample_rate\":24000}", param="output")
        encoding = output.get("encoding", config.output.encoding)
        if not isinstance(encoding, str) or encoding not in ENCODINGS:
            raise StreamError("unsupported_encoding", f"output.encoding {_show(encoding)} is not supported; use "
                              f"{' or '.join(ENCODINGS)}", param="output.encoding")
        # A new encoding without a rate starts from the default rate (valid for every encoding).
        default_rate = DEFAULT_OUTPUT["sample_rate"] if "encoding" in output else config.output.sample_rate
        rate = output.get("sample_rate", default_rate)
        if not _is_int(rate) or rate not in SAMPLE_RATES[encoding]:
            raise StreamError("unsupported_sample_rate", f"output.sample_rate {_show(rate)} is not supported for "
                              f"{encoding}; use one of {list(SAMPLE_RATES[encoding])}", param="output.sample_rate")
        frame_ms = output.get("frame_ms", config.output.frame_ms)
        if not _is_int(frame_ms) or frame_ms not in FRAME_MS:
            raise StreamError("invalid_field", f"output.frame_ms {_show(frame_ms)} is not supported; use one of "
                              f"{list(FRAME_MS)}", param="output.frame_ms")
        transport = msg.get("audio_transport", config.transport)
        if not isinstance(transport, str) or transport not in TRANSPORTS:
            raise StreamError("invalid_field", f"audio_transport {_show(transport)} is not one of "
                              f"{', '.join(TRANSPORTS)}", param="audio_transport")
        delay = msg.get("max_buffer_delay_ms", config.buffer_delay_ms)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_BUFFER_DELAY_MS:
            raise StreamError("invalid_field", f"max_buffer_delay_ms must be a number 0-{MAX_BUFFER_DELAY_MS} "
                              "(0 turns auto-flush off)", param="max_buffer_delay_ms")
        timestamps = msg.get("sentence_timestamps", config.sentence_events)
        if not isinstance(timestamps, bool):
            raise StreamError("invalid_field", "sentence_timestamps must be true or false", param="sentence_timestamps")
        new = Config(Output(encoding, int(rate), int(frame_ms)), transport, delay, timestamps)
        return [Configure(new, self._option_fields(msg, None))]

    def _on_text(self, msg: dict) -> list[Action]:
        cid = _context_id(msg)
        text = msg.get("text", "")
        if not isinstance(text, str):
            raise StreamError("invalid_field", "'text' must be a string", cid, param="text")
        end = msg.get("end", False)
        if not isinstance(end, bool):
            raise StreamError("invalid_field", "'end' must be true or false", cid, param="end")
        if cid not in self.contexts and cid not in self.finished:
            if len(text) > self.max_text_chars:
                raise self._too_long(cid, len(text))
            if self.unplayed + len(self._opening) >= MAX_CONTEXTS:
                raise StreamError("too_many_contexts", f"{self.unplayed} contexts are already open or playing "
                                  f"(limit {MAX_CONTEXTS}); end or cancel one first", cid)
            fields = self._option_fields(msg, cid)
            self._opening[cid] = len(text)
            return [Open(cid, fields, text, end)]
        context = self._live(cid, "add text to")
        out: list[Action] = []
        ignored = sorted(OPTION_FIELDS.intersection(msg))
        if ignored:
            out.append(Send({"type": "warning", "code": "settings_ignored", "context_id": cid,
                             "message": f"{', '.join(ignored)} only apply on a context's first text; ignored"}))
        if context.chars + len(text) > self.max_text_chars:
            raise self._too_long(cid, context.chars + len(text))
        context.chars += len(text)
        if text:
            out.append(Push(cid, text))
        if end:
            context.state = ENDED
            out.append(End(cid))
        return out

    def _on_flush(self, msg: dict) -> list[Action]:
        cid = _context_id(msg)
        context = self._live(cid, "flush")
        context.flushes += 1
        flush_id = msg.get("flush_id", context.flushes)
        if isinstance(flush_id, (dict, list)):
            raise StreamError("invalid_field", "'flush_id' must be a string or a number", cid, param="flush_id")
        return [Flush(cid, flush_id)]

    def _on_end(self, msg: dict) -> list[Action]:
        cid = _context_id(msg)
        self._live(cid, "end").state = ENDED
        return [End(cid)]

    def _on_cancel(self, msg: dict) -> list[Action]:
        cid = _context_id(msg, required=False)
        if cid is None:
            targets = list(self.contexts)
            if not targets:
                return [Send({"type": "cancelled", "context_id": None})]
        elif cid in self.contexts:
            targets = [cid]
        elif cid in self.finished:  # already over: acknowledge, nothing to stop
            return [Send({"type": "cancelled", "context_id": cid})]
        else:
            raise StreamError("unknown_context", f"cannot cancel context {cid!r}: no text was sent to it", cid)
        out: list[Action] = []
        for target in targets:
            self._finish(target, CANCELLED)
            out += [Cancel(target), Send({"type": "cancelled", "context_id": target})]
        return out

    def _option_fields(self, msg: dict, cid: str | None) -> dict:
        """The option fields of a ``config`` or a context's first ``text``; ``language`` checked
        against the engine's languages (None when the engine should detect it: ``auto`` on a
        context overrides a connection default)."""
        fields = {k: v for k, v in msg.items() if k in OPTION_FIELDS}
        if "language" in fields:
            try:
                fields["language"] = check_language(fields["language"], self.languages, self.engine)
            except LanguageError as e:
                raise StreamError("unsupported_language" if e.unsupported else "invalid_field", e.message, cid,
                                  param="language") from None
        return fields

    # --- answers from the session ---------------------------------------------------------------
    def configured(self, config: Config, fields: dict, *, ready: dict, warnings: Sequence[Notice] = ()) -> list[Action]:
        """The options of a ``Configure`` resolved: apply it all at once. ``ready``: the session's
        part of the ``ready`` message (session id, engine, limits); ``warnings``: what the options
        asked that the server will not do (a clamped speed, a voice the engine cannot clone...)."""
        self.config, self.default_fields = config, fields
        return [Send(self.ready(ready)), *(Send(n.payload()) for n in warnings)]

    def opened(self, cid: str, open_: Open, *, warnings: Sequence[Notice] = ()) -> list[Action]:
        """The options of an ``Open`` resolved: the context exists, with a binary slot; each of
        ``warnings`` follows its ``context_started``."""
        self._opening.pop(cid, None)
        context = Context(self._next_slot, chars=len(open_.text))
        self._next_slot = (self._next_slot + 1) % 65536
        self.contexts[cid] = context
        self.unplayed += 1
        out: list[Action] = [Send({"type": "context_started", "context_id": cid, "slot": context.slot})]
        out += [Send(n.payload(context_id=cid)) for n in warnings]
        if open_.text:
            out.append(Push(cid, open_.text))
        if open_.end:
            context.state = ENDED
            out.append(End(cid))
        return out

    def refused(self, error: StreamError) -> list[Action]:
        """A ``Configure`` or ``Open`` the session could not serve (bad voice, not ready...)."""
        if error.context_id is not None:
            self._opening.pop(error.context_id, None)
        return self._error(error)

    def done(self, cid: str, *, audio_ms: int, sentences: int) -> list[Action]:
        context = self.contexts.get(cid)
        if context is None:
            return []  # cancelled by the client meanwhile: nothing follows its `cancelled`
        self._finish(cid, DONE)
        return [Send({"type": "done", "context_id": cid, "audio_ms": audio_ms, "chars": context.chars,
                      "sentences": sentences})]

    def failed(self, cid: str, code: str, message: str, **extra: Any) -> list[Action]:
        """The server could not finish context ``cid``: it is over, and the client is told why."""
        if cid not in self.contexts:
            return []  # cancelled by the client meanwhile: nothing follows its `cancelled`
        self._finish(cid, FAILED)
        return self._error(StreamError(code, message, cid, **extra))

    def retired(self) -> None:
        """The player is done with one context (played, cancelled or failed)."""
        self.unplayed = max(0, self.unplayed - 1)

    def is_final(self, cid: str) -> bool:
        return cid not in self.contexts

    # --- helpers -----------------------------------------------------------------------------------
    def ready(self, extra: dict) -> dict:
        c = self.config
        return {"type": "ready", "session_id": extra.get("session_id"), "output": c.output.describe(),
                "audio_transport": c.transport, "sentence_timestamps": c.sentence_events,
                "max_buffer_delay_ms": c.buffer_delay_ms, **{k: v for k, v in extra.items() if k != "session_id"}}

    def _live(self, cid: str, action: str) -> Context:
        context = self.contexts.get(cid)
        if context is not None and context.state == OPEN:
            return context
        if context is not None or cid in self.finished:
            state = context.state if context is not None else self.finished[cid]
            raise StreamError("context_ended", f"cannot {action} context {cid!r}: it {_STATE_WORDS[state]}; "
                              "use a new context_id", cid)
        if cid in self._opening:
            raise StreamError("context_ended", f"cannot {action} context {cid!r}: it could not be opened", cid)
        raise StreamError("unknown_context", f"cannot {action} context {cid!r}: no text was sent to it", cid)

    def _finish(self, cid: str, state: str) -> None:
        """A context reached a final state: forget its live state, remember its id."""
        self.contexts.pop(cid, None)
        self.finished[cid] = state
        while len(self.finished) > REMEMBERED_CONTEXTS:
            self.finished.popitem(last=False)

    def _too_long(self, cid: str, chars: int) -> StreamError:
        return StreamError("text_too_long", f"context {cid!r} would hold {chars} characters; the limit is "
                           f"{self.max_text_chars} per context (this piece was dropped)", cid)

    @staticmethod
    def _error(error: StreamError) -> list[Action]:
        return [Send(error.payload())]


def _context_id(msg: dict, *, required: bool = True) -> str | None:
    cid = msg.get("context_id")
    if cid is None and not required:
        return None
    if not isinstance(cid, str) or not cid or len(cid) > MAX_CONTEXT_ID_CHARS:
        raise StreamError("invalid_field", f"'{msg.get('type')}' needs 'context_id': a non-empty string of at "
                          f"most {MAX_CONTEXT_ID_CHARS} characters", param="context_id")
    return cid


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean"}.get(type(value), "a number")


def _show(value: Any) -> str:
    """A client value in an error message, short whatever its size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- server messages ---------------------------------------------------------------------------------

def audio_frame(slot: int, seq: int, data: bytes) -> bytes:
    return HEADER.pack(FORMAT_VERSION, KIND_AUDIO, slot, seq & 0xFFFFFFFF) + data


__all__ = ["AgentStreamProtocol", "Cancel", "Close", "Config", "Configure", "Context", "End", "Flush", "Open",
           "Output", "Push", "Send", "StreamError", "audio_frame"]
