"""Shared pieces for the HTTP API tests: a deterministic engine, app/context builders, a live server.

Test modules import this with ``sys.path`` pointing at tests/server (see their headers);
fixtures defined here are re-exported by importing them into the test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import socket
import threading
import time
import wave
from pathlib import Path

import numpy as np
import uvicorn
from starlette.testclient import TestClient

from realtime_tts.config import Settings
from realtime_tts.engine.base import CancelToken, Engine, EngineError, SegmentAudio, SynthesisOptions
from realtime_tts.engine.executor import SerialExecutor
from realtime_tts.server.context import ServerContext
from realtime_tts.server.transport import protocol_classes
from realtime_tts.server.voices import VoiceLibrary

ENGINE_RATE = 22050


class ToneEngine(Engine):
    """A deterministic stand-in: 0.05 s of tone per character at 22.05 kHz.

    The pitch encodes the speed (so tests can see options arrive) and every call is
    recorded. Text containing ``FAIL`` raises ``EngineError``; ``BLOCK`` waits until
    the job is cancelled (for cancellation tests).
    """

    name = "tone"
    sample_rate = ENGINE_RATE
    # It takes every option (tests check they arrive): no ignored-option warnings.
    clones_voices = True
    emotion_sources = ("vector", "text", "reference")

    def __init__(self) -> None:
        self.calls: list[tuple[str, SynthesisOptions]] = []
        self.blocked = threading.Event()

    def synthesize(self, text: str, options: SynthesisOptions, cancel: CancelToken) -> SegmentAudio:
        self.calls.append((text, options))
        if "FAIL" in text:
            raise EngineError(f"cannot say {text!r}")
        if "BLOCK" in text:
            self.blocked.set()
            while not cancel.cancelled:
                time.sleep(0.01)
            cancel.raise_if_cancelled()
        n = int(0.05 * len(text) * ENGINE_RATE)
        t = np.arange(n) / ENGINE_RATE
        pcm = (0.3 * np.sin(2 * math.pi * 220.0 * options.speed * t)).astype(np.float32)
        return SegmentAudio(pcm=pcm, sample_rate=ENGINE_RATE, stages={"tone": 0.0})


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {"data_dir": tmp_path / "data", "silence_ms": 100}
    values.update(overrides)
    return Settings(**values)


def make_ctx(tmp_path: Path, engine: Engine | None = None, **overrides) -> ServerContext:
    settings = make_settings(tmp_path, **overrides)
    ctx = ServerContext(settings=settings, executor=SerialExecutor(engine or ToneEngine(), max_queue=settings.max_queue))
    ctx.voices = VoiceLibrary.from_settings(settings)
    return ctx


def build_app(ctx: ServerContext):
    try:
        from realtime_tts.server.app import create_app
    except ImportError:  # TEMPORARY until server/app.py lands
        return _fallback_app(ctx)
    return create_app(ctx)


def _fallback_app(ctx):
    from starlette.applications import Starlette

    from realtime_tts.server.auth import auth_middleware
    from realtime_tts.server.page import page_routes
    from realtime_tts.server.voices import voice_routes

    routes = [*voice_routes(ctx), *page_routes()]
    try:
        from realtime_tts.server.openai_api import metrics_routes, openai_routes
        from realtime_tts.server.tts_shim import shim_routes
        routes += [*openai_routes(ctx), *shim_routes(ctx), *metrics_routes(ctx)]
    except ImportError:
        pass

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await ctx.executor.start()
        ctx.ready.set()
        yield
        await ctx.executor.close()

    return Starlette(routes=routes, middleware=auth_middleware(ctx.settings), lifespan=lifespan)


@contextlib.contextmanager
def client_for(ctx: ServerContext, **kw):
    """A TestClient with the app's lifespan run (executor started, ready set)."""
    with TestClient(build_app(ctx), **kw) as client:
        deadline = time.monotonic() + 30
        while not ctx.ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(ctx: ServerContext):
    """Run the app under a real uvicorn on a free port; yields the base URL."""
    port = free_port()
    config = uvicorn.Config(build_app(ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            ws_max_size=4 * 1024 * 1024, **protocol_classes())  # as `serve` runs it
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and ctx.ready.is_set()):
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def served(ctx: ServerContext):
    """The app under uvicorn configured exactly as ``serve`` runs it; yields the port."""
    from realtime_tts.server.app import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(build_app(ctx), ctx.settings, port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and ctx.ready.is_set()):
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


# --- audio helpers --------------------------------------------------------------------------

def tone_wav(seconds: float = 2.0, rate: int = 16000, freq: float = 180.0, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.4 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def encode_with_av(pcm_wav: bytes, fmt: str, codec: str) -> bytes:
    """Re-encode a WAV into another container (mp3, flac, ogg...) with PyAV."""
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(pcm_wav)) as src, av.open(out, "w", format=fmt) as dst:
        stream = dst.add_stream(codec, rate=src.streams.audio[0].rate, layout="mono")
        for frame in src.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def decode_any(data: bytes) -> tuple[np.ndarray, int]:
    """Decode an encoded response body to mono float32 with PyAV."""
    from realtime_tts.audio.io import decode_audio

    channels, rate = decode_audio(data)
    return channels.mean(axis=0), rate


def error_of(resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)

