"""The shared voice store (server/voice_store.py): a local directory and S3 through moto's server.

moto runs in server mode: boto3 speaks the real S3 HTTP API to it on loopback. Every
behaviour is checked on both backends: objects whole or absent, the metadata-last commit,
create-only writes, sharing between two replicas, conditioning by clip hash and model build.
"""

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import free_port  # noqa: E402

from realtime_tts.config import Settings  # noqa: E402
from realtime_tts.server.voice_store import (  # noqa: E402
    LocalVoiceStore, S3VoiceStore, VoiceExists, VoiceStoreError, check_key, open_voice_store,
)

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
    return lambda: S3VoiceStore(f"s3://{bucket}/prod/voices", endpoint_url=endpoint)


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
    meta = replica_a.save_voice({"id": "alice", "name": "Alice", "created_at": 1}, CLIP_A)
    assert meta["content_hash"] == hashlib.sha256(CLIP_A).hexdigest() and meta["clip"].startswith("clips/")
    assert [v["id"] for v in replica_b.voices()] == ["alice"]  # another replica sees it at once
    assert replica_b.clip(meta["content_hash"]) == CLIP_A
    with pytest.raises(VoiceExists):
        replica_b.save_voice({"id": "alice", "created_at": 2}, CLIP_B)  # create-only unless replace
    assert replica_a.voice("alice")["content_hash"] == meta["content_hash"]

    replica_b.save_voice({"id": "bob", "created_at": 2}, CLIP_A)  # shares alice's clip
    replica_b.save_voice({"id": "alice", "created_at": 3}, CLIP_B, replace=True)
    assert replica_a.voice("alice")["content_hash"] == hashlib.sha256(CLIP_B).hexdigest()
    assert replica_a.clip(meta["content_hash"]) == CLIP_A  # still bob's
    assert replica_a.delete_voice("bob") and not replica_a.delete_voice("bob")
    assert replica_b.clip(meta["content_hash"]) is None  # nobody uses it now
    assert [v["id"] for v in replica_b.voices()] == ["alice"]


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
        store.save_voice({"id": "carol"}, CLIP_A)
    store.put = real_put
    assert store.voices() == [] and store.voice("carol") is None  # never half-visible
    if dies_at == "clips/":
        return
    assert store.sweep() == []  # a young orphan may be a save under way
    assert store.sweep(grace_s=-1) == [f"clips/{hashlib.sha256(CLIP_A).hexdigest()}.wav"]
    assert store.list("clips/") == {}


def test_readers_never_see_half_a_voice(make_store):
    writer, reader = make_store(), make_store()
    writer.save_voice({"id": "dave", "created_at": 1}, CLIP_A)
    clips = {hashlib.sha256(c).hexdigest() for c in (CLIP_A, CLIP_B)}
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            try:
                for meta in reader.voices():
                    assert meta["content_hash"] in clips
                    seen.append(meta["content_hash"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(30):
            writer.save_voice({"id": "dave", "created_at": 1, "n": i}, (CLIP_A, CLIP_B)[i % 2], replace=True)
    finally:
        stop.set()
        thread.join(30)
    assert not errors and seen and set(seen) <= clips
    assert reader.voice("dave")["n"] == 29


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


def test_foreign_objects_are_not_voices(make_store):
    store = make_store()
    store.put("voices/eve.json", b"{not json")
    store.put("voices/frank.json", json.dumps({"id": "someone-else", "content_hash": "0" * 64}).encode())
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
