"""HTTP speech bodies on the shared ``SpeechStream``: ``/v1/audio/speech``, ``/tts``, ``/tts_url``.

``start_speech`` checks readiness, cuts the whole text and queues its first segments; the
route awaits the first event before answering, so a failure there still gets a real status.
Then either the body streams (``SpeechResponse``: one piece per sentence) or the whole file
is collected (``collect``).

``SpeechResponse`` is its own ASGI response because a speech body needs three things
Starlette's ``StreamingResponse`` does not give: every write is bounded by
``write_timeout_s`` (a client that reads nothing is dropped and its synthesis cancelled); a
failure after the headers ends the body abruptly (no terminating chunk, so the client sees
an incomplete body instead of a short "complete" one) with one log line, never a traceback;
and the stream is closed (jobs cancelled, encoder freed) the moment the response ends, however
it ends. Backpressure: the stream is read only when the transport accepted the last piece
(``ack_on_read``), so synthesis stays within the lead of what the client took.

Priorities: whole-file responses (``stream=false``, ``/tts_url``) of more than
``bulk_min_chars`` characters run as ``BULK`` (nobody listens until the file is complete);
everything else is ``REALTIME``.
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

from starlette.responses import Response

from ..audio.stream import ContainerEncoder
from ..engine.base import Cancelled, SynthesisOptions
from ..engine.executor import BULK, REALTIME, ExecutorBusy, ExecutorClosed
from .http_errors import ApiError, invalid
from .speech import Failure, Sentence, SpeechStream, Tail

log = logging.getLogger(__name__)


async def start_speech(ctx, text: str, options: SynthesisOptions, *, endpoint: str, container: str,
                       sample_rate: int, whole_file: bool = False, max_segment_chars: int | None = None) -> SpeechStream:
    """A stream with ``text`` cut (segments of at most ``max_segment_chars``, default the setting) and
    its first segments queued; refusals raise (nothing stays queued)."""
    if not ctx.ready.is_set():
        raise ApiError(503, "the model is still loading; retry when GET /health returns 200",
                       code="not_ready", type="server_error", headers={"Retry-After": "5"})
    settings = ctx.settings
    bulk = whole_file and len(text) > settings.bulk_min_chars
    stream = SpeechStream(
        ctx, options, owner=f"{endpoint}-{uuid.uuid4().hex[:12]}", priority=BULK if bulk else REALTIME,
        encoder=lambda rate: ContainerEncoder(rate, container, sample_rate, silence_ms=settings.silence_ms),
        ack_on_read=True, max_segment_chars=max_segment_chars)
    try:
        stream.push(text)
        stream.end()
        if not stream.segments:
            raise invalid("the text has nothing speakable in it", param="input", code="empty_input")
    except BaseException:
        await release(ctx, stream)
        raise
    return stream


async def release(ctx, stream: SpeechStream) -> None:
    """The request is over: its stream closed, and its jobs out of the executor's queue at once."""
    stream.close()
    ctx.executor.cancel_owner(stream.owner)  # one owner per request
    await stream.aclose()


def failure_error(failure: Failure) -> ApiError:
    """What a lost segment means to an HTTP client, in OpenAI's error shape."""
    e = failure.error
    if isinstance(e, ApiError):
        return e
    if isinstance(e, ExecutorBusy):
        return ApiError(503, str(e), code="server_busy", type="server_error", headers={"Retry-After": "1"})
    if isinstance(e, ExecutorClosed):
        return ApiError(503, str(e), code="shutting_down", type="server_error")
    if isinstance(e, Cancelled):
        return ApiError(503, "synthesis was cancelled (server shutting down?)", code="cancelled", type="server_error")
    return ApiError(500, f"synthesis failed: {e}", code="engine_error", type="server_error")


async def first_sentence(ctx, stream: SpeechStream, endpoint: str) -> Sentence:
    """The first sentence's audio, before any header goes out; a failure becomes an error status."""
    try:
        event = await stream.next()
    except BaseException:
        await release(ctx, stream)
        raise
    if isinstance(event, Sentence):
        return event
    await release(ctx, stream)
    ctx.metrics.error(f"{endpoint}_synthesis")
    if isinstance(event, Failure):
        raise failure_error(event)
    raise ApiError(500, "synthesis produced no audio", code="engine_error", type="server_error")


async def collect(ctx, stream: SpeechStream, first: Sentence, endpoint: str) -> bytes:
    """Every piece of a whole-file response; any lost segment fails the request."""
    pieces = [first.data]
    try:
        while (event := await stream.next()) is not None:
            if isinstance(event, Failure):
                ctx.metrics.error(f"{endpoint}_synthesis")
                raise failure_error(event)
            if isinstance(event, (Sentence, Tail)) and event.data:
                pieces.append(event.data)
    finally:
        await release(ctx, stream)
    return b"".join(pieces)


