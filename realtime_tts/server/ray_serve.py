"""The server as a Ray Serve deployment: one replica per GPU, voice affinity, our load gauge, polite drain.

Each replica is the whole app (every endpoint, its own engine and executor) behind Ray's
HTTP proxy, which carries WebSockets and streaming responses. What Ray is told:

* ``max_ongoing_requests`` = the replica's stream capacity (``max_streams``): an open
  WebSocket is one ongoing request for its whole life; ``max_queued_requests`` more wait
  in the proxy, beyond that HTTP gets 503 (a WebSocket upgrade gets 500: Ray 2.60).
* ``ray_actor_options``: one GPU per replica on a GPU cluster (``num_gpus=1``), else CPUs.
* routing: ``ray_router.VoiceAffinityRouter`` (consistent hash on the voice / device key,
  bounded load); autoscaling: ``ray_autoscale.StreamLoadPolicy`` on the streams each replica
  reports from ``record_autoscaling_stats`` plus Ray's queued requests.
* drain: a replica that Ray stops (scale-down, redeploy, shutdown) drains like a process
  on SIGTERM (server/lifecycle.py) before Ray's ``graceful_shutdown_timeout_s`` runs out.

``build_application`` is used by ``realtime-tts serve-ray`` and by ``serve run
deploy/ray/serve.yaml`` (through ``realtime_tts.cli:ray_app``); the context factory is
passed in so this module stays below the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable

from ray import serve
from starlette.middleware import Middleware

from ..config import ConfigError, Settings
from .affinity import AffinityMiddleware, WarmVoices
from .app import create_app
from .lifecycle import STREAMS_PER_BATCH_SLOT, Lifecycle

log = logging.getLogger(__name__)

DRAIN_MARGIN_S = 10.0  # Ray's shutdown budget beyond our drain timeout (close frames, lifespan shutdown)


@dataclass
class ClusterOptions:
    """How many replicas, where, and how they scale (every field is a `serve-ray` flag)."""

    min_replicas: int = 1
    max_replicas: int = 1
    gpus_per_replica: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0
    cpus_per_replica: float = 1.0
    target_load: float = 0.7  # autoscale to keep streams / capacity near this
    load_factor: float = 1.5  # a replica may take this times the mean load before its voices spill over
    max_queued: int = -1  # streams waiting in the proxy per replica; -1: the replica's capacity
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 120.0
    look_back_period_s: float = 15.0
    name: str = "realtime-tts"

    def validate(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(f"replicas: need 1 <= min ({self.min_replicas}) <= max ({self.max_replicas})")
        if not 0 < self.target_load <= 1:
            raise ConfigError(f"target_load must be within (0, 1], got {self.target_load}")
        if self.load_factor < 1:
            raise ConfigError(f"load_factor must be at least 1, got {self.load_factor}")
        if self.gpus_per_replica is not None and self.gpus_per_replica < 0:
            raise ConfigError("gpus_per_replica must be 0 or more")


def stream_capacity(settings: Settings, gpus: float) -> int:
    """``max_streams``, or the automatic 8 per batch slot (8 slots for IndexTTS2 on a GPU)."""
    if settings.max_streams:
        return settings.max_streams
    slots = settings.max_batch or (8 if gpus > 0 and settings.engine != "espeak" else 1)
    return STREAMS_PER_BATCH_SLOT * slots


def deployment_options(settings: Settings, options: ClusterOptions, *, cluster_gpus: float) -> dict:
    """Ray Serve deployment options from our settings (pure: tested without Ray)."""
    options.validate()
    gpus = options.gpus_per_replica if options.gpus_per_replica is not None else (1.0 if cluster_gpus > 0 else 0.0)
    capacity = stream_capacity(settings, gpus)
    actor = {"num_cpus": options.cpus_per_replica, **({"num_gpus": gpus} if gpus else {})}
    scaling: dict[str, Any] = {"num_replicas": options.min_replicas}
    if options.max_replicas > options.min_replicas:
        scaling = {"autoscaling_config": {
            "min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
            "upscale_delay_s": options.upscale_delay_s, "downscale_delay_s": options.downscale_delay_s,
            "look_back_period_s": options.look_back_period_s,
            "policy": {"policy_function": "realtime_tts.server.ray_autoscale:StreamLoadPolicy",
                       "policy_kwargs": {"target_load": options.target_load}},
        }}
    return {
        "name": options.name,
        "max_ongoing_requests": capacity,
        "max_queued_requests": capacity if options.max_queued < 0 else options.max_queued,
        "ray_actor_options": actor,
        "graceful_shutdown_timeout_s": settings.drain_timeout_s + DRAIN_MARGIN_S,
        "graceful_shutdown_wait_loop_s": 0.5,
        "health_check_period_s": 5.0,
        "request_router_config": {
            "request_router_class": "realtime_tts.server.ray_router:VoiceAffinityRouter",
            "request_router_kwargs": {"load_factor": options.load_factor},
        },
        **scaling,
    }


def ray_replica_stopping() -> Callable[[], bool]:
    """A predicate: has Ray begun stopping this replica (scale-down, redeploy, shutdown)?

    Ray 2.60 gives the user code no signal when a replica's graceful shutdown starts: it
    waits for ongoing requests (an open WebSocket is one) until graceful_shutdown_timeout_s,
    then kills the actor and clients see 1006. So we read the replica's own flag, pinned to
    ray==2.60.0 and covered by tests/cluster/test_ray_serve.py (drain on redeploy).
    """
    from ray._private.worker import global_worker

    def stopping() -> bool:
        actor = global_worker.actors.get(global_worker.actor_id)
        return bool(getattr(getattr(actor, "_replica_impl", None), "_shutting_down", False))

    return stopping


@serve.deployment
@serve.ingress()
class SpeechReplica:
    """One replica: the whole app on its own engine, named after Ray's replica id."""

    def __init__(self, settings: Settings, make_context: Callable[[Settings], Any], capacity: int) -> None:
        replica_id = settings.replica_id or serve.get_replica_context().replica_id.unique_id
        settings = replace(settings, replica_id=replica_id)
        self.ctx = make_context(settings)
        self.ctx.lifecycle = Lifecycle(capacity=capacity, drain_timeout_s=settings.drain_timeout_s,
                                       replica_id=settings.replica_id, warm=self.ctx.ready.is_set)
        self.ctx.lifecycle.watch(ray_replica_stopping(), "Ray is stopping this replica")
        self.warm = WarmVoices(settings.warm_voices, load=self._load_voice)
        log.info("replica %s: capacity %d streams, %d warm voices", settings.replica_id, capacity,
                 settings.warm_voices)

    def _load_voice(self, key: tuple[str, str]):
        """A warm miss (on a worker thread): the voice's record, read from the store if need be."""
        tenant, voice_id = key
        try:
            return self.ctx.voices.get(voice_id, tenant=tenant) if self.ctx.voices is not None else None
        except Exception as e:  # a store hiccup is a cold voice, never a failed request
            log.warning("replica %s: cannot warm voice %s/%s: %s", self.ctx.settings.replica_id, tenant, voice_id, e)
            return None

    def __serve_build_asgi_app__(self):
        affinity = Middleware(AffinityMiddleware, warm=self.warm, offload=asyncio.to_thread)
        return create_app(self.ctx, inner_middleware=[affinity])

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Our gauge for ray_autoscale.StreamLoadPolicy (Ray calls it every few seconds)."""
        lifecycle = self.ctx.lifecycle
        return {"rtts_streams": float(len(lifecycle.streams)), "rtts_capacity": float(lifecycle.capacity)}


def build_application(settings: Settings, options: ClusterOptions, make_context: Callable[[Settings], Any], *,
                      cluster_gpus: float = 0.0):
    """The Serve application: ``serve.run(build_application(...), route_prefix="/")``."""
    opts = deployment_options(settings, options, cluster_gpus=cluster_gpus)
    return SpeechReplica.options(**opts).bind(settings, make_context, opts["max_ongoing_requests"])
