"""One speech stream's encoder line: its segments' audio encoded in text order, ahead of reading.

A segment is encoded the moment its synthesis job is done and every segment before it is
encoded, not when the stream's owner gets round to reading it: a xiaozhi device holds under half
a second of audio, so an encode started only when the previous sentence has been sent must beat
that half second on a pool every other stream shares (under load it did not, and the device
heard the gap). Encoding ahead is bounded by the stream's window of submitted jobs.

The calls go to the shared ``CodecPool`` with a deadline: ``REFILL_MARGIN_S`` before the client
will have played everything encoded before this segment. A stream's first sentence, which a
listener already waits for, is therefore due a margin ago; a sentence encoded seconds ahead
yields to it, and to request parsing (due on arrival), until its own listener nears a gap.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..engine.base import Cancelled, EngineError, SegmentAudio
from ..engine.executor import SynthesisJob, retrieve, settle

log = logging.getLogger(__name__)

# A segment's encode is due this long before the client would run out of the audio encoded before
# it: a playing stream's next sentence goes ahead of request parsing (due on arrival) once its
# listener is within this margin of a gap, and ties with a new turn's first sentence (nothing
# encoded yet: due a margin ago) when it is at the gap. It covers the xiaozhi pacer's lead (at
# most 0.4 s) and the pool's queue under load.
REFILL_MARGIN_S = 1.0


class Encoder(Protocol):
    """``audio/stream.py``'s ``SpeechEncoder`` and ``ContainerEncoder``."""

    input_rate: int
    output_seconds: float

    def segment(self, pcm) -> Any: ...

    def finish(self) -> Any: ...

    def close(self) -> None: ...


EncoderFactory = Callable[[int], Encoder]  # engine sample rate -> a new encoder (runs on the pool)


@dataclass(frozen=True)
class Encoded:
    """One segment's encoded audio: ``data`` (frames or container bytes), its ``seconds``, and the
    engine's ``duration`` of the segment alone."""

    data: Any
    seconds: float
    duration: float


@dataclass(eq=False)
class _Entry:
    job: SynthesisJob | None  # None: the encoder's tail
    out: asyncio.Future


class StreamCodec:
    """The encoder line of one stream (see the module doc). The encoder is created on the first
    audio, driven one call at a time, freed with the tail, or on ``close`` at once, or, when a call
    is still running on the pool, the moment it returns. Never by the garbage collector. Counted
    on ``rtts_live_encoders`` while it lives. Call its methods on the event loop."""

    def __init__(self, pool, metrics, factory: EncoderFactory, consumed_s: Callable[[], float]) -> None:
        self._pool = pool
        self._metrics = metrics
        self._factory = factory
        self._consumed_s = consumed_s  # seconds of this stream's audio the client has consumed
        self._encoder: Encoder | None = None
        self._encoded_s = 0.0  # seconds of audio encoded so far
        self._line: collections.deque[_Entry] = collections.deque()
        self._call: concurrent.futures.Future | None = None  # the call running on the pool
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def add(self, job: SynthesisJob) -> asyncio.Future:
        """Encode ``job``'s audio after every job added before it; the future's result is an
        ``Encoded``, or the job's error (``EngineError`` for audio the encoder refuses,
        ``Cancelled`` when the line is dropped first)."""
        entry = self._enter(job)
        job.add_done_callback(lambda _job: self._advance())
        return entry.out

    def finish(self) -> asyncio.Future:
        """The encoder's last bytes after everything added: ``Encoded`` (``data`` None if nothing
        was ever encoded); the encoder is freed then."""
        return self._enter(None).out

    def drop(self) -> None:
        """Forget every segment not yet encoded: a call still waiting for a pool thread is
        withdrawn, a running one finishes and its result is dropped."""
        if self._call is not None and self._call.cancel():
            self._call = None
        while self._line:
            settle(self._line.popleft().out, None, Cancelled())

    def close(self) -> None:
        self._closed = True
        self.drop()
        if self._call is None:
            self._free()  # else freed the moment the running call returns

    async def closed(self) -> None:
        """Wait until a call still running on the pool has returned (and the encoder is freed)."""
        if self._call is not None and not self._call.done():
            await asyncio.shield(asyncio.wrap_future(self._call))

    # --- on the loop ---------------------------------------------------------------------------
    def _enter(self, job: SynthesisJob | None) -> _Entry:
        entry = _Entry(job, self._loop.create_future())
        entry.out.add_done_callback(retrieve)  # a stream closed unread is not an error to log
        if self._closed:
            settle(entry.out, None, Cancelled())
        else:
            self._line.append(entry)
            self._advance()
        return entry

    def _advance(self) -> None:
        """Start the next call if none runs and the next segment's job is done."""
        while self._call is None and self._line:
            entry = self._line[0]
            if entry.job is not None and not entry.job.done():
                return  # its job's completion calls us again
            if entry.job is None:
                fn, args = self._finish, ()
            else:
                try:
                    audio = entry.job.outcome()
                except BaseException as e:  # lost to the engine or cancelled: no audio to encode
                    self._line.popleft()
                    settle(entry.out, None, e)
                    continue
                fn, args = self._encode, (audio,)
            deadline = time.monotonic() + self._encoded_s - self._consumed_s() - REFILL_MARGIN_S
            self._call = self._pool.submit(fn, *args, deadline=deadline)
            self._call.add_done_callback(self._hand_back)

    def _hand_back(self, call: concurrent.futures.Future) -> None:
        """On the pool thread: the call returned; the rest happens on the loop."""
        try:
            self._loop.call_soon_threadsafe(self._returned, call)
        except RuntimeError:
            pass  # the event loop is gone (shutdown): nobody is waiting

    def _returned(self, call: concurrent.futures.Future) -> None:
        if call is not self._call:
            return  # withdrawn by ``drop`` before it started
        self._call = None
        if self._closed:
            self._free()
            return
        exc = call.exception()
        if self._line:  # else dropped meanwhile
            entry = self._line.popleft()
            value = None if exc is not None else call.result()
            if value is not None:
                self._encoded_s += value.seconds
            settle(entry.out, value, exc)
        self._advance()

    # --- on the pool thread (one call at a time per stream) ------------------------------------
    def _encode(self, audio: SegmentAudio) -> Encoded:
        if self._encoder is None:
            self._encoder = self._factory(audio.sample_rate)
            self._metrics.encoders.inc()
        encoder = self._encoder
        if audio.sample_rate != encoder.input_rate:
            raise EngineError(f"engine returned {audio.sample_rate} Hz audio, expected {encoder.input_rate}")
        before = encoder.output_seconds
        try:
            data = encoder.segment(audio.pcm)
        except ValueError as e:  # unusable engine output (NaN, wrong shape): this segment only
            raise EngineError(f"unusable audio: {e}") from None
        return Encoded(data, encoder.output_seconds - before, audio.duration)

    def _finish(self) -> Encoded:
        encoder = self._encoder
        if encoder is None:
            return Encoded(None, 0.0, 0.0)
        before = encoder.output_seconds
        data = encoder.finish()
        seconds = encoder.output_seconds - before
        self._free()  # the tail is out: freed now, not when the owner gets round to closing
        return Encoded(data, seconds, 0.0)

    # on the pool thread, or on the loop when no call runs
    def _free(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            try:
                encoder.close()  # drops native references only: cheap, no codec work
            except Exception:
                log.exception("closing an audio encoder failed")
            self._metrics.encoders.dec()

