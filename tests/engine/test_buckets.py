import random

import pytest

from realtime_tts.engine.buckets import length_buckets


def padding(lengths, group):
    longest = max(lengths[i] for i in group)
    return 1 - sum(lengths[i] for i in group) / (longest * len(group))


def test_similar_lengths_share_one_batch():
    assert length_buckets([100, 90, 120, 110]) == [[2, 3, 0, 1]]


def test_a_short_segment_does_not_ride_with_a_long_one():
    assert length_buckets([1000, 100, 950, 120]) == [[0, 2], [3, 1]]


def test_every_index_once_and_padding_bounded():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 2000) for _ in range(rng.randint(1, 12))]
        for limit in (0.0, 0.25, 0.5, 0.9):
            groups = length_buckets(lengths, limit)
            assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
            assert all(padding(lengths, g) <= limit + 1e-12 for g in groups)


def test_zero_padding_groups_equal_lengths_only():
    assert length_buckets([5, 7, 5, 7], 0.0) == [[1, 3], [0, 2]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_padding"):
        length_buckets([3], 1.0)
    with pytest.raises(ValueError, match="positive"):
        length_buckets([3, 0])
