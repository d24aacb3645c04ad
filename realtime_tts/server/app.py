"""The one ASGI app: every endpoint on one port, sharing one ServerContext.

Start-up order (the lifespan): warm the engine up (before the worker thread exists, so
the engine is still touched by one thread at a time), start the executor, then set
``ready`` so /health turns 200. Shut-down cancels every queued and running segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..engine.base import SegmentAudio
from .agent_stream import stream_routes
from .auth import auth_middleware
from .context import ServerContext
from .control import control_routes
from .http_errors import exception_handlers
from .lifecycle import Lifecycle, LifecycleMiddleware
from .memory import freeze_startup_objects, trim_when_quiet
from .looplag import LoopLagMonitor
from .openai_api import metrics_routes, openai_routes
from .ota import ota_routes
from .page import page_routes
from .request_id import RequestIdMiddleware
from .tts_request import tts_request_routes
from .transport import protocol_classes
from .tts_shim import shim_routes
from .voices import voice_routes, watch_library
from .xiaozhi import xiaozhi_routes

log = logging.getLogger("realtime_tts.server")


def health_routes(ctx: ServerContext) -> list[Route]:
    async def health(request: Request) -> JSONResponse:
        ready = ctx.ready.is_set()
        name = ctx.engine.name if ctx.engine is not None else ctx.engine_name
        body = {"status": "ok" if ready else "loading", "ready": ready, "engine": name,
                "queue_depth": ctx.executor.queue_depth}
        if ready:
            body["engine_info"] = ctx.engine_info()
        return JSONResponse(body, status_code=200 if ready else 503)

    return [Route("/health", health, methods=["GET"])]


def _record_segment(ctx: ServerContext):
    """Executor hook (worker thread): per-segment engine metrics."""
    engine = ctx.engine.name

    def hook(job, result, seconds: float) -> None:
        if isinstance(result, SegmentAudio):
            ctx.metrics.segment_done(engine, seconds, result.duration, result.stages)
        else:
            ctx.metrics.segment_done(engine, seconds, None, None, outcome=type(result).__name__)

    return hook


async def share_conditioning(ctx: ServerContext) -> None:
    """With a store other machines read (S3), the engine keeps per-voice conditioning there too,
    so a replica that meets a voice for the first time loads it instead of recomputing it."""
    store = getattr(ctx.voices, "store", None)
    share = getattr(ctx.engine, "share_conditioning", None)
    if store is not None and store.shared and share is not None:
        await asyncio.to_thread(share, store)


def uvicorn_config(app, settings, **overrides) -> uvicorn.Config:
    """How ``serve`` runs the app: our logging (configure_logging) rather than uvicorn's own."""
    # A WebSocket client that answers no ping within the write timeout reads nothing: dropped as
    # one whose writes stall (a paced device stream takes far longer to fill the buffers).
    # No permessage-deflate: what we send is Opus (or PCM), which deflate hardly shrinks, and
    # each compressed connection would hold tens of KB of zlib state and deflate every frame.
    options = dict(host=settings.host, port=settings.port, log_config=None, ws_max_size=4 * 1024 * 1024,
                   ws_per_message_deflate=False, ws_ping_interval=settings.write_timeout_s,
                   ws_ping_timeout=settings.write_timeout_s, timeout_graceful_shutdown=5,
                   **protocol_classes(settings.write_timeout_s))
    return uvicorn.Config(app, **{**options, **overrides})


def create_app(ctx: ServerContext, *, inner_middleware: list[Middleware] = ()) -> Starlette:
    """The app; ``inner_middleware`` runs after auth (so it sees the request's principal)."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        started = time.monotonic()
        if ctx.engine is None:
            ctx.executor.engine = await asyncio.to_thread(ctx.load_engine)
        await share_conditioning(ctx)
        await asyncio.to_thread(ctx.engine.warmup)
        if ctx.engine.needs_voice and not ctx.settings.default_voice and not len(ctx.voices or ()):
            log.warning("the %s engine clones voices and the voice library is empty: requests must name a voice "
                        "until one is added (the first one added becomes the default unless --default-voice says "
                        "otherwise). Add one with: curl -F file=@reference.wav -F id=my_voice "
                        "http://HOST:PORT/v1/audio/voices", ctx.engine.name)
        freeze_startup_objects()  # the model and the imports: never garbage, no longer walked by every gc pass
        ctx.executor.on_segment_done = _record_segment(ctx)
        await ctx.executor.start()
        watcher = asyncio.create_task(watch_library(ctx.voices), name="voice-library-watch")
        trimmer = asyncio.create_task(trim_when_quiet(lambda: len(ctx.lifecycle.streams)), name="memory-trim")
        ctx.ready.set()
        log.info("engine %s ready in %.1f s", ctx.engine.name, time.monotonic() - started)
        lag = asyncio.create_task(LoopLagMonitor(ctx.metrics.loop_lag, warn_ms=ctx.settings.loop_lag_warn_ms).run(),
                                  name="event-loop-lag")
        try:
            yield
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            ctx.ready.clear()
            for task in (watcher, trimmer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for session in list(ctx.devices.values()):
                with contextlib.suppress(Exception):
                    await session.close(1001, "server shutting down")
            await ctx.executor.close()
            ctx.codec.shutdown()

    routes = [
        *health_routes(ctx),
        *xiaozhi_routes(ctx),
        *ota_routes(ctx),
        *control_routes(ctx),
        *stream_routes(ctx),
        *openai_routes(ctx),
        *shim_routes(ctx),
        *tts_request_routes(ctx),
        *voice_routes(ctx),
        *metrics_routes(ctx),
        *page_routes(),
    ]
    if ctx.lifecycle is None:
        ctx.lifecycle = Lifecycle.for_context(ctx)
    middleware = [Middleware(RequestIdMiddleware),  # the id also on 401s and drain refusals
                  Middleware(LifecycleMiddleware, lifecycle=ctx.lifecycle), *auth_middleware(ctx.settings),
                  *inner_middleware]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers=exception_handlers(), lifespan=lifespan)
