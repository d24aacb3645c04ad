"""The one bounded thread pool for blocking work on request paths.

Encoding, decoding and resampling audio, and reading or writing voice files, never run on the
event loop: a 4,000-character mp3 encoded on the loop stalls every device, agent stream and
health check for seconds. They run here instead, on ``codec_threads`` threads shared by every
connection (never a thread per session). The engine has its own worker thread (the executor).

``run`` is what handlers await. A caller that is cancelled while its work runs does not stop
the thread; ``SpeechStream`` therefore waits for its last codec call before closing its encoder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
from typing import Any, Callable


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class CodecPool:
    """``await pool.run(fn, *args)`` runs ``fn`` on one of at most ``threads`` threads."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads or default_threads()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Queue ``fn`` on the pool; the concurrent future (callers that must wait for it later)."""
        with self._lock:
            if self._pool is None:  # threads start on demand, so an idle pool costs nothing
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="codec")
            return self._pool.submit(functools.partial(fn, *args, **kwargs))

    async def run(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Stop the threads once their current work is done (the app's shutdown); a later ``run``
        starts a fresh pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
