"""The shared voice store (server/voice_store.py): a local directory and S3 through moto's server.

moto runs in server mode: boto3 speaks the real S3 HTTP API to it on loopback. Every
behaviour is checked on both backends: objects whole or absent, the metadata-last commit,
create-only writes, sharing between two replicas, conditioning by clip hash and model build.
"""

import asyncio
import hashlib
import itertools
import json
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import free_port  # noqa: E402

from http_helpers import tone_wav  # noqa: E402

from realtime_tts.config import Settings  # noqa: E402
from realtime_tts.server.voice_store import (  # noqa: E402
    LocalVoiceStore, S3VoiceStore, VoiceExists, VoiceStoreError, check_key, open_voice_store,
)
from realtime_tts.server.voices import LEGACY_MARKER, VoiceError, VoiceLibrary, watch_library  # noqa: E402

boto3 = pytest.importorskip("boto3", reason="the cluster extra (boto3, moto) is not installed")
moto_server = pytest.importorskip("moto.server", reason="the cluster extra (moto[server]) is not installed")

CLIP_A, CLIP_B = b"RIFF-clip-a" * 100, b"RIFF-clip-b" * 100


@pytest.fixture(scope="module")
def s3_endpoint():
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def make_store(request, tmp_path):
    """A factory: each call is another replica's view of the same store."""
    if request.param == "local":
        return lambda: LocalVoiceStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = "voices-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    replicas = itertools.count()
    return lambda: S3VoiceStore(f"s3://{bucket}/prod/voices", endpoint_url=endpoint,
                                cache_dir=tmp_path / f"cache-{next(replicas)}")


def test_bytes_by_key(make_store):
    store = make_store()
    assert store.get("conditioning/x.bin") is None
    store.put("conditioning/x.bin", b"\x00" * 1000)
    store.put("conditioning/x.bin", b"new")
    assert store.get("conditioning/x.bin") == b"new"
    assert set(store.list("conditioning/")) == {"conditioning/x.bin"}
    store.put("once", b"1", if_absent=True)
    with pytest.raises(VoiceExists):
        store.put("once", b"2", if_absent=True)
    assert store.get("once") == b"1"
    store.delete("conditioning/x.bin")
    store.delete("conditioning/x.bin")  # deleting twice is fine
    assert store.get("conditioning/x.bin") is None and store.list("conditioning/") == {}
    for bad in ("../etc/passwd", "/abs", "a/../b", "", "a//b", "voices/.hidden"):
        with pytest.raises(ValueError):
            check_key(bad)


def test_voices_are_shared_and_committed_by_their_metadata(make_store):
    replica_a, replica_b = make_store(), make_store()
    meta = replica_a.save_voice("acme", {"id": "alice", "name": "Alice", "created_at": 1}, CLIP_A)
    assert meta["content_hash"] == hashlib.sha256(CLIP_A).hexdigest() and meta["tenant"] == "acme"
    assert meta["clip"].startswith("clips/acme/alice.")
    assert [v["id"] for v in replica_b.voices("acme")] == ["alice"]  # another replica sees it at once
    assert replica_b.clip(meta) == CLIP_A
    with pytest.raises(VoiceExists):
        replica_b.save_voice("acme", {"id": "alice", "created_at": 2}, CLIP_B)  # create-only unless replace
    assert replica_a.voice("acme", "alice")["content_hash"] == meta["content_hash"]
    assert set(replica_a.list("clips/")) == {meta["clip"]}  # the refused save left no clip behind

    replica_b.save_voice("acme", {"id": "bob", "created_at": 2}, CLIP_A)  # the same audio: its own clip
    replica_b.save_voice("acme", {"id": "alice", "created_at": 3}, CLIP_B, replace=True)
    assert replica_a.voice("acme", "alice")["content_hash"] == hashlib.sha256(CLIP_B).hexdigest()
    assert replica_a.get(meta["clip"]) is None  # the replaced save's clip went with it
    assert replica_a.clip(replica_a.voice("acme", "bob")) == CLIP_A
    assert replica_a.delete_voice("acme", "bob") and not replica_a.delete_voice("acme", "bob")
    assert [v["id"] for v in replica_b.voices("acme")] == ["alice"] and len(replica_b.list("clips/")) == 1


