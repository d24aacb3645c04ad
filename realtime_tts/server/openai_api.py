"""OpenAI-compatible speech: ``POST /v1/audio/speech`` (also ``/audio/speech``) and ``GET /v1/models``.

The body streams by default: the text is cut into sentences, every sentence is
queued on the executor at once (the executor interleaves clients fairly), and
each sentence's audio is written the moment it is ready. The response headers
wait for the first sentence, so a failure there still gets a proper error status;
a failure later can only end the stream (SSE clients get an ``error`` event).

Field mapping (protocols.md §5.2): ``voice`` -> Voice (OpenAI names alias to
configured voices), ``instructions`` -> emotion text, ``speed`` -> clamped to
0.5-2.0 with ``X-Speed-Clamped``/``Warning`` headers, extension fields of §4.3
top level or under ``extra``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..audio.containers import make_stream
from ..audio.pcm import float_to_s16le
from ..audio.resample import StreamingResampler
from ..engine.base import EMOTIONS, SPEED_MAX, SPEED_MIN, Cancelled, SynthesisOptions
from ..engine.executor import SynthesisJob
from ..text.segment import split_text
from .http_errors import ApiError, api_endpoint, invalid
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
MODEL_IDS = ("realtime-tts", "indextts2", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")


# --- one request's synthesis ----------------------------------------------------------------

@dataclass
class SpeechRun:
    """The segments of one request, queued on the executor under one owner.

    ``pcm()`` yields float32 audio at ``sample_rate`` in text order, with the
    configured silence between segments; ``cancel()`` (or closing the generator)
    drops whatever is still queued or running.
    """

    ctx: object
    segments: list[str]
    jobs: list[SynthesisJob]
    owner: str
    sample_rate: int
    started: float = field(default_factory=time.monotonic)
    audio_seconds: float = 0.0

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()
        self.ctx.executor.cancel_owner(self.owner)

    async def first_result(self):
        """Await the first segment (before response headers go out): errors become statuses."""
        try:
            return await self.jobs[0].result()
        except BaseException:
            self.cancel()
            raise

    async def pcm(self, first=None) -> AsyncIterator[np.ndarray]:
        engine_rate = self.ctx.engine.sample_rate
        resampler = None if engine_rate == self.sample_rate else StreamingResampler(engine_rate, self.sample_rate)
        silence = np.zeros(int(engine_rate * self.ctx.settings.silence_ms / 1000), np.float32)
        try:
            for i, job in enumerate(self.jobs):
                audio = first if (i == 0 and first is not None) else await job.result()
                if audio.sample_rate != engine_rate:
                    raise ApiError(500, f"engine returned {audio.sample_rate} Hz audio, expected {engine_rate}",
                                   type="server_error", code="engine_error")
                chunk = audio.pcm.astype(np.float32, copy=False)
                if i + 1 < len(self.jobs) and len(silence):
                    chunk = np.concatenate([chunk, silence])
                out = resampler.process(chunk) if resampler else chunk
                if i + 1 == len(self.jobs) and resampler:
                    out = np.concatenate([out, resampler.flush()])
                self.audio_seconds += len(out) / self.sample_rate
                if len(out):
                    yield out
        finally:
            self.cancel()



def start_speech(ctx, text: str, options: SynthesisOptions, *, endpoint: str, sample_rate: int) -> SpeechRun:
    """Check readiness, split ``text`` and queue every segment (ExecutorBusy -> nothing stays queued)."""
    if not ctx.ready.is_set():
        raise ApiError(503, "the model is still loading; retry when GET /health returns 200",
                       code="not_ready", type="server_error", headers={"Retry-After": "5"})
    settings = ctx.settings
    segments = split_text(text, max_chars=settings.max_segment_chars,
                          first_clause_min_chars=settings.first_clause_min_chars)
    segments = [s for s in segments if s.strip()]
    if not segments:
        raise invalid("the text has nothing speakable in it", param="input", code="empty_input")
    owner = f"{endpoint}-{uuid.uuid4().hex[:12]}"
    run = SpeechRun(ctx=ctx, segments=segments, jobs=[], owner=owner, sample_rate=sample_rate)
    try:
        for seg in segments:
            job = ctx.executor.submit(seg, options, owner=owner)
            run.jobs.append(job)
    except BaseException:
        run.cancel()
        raise
    return run


# --- encodings ---------------------------------------------------------------------------------

def wav_file(pcm16: bytes, sample_rate: int) -> bytes:
    """A complete WAV file with exact sizes (the non-streamed path; strict readers like it)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)
    return buf.getvalue()


async def encoded(run: SpeechRun, first, container: str) -> AsyncIterator[bytes]:
    """Container bytes, one piece per synthesized segment."""
    stream = make_stream(container, run.sample_rate)
    async for pcm in run.pcm(first):
        data = stream.write(pcm)
        if data:
            yield data
    tail = stream.close()
    if tail:
        yield tail


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


def parse_speech_request(ctx, body: dict, query: dict) -> SpeechRequest:
    fields = merged_fields(body)
    text = require_text(fields, "input", ctx.settings.max_text_chars)
    response_format = fields.get("response_format") or "mp3"
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
    stream = fields.get("stream", query.get("stream", True))
    if isinstance(stream, str):
        stream = stream.lower() not in ("0", "false", "no", "off")
    headers = {"X-Sample-Rate": str(sample_rate), "Cache-Control": "no-store"}
    if warning:
        headers["X-Speed-Clamped"] = f"{speed:g}"
        headers["Warning"] = f'299 realtime-tts "{warning}"'
    options = SynthesisOptions(voice=voice, emotion=emotion, speed=speed, language=language or None)
    return SpeechRequest(text=text, options=options, response_format=response_format, container=container,
                         media_type=media_type, sample_rate=sample_rate, stream_format=stream_format,
                         stream=bool(stream), headers=headers)


