"""What every endpoint shares: settings, the executor (and through it the engine), metrics, voices."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import Settings
from ..engine.executor import Executor
from .metrics import Metrics
from .offload import CodecPool


@dataclass
class ServerContext:
    settings: Settings
    executor: Executor
    metrics: Metrics = field(default_factory=Metrics)
    voices: Any = None  # realtime_tts.server.voices.VoiceLibrary once the app is built
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    devices: dict = field(default_factory=dict)  # device_id -> live xiaozhi session (control API)
    # Slow engines (IndexTTS2) load in the app's lifespan so /health can answer 503 meanwhile:
    # the executor then starts with engine=None and this loader fills it in.
    load_engine: Callable[[], Any] | None = None
    engine_name: str = ""  # what /health reports while load_engine is still running
    lifecycle: Any = None  # realtime_tts.server.lifecycle.Lifecycle (readiness, load, drain) once the app is built
    codec: CodecPool | None = None  # encoding, decoding and voice files off the event loop

    def __post_init__(self) -> None:
        if self.codec is None:
            self.codec = CodecPool(self.settings.codec_threads)

    @property
    def engine(self):
        return self.executor.engine