def test_tenants_are_namespaces(make_store):
    store = make_store()
    store.save_voice("acme", {"id": "alice", "created_at": 1}, CLIP_A)
    store.save_voice("globex", {"id": "alice", "created_at": 2}, CLIP_B)
    assert store.voice("acme", "alice")["content_hash"] != store.voice("globex", "alice")["content_hash"]
    assert [(v["tenant"], v["id"]) for v in store.voices()] == [("acme", "alice"), ("globex", "alice")]
    assert [v["tenant"] for v in store.voices("globex")] == ["globex"] and store.voices("initech") == []
    assert store.delete_voice("globex", "alice") and store.voice("acme", "alice") is not None
    # Metadata can only name a clip of its own tenant and voice: a forged pointer is not a voice.
    forged = {**store.voice("acme", "alice"), "tenant": "globex"}
    store.put("voices/globex/alice.json", json.dumps(forged).encode())
    assert store.voice("globex", "alice") is None and store.voices("globex") == []
    for bad in ("Acme", "../x", "", "a/b"):
        with pytest.raises(ValueError):
            store.voices(bad)


@pytest.mark.parametrize("dies_at", ["clips/", "voices/"])
def test_a_save_that_dies_leaves_no_voice(make_store, dies_at):
    store = make_store()
    real_put = store.put

    def crash(key, data, **kw):
        if key.startswith(dies_at):
            raise OSError("power cut")
        real_put(key, data, **kw)

    store.put = crash
    with pytest.raises(OSError):
        store.save_voice("acme", {"id": "carol"}, CLIP_A)
    store.put = real_put
    assert store.voices() == [] and store.voice("acme", "carol") is None  # never half-visible
    if dies_at == "clips/":
        return
    (orphan,) = store.list("clips/")
    assert orphan.startswith("clips/acme/carol.")
    assert store.sweep() == []  # a young orphan may be a save under way
    assert store.sweep(grace_s=-1) == [orphan]
    assert store.list("clips/") == {}


