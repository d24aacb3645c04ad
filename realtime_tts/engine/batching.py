"""An executor that runs many segments through shared engine passes (one GPU pass for many clients).

Same contract as ``SerialExecutor`` (bounded queue, ``ExecutorBusy``, per-job and per-owner
cancellation, ``close``, the ``on_segment_done`` hook); only the worker differs. Jobs are taken in
the queue's order (urgent first, then round-robin across owners), so a batch holds every waiting
owner's oldest job before anyone's second one. There is no waiting for a batch to fill.

Two ways to run them, by what the engine offers:

* continuous (``Engine.open_batch``, IndexTTS2): up to ``max_batch`` segments decode together and
  a new job joins at the next decode step, while the others are mid-way; each finished segment is
  delivered at once. The worker loop is: take jobs while the batch has room, ``add`` them, one
  ``step``, deliver what finished.
* per call (any other engine): the worker takes up to ``max_batch`` jobs and runs them with one
  ``Engine.synthesize_batch`` call; jobs arriving meanwhile wait for the next call.
"""

from __future__ import annotations

import logging
import time

from .base import Cancelled, Engine, EngineError, SegmentAudio, StepBatch
from .executor import QueuedExecutor, SynthesisJob

log = logging.getLogger(__name__)


class BatchingExecutor(QueuedExecutor):
    """One worker thread running up to ``max_batch`` segments at once (see the module doc)."""

    def __init__(self, engine: Engine | None, *, max_queue: int = 256, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__(engine, max_queue=max_queue)
        self.max_batch = max_batch
        self._running: list[SynthesisJob] = []

    def _in_flight(self) -> list[SynthesisJob]:
        return list(self._running)

    def _take(self, room: int | None = None) -> list[SynthesisJob]:
        """Up to ``room`` (default ``max_batch``) jobs in the scheduler's order (lock held)."""
        return self._queue.take(self.max_batch if room is None else room)

    def _work(self) -> None:
        try:
            batch = self.engine.open_batch(self.max_batch)
        except Exception:  # e.g. no memory for the decode pool: per-call batches still work
            log.exception("continuous batching unavailable; batching per engine call instead")
            batch = None
        if batch is None:
            self._work_per_call()
        else:
            self._work_continuous(batch)

    def _work_continuous(self, batch: StepBatch) -> None:
        while True:
            with self._cond:
                new = self._take(batch.free)
                while not new and not len(batch) and not self._closed:
                    self._cond.wait()
                    new = self._take(batch.free)
                if self._closed:
                    for job in new:
                        job.cancel()
                    closing = True
                else:
                    closing = False
                    self._running.extend(new)
            if closing:
                for job, result in batch.cancel_all():
                    self._deliver(job, result)
                return
            now = time.monotonic()
            for job in new:
                job.started_at = now
                try:
                    batch.add(job, job.text, job.options, job.token, urgent=job.urgent)
                except Exception as e:  # this segment cannot start: it fails alone
                    self._deliver(job, e)
            if not len(batch):
                continue
            try:
                finished = batch.step()
            except Exception as e:  # the batch is broken: fail what it holds, keep serving
                log.exception("continuous batch step failed")
                finished = [(job, e) for job, _ in batch.cancel_all()]
            for job, result in finished:
                self._deliver(job, result)

    def _deliver(self, job: SynthesisJob, result: SegmentAudio | BaseException) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
        self._report(job, result)

    def _work_per_call(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                while not batch and not self._closed:
                    self._cond.wait()
                    batch = self._take()
                if self._closed:
                    for job in batch:
                        job.cancel()
                    return
                self._running = batch
            self._run(batch)
            with self._cond:
                self._running = []

    def _run(self, batch: list[SynthesisJob]) -> None:
        now = time.monotonic()
        for job in batch:
            job.started_at = now
        try:
            results = self.engine.synthesize_batch([(job.text, job.options, job.token) for job in batch])
            if len(results) != len(batch):
                raise EngineError(f"engine returned {len(results)} results for a batch of {len(batch)}")
        except Exception as e:  # a broken engine call fails this batch only, never the worker
            log.exception("engine failed on a batch of %d segments", len(batch))
            results = [e] * len(batch)
        for job, result in zip(batch, results):
            self._report(job, result)

    def _report(self, job: SynthesisJob, result) -> None:
        if isinstance(result, SegmentAudio):
            self._finish(job, result, None)
            return
        if not isinstance(result, BaseException):
            result = EngineError(f"engine returned {type(result).__name__} instead of audio for a segment")
        if not isinstance(result, Cancelled):
            log.error("engine failed on segment %r: %s: %s", job.text[:80], type(result).__name__, result)
        self._finish(job, None, result)
