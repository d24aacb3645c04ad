"""Event-loop lag: a histogram in /metrics, fed by the app's lifespan, and a warning above the threshold."""

import asyncio
import logging
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, make_ctx  # noqa: E402
from test_metrics import samples  # noqa: E402

from realtime_tts.server.looplag import LoopLagMonitor  # noqa: E402

LAG = "rtts_event_loop_lag_seconds"


def test_lag_histogram_is_in_metrics_and_keeps_counting(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine())
    with client_for(ctx) as client:
        time.sleep(0.5)
        first = samples(client.get("/metrics").text)
        time.sleep(0.5)
        second = samples(client.get("/metrics").text)
    assert first[(f"{LAG}_count", ())] >= 1
    assert second[(f"{LAG}_count", ())] > first[(f"{LAG}_count", ())]  # the monitor runs for the app's life
    assert (f"{LAG}_bucket", (("le", "0.1"),)) in second


def test_a_blocked_loop_is_measured_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="realtime_tts.server.looplag")
    histogram = Histogram("lag", "lag", buckets=(0.05, 0.2, 1.0), registry=CollectorRegistry())
    monitor = LoopLagMonitor(histogram, warn_ms=150, interval=0.02)

    async def scenario():
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # something blocks the loop
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    assert 250 <= monitor.worst_ms < 2000
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "event loop stalled" in warnings[0].getMessage()
    assert warnings[0].lag_ms >= 250 and warnings[0].kind == "event_loop_lag"
    counts = {s.labels.get("le"): s.value for s in histogram.collect()[0].samples if s.name == "lag_bucket"}
    assert counts["1.0"] - counts["0.2"] == 1  # exactly one sleep woke 0.2-1 s late


def test_no_warning_below_the_threshold_or_when_off(caplog):
    caplog.set_level(logging.INFO, logger="realtime_tts.server.looplag")
    histogram = Histogram("lag", "lag", registry=CollectorRegistry())
    LoopLagMonitor(histogram, warn_ms=100).observe(0.099)
    LoopLagMonitor(histogram, warn_ms=0).observe(5.0)
    assert not caplog.records
    LoopLagMonitor(histogram, warn_ms=100).observe(0.1)
    assert len(caplog.records) == 1


def test_lag_is_the_overshoot_of_each_sleep():
    class Done(Exception):
        pass

    ticks = iter([10.0, 10.1, 20.0, 20.35])  # (start, wake) of two 0.1 s sleeps: 0 and 0.25 s late

    def clock():
        try:
            return next(ticks)
        except StopIteration:
            raise Done from None

    class Seen(list):
        observe = list.append

    seen = Seen()
    monitor = LoopLagMonitor(seen, warn_ms=0, interval=0.1, clock=clock)
    try:
        asyncio.run(monitor.run())
    except Done:
        pass
    assert [round(x, 6) for x in seen] == [0.0, 0.25]
