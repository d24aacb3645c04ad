"""Memory handed back to the system once the server goes quiet.

A burst of streams leaves glibc's heap holding the pages it grew into (Python frees the
objects, the C allocator keeps the memory for reuse), so a server's resident size after a busy
spell stays near its peak for good. ``trim_when_quiet`` asks glibc to return free pages
(``malloc_trim``) each time a busy spell ends, the open streams down to a quarter of their
peak: nothing runs while the load holds, and an idle server costs one check per interval.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_CHECK_S = 5.0
MIN_SPELL_STREAMS = 4  # a spell this small leaves nothing worth a trim


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


async def trim_when_quiet(open_streams: Callable[[], int], *, interval_s: float = TRIM_CHECK_S,
                          trim: Callable[[int], int] | None = None) -> None:
    """Runs for the server's life: one trim, on a worker thread (it walks the whole heap), each
    time the open streams have fallen to a quarter of their peak since the last trim (a busy
    spell ended; a few long-lived streams, such as an idle device, do not prevent it)."""
    trim = trim or malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: memory is not handed back after busy spells")
        return
    peak = 0
    while True:
        await asyncio.sleep(interval_s)
        now = open_streams()
        peak = max(peak, now)
        if peak >= MIN_SPELL_STREAMS and now <= peak // 4:
            peak = now
            await asyncio.to_thread(trim, 0)
