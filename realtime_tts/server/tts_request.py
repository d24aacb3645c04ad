"""The request of the service this project grew from: ``POST /v1/tts`` (and ``POST /tts`` with its fields).

That service, a FastAPI server over IndexTTS2 with a serialized GPU queue, takes exactly

    TTSRequest {voice_id, tts_text, emo_vec, max_tokens, speed}

and answers the audio as one WAV file. Its users switch by changing the URL: the same JSON body
works against ``POST /v1/tts`` here, and against ``POST /tts`` too (a body with ``tts_text`` is
this request, not the ``index_stream`` one).

* ``voice_id`` (required): a voice of the library (id or name, ``GET /v1/audio/voices``);
* ``tts_text`` (required): the text, at most ``max_text_chars``;
* ``emo_vec`` (optional): 8 weights, each in [0, 1], in IndexTTS2's order; all zeros (or null)
  is the voice's own emotion; weighted like every vector of the API (params.parse_vector);
* ``max_tokens`` (optional, default 80): the longest sentence, in characters: the splitter's
  cap for this request (at most the server's ``max_segment_chars``; more is clamped, with a
  warning);
* ``speed`` (optional, default 1): 0.5-2.0 (more or less is clamped, with a warning).

Every field is checked (400 naming it, 404 for an unknown voice); a field the request does not
have is ignored like the original's pydantic model ignores it, and named in ``X-TTS-Warning``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.routing import Route

from ..engine.base import EMOTIONS, Emotion, SynthesisOptions
from . import capabilities
from .capabilities import Notice
from .http_errors import ApiError, api_endpoint, invalid
from .http_speech import whole_wav
from .params import normalize_emotion_vector, number, parse_speed, read_json, require_text

FIELDS = ("voice_id", "tts_text", "emo_vec", "max_tokens", "speed")
DEFAULT_MAX_TOKENS = 80
MIN_MAX_TOKENS = 4  # the splitter's own floor (text/segment.py)
MAX_MAX_TOKENS = 600  # IndexTTS2's GPT takes at most 600 text tokens per segment
JSON_BODY_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class TTSRequest:
    text: str
    options: SynthesisOptions
    max_segment_chars: int
    notices: tuple[Notice, ...]


def is_tts_request(fields: dict) -> bool:
    """A ``POST /tts`` body that is this request rather than ``index_stream``'s ``{text, character}``."""
    return "tts_text" in fields and "text" not in fields


def _voice(ctx, value):
    if value is None:
        raise invalid("'voice_id' is required: a voice id from GET /v1/audio/voices", param="voice_id",
                      code="missing_required_parameter")
    if not isinstance(value, str) or not value.strip():
        raise invalid("'voice_id' must be a non-empty string: a voice id from GET /v1/audio/voices", param="voice_id")
    if ctx.voices is None:
        raise ApiError(404, f"voice {value!r} not found (no voice library)", param="voice_id", code="voice_not_found")
    return ctx.voices.require(value, param="voice_id")


def _emotion(value) -> Emotion | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != len(EMOTIONS):
        raise invalid(f"'emo_vec' must be a list of {len(EMOTIONS)} numbers in [0, 1], in the order "
                      f"{', '.join(EMOTIONS)}", param="emo_vec")
    weights = [number(w, "emo_vec") for w in value]
    outside = [f"{name}={w:g}" for name, w in zip(EMOTIONS, weights) if not 0.0 <= w <= 1.0]
    if outside:
        raise invalid(f"'emo_vec' weights must be in [0, 1]; got {', '.join(outside)}", param="emo_vec")
    if not any(weights):
        return None  # all zeros: the voice's own emotion
    return Emotion(vector=normalize_emotion_vector(weights))


def _max_tokens(ctx, value) -> tuple[int, Notice | None]:
    if value is None:
        value = DEFAULT_MAX_TOKENS
    else:  # what the original's pydantic ``int`` takes: 80, 80.0, "80"
        raw = number(value, "max_tokens")
        if raw != int(raw):
            raise invalid(f"'max_tokens' must be a whole number, got {raw:g}", param="max_tokens")
        value = int(raw)
    if not MIN_MAX_TOKENS <= value <= MAX_MAX_TOKENS:
        raise invalid(f"'max_tokens' is {value}; use {MIN_MAX_TOKENS}-{MAX_MAX_TOKENS} (the longest sentence)",
                      param="max_tokens")
    cap = ctx.settings.max_segment_chars
    if value > cap:
        return cap, Notice("max_tokens_clamped", f"max_tokens {value} is above this server's max_segment_chars; "
                                                 f"sentences are cut at {cap}")
    return value, None


def parse_tts_request(ctx, fields: dict) -> TTSRequest:
    """The body -> a request; every field checked (``ApiError`` naming it). Reads the voice library:
    call it on the codec pool."""
    text = require_text(fields, "tts_text", ctx.settings.max_text_chars)
    voice = _voice(ctx, fields.get("voice_id"))
    emotion = _emotion(fields.get("emo_vec"))
    max_chars, clamped = _max_tokens(ctx, fields.get("max_tokens"))
    speed, warning = parse_speed({"speed": fields.get("speed")})
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed)
    notices = [n for n in (clamped,) if n]
    if warning:
        notices.append(Notice("speed_clamped", warning))
    unknown = sorted(str(k) for k in fields if k not in FIELDS)
    if unknown:
        notices.append(Notice("fields_ignored", f"not fields of TTSRequest, ignored: {', '.join(unknown)[:200]}"))
    notices += capabilities.engine_notices(ctx.engine, options)
    return TTSRequest(text, options, max_chars, tuple(notices))


async def respond(ctx, fields: dict):
    """The whole WAV for a parsed body (``/v1/tts``, and ``/tts`` when ``is_tts_request``)."""
    request = await ctx.codec.run(parse_tts_request, ctx, fields)
    return await whole_wav(ctx, request.text, request.options, endpoint="tts_request",
                           headers={"Cache-Control": "no-store", **capabilities.header(list(request.notices))},
                           max_segment_chars=request.max_segment_chars)


def tts_request_routes(ctx) -> list[Route]:
    @api_endpoint
    async def tts(request: Request):
        return await respond(ctx.for_request(request.scope), await read_json(request, JSON_BODY_LIMIT))

    return [Route("/v1/tts", tts, methods=["POST"])]
