"""Prometheus metrics for one server instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.queue_depth = Gauge("rtts_queue_depth", "Segments waiting for the engine", registry=r)
        self.segments = Counter("rtts_segments_total", "Segments synthesized", ["engine", "outcome"], registry=r)
        self.audio_seconds = Counter("rtts_audio_seconds_total", "Seconds of audio synthesized", ["engine"], registry=r)
        self.ttfa = Histogram("rtts_time_to_first_audio_seconds",
                              "Last text of the first sentence received -> first audio packet written",
                              ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram("rtts_real_time_factor", "Engine seconds per audio second, per segment",
                             ["engine"], buckets=_RTF_BUCKETS, registry=r)
        self.stage = Histogram("rtts_engine_stage_seconds", "Engine time per stage per segment",
                               ["engine", "stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.connections = Gauge("rtts_active_connections", "Open connections / in-flight requests",
                                 ["endpoint"], registry=r)
        self.loop_lag = Histogram("rtts_event_loop_lag_seconds",
                                  "How late the event loop woke a 100 ms sleep (every stream waits this long)",
                                  buckets=_LAG_BUCKETS, registry=r)
        self.errors = Counter("rtts_errors_total", "Errors by kind", ["kind"], registry=r)
        # What a connection holds while it lives (server/speech.py): all back to 0 when clients leave.
        self.speech_streams = Gauge("rtts_live_speech_streams", "Open speech streams (turns, contexts, HTTP "
                                    "bodies)", registry=r)
        self.encoders = Gauge("rtts_live_encoders", "Audio encoders holding native codec state", registry=r)
        self.tasks = Gauge("rtts_live_tasks", "asyncio tasks on the server's event loop", registry=r)
        self.threads = Gauge("rtts_process_threads", "Threads of the server process (native ones included)",
                             registry=r)
        self.codec_wait = Histogram("rtts_codec_wait_seconds", "How long a call waited for a thread of the codec "
                                    "pool (encoding, parsing); a sentence encoded ahead waits on purpose",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.underruns = Counter("rtts_playback_underruns_total", "A device played everything it was sent before "
                                 "the next packet of its turn arrived (a gap the listener heard)", ["endpoint"],
                                 registry=r)
        self.write_timeouts = Counter("rtts_write_timeouts_total", "Clients dropped for not reading",
                                      ["endpoint"], registry=r)

    # --- recording helpers (cheap; safe from any thread) ------------------------
    def segment_done(self, engine: str, seconds: float, audio_seconds: float | None,
                     stages: dict[str, float] | None, outcome: str = "ok") -> None:
        self.segments.labels(engine, outcome).inc()
        if outcome == "ok" and audio_seconds:
            self.audio_seconds.labels(engine).inc(audio_seconds)
            self.rtf.labels(engine).observe(seconds / audio_seconds)
        for stage, value in (stages or {}).items():
            self.stage.labels(engine, stage).observe(value)

    def observe_ttfa(self, endpoint: str, seconds: float) -> None:
        self.ttfa.labels(endpoint).observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    @contextlib.contextmanager
    def connection(self, endpoint: str):
        gauge = self.connections.labels(endpoint)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def sample_process(self) -> None:
        """Refresh the gauges read from the process at scrape time (call on the event loop)."""
        try:
            self.tasks.set(len(asyncio.all_tasks()))
        except RuntimeError:  # no running loop
            pass
        try:
            self.threads.set(len(os.listdir("/proc/self/task")))  # native threads too (Linux)
        except OSError:
            self.threads.set(threading.active_count())

    def render(self) -> bytes:
        return generate_latest(self.registry)
