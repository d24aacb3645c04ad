"""Request fields shared by the HTTP endpoints: body limits, voice references, emotion, speed.

Users arrive from OpenAI clients, index-tts-vllm, moeru-ai and other IndexTTS
wrappers, each with its own field names (protocols.md §4.3). Everything here maps
those names onto the engine's one internal form (``Voice``, ``Emotion``, speed)
and rejects what cannot be mapped with an ``ApiError`` naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive

from ..engine.base import EMOTIONS, SPEED_MAX, SPEED_MIN, Emotion, Voice
from ..model.emotion import normalize_emotion_vector as normalize_emotion
from .emotion_forms import XIAOZHI_EMOTION_MAP, label_to_vector
from .capabilities import LanguageError, check_language
from .http_errors import ApiError, input_error, invalid
from .inputs import InputError, clean_string, loads_json

# Bodies above this size are parsed on a worker thread, so a large inline voice clip
# (megabytes of base64) never holds the event loop.
PARSE_OFF_LOOP_BYTES = 64 * 1024

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                 "verse", "marin", "cedar")
DEFAULT_VOICE_NAMES = ("default",)  # always the default voice, unless a stored voice has that id or name

# Labels beyond the eight and the xiaozhi ``llm.emotion`` names (XIAOZHI_EMOTION_MAP) -> weights.
EXTRA_LABELS: dict[str, tuple[float, ...]] = {
    **{name: label_to_vector("happy") for name in ("joyful", "excited")},
    **{name: label_to_vector("afraid") for name in ("scared", "fearful", "fear")},
    "disgust": label_to_vector("disgusted"),
    **{name: label_to_vector("melancholic") for name in ("depressed", "low")},
}


def _is_label(key: str) -> bool:
    return key in EMOTIONS or key in XIAOZHI_EMOTION_MAP or key in EXTRA_LABELS


# --- bodies -----------------------------------------------------------------------------

def limited_receive(request: Request, limit: int) -> Receive:
    """``request.receive`` that fails with 413 once the body passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}", code="request_too_large")
    seen = 0
    receive = request.receive

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
        return message

    return wrapped


async def read_json(request: Request, limit: int) -> dict:
    """The JSON object body read through ``inputs.loads_object``: bounded before parsing
    (size, depth, number length), strings valid Unicode and NFC; 400/413 naming the problem."""
    request = Request(request.scope, limited_receive(request, limit))
    raw = await request.body()
    try:
        if len(raw) > PARSE_OFF_LOOP_BYTES:
            body = await asyncio.to_thread(loads_json, raw, max_bytes=limit, what="request body")
        else:
            body = loads_json(raw, max_bytes=limit, what="request body")
    except InputError as e:
        raise input_error(e) from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object", code="invalid_json")
    return body


def clean_field(value: str, param: str) -> str:
    """A string from a form field, query string or path: valid Unicode, NFC (400 otherwise)."""
    try:
        return clean_string(value, param)
    except InputError as e:
        raise input_error(e, param) from None


def merged_fields(body: dict) -> dict:
    """Top-level fields, with moeru-ai style ``extra`` fields filling in (top level wins)."""
    extra = body.get("extra")
    if extra is None:
        return dict(body)
    if not isinstance(extra, dict):
        raise invalid("'extra' must be an object", param="extra")
    return {**extra, **{k: v for k, v in body.items() if k != "extra"}}


def first(fields: dict, *names: str) -> tuple[str | None, Any]:
    """The first of ``names`` present (not None) in ``fields``: (name, value)."""
    for name in names:
        if fields.get(name) is not None:
            return name, fields[name]
    return None, None


def require_text(fields: dict, name: str, max_chars: int) -> str:
    text = fields.get(name)
    if text is None:
        raise invalid(f"'{name}' is required: the text to speak", param=name, code="missing_required_parameter")
    if not isinstance(text, str):
        raise invalid(f"'{name}' must be a string", param=name)
    if not text.strip():
        raise invalid(f"'{name}' is empty: give some text to speak", param=name, code="empty_input")
    if len(text) > max_chars:
        raise invalid(f"'{name}' is {len(text)} characters; the limit is {max_chars}", param=name,
                      code="string_above_max_length")
    return text


def number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid(f"'{param}' must be a number", param=param)
    try:
        out = float(value)
    except ValueError:
        raise invalid(f"'{param}' must be a number, got {value!r}", param=param) from None
    if not math.isfinite(out):
        raise invalid(f"'{param}' must be finite", param=param)
    return out


# --- voices -------------------------------------------------------------------------------

