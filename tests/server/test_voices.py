"""Voice library: uploads in every format, validation errors, persistence across restarts,
atomic storage and the speaker.json import."""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import client_for, encode_with_av, error_of, make_ctx, tone_wav  # noqa: E402

from realtime_tts.server.voice_store import SWEEP_GRACE_S  # noqa: E402
from realtime_tts.server.voices import (VoiceLibrary, import_speaker_json,  # noqa: E402
                                        main as voices_cli)


def upload(client, data: bytes, filename="ref.wav", **fields):
    return client.post("/v1/audio/voices", files={"file": (filename, data, "application/octet-stream")}, data=fields)


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_upload_list_get_audio_delete(ctx):
    with client_for(ctx) as client:
        assert client.get("/v1/audio/voices").json() == {"object": "list", "data": []}
        r = upload(client, tone_wav(2.0, rate=16000), name="Alice")
        assert r.status_code == 201, r.text
        v = r.json()
        assert v["id"].startswith("voice_") and v["name"] == "Alice" and v["object"] == "voice"
        assert v["duration"] == pytest.approx(2.0, abs=1e-3) and v["sample_rate"] == 16000
        assert v["preview_url"] == f"/v1/audio/voices/{v['id']}/audio"
        assert v["source_filename"] == "ref.wav"

        listed = client.get("/v1/audio/voices").json()
        assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [v["id"]]
        assert client.get(f"/v1/audio/voices/{v['id']}").json() == v

        audio = client.get(v["preview_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert hashlib.sha256(audio.content).hexdigest() == v["content_hash"]  # the cache key is the content

        r = client.delete(f"/v1/audio/voices/{v['id']}")
        assert r.json() == {"id": v["id"], "object": "voice", "deleted": True}
        r = client.get(f"/v1/audio/voices/{v['id']}")
        assert r.status_code == 404
        assert r.json() == {"error": {
            "message": f"voice {v['id']!r} not found; GET /v1/audio/voices lists the voices, "
                       "POST /v1/audio/voices uploads one",
            "type": "invalid_request_error", "param": "voice", "code": "voice_not_found"}}
        assert client.delete(f"/v1/audio/voices/{v['id']}").status_code == 404
        assert ctx.voices.store.list("clips/") == {}, "the clip is removed with the voice"


@pytest.mark.parametrize("fmt,codec,filename", [
    ("mp3", "libmp3lame", "a.mp3"), ("flac", "flac", "a.flac"), ("ogg", "libopus", "a.ogg"),
    ("webm", "libopus", "a.webm"), ("mp4", "aac", "a.m4a"),
])
def test_upload_accepts_common_formats(ctx, fmt, codec, filename):
    rate = 48000 if codec == "libopus" else 22050
    data = encode_with_av(tone_wav(1.5, rate=rate), fmt, codec)
    with client_for(ctx) as client:
        r = upload(client, data, filename=filename)
        assert r.status_code == 201, r.text
        assert r.json()["duration"] == pytest.approx(1.5, abs=0.1)


def test_stereo_upload_is_stored_mono_at_its_rate(ctx):
    with client_for(ctx) as client:
        v = upload(client, tone_wav(1.0, rate=44100, channels=2), id="stereo").json()
    assert v["id"] == "stereo" and v["sample_rate"] == 44100
    import wave
    with wave.open(str(ctx.voices.get("stereo").audio_path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 44100, 44100)


def test_upload_errors(tmp_path):
    ctx = make_ctx(tmp_path, voice_max_seconds=3.0, max_upload_bytes=200_000)
    with client_for(ctx) as client:
        cases = [
            (upload(client, b"this is not audio at all" * 20), 400, "file", "invalid_audio"),
            (upload(client, b""), 400, "file", "invalid_audio"),
            (upload(client, tone_wav(0.2)), 400, "file", "audio_too_short"),
            (upload(client, tone_wav(4.0, rate=8000)), 400, "file", "audio_too_long"),
            (upload(client, tone_wav(1.0)[:44] + bytes(32000)), 400, "file", "invalid_audio"),
            (upload(client, tone_wav(2.0), id="../evil"), 400, "id", "invalid_voice_id"),
            (client.post("/v1/audio/voices", data={"name": "x"}), 400, "file", "invalid_content_type"),
            (client.post("/v1/audio/voices", files={"other": ("a", b"x")}), 400, "file", "missing_file"),
            (client.post("/v1/audio/voices", json={"file": "x"}), 400, "file", "invalid_content_type"),
            (upload(client, tone_wav(10.0, rate=48000)), 413, None, "request_too_large"),
        ]
        for resp, status, param, code in cases:
            assert resp.status_code == status, (code, resp.text)
            err = error_of(resp)
            assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code), err
        assert client.get("/v1/audio/voices").json()["data"] == [], "nothing was stored"

        silent = error_of(upload(client, tone_wav(1.0)[:44] + bytes(32000)))
        assert silent["message"] == "file: clip is silent"
        short = error_of(upload(client, tone_wav(0.2)))
        assert short["message"] == "file: clip is 0.20 s long; a reference needs at least 0.5 s"
        garbage = error_of(upload(client, b"\x00\x01garbage" * 50))
        assert garbage["message"].startswith("file: cannot decode audio") and "wav, mp3, m4a, ogg or flac" in garbage["message"]


def test_duplicate_id_conflicts_and_name_lookup(ctx):
    with client_for(ctx) as client:
        assert upload(client, tone_wav(1.0), id="bob", name="Bob Smith").status_code == 201
        r = upload(client, tone_wav(1.0, freq=300), id="bob")
        assert r.status_code == 409 and error_of(r)["code"] == "voice_exists"
    assert ctx.voices.get("Bob Smith").id == "bob"  # the display name resolves too
    assert ctx.voices.get("nobody") is None


def test_voices_survive_a_restart(tmp_path):
    ctx = make_ctx(tmp_path)
    with client_for(ctx) as client:
        v = upload(client, tone_wav(1.2), id="keeper", name="Keeper").json()
    again = make_ctx(tmp_path)  # a new app over the same data_dir
    with client_for(again) as client:
        assert client.get("/v1/audio/voices/keeper").json() == v
    voice = again.voices.get("keeper")
    assert hashlib.sha256(voice.audio_path.read_bytes()).hexdigest() == voice.content_hash == v["content_hash"]


def test_crash_leftovers_are_swept_and_corrupt_metadata_ignored(tmp_path):
    lib = VoiceLibrary(tmp_path)
    lib.add(tone_wav(1.0), voice_id="good")
    store = lib.store
    old = time.time() - SWEEP_GRACE_S - 60
    clips = tmp_path / "store" / "clips" / "default"
    (clips / ".tmp-abc123").write_bytes(b"half a clip")  # a crash mid-write
    store.put("clips/default/orphan.00112233.wav", tone_wav(1.0))  # clip written, metadata not
    store.put("clips/default/young.44556677.wav", tone_wav(1.0))  # the same, just now: maybe a save under way
    for name in (".tmp-abc123", "orphan.00112233.wav"):
        os.utime(clips / name, (old, old))
    store.put("voices/default/broken.json", b"{not json")
    store.put("voices/default/lost.json", json.dumps({"id": "lost", "content_hash": "ff"}).encode())
    lib2 = VoiceLibrary(tmp_path)
    assert [m["id"] for m in lib2.list()] == ["good"]
    assert not (clips / ".tmp-abc123").exists() and not (clips / "orphan.00112233.wav").exists()
    assert (clips / "young.44556677.wav").exists()
    assert lib2.get("good").audio_path.is_file()


def test_replacing_a_voice_keeps_one_clip(tmp_path):
    lib = VoiceLibrary(tmp_path)
    a = lib.add(tone_wav(1.0), voice_id="v")
    b = lib.add(tone_wav(1.0, freq=400), voice_id="v", replace=True)
    assert a.content_hash != b.content_hash and b.audio_path.is_file() and not a.audio_path.exists()
    assert len(lib.store.list("clips/")) == 1


def test_speaker_json_import_joins_clips_and_is_idempotent(tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "a.wav").write_bytes(tone_wav(1.0, rate=16000))
    (assets / "b.wav").write_bytes(tone_wav(0.5, rate=22050))
    (assets / "c.flac").write_bytes(encode_with_av(tone_wav(1.0, rate=24000), "flac", "flac"))
    spec = assets / "speaker.json"
    spec.write_text(json.dumps({"jay_klee": ["a.wav", "b.wav"], "narrator": [str(assets / "c.flac")]}))
    lib = VoiceLibrary(tmp_path / "data")
    assert import_speaker_json(lib, spec) == [("jay_klee", "added"), ("narrator", "added")]
    jay = lib.info("jay_klee")
    assert jay["sample_rate"] == 16000 and jay["duration"] == pytest.approx(1.0 + 0.2 + 0.5, abs=1e-3)
    assert import_speaker_json(lib, spec) == [("jay_klee", "unchanged"), ("narrator", "unchanged")]

    spec.write_text(json.dumps({"jay_klee": ["b.wav"]}))
    assert import_speaker_json(lib, spec) == [
        ("jay_klee", "skipped: a voice of that name already exists with other audio (use --replace)")]
    assert import_speaker_json(lib, spec, replace=True) == [("jay_klee", "replaced")]

    # A bad entry is skipped with its reason; the good ones still import.
    spec.write_text(json.dumps({"x": "a.wav", "bad list": [1], "gone": ["missing.wav"], "bad id!": ["a.wav"]}))
    results = dict(import_speaker_json(lib, spec))
    assert results["x"] == "added"  # one path as a bare string is accepted
    assert results["bad list"].startswith("skipped: expected a list of audio paths")
    assert results["gone"] == (f"skipped: cannot find missing.wav (looked at {assets / 'missing.wav'}, "
                               f"{tmp_path / 'missing.wav'})")
    assert results["bad id!"].startswith("skipped: invalid voice id")
    spec.write_text("[1, 2]")
    with pytest.raises(Exception, match="must map each name to a list"):
        import_speaker_json(lib, spec)
    spec.write_text("{not json")
    with pytest.raises(Exception, match="is not valid JSON"):
        import_speaker_json(lib, spec)


INDEX_TTS_VLLM_SPEAKERS = {  # Ksuriuri/index-tts-vllm @ 5f9d0244, assets/speaker.json, verbatim
    "jay_klee": ["assets/jay_promptvn.wav", "assets/vo_card_klee_endOfGame_fail_01.wav"],
}


def test_index_tts_vllm_speaker_json_as_shipped(tmp_path, caplog):
    """Its paths are relative to that project's root, one level above the JSON file."""
    project = tmp_path / "index-tts-vllm"
    (project / "assets").mkdir(parents=True)
    (project / "assets" / "jay_promptvn.wav").write_bytes(tone_wav(3.0, rate=24000))
    (project / "assets" / "vo_card_klee_endOfGame_fail_01.wav").write_bytes(tone_wav(1.0, rate=24000, freq=300))
    spec = project / "assets" / "speaker.json"
    spec.write_text(json.dumps({**INDEX_TTS_VLLM_SPEAKERS, "broken": ["assets/missing.wav"]}, indent=4))
    with caplog.at_level("INFO"):
        ctx = make_ctx(tmp_path, speaker_json=str(spec))  # must not raise: the server starts
    assert ctx.voices.info("jay_klee")["duration"] == pytest.approx(3.0 + 0.2 + 1.0, abs=1e-3)
    assert "broken" not in ctx.voices
    skipped = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(skipped) == 1 and "skipped voice 'broken': cannot find assets/missing.wav" in skipped[0]
    with client_for(ctx) as client:
        assert [v["id"] for v in client.get("/v1/audio/voices").json()["data"]] == ["jay_klee"]


def test_an_unreadable_speaker_json_never_stops_the_server(tmp_path, caplog):
    with caplog.at_level("ERROR"):
        ctx = make_ctx(tmp_path, speaker_json=str(tmp_path / "nope.json"))
    assert len(ctx.voices) == 0
    assert [r.getMessage() for r in caplog.records if "nope.json" in r.getMessage()] == [
        f"speaker.json: cannot read {tmp_path / 'nope.json'}: No such file or directory; starting without it"]
    with client_for(ctx) as client:
        assert client.get("/health").status_code == 200


def test_the_same_clip_twice_returns_the_existing_voice(ctx):
    clip = tone_wav(1.5, freq=220)
    with client_for(ctx) as client:
        first = upload(client, clip, name="Alice")
        assert first.status_code == 201
        again = upload(client, clip, name="Alice again")  # the page's upload, twice
        assert again.status_code == 200 and again.json() == first.json()
        same_id = upload(client, clip, id=first.json()["id"])
        assert same_id.status_code == 200 and same_id.json()["id"] == first.json()["id"]
        # Re-encoded to another container, the decoded audio is the same clip.
        flac = upload(client, encode_with_av(clip, "flac", "flac"), filename="ref.flac")
        assert flac.status_code == 200 and flac.json()["id"] == first.json()["id"]
        # An explicit new id is honoured; other audio is a new voice.
        assert upload(client, clip, id="alias").status_code == 201
        assert upload(client, tone_wav(1.5, freq=330)).status_code == 201
        assert len(client.get("/v1/audio/voices").json()["data"]) == 3


def test_voices_added_by_the_cli_appear_in_a_running_server(tmp_path, capsys):
    import time

    ctx = make_ctx(tmp_path)
    clip = tmp_path / "clip.wav"
    clip.write_bytes(tone_wav(1.0, freq=250))
    with client_for(ctx) as client:
        assert client.get("/v1/audio/voices").json()["data"] == []
        assert voices_cli(["--data-dir", str(ctx.settings.data_dir), "add", str(clip), "--id", "from_cli"]) == 0
        assert [v["id"] for v in client.get("/v1/audio/voices").json()["data"]] == ["from_cli"]
        assert client.get("/v1/audio/voices/from_cli").status_code == 200
        assert voices_cli(["--data-dir", str(ctx.settings.data_dir), "add", str(clip)]) == 0
        assert capsys.readouterr().err == "this clip is already stored as voice 'from_cli'; nothing added\n"
        assert voices_cli(["--data-dir", str(ctx.settings.data_dir), "delete", "from_cli"]) == 0
        deadline = time.monotonic() + 10  # the watcher: no listing needed for synthesis to see it
        while "from_cli" in ctx.voices and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "from_cli" not in ctx.voices


def test_refresh_leaves_another_process_half_written_voice_alone(tmp_path):
    server = VoiceLibrary(tmp_path)
    other = VoiceLibrary(tmp_path, sweep=False)
    server.store.put("clips/default/late.0123456789abcdef.wav", tone_wav(1.0))  # the clip, not yet its metadata
    assert server.refresh() is False
    VoiceLibrary(tmp_path, sweep=False)  # the command line opening the library sweeps nothing
    VoiceLibrary(tmp_path)  # a server starting sweeps only what is older than the grace period
    assert "clips/default/late.0123456789abcdef.wav" in server.store.list("clips/")
    other.add(tone_wav(1.0, freq=300), voice_id="late")
    assert server.refresh() is True and "late" in server and server.refresh() is False


def test_speaker_json_at_startup_and_cli(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(tone_wav(1.0))
    spec = tmp_path / "speaker.json"
    spec.write_text(json.dumps({"jay_klee": ["a.wav"]}))
    ctx = make_ctx(tmp_path, speaker_json=str(spec))
    with client_for(ctx) as client:
        assert [v["id"] for v in client.get("/v1/audio/voices").json()["data"]] == ["jay_klee"]

    data = tmp_path / "cli-data"
    assert voices_cli(["--data-dir", str(data), "import", str(spec)]) == 0
    assert capsys.readouterr().out == "jay_klee\tadded\n"
    assert voices_cli(["--data-dir", str(data), "list"]) == 0
    assert capsys.readouterr().out.startswith("jay_klee\tjay_klee\t1.0s\t")
    assert voices_cli(["--data-dir", str(data), "delete", "jay_klee"]) == 0
    assert voices_cli(["--data-dir", str(data), "delete", "jay_klee"]) == 1
    assert voices_cli(["--data-dir", str(data), "add", str(tmp_path / "speaker.json")]) == 1
    assert "cannot decode audio" in capsys.readouterr().err


def test_inline_clips_are_stored_by_hash_and_pruned(tmp_path, monkeypatch):
    import realtime_tts.server.voices as voices_mod

    monkeypatch.setattr(voices_mod, "MAX_INLINE", 2)
    lib = VoiceLibrary(tmp_path)
    a = lib.transient(tone_wav(1.0, freq=100))
    assert lib.transient(tone_wav(1.0, freq=100)) == a  # same content, same voice
    assert a.id == "inline-" + a.content_hash[:12] and a.audio_path.parent == lib.inline_dir
    import os
    os.utime(a.audio_path, (1, 1))  # the oldest
    b = lib.transient(tone_wav(1.0, freq=200))
    c = lib.transient(tone_wav(1.0, freq=300))
    assert not a.audio_path.exists() and b.audio_path.exists() and c.audio_path.exists()
    assert lib.list() == []  # never listed
    with pytest.raises(Exception, match="clip is silent"):
        lib.transient(tone_wav(1.0)[:44] + bytes(32000))


def test_cli_works_on_one_tenant_at_a_time(tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    clip.write_bytes(tone_wav(1.0, freq=260))
    data = str(tmp_path / "data")
    assert voices_cli(["--data-dir", data, "--tenant", "acme", "add", str(clip), "--id", "alice"]) == 0
    capsys.readouterr()
    assert voices_cli(["--data-dir", data, "list"]) == 0 and capsys.readouterr().out == ""  # the default tenant's
    assert voices_cli(["--data-dir", data, "list", "--all"]) == 0
    assert capsys.readouterr().out.startswith("acme\talice\talice\t1.0s\t")
    assert voices_cli(["--data-dir", data, "delete", "alice"]) == 1  # not the default tenant's to delete
    assert voices_cli(["--data-dir", data, "--tenant", "acme", "delete", "alice"]) == 0
    assert voices_cli(["--data-dir", data, "--tenant", "Not Ok", "list"]) == 1
    assert "--tenant 'Not Ok'" in capsys.readouterr().err
