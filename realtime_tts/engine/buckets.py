"""Grouping segments of different lengths into batches that waste little on padding.

A batched S2M solve pads every item to the longest one, and its cost grows with the padded
length (attention quadratically). Batching a 1 s segment with a 12 s one would spend most of the
1 s item's share on padding, so items are grouped by length first: a group holds items whose
padded area is at least ``1 - max_padding`` real frames.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_buckets(lengths: Sequence[int], max_padding: float = 0.3) -> list[list[int]]:
    """Indices of ``lengths`` grouped longest first; in each group, padding frames / all frames
    <= ``max_padding``. Greedy over the lengths sorted longest first (ties keep input order)."""
    if not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    if any(n < 1 for n in lengths):
        raise ValueError(f"lengths must be positive, got {list(lengths)}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    longest = real = 0
    for i in order:
        n = lengths[i]
        if groups and real + n >= (1 - max_padding) * longest * (len(groups[-1]) + 1):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            longest = real = n
    return groups
