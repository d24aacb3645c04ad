"""OpenAI-compatible speech: ``POST /v1/audio/speech`` (also ``/audio/speech``) and ``GET /v1/models``.

The body streams by default through the shared speech stream (``http_speech.py``): the text
is cut into sentences, synthesized a bounded lead ahead of what the client has read, and each
sentence's audio is written the moment it is ready. The response headers wait for the first
sentence, so a failure there still gets a proper error status; a failure later can only end
the stream (SSE clients get an ``error`` event). ``stream: false`` collects the whole file.

Field mapping (protocols.md §5.2): ``voice`` -> Voice (OpenAI names alias to
configured voices), ``instructions`` -> emotion text, ``speed`` -> clamped to
0.5-2.0 with ``X-Speed-Clamped``/``Warning`` headers, extension fields of §4.3
top level or under ``extra``.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..engine.base import EMOTIONS, SynthesisOptions
from . import capabilities
from .capabilities import Notice
from .http_errors import api_endpoint, invalid
from .http_speech import SpeechResponse, collect, first_sentence, start_speech, wav_file
from .params import (OPENAI_VOICES, merged_fields, parse_emotion, parse_language, parse_speed, read_json,
                     require_text, resolve_voice)

log = logging.getLogger(__name__)

DEFAULT_RATE = 24000  # OpenAI's pcm/wav rate
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
JSON_BODY_LIMIT = 1024 * 1024  # a 4096-character request is a few KB; inline voices go through max_upload_bytes

# OpenAI response_format -> (our container name, Content-Type).
FORMATS = {
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("ogg_opus", "audio/ogg"),
    "flac": ("flac", "audio/flac"),
    "wav": ("wav", "audio/wav"),
    "pcm": ("pcm_s16le", "audio/pcm"),
}
UNSUPPORTED_FORMATS = {"aac": "aac output is not supported; use mp3, opus, flac, wav or pcm"}
MODEL_IDS = ("realtime-tts", "indextts2", "indextts2.5", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")


@dataclass
class SpeechRequest:
    text: str
    options: SynthesisOptions
    response_format: str
    container: str
    media_type: str
    sample_rate: int
    stream_format: str
    stream: bool
    headers: dict[str, str]


def parse_speech_request(ctx, body: dict, query: dict, *, default_format: str = "mp3",
                         default_stream: bool = True) -> SpeechRequest:
    fields = merged_fields(body)
    text = require_text(fields, "input", ctx.settings.max_text_chars)
    response_format = fields.get("response_format") or default_format
    if not isinstance(response_format, str):
        raise invalid("'response_format' must be a string", param="response_format")
    response_format = response_format.lower()
    if response_format in UNSUPPORTED_FORMATS:
        raise invalid(UNSUPPORTED_FORMATS[response_format], param="response_format", code="unsupported_value")
    if response_format not in FORMATS:
        raise invalid(f"unknown response_format {response_format!r}; use one of {', '.join(FORMATS)}",
                      param="response_format", code="unsupported_value")
    container, media_type = FORMATS[response_format]
    stream_format = fields.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise invalid(f"unknown stream_format {stream_format!r}; use audio or sse", param="stream_format",
                      code="unsupported_value")
    sample_rate = DEFAULT_RATE
    if fields.get("sample_rate") is not None:
        if response_format not in ("pcm", "wav"):
            raise invalid("'sample_rate' applies to pcm and wav only", param="sample_rate")
        if fields["sample_rate"] not in PCM_RATES:
            raise invalid(f"'sample_rate' must be one of {', '.join(map(str, PCM_RATES))}", param="sample_rate")
        sample_rate = int(fields["sample_rate"])
    language = parse_language(ctx, fields)
    model = fields.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("'model' must be a string", param="model")
    speed, warning = parse_speed(fields)
    voice = resolve_voice(ctx, fields.get("voice"))
    emotion = parse_emotion(ctx, fields)
    stream = fields.get("stream", query.get("stream", default_stream))
    if isinstance(stream, str):
        stream = stream.lower() not in ("0", "false", "no", "off")
    headers = {"X-Sample-Rate": str(sample_rate), "Cache-Control": "no-store"}
    if warning:
        headers["X-Speed-Clamped"] = f"{speed:g}"
        headers["Warning"] = f'299 realtime-tts "{warning}"'
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=language or None)
    headers |= capabilities.header(([Notice("speed_clamped", warning)] if warning else [])
                                   + capabilities.engine_notices(ctx.engine, options))
    return SpeechRequest(text=text, options=options, response_format=response_format, container=container,
                         media_type=media_type, sample_rate=sample_rate, stream_format=stream_format,
                         stream=bool(stream), headers=headers)


def model_capabilities(ctx) -> dict:
    """``capabilities`` of ``GET /v1/models``: the API's formats and what the engine does with each
    option (engine/base.py ``Capabilities``; options beyond them are reported in X-TTS-Warning)."""
    engine = ctx.engine
    caps = engine.capabilities() if engine is not None else None
    emotion = [form for source in (caps.emotion if caps else ())  # a label is a vector's shorthand
               for form in ((source, "label") if source == "vector" else (source,))]
    return {
        "speech": True,
        "streaming": True,
        "response_formats": list(FORMATS),
        "stream_formats": ["audio", "sse"],
        "sample_rate": DEFAULT_RATE,
        "pcm_sample_rates": list(PCM_RATES),
        "speed_range": list(caps.speed) if caps and caps.speed else None,
        "voice_cloning": bool(caps and caps.voice_cloning),
        "openai_voices": list(OPENAI_VOICES),
        "emotion": emotion,
        "emotion_vector_order": list(EMOTIONS),
        "languages": list(caps.languages) if caps and caps.languages is not None else None,
        "max_input_chars": ctx.settings.max_text_chars,
        "engine": ctx.engine_info() if engine is not None else {"name": ctx.engine_name},  # no server paths
    }


def openai_routes(ctx) -> list[Route]:
    metrics = ctx.metrics

    def speech_route(**defaults):
        @api_endpoint
        async def speech(request: Request):
            # Room for an inline voice clip: base64 grows the upload limit by 4/3.
            body = await read_json(request, JSON_BODY_LIMIT + ctx.settings.max_upload_bytes * 4 // 3)
            req = await ctx.codec.run(functools.partial(parse_speech_request, ctx.for_request(request.scope), body, dict(request.query_params),
                                                        **defaults))
            return await speak(req)

        return speech

    async def speak(req: SpeechRequest):
        t0 = time.monotonic()
        stream = await start_speech(ctx, req.text, req.options, endpoint="openai", sample_rate=req.sample_rate,
                                    container="pcm_s16le" if req.container == "wav" and not req.stream
                                    else req.container, whole_file=not req.stream)
        first = await first_sentence(ctx, stream, "openai")
        log.info("speech request", extra={"endpoint": "openai", "chars": len(req.text),
                                          "segments": len(stream.segments), "format": req.response_format,
                                          "stream_format": req.stream_format,
                                          "voice_id": req.options.voice.id if req.options.voice else None})
        if req.stream_format == "sse":
            return SpeechResponse(ctx, stream, first, endpoint="openai", media_type="text/event-stream",
                                  headers=req.headers, started=t0, sse_chars=len(req.text))
        if not req.stream:
            data = await collect(ctx, stream, first, "openai")
            if req.container == "wav":  # exact sizes in the header: strict readers like it
                data = await ctx.codec.run(wav_file, data, req.sample_rate)
            metrics.observe_ttfa("openai", time.monotonic() - t0)
            return Response(data, media_type=req.media_type, headers=req.headers)
        return SpeechResponse(ctx, stream, first, endpoint="openai", media_type=req.media_type,
                              headers=req.headers, started=t0)

    @api_endpoint
    async def models(request: Request):
        created = int(time.time())
        data = [{"id": mid, "object": "model", "created": created, "owned_by": "realtime-tts",
                 "capabilities": model_capabilities(ctx)} for mid in MODEL_IDS]
        return JSONResponse({"object": "list", "data": data})

    return [
        Route("/v1/audio/speech", speech_route(), methods=["POST"]),
        # index-tts-vllm's OpenAI route answers a whole WAV file whatever was asked: the same
        # defaults here (an explicit response_format or stream still wins).
        Route("/audio/speech", speech_route(default_format="wav", default_stream=False), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def metrics_routes(ctx) -> list[Route]:
    """``GET /metrics``: Prometheus text format for this server instance."""

    async def metrics(request: Request):
        ctx.metrics.queue_depth.set(ctx.executor.queue_depth)
        ctx.metrics.sample_process()
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    return [Route("/metrics", metrics, methods=["GET"])]
