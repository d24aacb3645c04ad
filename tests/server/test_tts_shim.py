"""xiaozhi-esp32-server ``index_stream`` shim (POST /tts) and index-tts-vllm aliases
(POST /tts_url, GET /audio/voices)."""

import io
import json
import sys
import wave
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, error_of, make_ctx, tone_wav  # noqa: E402


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
def ctx(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine)
    ctx.voices.add(tone_wav(1.0), voice_id="jay_klee")
    return ctx


@pytest.fixture
def client(ctx):
    with client_for(ctx) as c:
        yield c


def test_tts_streams_raw_pcm_24k(client, ctx, engine):
    text = "你好，我是小智。今天天气很好！"
    r = client.post("/tts", json={"text": text, "character": "jay_klee"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-sample-rate"] == "24000"
    assert r.headers.get("transfer-encoding") == "chunked" or "content-length" not in r.headers
    assert r.content[:4] != b"RIFF", "raw PCM, no WAV header"
    assert len(r.content) % 2 == 0
    texts = [t for t, _ in engine.calls]
    assert len(texts) >= 2 and "".join(texts) == text
    seconds = sum(0.05 * len(t) for t in texts) + (len(texts) - 1) * ctx.settings.silence_ms / 1000
    assert len(r.content) / 2 / 24000 == pytest.approx(seconds, abs=0.01)
    assert all(opts.voice.id == "jay_klee" for _, opts in engine.calls)
    # Same audio as the OpenAI pcm path: one pipeline behind both.
    openai = client.post("/v1/audio/speech", json={"input": text, "voice": "jay_klee", "response_format": "pcm"})
    assert openai.content == r.content


def test_tts_extra_fields(client, engine):
    r = client.post("/tts", json={"text": "Hello.", "character": "jay_klee", "speed": 1.5,
                                  "emotion": {"label": "happy", "strength": 0.5}})
    assert r.status_code == 200
    opts = engine.calls[-1][1]
    assert opts.speed == 1.5 and opts.emotion.vector == pytest.approx((0.46875, 0, 0, 0, 0, 0, 0, 0))
    r = client.post("/tts", json={"text": "Hello.", "character": "jay_klee", "speed": 9})
    assert r.headers["x-speed-clamped"] == "2"
    r = client.post("/tts", json={"text": "Hello."})  # no character: the default voice
    assert r.status_code == 200 and engine.calls[-1][1].voice is None


def test_tts_errors_are_non_200_json(client, engine):
    cases = [
        ({"text": "Hello.", "character": "nobody"}, 404, "voice_not_found", "character"),
        ({"text": "", "character": "jay_klee"}, 400, "empty_input", "text"),
        ({"character": "jay_klee"}, 400, "missing_required_parameter", "text"),
        ({"text": "FAIL here.", "character": "jay_klee"}, 500, "engine_error", None),
    ]
    for body, status, code, param in cases:
        r = client.post("/tts", json=body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        err = error_of(r)
        assert (err["code"], err["param"]) == (code, param)
    r = client.post("/tts", content=b"text=hi", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"


def test_tts_url_v2_fields_return_a_wav(client, ctx, engine):
    ctx.voices.add(tone_wav(1.0, freq=333), voice_id="emo_ref")
    body = {"text": "Hello there.", "spk_audio_path": "jay_klee", "emo_control_method": 2,
            "emo_vec": [0, 0, 0.5, 0, 0, 0, 0, 0], "emo_weight": 0.8, "emo_random": False,
            "max_text_tokens_per_sentence": 120}
    r = client.post("/tts_url", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels()) == (22050, 1)  # the engine's own rate, like index-tts-vllm v2
        assert w.getnframes() == int(0.05 * len("Hello there.") * 22050)
    opts = engine.calls[-1][1]
    assert opts.voice.id == "jay_klee" and opts.emotion.vector == pytest.approx((0, 0, 0.5, 0, 0, 0, 0, 0))
    assert opts.emotion.alpha == 0.8

    client.post("/tts_url", json={**body, "emo_control_method": 0})
    assert engine.calls[-1][1].emotion is None  # method 0: the speaker's own emotion; the vector is ignored
    client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": "jay_klee", "emo_control_method": 1,
                                  "emo_ref_path": "emo_ref"})
    assert engine.calls[-1][1].emotion.reference.id == "emo_ref"
    client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": "jay_klee", "emo_control_method": 3})
    assert engine.calls[-1][1].emotion.text == "Hi."  # upstream: no emo_text means the text itself
    client.post("/tts_url", json={"text": "Hi.", "audio_paths": ["jay_klee"]})
    assert engine.calls[-1][1].voice.id == "jay_klee"

    bad = client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": "/srv/voices/a.wav"})
    assert bad.status_code == 404 and error_of(bad)["param"] == "spk_audio_path"
    bad = client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": "jay_klee", "emo_control_method": 7})
    assert bad.status_code == 400 and error_of(bad)["param"] == "emo_control_method"
    bad = client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": "jay_klee", "emo_control_method": 1})
    assert bad.status_code == 400 and error_of(bad)["param"] == "emo_ref_path"


def test_tts_url_server_paths_when_enabled(tmp_path, engine):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(tone_wav(1.0, freq=210))
    (clips / "b.wav").write_bytes(tone_wav(1.0, freq=420, rate=22050))
    ctx = make_ctx(tmp_path, engine, allow_server_paths=True)
    with client_for(ctx) as client:
        r = client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": str(clips / "a.wav")})
        assert r.status_code == 200
        one = engine.calls[-1][1].voice
        assert one.id.startswith("inline-") and one.audio_path.is_file()
        r = client.post("/tts_url", json={"text": "Hi.", "audio_paths": [str(clips / "a.wav"), str(clips / "b.wav")]})
        assert r.status_code == 200
        mixed = engine.calls[-1][1].voice
        assert mixed.content_hash != one.content_hash
        r = client.post("/tts_url", json={"text": "Hi.", "spk_audio_path": str(clips / "missing.wav")})
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_audio"


def test_audio_voices_lists_speakers_like_speaker_json(client, ctx):
    listing = client.get("/audio/voices").json()
    assert list(listing) == ["jay_klee"]
    assert listing["jay_klee"] == ["/v1/audio/voices/jay_klee/audio"]  # a URL of ours, never a server path
    assert str(ctx.settings.data_dir) not in client.get("/audio/voices").text
    assert json.loads(json.dumps(listing)) == listing


# --- /tts: raw PCM (index_stream) or a whole WAV (stock index-tts-vllm) ---------------------------

def wav_of(r) -> tuple[int, int]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.content[:4] == b"RIFF"
    assert r.headers["content-length"] == str(len(r.content))  # one whole file, not a stream
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return w.getframerate(), w.getnframes()


def test_tts_answers_a_wav_per_request(client, engine):
    text = "Hello there. Second one."
    frames = int(0.05 * len("Hello there.") * 22050) + int(0.05 * len("Second one.") * 22050) + int(0.1 * 22050)
    for kw in ({"params": {"format": "wav"}}, {"json_extra": {"format": "WAV"}}):
        body = {"text": text, "character": "jay_klee", **kw.get("json_extra", {})}
        r = client.post("/tts", json=body, params=kw.get("params"))
        rate, n = wav_of(r)
        assert rate == 22050 and n == pytest.approx(frames, abs=2)  # the engine's rate, like index-tts-vllm
        assert r.headers["x-sample-rate"] == "22050"
    r = client.post("/tts", json={"text": text, "character": "jay_klee", "format": "pcm"})
    assert r.headers["content-type"] == "application/octet-stream" and r.content[:4] != b"RIFF"
    for bad in ("mp3", 7, ["wav"]):
        r = client.post("/tts", json={"text": text, "format": bad})
        assert r.status_code == 400 and (error_of(r)["code"], error_of(r)["param"]) == ("unsupported_value", "format")
    r = client.post("/tts", json={"text": text}, params={"format": "flac"})
    assert r.status_code == 400 and error_of(r)["param"] == "format"


def test_tts_route_format_setting(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine, tts_route_format="wav")
    ctx.voices.add(tone_wav(1.0), voice_id="jay_klee")
    with client_for(ctx) as client:
        assert wav_of(client.post("/tts", json={"text": "Hi.", "character": "jay_klee"}))[0] == 22050
        r = client.post("/tts", json={"text": "Hi.", "character": "jay_klee"}, params={"format": "pcm"})
        assert r.headers["content-type"] == "application/octet-stream" and r.headers["x-sample-rate"] == "24000"
    from realtime_tts.config import ConfigError, Settings
    with pytest.raises(ConfigError, match="tts_route_format"):
        Settings(tts_route_format="mp3").validate()


def test_audio_speech_alias_answers_a_whole_wav_like_index_tts_vllm(client):
    r = client.post("/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "jay_klee"})
    rate, n = wav_of(r)
    assert rate == 24000 and n == int(0.05 * len("Hello there.") * 24000)
    # The OpenAI route itself keeps OpenAI's default (mp3, streamed); an explicit choice wins on both.
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello there.", "voice": "jay_klee"})
    assert r.headers["content-type"] == "audio/mpeg" and "content-length" not in r.headers
    r = client.post("/audio/speech", json={"input": "Hello there.", "response_format": "pcm", "stream": True})
    assert r.headers["content-type"] == "audio/pcm" and "content-length" not in r.headers
