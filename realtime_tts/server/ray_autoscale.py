"""Ray Serve autoscaling on our own load gauge: (streams in replicas + streams queued) / capacity.

Each replica reports ``rtts_streams`` (open WebSockets and speech responses) and
``rtts_capacity`` (its ``max_streams``) through ``record_autoscaling_stats``; Ray adds the
requests queued in its handles (``total_queued_requests``: sockets and requests waiting for
a replica with room). The policy asks for enough replicas to keep that load at
``target_load``; Ray then applies min/max replicas, the up/down delays and the factors.

Ray pickles this module by value into its controller: keep it free of project imports.
"""

from __future__ import annotations

import math


class StreamLoadPolicy:
    """``policy_kwargs``: ``target_load`` (0.7: scale up when replicas run above 70 % of capacity)."""

    def __init__(self, target_load: float = 0.7) -> None:
        if not 0 < target_load <= 1:
            raise ValueError(f"target_load must be within (0, 1], got {target_load!r}")
        self.target_load = target_load

    def __call__(self, ctx):
        return desired_replicas(ctx, self.target_load), {}


def desired_replicas(ctx, target_load: float) -> float:
    metrics = ctx.aggregated_metrics or {}
    streams = metrics.get("rtts_streams") or {}
    capacities = [c for c in (metrics.get("rtts_capacity") or {}).values() if c > 0]
    if not capacities:  # no replica has reported yet: stay where we are
        return ctx.target_num_replicas
    queued = ctx.total_queued_requests or 0.0
    demand = sum(streams.values()) + queued
    per_replica = max(capacities) * target_load
    return max(1.0, math.ceil(demand / per_replica)) if demand else ctx.capacity_adjusted_min_replicas
