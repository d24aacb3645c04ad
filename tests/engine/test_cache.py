"""ConditioningCache (engine/cache.py): LRU in memory, atomic files on disk that survive a restart,
unreadable entries recomputed, keys restricted to content hashes."""

import hashlib

import numpy as np
import pytest

from realtime_tts.engine.cache import ConditioningCache


def test_conditioning_cache_lru_and_disk(tmp_path):
    computed = []

    def compute(key):
        def f():
            computed.append(key)
            return np.full(3, len(computed), np.float32)
        return f

    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    cache = ConditioningCache(2)
    cache.get_or_compute(keys[0], compute(keys[0]))
    cache.get_or_compute(keys[1], compute(keys[1]))
    cache.get_or_compute(keys[0], compute(keys[0]))  # hit, now most recent
    cache.get_or_compute(keys[2], compute(keys[2]))  # evicts keys[1]
    assert computed == keys[:3] and keys[1] not in cache and keys[0] in cache and len(cache) == 2
    assert (cache.hits, cache.misses) == (1, 3)

    def dump(value, path):
        np.save(open(path, "wb"), value)

    def load(path):
        return np.load(path)

    disk = ConditioningCache(1, disk_dir=tmp_path / "cond", dump=dump, load=load, suffix=".npy")
    disk.put(keys[0], np.arange(4, dtype=np.float32))
    assert not list((tmp_path / "cond").glob(".tmp-*"))
    fresh = ConditioningCache(1, disk_dir=tmp_path / "cond", dump=dump, load=load, suffix=".npy")
    np.testing.assert_array_equal(fresh.get(keys[0]), np.arange(4, dtype=np.float32))  # survives a restart
    (tmp_path / "cond" / f"{keys[1]}.npy").write_bytes(b"corrupt")
    assert fresh.get(keys[1]) is None  # unreadable entries are recomputed, not fatal
    with pytest.raises(ValueError, match="content hashes"):
        fresh.get("../etc/passwd")
    with pytest.raises(ValueError, match="go together"):
        ConditioningCache(2, disk_dir=tmp_path)
