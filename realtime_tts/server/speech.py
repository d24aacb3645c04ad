"""One ordered speech stream: text in, encoded audio out, the same for every endpoint.

A ``SpeechStream`` is one turn of speech: a xiaozhi turn, an agent-stream context, the body of
one HTTP speech request. It owns everything between the text and the bytes on the wire:

* the ``IncrementalSplitter`` (text arrives in pieces: ``push``, ``flush``, ``end``);
* submission to the executor, in text order, under the connection's owner and priority;
* the auto-flush timer (``flush_after_s``) and the idle end timer (``end_after_s``);
* the encoder (``SpeechEncoder`` frames or a ``ContainerEncoder`` body), created on the first
  audio, driven on the shared ``CodecPool`` (never on the event loop) and closed at once when
  the stream ends or is closed. Each segment is encoded as soon as its job is done, in text
  order, ahead of reading (``stream_codec.py``), so the owner never waits for an encode;
* the silence between segments (the encoder's);
* backpressure, below; cancellation (``cancel``: every job of the stream, queued or running).

The owner reads events in order with ``await stream.next()`` (or ``async for``): ``Sentence``
(one segment's encoded audio), ``Marker`` (something the owner queued in the text order with
``mark``), ``Failure`` (a segment the engine could not make, or synthesis refused) and, once
the text has ended and everything before it was read, ``Tail`` (the encoder's last bytes).

Backpressure. At most ``SUBMIT_AHEAD`` segments of a stream are queued or running and not yet
read by its owner, and no new segment starts while ``max_lead_s`` seconds of the stream's
audio have been read and not yet consumed by the client. What "consumed" means is the
owner's to say with ``acknowledge(seconds)``: the xiaozhi pacer's virtual play-out clock, the
frames an agent socket accepted; with ``ack_on_read`` (HTTP bodies) reading the next event
acknowledges everything before it, because the response only asks for more once the transport
took the last piece. A client that stops reading therefore stops synthesis within one lead.

Refusals. When the executor refuses a segment (``ExecutorBusy``, ``ExecutorClosed``), the
stream fails as a whole: its jobs are cancelled, ``push``/``flush``/``end`` raise the refusal
if it happened in that call, and otherwise the next event is a ``Failure`` carrying it.

Release. ``close()`` cancels what is left and frees the encoder at once, or, when one of the
stream's codec calls is still running on the pool, the moment that call returns; ``aclose()``
also waits for that. The owner calls one of them when the turn, context or request ends
(the stream counts itself on ``rtts_live_speech_streams``, its encoder on
``rtts_live_encoders``). Nothing is left to the garbage collector.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..engine.base import Cancelled, SynthesisOptions
from ..engine.executor import REALTIME, ExecutorBusy, ExecutorClosed, SynthesisJob
from ..text.segment import IncrementalSplitter, has_content
from .stream_codec import Encoded, EncoderFactory, StreamCodec

log = logging.getLogger(__name__)

SUBMIT_AHEAD = 4  # segments queued or running per stream: enough to keep a batch fed, bounded memory


@dataclass(frozen=True)
class Sentence:
    """One segment's encoded audio (frames or container bytes), its silence included."""

    index: int
    text: str
    data: Any
    seconds: float  # encoded audio time of ``data``
    duration: float  # the engine's audio for this sentence alone
    offset: float  # where this sentence starts in the stream's audio (durations + silences before it)


@dataclass(frozen=True)
class Marker:
    value: Any


@dataclass(frozen=True)
class Failure:
    """Segment ``index`` is lost: the engine failed on it (the stream goes on), the server
    cancelled it, or the executor refused it (``ExecutorBusy``/``ExecutorClosed``: the stream is over)."""

    index: int
    text: str
    error: BaseException

    @property
    def refused(self) -> bool:
        return isinstance(self.error, (ExecutorBusy, ExecutorClosed))


