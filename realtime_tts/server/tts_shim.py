"""Drop-in routes for users of xiaozhi-esp32-server and index-tts-vllm (protocols.md §1.11, §4.1, §5.1.12).

* ``POST /tts`` ``{"text", "character", ...}``: what xiaozhi-esp32-server's
  ``index_stream`` provider calls. Answers 200 with raw s16le mono 24 kHz PCM,
  chunked, one piece per sentence as soon as it is synthesized; errors are
  non-200 JSON (the provider logs the body and ends the turn). Stock index-tts-vllm
  answers the same route with a whole WAV file: ``format: "wav"`` (body or query)
  or the ``tts_route_format = "wav"`` setting gives that answer. A body with
  ``tts_text`` is the original service's ``TTSRequest`` (``tts_request.py``).
* ``POST /tts_url``: index-tts-vllm's v2 route (``spk_audio_path``,
  ``emo_control_method``, ``emo_vec``...); answers a complete WAV file.
* ``GET /audio/voices``: index-tts-vllm's speaker listing, ``{"name": [preview URL]}`` (the tenant's
  voices; never a server path).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..engine.base import SynthesisOptions
from . import capabilities, tts_request
from .capabilities import Notice
from .http_errors import api_endpoint, invalid
from .http_speech import SpeechResponse, first_sentence, start_speech, whole_wav
from .openai_api import JSON_BODY_LIMIT
from .params import parse_emotion, parse_language, parse_speed, read_json, require_text, resolve_voice
from .voices import decode_clip, merge_clips

log = logging.getLogger(__name__)

SHIM_RATE = 24000  # the index_stream provider hard-codes 24 kHz
ROUTE_FORMATS = ("pcm", "wav")


def _options(ctx, fields: dict, voice) -> tuple[SynthesisOptions, dict]:
    """The request's options (``voice`` already resolved) and the warning headers that go with them."""
    speed, warning = parse_speed(fields)
    emotion = parse_emotion(ctx, fields)
    language = parse_language(ctx, fields)
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=language)
    headers = {"X-Speed-Clamped": f"{speed:g}", "Warning": f'299 realtime-tts "{warning}"'} if warning else {}
    headers |= capabilities.header(([Notice("speed_clamped", warning)] if warning else [])
                                   + capabilities.engine_notices(ctx.engine, options))
    return options, headers


def _tts_options(ctx, fields: dict) -> tuple[SynthesisOptions, dict]:
    name = "character" if "character" in fields else "voice"
    return _options(ctx, fields, resolve_voice(ctx, fields.get(name), param=name))


def route_format(ctx, fields: dict, query) -> str:
    """What ``/tts`` answers: ``format`` in the body or the query, else ``tts_route_format``."""
    value = fields.get("format", query.get("format"))
    if value is None:
        return ctx.settings.tts_route_format
    if not isinstance(value, str) or value.lower() not in ROUTE_FORMATS:
        raise invalid(f"'format' must be pcm (raw 24 kHz s16le, streamed) or wav (a whole WAV file), got "
                      f"{str(value)[:40]!r}", param="format", code="unsupported_value")
    return value.lower()


def _tts_url_voice(ctx, fields: dict):
    """index-tts-vllm v2 ``spk_audio_path``, its current ``audio_path``, or v1 ``audio_paths``
    (several clips are joined)."""
    for name in ("spk_audio_path", "audio_path"):
        if fields.get(name) is not None:
            return resolve_voice(ctx, fields[name], param=name)
    paths = fields.get("audio_paths")
    if paths is None:
        return resolve_voice(ctx, fields.get("character") or fields.get("voice"), param="spk_audio_path")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise invalid("'audio_paths' must be a non-empty list of voice ids or server paths", param="audio_paths")
    if len(paths) == 1 or not ctx.settings.allow_server_paths:
        return resolve_voice(ctx, paths[0], param="audio_paths")
    clips = []
    for p in paths:
        try:
            clips.append(decode_clip(Path(p).read_bytes(), what="audio_paths"))
        except OSError as e:
            raise invalid(f"'audio_paths': cannot read {p}: {e.strerror or e}", param="audio_paths") from None
    return ctx.voices.transient(merge_clips(clips), what="audio_paths")


def shim_routes(ctx) -> list[Route]:

    @api_endpoint
    async def tts(request: Request):
        fields = await read_json(request, JSON_BODY_LIMIT)
        if tts_request.is_tts_request(fields):
            return await tts_request.respond(ctx.for_request(request.scope), fields)
        text = require_text(fields, "text", ctx.settings.max_text_chars)
        answer = route_format(ctx, fields, request.query_params)
        options, headers = await ctx.codec.run(_tts_options, ctx.for_request(request.scope), fields)
        if answer == "wav":  # stock index-tts-vllm's answer: one WAV file at the model's rate
            return await whole_wav(ctx, text, options, endpoint="tts", headers={**headers, "Cache-Control": "no-store"})
        t0 = time.monotonic()
        stream = await start_speech(ctx, text, options, endpoint="tts", container="pcm_s16le", sample_rate=SHIM_RATE)
        first = await first_sentence(ctx, stream, "tts")
        headers |= {"X-Sample-Rate": str(SHIM_RATE), "X-Audio-Format": "s16le; channels=1", "Cache-Control": "no-store"}
        return SpeechResponse(ctx, stream, first, endpoint="tts", media_type="application/octet-stream",
                              headers=headers, started=t0)

    @api_endpoint
    async def tts_url(request: Request):
        fields = await read_json(request, JSON_BODY_LIMIT)
        text = require_text(fields, "text", ctx.settings.max_text_chars)
        scoped = ctx.for_request(request.scope)

        def options():
            return _options(scoped, fields, _tts_url_voice(scoped, fields))

        opts, headers = await ctx.codec.run(options)
        return await whole_wav(ctx, text, opts, endpoint="tts_url", headers=headers)  # at the model's own rate

    @api_endpoint
    async def speakers(request: Request):
        # index-tts-vllm lists each speaker's clip paths; ours are the server's business, so each
        # voice names its preview URL instead (clients use the names as `character`).
        voices = ctx.for_request(request.scope).voices
        await ctx.codec.run(voices.refresh)
        return JSONResponse({m["id"]: [f"/v1/audio/voices/{m['id']}/audio"] for m in voices.list()})

    return [
        Route("/tts", tts, methods=["POST"]),
        Route("/tts_url", tts_url, methods=["POST"]),
        Route("/audio/voices", speakers, methods=["GET"]),
    ]
