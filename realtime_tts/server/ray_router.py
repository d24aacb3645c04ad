"""Ray Serve request router: consistent hashing on the voice / device key, with a bounded load.

Runs inside Ray's proxies (import-light on purpose: no engine, no torch). Ray's own
``ConsistentHashRouter`` (experimental in 2.60) keys on one session header that devices
cannot send; this subclass keys on ``affinity.routing_key`` of the request's ASGI scope,
keeps Ray's ring and retry loop (a replica at ``max_ongoing_requests`` rejects and the next
one on the ring is tried), and moves replicas above the load bound to the back of the
order first (``affinity.bounded_choice``). Requests with no key go to the least loaded
replica. Device keys (xiaozhi sockets and the control API) skip the load bound: the device
registry is per replica, so a control call must reach the replica holding the socket.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.serve.experimental.consistent_hash_router import ConsistentHashRouter

from .affinity import bounded_choice, routing_key

DEFAULT_LOAD_FACTOR = 1.5


def request_scope(pending_request: Any) -> dict | None:
    """The ASGI scope of a request the proxy routes (its argument is the pickled HTTP request)."""
    args = getattr(pending_request, "args", None)
    if not args or not isinstance(args[0], (bytes, bytearray)):
        return None
    try:
        return getattr(pickle.loads(args[0]), "asgi_scope", None)
    except Exception:  # noqa: BLE001 - not an HTTP request: route it without a key
        return None


class VoiceAffinityRouter(ConsistentHashRouter):
    """Kwargs (``request_router_kwargs``): ``load_factor`` (1.5), Ray's ``num_virtual_nodes``."""

    def initialize_state(self, **kwargs) -> None:
        factor = kwargs.pop("load_factor", DEFAULT_LOAD_FACTOR)
        if not isinstance(factor, (int, float)) or factor < 1:
            raise ValueError(f"load_factor must be a number >= 1, got {factor!r}")
        self._load_factor = float(factor)
        kwargs["num_fallback_replicas"] = 1 << 16  # rank every replica: the bound decides the order
        super().initialize_state(**kwargs)

    def _routing_key(self, pending_request):
        if pending_request is None:
            return None
        scope = request_scope(pending_request)
        if scope is not None:
            return routing_key(scope)
        metadata = pending_request.metadata  # a handle call: Ray's own keys, if any
        return metadata.multiplexed_model_id or metadata.session_id or None

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        if not candidate_replicas:
            return []
        key = self._routing_key(pending_request)
        if key is None:
            return [candidate_replicas]  # one rank: the least loaded of them takes it
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True
        ranked = [self._replicas[r] for r in self._lookup_ranked_replicas(key) if r in self._replicas]
        if key.startswith("device:"):  # strict: a device's socket and the control calls naming it must meet
            return [[r] for r in ranked]
        loads = {r: self._replica_queue_len_cache.get(r.replica_id) for r in ranked}
        floor = max(1, min(r.max_ongoing_requests for r in ranked) // 2) if ranked else 1
        return [[r] for r in bounded_choice(ranked, loads, self._load_factor, floor)]