def decode_inline_audio(value: str, *, what: str = "voice") -> bytes:
    """Bytes of a ``data:audio/...;base64,`` URL or bare base64 text."""
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, f"{what}: data URL must be base64 encoded (data:audio/wav;base64,...)",
                             param=what, code="invalid_audio")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what}: inline audio is not valid base64", param=what, code="invalid_audio") from None


def resolve_voice(ctx, ref: Any, *, param: str = "voice") -> Voice | None:
    """A voice reference -> ``Voice`` (None: the engine's built-in voice).

    Accepts a registered id or name, ``"default"``, an OpenAI voice name (mapped by
    ``openai_voice_map``, else the default voice), ``{"id": ...}``, inline audio
    (``{"audio": <base64>}`` or a ``data:audio/...;base64,`` URL) and, when
    ``allow_server_paths`` is set, a path on the server (``{"path": ...}`` or a string).
    """
    settings, library = ctx.settings, ctx.voices
    if ref is None or ref == "":
        return default_voice(ctx, param)
    if isinstance(ref, dict):
        if ref.get("id") is not None:
            if not isinstance(ref["id"], str):
                raise invalid(f"'{param}.id' must be a string", param=f"{param}.id")
            return resolve_voice(ctx, ref["id"], param=param)
        for key in ("audio", "data", "url"):
            if isinstance(ref.get(key), str):
                return _inline(ctx, ref[key], param)
        if isinstance(ref.get("path"), str):
            return _server_path(ctx, ref["path"], param)
        raise invalid(f"'{param}' object needs 'id' (a registered voice) or 'audio' (base64 clip)", param=param)
    if not isinstance(ref, str):
        raise invalid(f"'{param}' must be a voice id string or an object like {{\"id\": \"...\"}}", param=param)
    voice = library.get(ref) if library is not None else None
    if voice is not None:
        return voice
    if ref.lower() in DEFAULT_VOICE_NAMES:
        return default_voice(ctx, param)
    if ref.lower() in OPENAI_VOICES:
        mapped = settings.openai_voice_map.get(ref.lower()) or settings.openai_voice_map.get(ref)
        if mapped:
            return library.require_configured(mapped, param=param)  # the tenant's, else the operator's
        return default_voice(ctx, param)
    if ref.startswith("data:"):
        return _inline(ctx, ref, param)
    if settings.allow_server_paths and ("/" in ref or "\\" in ref or Path(ref).suffix):
        return _server_path(ctx, ref, param)
    if library is None:
        raise ApiError(404, f"voice {ref!r} not found (no voice library)", param=param, code="voice_not_found")
    return library.require(ref, param=param)


def default_voice(ctx, param: str = "voice") -> Voice | None:
    """``--default-voice``; else, for an engine that must clone, the library's first voice; else the
    engine's built-in voice (None)."""
    name = ctx.settings.default_voice
    needs_voice = ctx.engine is not None and ctx.engine.needs_voice
    if not name and needs_voice and ctx.voices is not None and len(ctx.voices):
        oldest = ctx.voices.list()[:1]
        if oldest:
            return ctx.voices.get(oldest[0]["id"])
    if not name or ctx.voices is None:
        if needs_voice:
            raise ApiError(400, f"the {ctx.engine.name} engine speaks with a cloned voice and none was given: pass "
                                f"'{param}' (an id from GET /v1/audio/voices; add one with POST /v1/audio/voices) "
                                "or start the server with --default-voice ID", param=param, code="voice_required")
        return None
    voice = ctx.voices.configured(name)  # the tenant's own, else the operator's (default tenant)
    if voice is None:
        raise ApiError(500, f"the configured default_voice {name!r} is not in the voice library",
                       param=param, code="default_voice_missing", type="server_error")
    return voice


def _inline(ctx, value: str, param: str) -> Voice:
    data = decode_inline_audio(value, what=param)
    if len(data) > ctx.settings.max_upload_bytes:
        raise ApiError(413, f"inline audio in '{param}' is {len(data)} bytes; the limit is "
                            f"{ctx.settings.max_upload_bytes}", param=param, code="file_too_large")
    return ctx.voices.transient(data, what=param)


def _server_path(ctx, path: str, param: str) -> Voice:
    if not ctx.settings.allow_server_paths:
        raise invalid(f"'{param}': server-side paths are disabled (start with --allow-server-paths, or upload "
                      "the clip with POST /v1/audio/voices and use its id)", param=param, code="server_paths_disabled")
    if "\0" in path:
        raise invalid(f"'{param}': a path cannot hold a NUL character", param=param, code="invalid_audio")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise invalid(f"'{param}': cannot read {path}: {e.strerror or e}", param=param, code="invalid_audio") from None
    return ctx.voices.transient(data, what=param)


