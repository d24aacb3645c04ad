"""Where GPU work runs: one worker thread owns the engine; asyncio never blocks on it.

Callers submit one job per text segment and await its result. The contract
(``Executor``) is what the server depends on; ``SerialExecutor`` is the
one-segment-at-a-time implementation, ``BatchingExecutor`` (``batching.py``) the
one that runs several segments at once, both on ``QueuedExecutor``.

The order jobs run in is the scheduler's (``scheduler.JobQueue``): realtime jobs (``REALTIME``:
device turns, agent streams, streamed HTTP, the page) before bulk ones (``BULK``: whole-file HTTP
renders of long texts); within a class, a job whose owner had nothing queued or running (a new
turn's first sentence: "urgent") first, then owners round-robin, FIFO within an owner. This
module owns the threads, the futures, cancellation and shutdown.

Nobody has to await a job: a job's outcome is always retrieved by the executor itself, so an
abandoned job's error never reaches asyncio's "exception was never retrieved" log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .base import CancelToken, Cancelled, Engine, SegmentAudio, SynthesisOptions
from .scheduler import BULK, PRIORITIES, REALTIME, JobQueue

log = logging.getLogger(__name__)

__all__ = ["BULK", "PRIORITIES", "REALTIME", "Executor", "ExecutorBusy", "ExecutorClosed", "QueuedExecutor",
           "SerialExecutor", "SynthesisJob", "retrieve", "settle"]


class ExecutorBusy(RuntimeError):
    """The queue is full; the caller should tell its client to retry later."""


class ExecutorClosed(RuntimeError):
    """The executor is shutting down."""


@dataclass(eq=False)
class SynthesisJob:
    """One segment to synthesize. Await ``result()``; ``cancel()`` from any task."""

    text: str
    options: SynthesisOptions
    owner: str
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    token: CancelToken = field(default_factory=CancelToken)
    urgent: bool = False  # its owner had nothing queued or running: a listener is waiting on it
    priority: int = REALTIME  # REALTIME or BULK
    _future: asyncio.Future | None = None

    def cancel(self) -> None:
        """Cancel whether queued or running; ``result()`` then raises ``Cancelled``."""
        self.token.cancel()
        fut = self._future
        if fut is not None and not fut.done():
            fut.get_loop().call_soon_threadsafe(settle, fut, None, Cancelled())

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def done(self) -> bool:
        """Settled: ``outcome()`` returns or raises at once."""
        return self._future is not None and self._future.done()

    def outcome(self) -> SegmentAudio:
        """The audio of a settled job, or its error (``Cancelled`` included)."""
        assert self.done(), "the job has not settled yet"
        return self._future.result()

    def add_done_callback(self, fn) -> None:
        """Call ``fn(job)`` on the event loop once the job settles."""
        assert self._future is not None, "job was never submitted"
        self._future.add_done_callback(lambda _future: fn(self))

    async def result(self) -> SegmentAudio:
        assert self._future is not None, "job was never submitted"
        return await asyncio.shield(self._future)


def retrieve(fut: asyncio.Future) -> None:
    """Done callback: mark a settled future's exception as seen, so one nobody awaits (an
    abandoned job, a closed stream's audio) is not an error to log."""
    if not fut.cancelled():
        fut.exception()


def settle(fut: asyncio.Future, value, exc: BaseException | None) -> None:
    """Set ``exc`` or ``value`` on ``fut`` unless it is settled already."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class Executor(ABC):
    """The contract between the server and whatever runs the engine."""

    engine: Engine | None  # None until the app's lifespan has loaded it

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def submit(self, text: str, options: SynthesisOptions, *, owner: str, priority: int = REALTIME) -> SynthesisJob:
        """Queue a segment (``priority``: ``REALTIME`` or ``BULK``). Raises ``ExecutorBusy`` when
        the queue is full."""

    @property
    @abstractmethod
    def queue_depth(self) -> int:
        """Jobs waiting (not counting the one running)."""

    def cancel_owner(self, owner: str) -> int:
        """Cancel every queued or running job of ``owner``; returns how many."""
        return 0


class QueuedExecutor(Executor):
    """What every in-process executor shares: the bounded per-owner queues, round-robin order,
    cancellation, shutdown and the worker thread. Subclasses decide how the worker runs jobs."""

    def __init__(self, engine: Engine | None, *, max_queue: int = 256) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._queue = JobQueue(max_queue)
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.on_segment_done = None  # optional hook(job, audio_or_exc, seconds) for metrics

    @abstractmethod
    def _in_flight(self) -> list[SynthesisJob]:
        """Jobs the worker is running now (lock held)."""

    @abstractmethod
    def _work(self) -> None:
        """The worker thread's loop; returns once the executor is closed."""

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="engine-worker", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        with self._cond:
            self._closed = True
            pending = self._queue.drain()
            running = self._in_flight()
            self._cond.notify_all()
        for job in pending + running:
            job.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(self, text: str, options: SynthesisOptions, *, owner: str, priority: int = REALTIME) -> SynthesisJob:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        loop = asyncio.get_running_loop()
        job = SynthesisJob(text=text, options=options, owner=owner, priority=priority)
        job._future = loop.create_future()
        job._future.add_done_callback(retrieve)
        with self._cond:
            if self._closed:
                raise ExecutorClosed("the synthesis executor is shutting down")
            if not self._queue.push(job, {j.owner for j in self._in_flight()}):
                raise ExecutorBusy(
                    f"server busy: {len(self._queue)} segments already queued (limit {self.max_queue})"
                )
            self._cond.notify()
        return job

    def cancel_owner(self, owner: str) -> int:
        with self._cond:
            queued = self._queue.remove_owner(owner)
            running = [job for job in self._in_flight() if job.owner == owner]
        for job in queued + running:
            job.cancel()
        return len(queued) + len(running)

    def _finish(self, job: SynthesisJob, value: SegmentAudio | None, exc: BaseException | None) -> None:
        """Report one job's outcome to the metrics hook and settle its future on its loop."""
        fut = job._future
        assert fut is not None and job.started_at is not None
        if self.on_segment_done is not None:
            try:
                self.on_segment_done(job, exc if exc is not None else value, time.monotonic() - job.started_at)
            except Exception:
                log.exception("on_segment_done hook failed")
        if job.token.cancelled and exc is None:
            exc = Cancelled()
        try:
            fut.get_loop().call_soon_threadsafe(settle, fut, value, exc)
        except RuntimeError:
            pass  # the event loop is gone (shutdown); nobody is waiting


class SerialExecutor(QueuedExecutor):
    """One worker thread, one segment at a time, round-robin across owners."""

    def __init__(self, engine: Engine | None, *, max_queue: int = 256) -> None:
        super().__init__(engine, max_queue=max_queue)
        self._running: SynthesisJob | None = None

    def _in_flight(self) -> list[SynthesisJob]:
        return [self._running] if self._running is not None else []

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._queue.pop()
                while job is None and not self._closed:
                    self._cond.wait()
                    job = self._queue.pop()
                if self._closed:
                    if job is not None:
                        job.cancel()
                    return
                self._running = job
            self._run(job)
            with self._cond:
                self._running = None

    def _run(self, job: SynthesisJob) -> None:
        job.started_at = time.monotonic()
        value, exc = None, None
        try:
            job.token.raise_if_cancelled()
            value = self.engine.synthesize(job.text, job.options, job.token)
        except Cancelled as e:
            exc = e
        except Exception as e:  # an engine failure fails this segment only, never the worker
            log.exception("engine failed on segment %r", job.text[:80])
            exc = e
        self._finish(job, value, exc)
