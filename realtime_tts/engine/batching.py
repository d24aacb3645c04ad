"""An executor that hands the engine several segments per call (one GPU pass for many clients).

Same contract as ``SerialExecutor`` (bounded queue, ``ExecutorBusy``, per-job and per-owner
cancellation, ``close``, the ``on_segment_done`` hook); only the worker differs. Whenever the
worker is free it takes up to ``max_batch`` queued jobs in round-robin order, so the batch holds
every waiting owner's oldest job before anyone's second one (a new turn's first sentence rides in
the next batch instead of waiting behind another client's long text), and runs them with
``Engine.synthesize_batch``. There is no waiting for a batch to fill: while one batch runs, new
segments queue, and the next batch takes them all, so batches grow with load by themselves.
"""

from __future__ import annotations

import logging
import time

from .base import Cancelled, Engine, EngineError, SegmentAudio
from .executor import QueuedExecutor, SynthesisJob

log = logging.getLogger(__name__)


class BatchingExecutor(QueuedExecutor):
    """One worker thread running up to ``max_batch`` segments per engine call."""

    def __init__(self, engine: Engine | None, *, max_queue: int = 256, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__(engine, max_queue=max_queue)
        self.max_batch = max_batch
        self._running: list[SynthesisJob] = []

    def _in_flight(self) -> list[SynthesisJob]:
        return list(self._running)

    def _take(self) -> list[SynthesisJob]:
        """Up to ``max_batch`` jobs, round-robin across owners (lock held)."""
        batch: list[SynthesisJob] = []
        while len(batch) < self.max_batch:
            job = self._next_job()
            if job is None:
                break
            batch.append(job)
        return batch

    def _work(self) -> None:
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
            if isinstance(result, SegmentAudio):
                self._finish(job, result, None)
                continue
            if not isinstance(result, BaseException):
                result = EngineError(f"engine returned {type(result).__name__} instead of audio for a segment")
            if not isinstance(result, Cancelled):
                log.error("engine failed on segment %r: %s: %s", job.text[:80], type(result).__name__, result)
            self._finish(job, None, result)