# --- emotion ------------------------------------------------------------------------------

def normalize_emotion_vector(weights: list[float]) -> tuple[float, ...]:
    """Clamp each weight to 0-1, then damp it like the official web UI (bias, sum capped at 0.8)."""
    return tuple(normalize_emotion(min(1.0, max(0.0, w)) for w in weights))


def parse_vector(value: Any, param: str) -> tuple[float, ...]:
    if isinstance(value, str):  # "0.1,0,0,..." as some form-based wrappers send it
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, dict):  # {"happy": 0.5, "sad": 0.2}
        unknown = set(value) - set(EMOTIONS)
        if unknown:
            raise invalid(f"'{param}': unknown emotion(s) {sorted(unknown)}; use {', '.join(EMOTIONS)}", param=param)
        value = [value.get(name, 0.0) for name in EMOTIONS]
    if not isinstance(value, (list, tuple)) or len(value) != len(EMOTIONS):
        raise invalid(f"'{param}' must be {len(EMOTIONS)} numbers 0-1 in the order {', '.join(EMOTIONS)}",
                      param=param)
    return normalize_emotion_vector([number(v, param) for v in value])


def label_vector(label: str, strength: float, param: str) -> tuple[float, ...] | None:
    """The weights for a label times ``strength``; None for a neutral label (the voice's own emotion)."""
    key = label.strip().lower()
    if key in EMOTIONS:
        weights = label_to_vector(key)
    elif key in XIAOZHI_EMOTION_MAP:
        weights = XIAOZHI_EMOTION_MAP[key]
    elif key in EXTRA_LABELS:
        weights = EXTRA_LABELS[key]
    else:
        raise invalid(f"'{param}': unknown emotion label {label!r}; use one of {', '.join(EMOTIONS)} "
                      "(or give 'text' for a free description)", param=param)
    if weights is None:
        return None
    return normalize_emotion_vector([w * strength for w in weights])


def parse_emotion(ctx, fields: dict) -> Emotion | None:
    """Every spelling of emotion control (§4.3 cross-walk) -> one ``Emotion`` or None.

    ``emotion`` may be an object (``vector``/``values``, ``label`` + ``strength``,
    ``text``, ``reference``, ``alpha``/``weight``, moeru-ai's ``mode``), a label
    string or a list of 8 weights. Flat aliases: ``emo_vector``/``emo_vec``/
    ``emotion_vector``, ``emo_text``/``emotion_text``, ``emo_alpha``/``emo_weight``/
    ``emotion_alpha``, ``emo_ref``/``emo_audio_prompt``/``emotion_voice``/
    ``emo_ref_path``, ``instructions``, and index-tts-vllm's ``emo_control_method``.
    Read in that order: a flat alias overrides the same part of ``emotion``, and
    ``emo_control_method`` then keeps only the part it names.
    """
    parts = _EmotionParts()
    if not _read_emotion_field(ctx, fields.get("emotion"), parts):
        return None  # moeru-ai's mode "same_as_voice"
    _read_flat_emotion_fields(ctx, fields, parts)
    if not _apply_control_method(fields, parts):
        return None  # emo_control_method 0: the speaker's own emotion
    return parts.emotion()


@dataclass
class _EmotionParts:
    """What the emotion fields said so far; later spellings overwrite earlier ones."""

    vector: tuple[float, ...] | None = None
    text: str | None = None
    reference: Voice | None = None
    alpha: float = 1.0

    def emotion(self) -> Emotion | None:
        if self.vector is None and self.text is None and self.reference is None:
            return None
        return Emotion(vector=self.vector, text=self.text, reference=self.reference,
                       alpha=min(1.0, max(0.0, self.alpha)))


def _read_emotion_field(ctx, emo: Any, parts: _EmotionParts) -> bool:
    """The ``emotion`` field in any of its forms; False for ``mode: same_as_voice`` (no emotion)."""
    if isinstance(emo, str) and emo.strip():
        emo = {"label": emo} if _is_label(emo.strip().lower()) else {"text": emo}
    elif isinstance(emo, (list, tuple)):
        emo = {"vector": emo}
    if not isinstance(emo, dict):
        if emo not in (None, ""):
            raise invalid("'emotion' must be an object, a label string or a list of 8 weights", param="emotion")
        return True
    mode = emo.get("mode")
    if mode not in (None, "same_as_voice", "audio", "vector", "text"):
        raise invalid(f"'emotion.mode' {mode!r} is not one of same_as_voice, audio, vector, text",
                      param="emotion.mode")
    if mode == "same_as_voice":
        return False
    _, vec = first(emo, "vector", "values")
    if vec is not None:
        parts.vector = parse_vector(vec, "emotion.vector")
    if emo.get("label") is not None:  # after the vector: a label wins (a neutral one clears it)
        if not isinstance(emo["label"], str):
            raise invalid("'emotion.label' must be a string", param="emotion.label")
        strength = number(emo.get("strength", 1.0), "emotion.strength")
        parts.vector = label_vector(emo["label"], strength, "emotion.label")
    if emo.get("text") is not None:
        if not isinstance(emo["text"], str):
            raise invalid("'emotion.text' must be a string", param="emotion.text")
        parts.text = emo["text"].strip() or None
    _, ref = first(emo, "reference", "voice", "audio")
    if ref is not None:
        parts.reference = resolve_voice(ctx, ref, param="emotion.reference")
    name, value = first(emo, "alpha", "weight")
    if value is not None:
        parts.alpha = number(value, f"emotion.{name}")
    return True