def wav_file(pcm16: bytes, sample_rate: int) -> bytes:
    """A complete WAV file with exact sizes (the non-streamed path; strict readers like it)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)
    return buf.getvalue()


async def whole_wav(ctx, text: str, options: SynthesisOptions, *, endpoint: str, headers: dict[str, str],
                    max_segment_chars: int | None = None) -> Response:
    """The whole text as one WAV file at the engine's own rate (what index-tts-vllm and IndexTTS2
    servers answer): synthesized completely before the answer, with exact sizes in its header."""
    rate = ctx.engine.sample_rate if ctx.engine is not None else 24000
    t0 = time.monotonic()
    stream = await start_speech(ctx, text, options, endpoint=endpoint, container="pcm_s16le", sample_rate=rate,
                                whole_file=True, max_segment_chars=max_segment_chars)
    first = await first_sentence(ctx, stream, endpoint)
    with ctx.metrics.connection(endpoint):
        pcm = await collect(ctx, stream, first, endpoint)
    ctx.metrics.observe_ttfa(endpoint, time.monotonic() - t0)
    return Response(await ctx.codec.run(wav_file, pcm, rate), media_type="audio/wav",
                    headers={**headers, "X-Sample-Rate": str(rate)})


class SpeechResponse:
    """A streamed speech body (raw container bytes, or OpenAI SSE events); see the module doc."""

    def __init__(self, ctx, stream: SpeechStream, first: Sentence, *, endpoint: str, media_type: str,
                 headers: dict[str, str], started: float, sse_chars: int | None = None) -> None:
        self.ctx = ctx
        self.stream = stream
        self.first = first
        self.endpoint = endpoint
        self.started = started
        self.sse_chars = sse_chars  # SSE framing when set: the input length for the usage block
        self.seconds = 0.0
        headers = {**headers, "content-type": media_type}
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        with self.ctx.metrics.connection(self.endpoint):
            body = asyncio.create_task(self._body(send), name=f"{self.endpoint}-body")
            watch = asyncio.create_task(self._watch(receive), name=f"{self.endpoint}-disconnect")
            try:
                await asyncio.wait({body, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (body, watch):
                    task.cancel()
                await asyncio.gather(body, watch, return_exceptions=True)
                await release(self.ctx, self.stream)

    async def _watch(self, receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _body(self, send) -> None:
        write = self._writer(send)
        if not await write({"type": "http.response.start", "status": 200, "headers": self.raw_headers}):
            return
        event = self.first
        while event is not None:
            if isinstance(event, Failure):
                await self._failed(event, write)
                return
            if event.data and not await write(self._piece(event.data)):
                return
            self.seconds += event.seconds
            if isinstance(event, Sentence) and event.index == 0:
                self.ctx.metrics.observe_ttfa(self.endpoint, time.monotonic() - self.started)
            event = await self.stream.next()
        if self.sse_chars is not None:
            usage = {"input_tokens": self.sse_chars, "output_tokens": 0, "total_tokens": self.sse_chars}
            done = {"type": "speech.audio.done", "usage": usage, "audio_ms": round(self.seconds * 1000)}
            if not await write(self._event(done)):
                return
        await write({"type": "http.response.body", "body": b"", "more_body": False})

    def _piece(self, data: bytes) -> dict:
        if self.sse_chars is not None:
            data = self._event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})["body"]
        return {"type": "http.response.body", "body": data, "more_body": True}

    @staticmethod
    def _event(payload: dict) -> dict:
        return {"type": "http.response.body", "body": f"data: {json.dumps(payload)}\n\n".encode(), "more_body": True}

    async def _failed(self, failure: Failure, write) -> None:
        self.ctx.metrics.error(f"{self.endpoint}_synthesis")
        log.warning("%s: speech stream failed after it started at sentence %d: %s", self.endpoint, failure.index,
                    failure.error)
        if self.sse_chars is not None:  # SSE can say so; a raw body can only end abruptly
            if await write(self._event({"type": "error", **failure_error(failure).body()})):
                await write({"type": "http.response.body", "body": b"", "more_body": False})

    def _writer(self, send):
        timeout = self.ctx.settings.write_timeout_s

        async def write(message: dict) -> bool:
            try:
                await asyncio.wait_for(send(message), timeout)
            except (TimeoutError, asyncio.TimeoutError):
                self.ctx.metrics.write_timeouts.labels(self.endpoint).inc()
                log.warning("%s: the client read nothing for %g s; response aborted, synthesis cancelled",
                            self.endpoint, timeout)
                return False
            except OSError:  # the client is gone
                return False
            return True

        return write
