"""Memory handed back to the system once the server goes quiet.

A burst of streams leaves two things behind. Objects in reference cycles (connection objects of
the web server, among others) wait for the cyclic garbage collector, whose full passes come
rarely on a server with little left to do; and glibc's heap keeps the pages it grew into
(Python frees the objects, the C allocator keeps the memory for reuse). Either way a server's
resident size after a busy spell would stay near its peak. ``trim_when_quiet`` therefore, each
time a busy spell ends (the open streams down to a quarter of their peak), collects the cycles
and asks glibc to return free pages (``malloc_trim``): nothing runs while the load holds, and an
idle server costs one check per interval.

``freeze_startup_objects`` moves what start-up built (modules, the model, the engine) out of the
collector's sight, once per process: every full pass, the one above and those Python makes on
its own under load, then walks only what requests created, and the event loop waits
milliseconds instead of a tenth of a second.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
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
            await asyncio.to_thread(release, trim)


def release(trim: Callable[[int], int]) -> None:
    """Collect the garbage in reference cycles, then hand free heap pages back to the system."""
    started = time.perf_counter()
    collected = gc.collect()
    trim(0)
    log.debug("memory released after a busy spell: %d objects in cycles collected, %.0f ms", collected,
              (time.perf_counter() - started) * 1000)


_frozen = False


def freeze_startup_objects() -> None:
    """Collect start-up's garbage, then exempt every object alive now from collection (once per
    process; see the module doc)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