def _read_flat_emotion_fields(ctx, fields: dict, parts: _EmotionParts) -> None:
    """The top-level aliases other wrappers send (``emo_vector``, ``emo_text``, ``instructions`` ...)."""
    name, vec = first(fields, "emo_vector", "emo_vec", "emotion_vector")
    if vec is not None:
        parts.vector = parse_vector(vec, name)
    name, value = first(fields, "emo_text", "emotion_text")
    if value is not None:
        if not isinstance(value, str):
            raise invalid(f"'{name}' must be a string", param=name)
        parts.text = value.strip() or parts.text
    instructions = fields.get("instructions")
    if parts.text is None and isinstance(instructions, str) and instructions.strip():
        parts.text = instructions.strip()
    if parts.text is None and fields.get("use_emo_text") is True:
        parts.text = str(fields.get("text") or fields.get("input") or "").strip() or None  # upstream: the text itself
    name, ref = first(fields, "emo_ref", "emo_audio_prompt", "emotion_voice", "emotion_prompt", "emo_ref_path")
    if ref is not None:
        parts.reference = resolve_voice(ctx, ref, param=name)
    name, value = first(fields, "emo_alpha", "emo_weight", "emotion_alpha")
    if value is not None:
        parts.alpha = number(value, name)


def _apply_control_method(fields: dict, parts: _EmotionParts) -> bool:
    """index-tts-vllm v2's ``emo_control_method`` (0 speaker, 1 reference clip, 2 vector, 3 text)
    keeps only the part it names; False for 0 (no emotion)."""
    method = fields.get("emo_control_method")
    if method is None:
        return True
    if type(method) is not int or method not in (0, 1, 2, 3):
        raise invalid("'emo_control_method' must be 0 (speaker), 1 (reference audio), 2 (vector) or 3 (text)",
                      param="emo_control_method")
    if method == 0:
        return False
    parts.vector = parts.vector if method == 2 else None
    parts.reference = parts.reference if method == 1 else None
    if method == 3 and parts.text is None:
        parts.text = str(fields.get("text") or "").strip() or None
    parts.text = parts.text if method == 3 else None
    if method == 1 and parts.reference is None:
        raise invalid("emo_control_method 1 needs 'emo_ref_path' (an emotion reference voice)", param="emo_ref_path")
    return True


# --- language -------------------------------------------------------------------------------

def parse_language(ctx, fields: dict, param: str = "language") -> str | None:
    """``language``: None (absent, empty or ``auto``: the engine detects it), else a tag whose
    primary subtag (``en`` of ``en-US``) the engine speaks; 400 naming the supported ones."""
    engine = ctx.engine
    languages = engine.capabilities().languages if engine is not None else None
    try:
        return check_language(fields.get(param), languages, engine.name if engine is not None else "", param)
    except LanguageError as e:
        raise invalid(e.message, param=param, code="unsupported_language" if e.unsupported else "invalid_value") \
            from None


# --- speed ----------------------------------------------------------------------------------

def parse_speed(fields: dict) -> tuple[float, str | None]:
    """``speed`` (or ``duration_factor`` = 1/speed) clamped to 0.5-2.0; returns (speed, warning or None)."""
    name, value = first(fields, "speed", "duration_factor")
    if value is None:
        return 1.0, None
    raw = number(value, name)
    if raw <= 0:
        raise invalid(f"'{name}' must be positive, got {raw:g}", param=name)
    speed = 1.0 / raw if name == "duration_factor" else raw
    clamped = min(SPEED_MAX, max(SPEED_MIN, speed))
    if clamped != speed:
        return clamped, f"{name} {raw:g} is outside the supported speed range {SPEED_MIN}-{SPEED_MAX}; used {clamped:g}"
    return speed, None