def _engine_error(e: BaseException) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, Cancelled):
        return ApiError(503, "synthesis was cancelled (server shutting down?)", code="cancelled", type="server_error")
    return ApiError(500, f"synthesis failed: {e}", code="engine_error", type="server_error")


async def _first_or_error(ctx, run: SpeechRun, endpoint: str):
    try:
        return await run.first_result()
    except (ApiError, Exception) as e:
        ctx.metrics.error(f"{endpoint}_synthesis")
        raise _engine_error(e) from None


def openai_routes(ctx) -> list[Route]:
    metrics = ctx.metrics

    @api_endpoint
    async def speech(request: Request):
        # Room for an inline voice clip: base64 grows the upload limit by 4/3.
        body = await read_json(request, JSON_BODY_LIMIT + ctx.settings.max_upload_bytes * 4 // 3)
        req = await asyncio.to_thread(parse_speech_request, ctx, body, dict(request.query_params))
        t0 = time.monotonic()
        run = start_speech(ctx, req.text, req.options, endpoint="openai", sample_rate=req.sample_rate)
        first = await _first_or_error(ctx, run, "openai")
        log.info("speech request", extra={"endpoint": "openai", "chars": len(req.text), "segments": len(run.jobs),
                                          "format": req.response_format, "stream_format": req.stream_format,
                                          "voice_id": req.options.voice.id if req.options.voice else None})

        if req.stream_format == "sse":
            return StreamingResponse(_sse(ctx, run, first, req, t0), media_type="text/event-stream",
                                     headers=req.headers, background=BackgroundTask(run.cancel))
        if not req.stream:
            try:
                if req.container == "wav":
                    pcm = [float_to_s16le(chunk) async for chunk in run.pcm(first)]
                    data = wav_file(b"".join(pcm), req.sample_rate)
                else:
                    data = b"".join([piece async for piece in encoded(run, first, req.container)])
            except Exception as e:
                raise _engine_error(e) from None
            metrics.observe_ttfa("openai", time.monotonic() - t0)
            return Response(data, media_type=req.media_type, headers=req.headers)
        # The background task runs even when the client left before the body started.
        return StreamingResponse(_audio(ctx, run, first, req, t0), media_type=req.media_type, headers=req.headers,
                                 background=BackgroundTask(run.cancel))

    async def _audio(ctx, run, first, req, t0) -> AsyncIterator[bytes]:
        with metrics.connection("openai"):
            sent_first = False
            try:
                async for piece in encoded(run, first, req.container):
                    if not sent_first:
                        metrics.observe_ttfa("openai", time.monotonic() - t0)
                        sent_first = True
                    yield piece
            except Exception as e:  # headers are out: all we can do is end the body abruptly
                metrics.error("openai_synthesis")
                log.warning("speech stream failed after it started: %s", e)
                raise

    async def _sse(ctx, run, first, req, t0) -> AsyncIterator[bytes]:
        with metrics.connection("openai"):
            sent_first = False
            try:
                async for piece in encoded(run, first, req.container):
                    if not sent_first:
                        metrics.observe_ttfa("openai", time.monotonic() - t0)
                        sent_first = True
                    event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                    yield f"data: {json.dumps(event)}\n\n".encode()
            except Exception as e:
                metrics.error("openai_synthesis")
                err = _engine_error(e).body()
                yield f"data: {json.dumps({'type': 'error', **err})}\n\n".encode()
                return
            usage = {"input_tokens": len(req.text), "output_tokens": 0, "total_tokens": len(req.text)}
            done = {"type": "speech.audio.done", "usage": usage, "audio_ms": round(run.audio_seconds * 1000)}
            yield f"data: {json.dumps(done)}\n\n".encode()

    @api_endpoint
    async def models(request: Request):
        engine = ctx.engine
        capabilities = {
            "speech": True,
            "streaming": True,
            "response_formats": list(FORMATS),
            "stream_formats": ["audio", "sse"],
            "sample_rate": DEFAULT_RATE,
            "pcm_sample_rates": list(PCM_RATES),
            "speed_range": [SPEED_MIN, SPEED_MAX],
            "voice_cloning": True,
            "openai_voices": list(OPENAI_VOICES),
            "emotion": ["vector", "label", "text", "reference"],
            "emotion_vector_order": list(EMOTIONS),
            "max_input_chars": ctx.settings.max_text_chars,
            "engine": engine.describe(),
        }
        created = int(time.time())
        data = [{"id": mid, "object": "model", "created": created, "owned_by": "realtime-tts",
                 "capabilities": capabilities} for mid in MODEL_IDS]
        return JSONResponse({"object": "list", "data": data})

    return [
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/audio/speech", speech, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]


def metrics_routes(ctx) -> list[Route]:
    """``GET /metrics``: Prometheus text format for this server instance."""

    async def metrics(request: Request):
        ctx.metrics.queue_depth.set(ctx.executor.queue_depth)
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    return [Route("/metrics", metrics, methods=["GET"])]