def test_readers_never_see_half_a_voice(make_store):
    writer, reader = make_store(), make_store()
    writer.save_voice("acme", {"id": "dave", "created_at": 1}, CLIP_A)
    clips = {hashlib.sha256(c).hexdigest() for c in (CLIP_A, CLIP_B)}
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                for meta in reader.voices("acme"):
                    assert meta["content_hash"] in clips
                    data = reader.clip(meta)  # None only if a newer save replaced it meanwhile
                    assert data is None or hashlib.sha256(data).hexdigest() == meta["content_hash"]
                    seen.append(meta["content_hash"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(30):
            writer.save_voice("acme", {"id": "dave", "created_at": 1, "n": i}, (CLIP_A, CLIP_B)[i % 2], replace=True)
    finally:
        stop.set()
        thread.join(30)
    assert not errors and seen and set(seen) <= clips
    assert reader.voice("acme", "dave")["n"] == 29 and reader.clip(reader.voice("acme", "dave")) == CLIP_B


def test_conditioning_by_clip_hash_and_model_build(make_store):
    store = make_store()
    digest = hashlib.sha256(CLIP_A).hexdigest()
    v1, v2 = store.conditioning_view("indextts2", "ckpt-1a2b"), store.conditioning_view("indextts2", "ckpt-9f9f")
    assert v1.get(digest) is None
    v1.put(digest, b"tensors-v1")
    assert v1.get(digest) == b"tensors-v1" and v2.get(digest) is None
    assert make_store().conditioning_view("indextts2", "ckpt-1a2b").get(digest) == b"tensors-v1"
    with pytest.raises(ValueError):
        store.conditioning_view("index tts", "1")
    with pytest.raises(ValueError):
        v1.get("not-a-hash")


@pytest.fixture(scope="module")
def tiny_engines():
    """Two IndexTTS2 engines on the tiny official-layout checkpoint: two replicas of one build."""
    from realtime_tts.engine.indextts2 import IndexTTS2Engine

    ckpt = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline" / "checkpoints"
    engines = [IndexTTS2Engine.from_checkpoints(ckpt, device="cpu", dtype="fp32", cache_dir=None) for _ in range(2)]
    yield engines
    for engine in engines:
        engine.close()


def test_replicas_share_voice_conditioning_through_the_store(make_store, tiny_engines, monkeypatch):
    from realtime_tts.engine.base import Voice

    speaker = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline" / "speaker_24k.wav"
    voice = Voice("alice", speaker, hashlib.sha256(speaker.read_bytes()).hexdigest())
    first, second = tiny_engines
    for engine in tiny_engines:
        engine.conditioner.clear()
        assert engine.share_conditioning(make_store()) is True
    computed = first.conditioner.voice(voice)
    first.conditioner.shared["voice"].close()  # its upload has landed
    assert first.conditioner.shared["voice"].describe() == {"hits": 0, "misses": 1, "uploaded": 1, "errors": 0}

    def never(path):
        raise AssertionError("the second replica recomputed a voice the store holds")

    monkeypatch.setattr(second.family, "voice_conditioning", never)
    loaded = second.conditioner.voice(voice)
    for name in ("spk_latents", "prompt", "ref_mel", "style"):
        assert torch_equal(getattr(loaded, name), getattr(computed, name)), name


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_the_app_shares_conditioning_only_through_a_store_other_machines_read(make_store):
    from types import SimpleNamespace

    from realtime_tts.server.app import share_conditioning

    store, shared_with = make_store(), []
    engine = SimpleNamespace(share_conditioning=shared_with.append)
    asyncio.run(share_conditioning(SimpleNamespace(voices=SimpleNamespace(store=store), engine=engine)))
    assert shared_with == ([store] if isinstance(store, S3VoiceStore) else [])


def test_foreign_objects_are_not_voices(make_store):
    store = make_store()
    store.put("voices/acme/eve.json", b"{not json")
    store.put("voices/acme/frank.json", json.dumps({"id": "someone-else", "tenant": "acme", "content_hash": "0" * 64,
                                                     "clip": "clips/acme/someone-else.0.wav"}).encode())
    store.put("voices/loose.json", b"{}")
    assert store.voices() == []


def test_s3_errors_name_the_store(s3_endpoint):
    store = S3VoiceStore("s3://no-such-bucket/voices", endpoint_url=s3_endpoint)
    with pytest.raises(VoiceStoreError, match=r"s3://no-such-bucket/voices: cannot write voices/x.json: NoSuchBucket"):
        store.put("voices/x.json", b"{}")
    with pytest.raises(VoiceStoreError, match="expected s3://BUCKET"):
        S3VoiceStore("https://example.com/bucket")


def test_open_voice_store_follows_the_settings(tmp_path, s3_endpoint):
    local = open_voice_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalVoiceStore) and local.root == tmp_path / "store"
    remote = open_voice_store(Settings(voice_store="s3://shared/voices", voice_store_endpoint=s3_endpoint))
    assert isinstance(remote, S3VoiceStore) and (remote.bucket, remote.prefix) == ("shared", "voices")


# --- the voice library on the store -----------------------------------------------------------

@pytest.fixture
def make_library(make_store, tmp_path):
    """A factory: each call is another process's library (its own data directory) on the same store."""
    processes = itertools.count()
    return lambda: VoiceLibrary(tmp_path / f"process-{next(processes)}", store=make_store())


async def test_processes_sharing_a_store_see_each_others_voices(make_library):
    a, b = make_library(), make_library()
    watcher = asyncio.create_task(watch_library(b, interval_s=0.05))
    try:
        voice = await asyncio.to_thread(a.add, tone_wav(1.0, freq=220), tenant="acme", voice_id="alice")
        # Usable on b at once (a miss reads the store), listed once b's watcher has been round.
        assert b.require("alice", tenant="acme").content_hash == voice.content_hash
        with pytest.raises(VoiceError) as info:
            b.require("alice", tenant="globex")  # another tenant's: not found, like a missing one
        assert info.value.status == 404 and info.value.code == "voice_not_found"
        await until(lambda: [m["id"] for m in b.list(tenant="acme")] == ["alice"])
        path = b.get("alice", tenant="acme").audio_path  # a file the engine can read, on b's side
        assert hashlib.sha256(path.read_bytes()).hexdigest() == voice.content_hash
        await asyncio.to_thread(a.add, tone_wav(1.0, freq=330), tenant="acme", voice_id="alice", replace=True)
        await until(lambda: b.info("alice", tenant="acme")["content_hash"] != voice.content_hash)
        assert await asyncio.to_thread(a.delete, "alice", tenant="acme")
        await until(lambda: b.list(tenant="acme") == [])
        assert b.get("alice", tenant="acme") is None
    finally:
        watcher.cancel()


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_concurrent_uploads_of_one_id_make_one_voice(make_library):
    a, b = make_library(), make_library()
    clip = tone_wav(1.0, freq=250)
    results, errors = [], []

    def upload(library, data):
        try:
            results.append(library.store_voice(data, tenant="acme", voice_id="race"))
        except VoiceError as e:
            errors.append(e.code)

    threads = [threading.Thread(target=upload, args=(lib, data))
               for lib, data in ((a, clip), (b, clip), (a, tone_wav(1.0, freq=260)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winner = a.store.voice("acme", "race")
    assert sum(created for _, created in results) == 1  # one acknowledged create, never two
    assert all(voice.content_hash == winner["content_hash"] for voice, _ in results)
    assert set(errors) <= {"voice_exists"} and len(results) + len(errors) == 3
    assert len(a.store.list("clips/")) == 1  # the losers left no clip behind


def test_the_old_voices_directory_is_migrated_once(make_store, tmp_path, caplog):
    data = tmp_path / "data"
    legacy = data / "voices"
    legacy.mkdir(parents=True)

    def old_voice(voice_id: str, clip: bytes, **extra) -> None:  # the layout before the store
        digest = hashlib.sha256(clip).hexdigest()
        meta = {"id": voice_id, "object": "voice", "name": voice_id.title(), "created_at": 1700000000,
                "content_hash": digest, "duration": 1.0, "sample_rate": 16000, "source_filename": "a.wav",
                "file": f"{voice_id}.{digest[:16]}.wav", **extra}
        (legacy / meta["file"]).write_bytes(clip)
        (legacy / f"{voice_id}.json").write_text(json.dumps(meta))

    old_voice("alice", tone_wav(1.0, freq=200))
    old_voice("bob", tone_wav(1.0, freq=300))
    old_voice("taken", tone_wav(1.0, freq=400))
    old_voice("torn", tone_wav(1.0, freq=500), content_hash="0" * 64)  # its clip does not match
    store = make_store()
    store.save_voice("default", {"id": "taken", "created_at": 1}, tone_wav(1.0, freq=410))  # already in the store
    with caplog.at_level("INFO"):
        library = VoiceLibrary(data, store=store)
    assert [(m["tenant"], m["id"]) for m in library.list(tenant=None)] == [
        ("default", "taken"), ("default", "alice"), ("default", "bob")]
    alice = library.info("alice")
    assert (alice["name"], alice["created_at"], alice["source_filename"]) == ("Alice", 1700000000, "a.wav")
    assert library.get("alice").content_hash == hashlib.sha256(tone_wav(1.0, freq=200)).hexdigest()
    assert library.info("taken")["content_hash"] == hashlib.sha256(tone_wav(1.0, freq=410)).hexdigest()
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipping torn.json" in m for m in messages)
    assert any("taken already exists in the store with other audio; kept the store's" in m for m in messages)
    assert any(m.startswith("voice library: migrated 2 voices from") for m in messages)
    assert (legacy / LEGACY_MARKER).is_file() and (legacy / "alice.json").is_file()  # the old files stay

    assert library.delete("bob")
    again = VoiceLibrary(data, store=make_store())  # a restart: the migration does not run twice
    assert [m["id"] for m in again.list()] == ["taken", "alice"]


def test_a_clip_that_does_not_match_its_hash_is_refused(make_store):
    store = make_store()
    meta = store.save_voice("acme", {"id": "eve"}, CLIP_A)
    store.put(meta["clip"], CLIP_B)  # changed behind the store's back
    with pytest.raises(VoiceStoreError, match="does not match its content hash"):
        store.clip(meta)