@dataclass(frozen=True)
class Tail:
    data: Any
    seconds: float


Event = Sentence | Marker | Failure | Tail


@dataclass(eq=False)
class _Segment:
    index: int
    text: str
    job: SynthesisJob | None = None
    encoded: asyncio.Future | None = None  # the codec line's ``Encoded``, set with the job


@dataclass(eq=False)
class _Mark:
    value: Any


class SpeechStream:
    """See the module docstring. Call every method on the server's event loop."""

    def __init__(self, ctx, options: SynthesisOptions, *, owner: str, encoder: EncoderFactory,
                 priority: int = REALTIME, flush_after_s: float | None = None, end_after_s: float | None = None,
                 ack_on_read: bool = False, max_lead_s: float | None = None, paused: bool = False,
                 max_segment_chars: int | None = None) -> None:
        settings = ctx.settings
        self.options = options
        self.owner = owner
        self.priority = priority
        self.segments: list[str] = []  # every segment cut so far, in order
        self.chars = 0
        self._executor = ctx.executor
        self._metrics = ctx.metrics
        self._silence_s = settings.silence_ms / 1000
        self._backpressure = Backpressure(settings.max_lead_s if max_lead_s is None else max_lead_s)
        self._codec = StreamCodec(ctx.codec, ctx.metrics, encoder, lambda: self._backpressure.consumed_s)
        self._ack_on_read = ack_on_read
        self._splitter = IncrementalSplitter(max_segment_chars or settings.max_segment_chars,
                                             settings.first_clause_min_chars)
        self._items: collections.deque[_Segment | _Mark] = collections.deque()  # not yet read, in order
        self._unsubmitted: collections.deque[_Segment] = collections.deque()
        self._offset_s = 0.0
        self._refusal: Failure | None = None
        self._wakeup = asyncio.Event()
        self._timers = StreamTimers(self.flush, self.end, flush_after_s=flush_after_s, end_after_s=end_after_s)
        self.paused = paused  # cuts text but submits nothing until ``resume`` (a turn queued behind another)
        self.ended = False  # no more text
        self.cancelled = False
        self.finished = False  # the tail was read: nothing more will come
        self._closed = False
        self._metrics.speech_streams.inc()

    # --- text in ------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        return not (self.ended or self.cancelled or self._closed)

    @property
    def pending_text(self) -> str:
        return self._splitter.pending

    def push(self, text: str) -> list[str]:
        """Add text; returns the segments cut now. Raises a refusal that happened in this call."""
        self._require_open("push")
        self.chars += len(text)
        cut = self._add(self._splitter.push(text))
        self._timers.rearm(text_waiting=has_content(self._splitter.pending))
        return self._submit_or_raise(cut)

    def flush(self) -> list[str]:
        """Cut whatever text is waiting for a sentence end."""
        if not self.open:
            return []
        self._timers.cancel_flush()
        return self._submit_or_raise(self._add(self._splitter.flush()))

    def mark(self, value: Any) -> None:
        """Queue ``value`` in the text order: ``next()`` returns it after the audio of every
        segment cut before it."""
        if self.open:
            self._items.append(_Mark(value))
            self._wakeup.set()

    def end(self) -> list[str]:
        """No more text: the last segments are cut, and the tail follows their audio."""
        if not self.open:
            return []
        self._timers.cancel()
        cut = self._add(self._splitter.end())
        self.ended = True
        self._wakeup.set()
        return self._submit_or_raise(cut)

    def cancel(self) -> None:
        """Drop all text and audio not yet read; cancel every job of this stream (idempotent)."""
        if self.cancelled or self.finished:
            return
        self.cancelled = True
        self._drop()

    def _drop(self) -> None:
        self._timers.cancel()
        for item in reversed(self._items):  # queued ones first: the worker must not start them
            if isinstance(item, _Segment) and item.job is not None:
                item.job.cancel()
        self._items.clear()
        self._unsubmitted.clear()
        self._codec.drop()
        self._wakeup.set()

    def resume(self) -> None:
        """Start synthesis of a stream created ``paused``."""
        if self.paused:
            self.paused = False
            self._pump()

    # --- audio out -------------------------------------------------------------------------------
    def acknowledge(self, seconds: float) -> None:
        """The client has consumed ``seconds`` of this stream's audio in all (monotonic)."""
        if self._backpressure.consumed(seconds):
            self._pump()

    @property
    def waiting_for_text(self) -> bool:
        """Everything cut so far was read: nothing more until the client sends text (or ends)."""
        return self.open and not self._items and self._refusal is None

    @property
    def lead_s(self) -> float:
        """Audio read by the owner and not yet consumed by the client."""
        return self._backpressure.lead_s

    @property
    def jobs_ahead(self) -> int:
        return self._backpressure.jobs_ahead

    def __aiter__(self):
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def next(self) -> Event | None:
        """The next event in order; None once the stream is over (tail read, cancelled or closed)."""
        if self._ack_on_read:
            self.acknowledge(self._backpressure.read_s)
        while True:
            if self.cancelled or self._closed or self.finished:
                return None
            if self._refusal is not None:
                failure, self._refusal = self._refusal, None
                self.finished = True
                return failure
            if not self._items:
                if self.ended:
                    return await self._tail()
                await self._wait()
                continue
            item = self._items[0]
            if isinstance(item, _Mark):
                self._items.popleft()
                return Marker(item.value)
            if item.job is None:  # held back by the lead (or paused): wait for the client
                self._pump()
                if item.job is None and self._refusal is None:
                    await self._wait()
                continue
            event = await self._read(item)
            if event is not None:
                return event

    def close(self) -> None:
        """Cancel what is left and free the encoder (idempotent). If a codec call of this stream
        is still running on the pool, the encoder is freed the moment that call returns."""
        if self._closed:
            return
        self.cancel()
        self._closed = True
        self._metrics.speech_streams.dec()
        self._wakeup.set()
        self._codec.close()

    async def aclose(self) -> None:
        """``close``, then wait until the encoder is actually freed (safe under cancellation)."""
        self.close()
        await self._codec.closed()

    # --- internals --------------------------------------------------------------------------------
    def _require_open(self, action: str) -> None:
        if not self.open:
            raise RuntimeError(f"{action}() on a speech stream that has ended")

    def _add(self, texts: list[str]) -> list[str]:
        for text in texts:
            seg = _Segment(len(self.segments), text)
            self.segments.append(text)
            self._items.append(seg)
            self._unsubmitted.append(seg)
        if texts:
            self._wakeup.set()
        return texts

    def _submit_or_raise(self, cut: list[str]) -> list[str]:
        self._pump()
        if self._refusal is not None:
            raise self._refusal.error
        return cut

    def _pump(self) -> None:
        """Submit the next segments while the window and the lead allow."""
        while self._unsubmitted and not (self.cancelled or self.paused) and self._backpressure.may_submit():
            seg = self._unsubmitted[0]
            try:
                seg.job = self._executor.submit(seg.text, self.options, owner=self.owner, priority=self.priority)
            except (ExecutorBusy, ExecutorClosed) as e:
                # Refused: the stream is over. Its other jobs go too, and the owner reads why.
                self._refusal = Failure(seg.index, seg.text, e)
                self.ended = True
                self._drop()
                return
            seg.encoded = self._codec.add(seg.job)
            self._unsubmitted.popleft()
            self._backpressure.submitted()
            self._wakeup.set()

    async def _wait(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def _read(self, seg: _Segment) -> Event | None:
        """Await ``seg``'s encoded audio; None when the stream was cancelled meanwhile."""
        try:
            encoded: Encoded = await asyncio.shield(seg.encoded)
        except Cancelled as e:
            if self.cancelled or self._closed:
                return None
            return self._lost(seg, e)  # cancelled by the server (shutting down), not by us
        except Exception as e:  # the engine failed on this segment, or its audio was unusable
            return self._lost(seg, e)
        if self.cancelled or self._closed:
            return None
        self._items.popleft()
        self._backpressure.read(encoded.seconds)
        offset, self._offset_s = self._offset_s, self._offset_s + encoded.duration + self._silence_s
        self._pump()
        return Sentence(seg.index, seg.text, encoded.data, encoded.seconds, encoded.duration, offset)

    def _lost(self, seg: _Segment, error: BaseException) -> Failure:
        self._items.popleft()
        self._backpressure.read(0.0)  # no audio: the job's place in the window is free
        self._pump()
        return Failure(seg.index, seg.text, error)

    async def _tail(self) -> Event | None:
        self.finished = True
        try:
            tail: Encoded = await asyncio.shield(self._codec.finish())
        except Cancelled:
            return None
        self._backpressure.tail_read(tail.seconds)
        return Tail(tail.data, tail.seconds)


class Backpressure:
    """How far one stream may run ahead (the module docstring's Backpressure): jobs submitted and
    not yet read by the owner, at most ``SUBMIT_AHEAD``, and audio read by the owner and not yet
    consumed by the client; no job starts while that lead is ``max_lead_s`` or more."""

    def __init__(self, max_lead_s: float) -> None:
        self.max_lead_s = max_lead_s
        self.jobs_ahead = 0  # submitted and not yet read
        self.read_s = 0.0  # encoded audio handed to the owner
        self.consumed_s = 0.0  # of which the client has consumed

    @property
    def lead_s(self) -> float:
        return max(0.0, self.read_s - self.consumed_s)

    def may_submit(self) -> bool:
        return self.jobs_ahead < SUBMIT_AHEAD and self.lead_s < self.max_lead_s

    def submitted(self) -> None:
        self.jobs_ahead += 1

    def read(self, seconds: float) -> None:
        """A job's outcome was read: ``seconds`` of encoded audio (0 for a lost segment)."""
        self.jobs_ahead -= 1
        self.read_s += seconds

    def tail_read(self, seconds: float) -> None:
        self.read_s += seconds

    def consumed(self, seconds: float) -> bool:
        """The client has consumed ``seconds`` in all; True when that is further than before
        (room for more jobs may have opened)."""
        if seconds <= self.consumed_s:
            return False
        self.consumed_s = seconds
        return True


class StreamTimers:
    """A stream's auto-flush and idle-end timers: loop ``TimerHandle``s, no tasks, so nothing is
    left to cancel but the handles. Every push re-arms both: ``flush`` once ``flush_after_s``
    pass with text waiting for a sentence end, ``end`` once ``end_after_s`` pass without text."""

    def __init__(self, flush: Callable[[], list[str]], end: Callable[[], list[str]], *,
                 flush_after_s: float | None, end_after_s: float | None) -> None:
        self._flush_action = flush
        self._end_action = end
        self._flush_after_s = flush_after_s
        self._end_after_s = end_after_s
        self._flush: asyncio.TimerHandle | None = None
        self._end: asyncio.TimerHandle | None = None

    def rearm(self, *, text_waiting: bool) -> None:
        loop = asyncio.get_running_loop()
        self.cancel()
        if self._flush_after_s and text_waiting:
            self._flush = loop.call_later(self._flush_after_s, self._fire, self._flush_action)
        if self._end_after_s:
            self._end = loop.call_later(self._end_after_s, self._fire, self._end_action)

    def cancel_flush(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def cancel(self) -> None:
        self.cancel_flush()
        if self._end is not None:
            self._end.cancel()
            self._end = None

    @staticmethod
    def _fire(action: Callable[[], list[str]]) -> None:
        try:
            action()
        except (ExecutorBusy, ExecutorClosed):
            pass  # recorded by the stream: the owner reads it as a Failure
