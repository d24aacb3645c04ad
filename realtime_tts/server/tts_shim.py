"""Drop-in routes for users of xiaozhi-esp32-server and index-tts-vllm (protocols.md §1.11, §4.1, §5.1.12).

* ``POST /tts`` ``{"text", "character", ...}``: what xiaozhi-esp32-server's
  ``index_stream`` provider calls. Answers 200 with raw s16le mono 24 kHz PCM,
  chunked, one piece per sentence as soon as it is synthesized; errors are
  non-200 JSON (the provider logs the body and ends the turn).
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..engine.base import SynthesisOptions
from .http_errors import api_endpoint, invalid
from .http_speech import SpeechResponse, collect, first_sentence, start_speech
from .openai_api import JSON_BODY_LIMIT, wav_file
from .params import parse_emotion, parse_language, parse_speed, read_json, require_text, resolve_voice
from .voices import decode_clip, merge_clips

log = logging.getLogger(__name__)

SHIM_RATE = 24000  # the index_stream provider hard-codes 24 kHz


def _options(ctx, fields: dict, voice_field: str) -> tuple[SynthesisOptions, dict]:
    speed, warning = parse_speed(fields)
    voice = resolve_voice(ctx, fields.get(voice_field), param=voice_field)
    emotion = parse_emotion(ctx, fields)
    language = parse_language(ctx, fields)
    headers = {"X-Speed-Clamped": f"{speed:g}", "Warning": f'299 realtime-tts "{warning}"'} if warning else {}
    return SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=language), headers


def _tts_url_voice(ctx, fields: dict):
    """index-tts-vllm v2 ``spk_audio_path`` or v1 ``audio_paths`` (several clips are joined)."""
    if fields.get("spk_audio_path") is not None:
        return resolve_voice(ctx, fields["spk_audio_path"], param="spk_audio_path")
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
    metrics = ctx.metrics

    @api_endpoint
    async def tts(request: Request):
        fields = await read_json(request, JSON_BODY_LIMIT)
        text = require_text(fields, "text", ctx.settings.max_text_chars)
        options, headers = await ctx.codec.run(_options, ctx.for_request(request.scope), fields,
                                               "character" if "character" in fields else "voice")
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
            opts, headers = _options(scoped, {k: v for k, v in fields.items() if k not in ("spk_audio_path", "audio_paths")},
                                     "__none__")
            return SynthesisOptions(voice=_tts_url_voice(scoped, fields), emotion=opts.emotion, speed=opts.speed,
                                    language=opts.language), headers

        opts, headers = await ctx.codec.run(options)
        rate = ctx.engine.sample_rate  # index-tts-vllm v2 answers at the model's own rate
        t0 = time.monotonic()
        stream = await start_speech(ctx, text, opts, endpoint="tts_url", container="pcm_s16le", sample_rate=rate,
                                    whole_file=True)
        first = await first_sentence(ctx, stream, "tts_url")
        with metrics.connection("tts_url"):
            pcm = await collect(ctx, stream, first, "tts_url")
        metrics.observe_ttfa("tts_url", time.monotonic() - t0)
        return Response(await ctx.codec.run(wav_file, pcm, rate), media_type="audio/wav", headers=headers)

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
