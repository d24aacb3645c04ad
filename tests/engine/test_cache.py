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


# --- shared conditioning (a store other replicas read) ---------------------------------------------

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from realtime_tts.engine import cache as cache_mod  # noqa: E402
from realtime_tts.engine.base import Voice  # noqa: E402
from realtime_tts.engine.conditioning import Conditioner  # noqa: E402


@dataclass
class Entry:
    latents: torch.Tensor


class Blobs:
    """A dict standing in for one view of the voice store."""

    def __init__(self, fail_get: bool = False) -> None:
        self.data: dict[str, bytes] = {}
        self.fail_get = fail_get

    def get(self, content_hash: str) -> bytes | None:
        if self.fail_get:
            raise OSError("store unreachable")
        return self.data.get(content_hash)

    def put(self, content_hash: str, data: bytes) -> None:
        self.data[content_hash] = data


class CountingFamily:
    """Just enough of a ModelFamily for the Conditioner: counts what it computes."""

    cache_kinds = (Entry,)
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.computed: list[str] = []

    def voice_conditioning(self, path) -> Entry:
        self.computed.append(str(path))
        return Entry(latents=torch.arange(6, dtype=torch.float32).reshape(2, 3) * len(self.computed))


VOICE = Voice("alice", Path("alice.wav"), "ab" * 32)


def sharing_conditioner(views: dict, fingerprint: str) -> tuple[Conditioner, CountingFamily]:
    family = CountingFamily()
    conditioner = Conditioner(family, fingerprint)  # type: ignore[arg-type]
    conditioner.share(views)
    return conditioner, family


def test_a_replica_loads_conditioning_another_computed():
    blobs = Blobs()
    first, first_family = sharing_conditioner({"voice": blobs}, "machine-a")
    computed = first.voice(VOICE)
    first.close()  # the upload has finished
    assert first_family.computed == ["alice.wav"] and list(blobs.data) == [VOICE.content_hash]
    # another process, another local fingerprint (other paths): it reads the shared copy
    second, second_family = sharing_conditioner({"voice": blobs}, "machine-b")
    loaded = second.voice(VOICE)
    assert second_family.computed == []
    torch.testing.assert_close(loaded.latents, computed.latents, rtol=0, atol=0)
    assert second.describe()["shared"]["voice"] == {"hits": 1, "misses": 0, "uploaded": 0, "errors": 0}
    second.voice(VOICE)  # then it is in memory: the store is not asked again
    assert second.shared["voice"].hits == 1
    second.close()


def test_an_unreadable_store_or_entry_costs_a_recomputation(caplog):
    broken = Blobs(fail_get=True)
    conditioner, family = sharing_conditioner({"voice": broken}, "m")
    conditioner.voice(VOICE)
    assert family.computed == ["alice.wav"] and conditioner.shared["voice"].errors == 1
    assert "store unreachable" in caplog.text
    conditioner.close()

    corrupt = Blobs()
    corrupt.data[VOICE.content_hash] = b"not torch"
    conditioner, family = sharing_conditioner({"voice": corrupt}, "m")
    conditioner.voice(VOICE)
    conditioner.close()
    assert family.computed == ["alice.wav"]
    assert corrupt.data[VOICE.content_hash] != b"not torch"  # replaced by the good entry


def test_a_store_that_fails_writes_never_fails_synthesis(caplog):
    class ReadOnly(Blobs):
        def put(self, content_hash, data):
            raise PermissionError("read-only bucket")

    conditioner, family = sharing_conditioner({"voice": ReadOnly()}, "m")
    assert conditioner.voice(VOICE).latents.shape == (2, 3)
    conditioner.close()
    assert conditioner.shared["voice"].errors == 1 and "read-only bucket" in caplog.text


def test_build_id_follows_the_weights_not_their_paths(tmp_path):
    weights = bytes(range(256)) * 2048  # 512 KiB
    a, b = tmp_path / "a" / "gpt.pth", tmp_path / "b" / "gpt.pth"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(weights)
    assert cache_mod.build_id([a], "fp32") == cache_mod.build_id([b], "fp32")  # copies on two machines
    assert cache_mod.build_id([a], "fp32") != cache_mod.build_id([a], "bf16")
    tuned = bytearray(weights)
    tuned[len(weights) // 2] ^= 1  # a fine-tune of the same shapes: other bytes in the middle
    b.write_bytes(bytes(tuned))
    assert cache_mod.build_id([a], "fp32") != cache_mod.build_id([b], "fp32")


def test_sharing_engine_names_its_build(monkeypatch, tmp_path):
    from realtime_tts.engine.pipeline import PipelineEngine

    calls = []
    store = SimpleNamespace(conditioning_view=lambda family, version: calls.append((family, version)) or Blobs())
    weights = tmp_path / "gpt.pth"
    weights.write_bytes(b"\0" * 1024)
    engine = SimpleNamespace(name="indextts2", dtype=torch.float32, conditioner=SimpleNamespace(share=lambda v: None),
                             family=SimpleNamespace(weight_files=lambda: [weights]))
    assert PipelineEngine.share_conditioning(engine, store) is True
    build = cache_mod.build_id([weights], "float32")
    assert calls == [("indextts2", f"{build}-voice"), ("indextts2", f"{build}-emotion")]
    engine.family = SimpleNamespace(weight_files=lambda: [])  # built in memory: nothing to name
    assert PipelineEngine.share_conditioning(engine, store) is False
