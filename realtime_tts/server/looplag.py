"""Event-loop lag: how late the loop wakes a task that asked to sleep.

Every endpoint shares one asyncio loop, so anything that blocks it (an encoder, a file read,
a big JSON parse) delays every device and agent stream at once. A tiny task sleeps
``interval`` seconds again and again; the overshoot of each sleep is the lag every other
task saw at that moment. It goes to the ``rtts_event_loop_lag_seconds`` histogram, and a lag
of ``warn_ms`` or more is logged (rate-limited like every warning).
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class LoopLagMonitor:
    def __init__(self, histogram, *, warn_ms: float, interval: float = 0.1, clock=time.perf_counter) -> None:
        self.histogram = histogram
        self.warn_ms = warn_ms
        self.interval = interval
        self.clock = clock
        self.worst_ms = 0.0

    def observe(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self.histogram.observe(lag_s)
        lag_ms = lag_s * 1000
        self.worst_ms = max(self.worst_ms, lag_ms)
        if self.warn_ms > 0 and lag_ms >= self.warn_ms:
            log.warning("event loop stalled for %.0f ms (something blocked it; every stream waited)", lag_ms,
                        extra={"kind": "event_loop_lag", "lag_ms": round(lag_ms)})

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            started = self.clock()
            await asyncio.sleep(self.interval)
            self.observe(self.clock() - started - self.interval)
