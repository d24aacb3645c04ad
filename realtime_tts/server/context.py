"""What every endpoint shares: settings, the executor (and through it the engine), metrics, voices."""

from __future__ import annotations

import asyncio
import dataclasses
import ntpath
import posixpath
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import Settings
from ..engine.executor import Executor
from .auth import Principal, principal_of
from .metrics import Metrics
from .offload import CodecPool


@dataclass
class ServerContext:
    settings: Settings
    executor: Executor
    metrics: Metrics = field(default_factory=Metrics)
    # realtime_tts.server.voices.VoiceLibrary once the app is built; on a request's view
    # (for_request), that tenant's TenantVoices
    voices: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # (tenant, device id) -> live xiaozhi session (control API): a device id of another tenant
    # is another device
    devices: dict = field(default_factory=dict)
    # Slow engines (IndexTTS2) load in the app's lifespan so /health can answer 503 meanwhile:
    # the executor then starts with engine=None and this loader fills it in.
    load_engine: Callable[[], Any] | None = None
    engine_name: str = ""  # what /health reports while load_engine is still running
    lifecycle: Any = None  # realtime_tts.server.lifecycle.Lifecycle (readiness, load, drain) once the app is built
    codec: CodecPool | None = None  # encoding, decoding and voice files off the event loop
    principal: Principal | None = None  # set on a request's view only

    def __post_init__(self) -> None:
        if self.codec is None:
            self.codec = CodecPool(self.settings.codec_threads, on_wait=self.metrics.codec_wait.observe)

    @property
    def engine(self):
        return self.executor.engine

    def engine_info(self) -> dict:
        """``engine.describe()`` for responses: server paths (checkpoint, cache directory) reduced
        to their last component, so no response shows where things are on the server."""
        return _without_paths(self.engine.describe())

    def for_request(self, scope) -> "ServerContext":
        """This context as one request sees it: its principal, and voices resolved in its tenant
        only (everything else shared). Request paths pass this view to the parsers."""
        principal = principal_of(scope)
        voices = self.voices.scoped(principal.tenant) if self.voices is not None else None
        return dataclasses.replace(self, principal=principal, voices=voices)


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_paths(v) for v in value]
    if isinstance(value, str) and (posixpath.isabs(value) or ntpath.isabs(value)):
        return ntpath.basename(value.rstrip("/\\")) or "/"
    return value
