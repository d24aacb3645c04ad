"""The one bounded thread pool for blocking work on request paths.

Encoding, decoding and resampling audio, parsing big bodies, and reading or writing voice files
never run on the event loop: a 4,000-character mp3 encoded on the loop stalls every device,
agent stream and health check for seconds. They run here instead, on ``codec_threads`` threads
shared by every connection (never a thread per session). The engine has its own worker thread
(the executor).

Calls run earliest deadline first. A call's ``deadline`` (a ``time.monotonic()`` time) says when
it should start; without one, at once. Under load a speech stream's sentence, encoded seconds
before its listener reaches it, therefore waits while a new turn's first sentence and request
parsing go first, and overtakes them when its listener is about to run out of audio
(``stream_codec.py``). Calls with equal deadlines run in submission order.

Threads start on demand and end after ``IDLE_EXIT_S`` without work, so the thread count comes
back down after a busy spell. ``run`` is what handlers await. A caller that is cancelled while
its work runs does not stop the thread; ``SpeechStream`` therefore waits for its last codec call
before closing its encoder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import heapq
import itertools
import os
import threading
import time
from typing import Any, Callable

IDLE_EXIT_S = 5.0  # a thread with nothing to do this long ends (another starts when work comes)


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class CodecPool:
    """``await pool.run(fn, *args)`` runs ``fn`` on one of at most ``threads`` threads, earliest
    deadline first. ``on_wait(seconds)``, when given, is told how long each call waited for a
    thread (the server's metric)."""

    def __init__(self, threads: int = 0, *, on_wait: Callable[[float], None] | None = None,
                 idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.threads = threads or default_threads()
        self.on_wait = on_wait
        self.idle_exit_s = idle_exit_s
        self._cond = threading.Condition()
        self._waiting: list[tuple[float, int, float, concurrent.futures.Future, Callable]] = []  # a heap
        self._order = itertools.count()
        self._names = itertools.count()
        self._workers = 0
        self._idle = 0  # workers waiting for a call
        self._generation = 0  # shutdown() ends the workers of earlier generations

    def submit(self, fn: Callable, /, *args: Any, deadline: float | None = None,
               **kwargs: Any) -> concurrent.futures.Future:
        """Queue ``fn`` on the pool; the concurrent future (callers that must wait for it later).
        A future cancelled before its call starts withdraws the call."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        now = time.monotonic()
        with self._cond:
            heapq.heappush(self._waiting, (now if deadline is None else deadline, next(self._order), now, future,
                                           functools.partial(fn, *args, **kwargs)))
            if self._idle == 0 and self._workers < self.threads:
                self._workers += 1
                threading.Thread(target=self._work, args=(self._generation,), name=f"codec-{next(self._names)}",
                                 daemon=True).start()
            else:
                self._cond.notify()
        return future

    async def run(self, fn: Callable, /, *args: Any, deadline: float | None = None, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args, deadline=deadline, **kwargs))

    @property
    def waiting(self) -> int:
        """Calls queued and not yet started."""
        with self._cond:
            return len(self._waiting)

    def shutdown(self) -> None:
        """Cancel the calls not yet started and end the threads once their current call is done
        (the app's shutdown); a later ``submit`` starts afresh."""
        with self._cond:
            waiting, self._waiting = self._waiting, []
            self._generation += 1
            self._workers = self._idle = 0
            self._cond.notify_all()
        for *_, future, _ in waiting:
            future.cancel()

    def _next_call(self, generation: int):
        """The earliest-deadline call, or None once this thread should end (lock held)."""
        while not self._waiting:
            if generation != self._generation:
                return None
            self._idle += 1
            woken = self._cond.wait(self.idle_exit_s)
            if generation != self._generation:
                return None
            self._idle -= 1
            if not woken and not self._waiting:
                self._workers -= 1  # idle too long
                return None
        if generation != self._generation:
            return None
        return heapq.heappop(self._waiting)

    def _work(self, generation: int) -> None:
        while True:
            with self._cond:
                item = self._next_call(generation)
            if item is None:
                return
            _, _, submitted, future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # withdrawn while it waited
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - submitted)
            try:
                result = call()
            except BaseException as e:  # the caller's to see, as with concurrent.futures
                future.set_exception(e)
            else:
                future.set_result(result)
