"""POST /v1/audio/speech: every response format, SSE, field mapping (voice, emotion, speed,
extensions) and every error with its exact status and OpenAI-shaped body."""

import base64
import io
import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, decode_any, error_of, make_ctx, tone_wav  # noqa: E402

from realtime_tts.engine.base import EMOTIONS  # noqa: E402

TEXT = "Hello there. How are you today?"


def speech(client, **body):
    body = {"model": "tts-1", "voice": "alloy", **body}
    return client.post("/v1/audio/speech", json=body)


def pcm_of(resp) -> np.ndarray:
    return np.frombuffer(resp.content, "<i2").astype(np.float32) / 32768


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
def ctx(tmp_path, engine):
    return make_ctx(tmp_path, engine)


@pytest.fixture
def client(ctx):
    with client_for(ctx) as c:
        yield c


def expected_seconds(ctx, texts):
    return sum(0.05 * len(t) for t in texts) + (len(texts) - 1) * ctx.settings.silence_ms / 1000


def test_pcm_streams_every_sentence_at_24k(client, ctx, engine):
    r = speech(client, input=TEXT, response_format="pcm")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/pcm"
    assert r.headers["x-sample-rate"] == "24000"
    assert "x-speed-clamped" not in r.headers
    texts = [t for t, _ in engine.calls]
    assert "".join(texts).replace(" ", "") == TEXT.replace(" ", "") and len(texts) == 2
    pcm = pcm_of(r)
    assert len(r.content) % 2 == 0
    assert len(pcm) / 24000 == pytest.approx(expected_seconds(ctx, texts), abs=0.01)
    assert 0.25 < np.abs(pcm).max() < 0.35  # the engine's 0.3 tone, resampled, not clipped


def test_wav_streamed_and_whole(client):
    r = speech(client, input=TEXT, response_format="wav")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    audio, rate = decode_any(r.content)
    assert rate == 24000
    pcm = pcm_of(speech(client, input=TEXT, response_format="pcm"))
    whole = speech(client, input=TEXT, response_format="wav", stream=False)
    assert whole.status_code == 200 and int(whole.headers["content-length"]) == len(whole.content)
    with wave.open(io.BytesIO(whole.content)) as w:  # strict reader: exact sizes in the header
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        frames = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    np.testing.assert_array_equal(frames, pcm)  # same audio, whatever the wrapping
    assert len(audio) == pytest.approx(len(pcm), abs=2)
    query = client.post("/v1/audio/speech?stream=false", json={"input": TEXT, "voice": "alloy", "response_format": "wav"})
    assert query.content == whole.content


@pytest.mark.parametrize("fmt,media,magic", [("opus", "audio/ogg", b"OggS"), ("mp3", "audio/mpeg", None),
                                              ("flac", "audio/flac", b"fLaC")])
def test_encoded_formats_decode(client, ctx, engine, fmt, media, magic):
    r = speech(client, input=TEXT, response_format=fmt)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    if magic:
        assert r.content[:4] == magic
    audio, rate = decode_any(r.content)
    seconds = expected_seconds(ctx, [t for t, _ in engine.calls])
    assert len(audio) / rate == pytest.approx(seconds, abs=0.15)  # codec padding / priming only
    assert np.abs(audio).max() > 0.2


def test_flac_is_lossless_against_pcm(client):
    flac, rate = decode_any(speech(client, input=TEXT, response_format="flac").content)
    pcm = pcm_of(speech(client, input=TEXT, response_format="pcm"))
    assert rate == 24000
    np.testing.assert_allclose(flac, pcm, atol=1 / 32768)


def test_default_format_is_mp3(client):
    r = client.post("/v1/audio/speech", json={"model": "gpt-4o-mini-tts", "input": "Hi there.", "voice": "ash"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"


def test_sse_events_carry_the_same_audio(client):
    pcm = speech(client, input=TEXT, response_format="pcm").content
    r = speech(client, input=TEXT, response_format="pcm", stream_format="sse")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 3
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == pcm
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    assert done["usage"] == {"input_tokens": len(TEXT), "output_tokens": 0, "total_tokens": len(TEXT)}
    assert done["audio_ms"] == round(len(pcm) / 2 / 24000 * 1000)


def test_sse_failure_after_start_is_an_error_event(client):
    r = speech(client, input="Hello there. FAIL at this point.", response_format="pcm", stream_format="sse")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.delta"
    assert events[-1] == {"type": "error", "error": {
        "message": "synthesis failed: cannot say 'FAIL at this point.'", "type": "server_error", "param": None,
        "code": "engine_error"}}


def test_alias_route_and_models(client):
    assert client.post("/audio/speech", json={"input": "Hi.", "voice": "alloy", "response_format": "pcm"}).status_code == 200
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    ids = [m["id"] for m in models["data"]]
    assert "tts-1" in ids and "gpt-4o-mini-tts" in ids and "realtime-tts" in ids
    caps = models["data"][0]["capabilities"]
    assert caps["emotion_vector_order"] == list(EMOTIONS)
    assert caps["response_formats"] == ["mp3", "opus", "flac", "wav", "pcm"]
    assert caps["speed_range"] == [0.5, 2.0] and caps["engine"]["name"] == "tone"


def test_speed_is_clamped_with_a_warning(client, engine):
    r = speech(client, input="Hi there.", response_format="pcm", speed=4.0)
    assert r.status_code == 200
    assert r.headers["x-speed-clamped"] == "2"
    assert r.headers["warning"] == '299 realtime-tts "speed 4 is outside the supported speed range 0.5-2.0; used 2"'
    assert engine.calls[-1][1].speed == 2.0
    r = speech(client, input="Hi there.", response_format="pcm", speed=0.25)
    assert r.headers["x-speed-clamped"] == "0.5" and engine.calls[-1][1].speed == 0.5
    r = speech(client, input="Hi there.", response_format="pcm", speed=1.25)
    assert "x-speed-clamped" not in r.headers and engine.calls[-1][1].speed == 1.25
    r = speech(client, input="Hi there.", response_format="pcm", extra={"duration_factor": 0.8})
    assert engine.calls[-1][1].speed == pytest.approx(1.25)


def test_sample_rate_extension(client):
    r = speech(client, input="Hi there.", response_format="pcm", sample_rate=16000)
    assert r.headers["x-sample-rate"] == "16000"
    n16 = len(r.content) // 2
    n24 = len(speech(client, input="Hi there.", response_format="pcm").content) // 2
    assert n16 == pytest.approx(n24 * 2 / 3, abs=2)
    assert decode_any(speech(client, input="Hi.", response_format="wav", extra={"sample_rate": 48000}).content)[1] == 48000


def test_voice_mapping(tmp_path):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path, engine, openai_voice_map={"nova": "narrator"}, default_voice="fallback")
    ctx.voices.add(tone_wav(1.0, freq=200), voice_id="narrator")
    ctx.voices.add(tone_wav(1.0, freq=300), voice_id="fallback")
    ctx.voices.add(tone_wav(1.0, freq=400), voice_id="custom", name="My Custom")
    with client_for(ctx) as client:
        for voice, expected in [("nova", "narrator"), ("NOVA", "narrator"), ("alloy", "fallback"), ("custom", "custom"),
                                ("My Custom", "custom"), ({"id": "custom"}, "custom"), (None, "fallback")]:
            body = {"input": "Hi.", "response_format": "pcm"}
            if voice is not None:
                body["voice"] = voice
            r = client.post("/v1/audio/speech", json=body)
            assert r.status_code == 200, (voice, r.text)
            got = engine.calls[-1][1].voice
            assert got.id == expected and got.content_hash == ctx.voices.get(expected).content_hash
        inline = "data:audio/wav;base64," + base64.b64encode(tone_wav(1.0, freq=500)).decode()
        assert speech(client, input="Hi.", response_format="pcm", voice=inline).status_code == 200
        assert engine.calls[-1][1].voice.id.startswith("inline-")
        assert speech(client, input="Hi.", response_format="pcm", voice={"audio": base64.b64encode(tone_wav(1.0)).decode()}).status_code == 200
        assert len(client.get("/v1/audio/voices").json()["data"]) == 3  # inline voices are not listed


def test_openai_name_without_mapping_uses_the_engine_default(client, engine):
    assert speech(client, input="Hi.", response_format="pcm", voice="shimmer").status_code == 200
    assert engine.calls[-1][1].voice is None


def test_emotion_fields(client, ctx, engine):
    ctx.voices.add(tone_wav(1.0, freq=250), voice_id="angry_ref")

    def emotion(**body):
        r = speech(client, input="Hi.", response_format="pcm", **body)
        assert r.status_code == 200, r.text
        return engine.calls[-1][1].emotion

    assert emotion() is None
    e = emotion(instructions="Speak warmly and slowly")
    assert (e.text, e.vector, e.alpha) == ("Speak warmly and slowly", None, 1.0)
    e = emotion(emotion={"vector": [1, 0, 0, 0, 0, 0, 0, 0]})
    assert e.vector == pytest.approx((0.8, 0, 0, 0, 0, 0, 0, 0))  # bias 0.9375 then the 0.8 sum cap
    e = emotion(emotion={"label": "sad", "strength": 0.7})
    assert e.vector == pytest.approx((0, 0, 0.7, 0, 0, 0, 0, 0))
    e = emotion(emotion="happy")
    assert e.vector == pytest.approx((0.8, 0, 0, 0, 0, 0, 0, 0))
    e = emotion(emo_vector=[0, 0.2, 0, 0, 0, 0, 0, 0.4], emo_alpha=0.6)
    assert e.vector == pytest.approx((0, 0.175, 0, 0, 0, 0, 0, 0.225)) and e.alpha == 0.6
    e = emotion(extra={"emotion": {"mode": "text", "text": "nervous", "weight": 0.5}})
    assert (e.text, e.alpha) == ("nervous", 0.5)
    e = emotion(extra={"emo_text": "cheerful"}, instructions="ignored when emo_text is given")
    assert e.text == "cheerful"
    e = emotion(emotion={"reference": "angry_ref", "alpha": 0.7})
    assert e.reference.id == "angry_ref" and e.alpha == 0.7 and e.vector is None
    e = emotion(emotion={"vector": {"happy": 0.5, "calm": 0.5}})
    assert e.vector == pytest.approx((0.46875, 0, 0, 0, 0, 0, 0, 0.28125))  # sum 0.75: under the cap
    assert emotion(emotion={"mode": "same_as_voice"}) is None
    e = emotion(language="en", emotion={"text": "calm"})
    assert engine.calls[-1][1].language == "en"


BAD_REQUESTS = [
    ({"voice": "alloy"}, 400, "input", "missing_required_parameter", "'input' is required: the text to speak"),
    ({"input": ""}, 400, "input", "empty_input", "'input' is empty: give some text to speak"),
    ({"input": "   "}, 400, "input", "empty_input", "'input' is empty: give some text to speak"),
    ({"input": 5}, 400, "input", "invalid_value", "'input' must be a string"),
    ({"input": "x" * 4097}, 400, "input", "string_above_max_length", "'input' is 4097 characters; the limit is 4096"),
    ({"input": "Hi", "response_format": "aac"}, 400, "response_format", "unsupported_value",
     "aac output is not supported; use mp3, opus, flac, wav or pcm"),
    ({"input": "Hi", "response_format": "ogg"}, 400, "response_format", "unsupported_value",
     "unknown response_format 'ogg'; use one of mp3, opus, flac, wav, pcm"),
    ({"input": "Hi", "stream_format": "chunks"}, 400, "stream_format", "unsupported_value",
     "unknown stream_format 'chunks'; use audio or sse"),
    ({"input": "Hi", "voice": "nobody"}, 404, "voice", "voice_not_found",
     "voice 'nobody' not found; GET /v1/audio/voices lists the voices, POST /v1/audio/voices uploads one"),
    ({"input": "Hi", "voice": 7}, 400, "voice", "invalid_value",
     "'voice' must be a voice id string or an object like {\"id\": \"...\"}"),
    ({"input": "Hi", "voice": {"name": "x"}}, 400, "voice", "invalid_value",
     "'voice' object needs 'id' (a registered voice) or 'audio' (base64 clip)"),
    ({"input": "Hi", "voice": {"id": "nobody"}}, 404, "voice", "voice_not_found",
     "voice 'nobody' not found; GET /v1/audio/voices lists the voices, POST /v1/audio/voices uploads one"),
    ({"input": "Hi", "voice": "/etc/passwd"}, 404, "voice", "voice_not_found",
     "voice '/etc/passwd' not found; GET /v1/audio/voices lists the voices, POST /v1/audio/voices uploads one"),
    ({"input": "Hi", "voice": {"path": "/etc/passwd"}}, 400, "voice", "server_paths_disabled",
     "'voice': server-side paths are disabled (start with --allow-server-paths, or upload the clip with "
     "POST /v1/audio/voices and use its id)"),
    ({"input": "Hi", "voice": "data:audio/wav;base64,@@@"}, 400, "voice", "invalid_audio",
     "voice: inline audio is not valid base64"),
    ({"input": "Hi", "voice": {"audio": base64.b64encode(b"not audio").decode()}}, 400, "voice", "invalid_audio", None),
    ({"input": "Hi", "speed": "fast"}, 400, "speed", "invalid_value", "'speed' must be a number, got 'fast'"),
    ({"input": "Hi", "speed": 0}, 400, "speed", "invalid_value", "'speed' must be positive, got 0"),
    ({"input": "Hi", "speed": True}, 400, "speed", "invalid_value", "'speed' must be a number"),
    ({"input": "Hi", "sample_rate": 16000}, 400, "sample_rate", "invalid_value", "'sample_rate' applies to pcm and wav only"),
    ({"input": "Hi", "response_format": "pcm", "sample_rate": 12345}, 400, "sample_rate", "invalid_value",
     "'sample_rate' must be one of 8000, 16000, 22050, 24000, 44100, 48000"),
    ({"input": "Hi", "emotion": {"vector": [1, 2]}}, 400, "emotion.vector", "invalid_value",
     "'emotion.vector' must be 8 numbers 0-1 in the order happy, angry, sad, afraid, disgusted, melancholic, surprised, calm"),
    ({"input": "Hi", "emotion": {"label": "grumpy"}}, 400, "emotion.label", "invalid_value",
     "'emotion.label': unknown emotion label 'grumpy'; use one of happy, angry, sad, afraid, disgusted, melancholic, "
     "surprised, calm (or give 'text' for a free description)"),
    ({"input": "Hi", "emotion": {"mode": "dance"}}, 400, "emotion.mode", "invalid_value",
     "'emotion.mode' 'dance' is not one of same_as_voice, audio, vector, text"),
    ({"input": "Hi", "emotion": 3}, 400, "emotion", "invalid_value",
     "'emotion' must be an object, a label string or a list of 8 weights"),
    ({"input": "Hi", "emo_vector": ["a"] * 8}, 400, "emo_vector", "invalid_value", "'emo_vector' must be a number, got 'a'"),
    ({"input": "Hi", "emo_alpha": "x"}, 400, "emo_alpha", "invalid_value", "'emo_alpha' must be a number, got 'x'"),
    ({"input": "Hi", "emotion": {"reference": "ghost"}}, 404, "emotion.reference", "voice_not_found",
     "voice 'ghost' not found; GET /v1/audio/voices lists the voices, POST /v1/audio/voices uploads one"),
    ({"input": "Hi", "extra": "x"}, 400, "extra", "invalid_value", "'extra' must be an object"),
    ({"input": "Hi", "language": 1}, 400, "language", "invalid_value", "'language' must be a string such as 'zh' or 'en'"),
    ({"input": "...!?"}, 400, "input", "empty_input", "the text has nothing speakable in it"),
]


@pytest.mark.parametrize("body,status,param,code,message", BAD_REQUESTS, ids=[c[3] + "-" + str(i) for i, c in enumerate(BAD_REQUESTS)])
def test_bad_requests(client, engine, body, status, param, code, message):
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)
    if message is not None:
        assert err["message"] == message
    assert engine.calls == [], "a refused request never reaches the engine"


def test_malformed_bodies(client):
    for raw, message in [(b"", "request body is empty; send a JSON object"), (b"{nope", None),
                         (b"[1, 2]", "request body must be a JSON object")]:
        r = client.post("/v1/audio/speech", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400
        err = error_of(r)
        assert err["code"] == "invalid_json"
        if message:
            assert err["message"] == message
    assert client.get("/v1/audio/speech").status_code == 405


def test_oversized_body_is_413(tmp_path):
    with client_for(make_ctx(tmp_path, max_upload_bytes=3000)) as client:
        r = client.post("/v1/audio/speech", content=b"{" + b" " * (1024 * 1024 + 4001) + b"}",
                        headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json() == {"error": {"message": "request body is 1052579 bytes; the limit is 1052576",
                                      "type": "invalid_request_error", "param": None, "code": "request_too_large"}}
        inline = "data:audio/wav;base64," + base64.b64encode(tone_wav(1.0)).decode()  # 32 KB > 3000 bytes
        r = speech(client, input="Hi.", voice=inline)
        assert r.status_code == 413 and error_of(r)["param"] == "voice" and error_of(r)["code"] == "file_too_large"


def test_engine_failure_on_the_first_sentence_is_a_500(client):
    r = speech(client, input="FAIL right away. Then more.", response_format="pcm")
    assert r.status_code == 500
    assert r.json() == {"error": {"message": "synthesis failed: cannot say 'FAIL right away.'", "type": "server_error",
                                  "param": None, "code": "engine_error"}}


def test_busy_and_not_ready(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine, max_queue=2)
    with client_for(ctx) as client:
        # The worker blocks on the first segment, so the queue fills deterministically.
        r = speech(client, input="BLOCK one. Two. Three. Four.", response_format="pcm")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        err = error_of(r)
        assert (err["type"], err["code"], err["param"]) == ("server_error", "server_busy", None)
        assert err["message"] == "server busy: 2 segments already queued (limit 2)"
        assert ctx.executor.queue_depth == 0, "a refused request leaves nothing queued"
        ctx.ready.clear()
        r = speech(client, input="Hi.", response_format="pcm")
        assert r.status_code == 503 and r.json() == {"error": {
            "message": "the model is still loading; retry when GET /health returns 200", "type": "server_error",
            "param": None, "code": "not_ready"}}
        ctx.ready.set()
        assert speech(client, input="Hi.", response_format="pcm").status_code == 200


def test_real_espeak_engine_through_every_format(tmp_path):
    from realtime_tts.engine.espeak import EspeakEngine

    ctx = make_ctx(tmp_path, EspeakEngine())
    with client_for(ctx) as client:
        pcm = pcm_of(speech(client, input="Hello world. The quick brown fox jumps over the lazy dog.",
                            response_format="pcm"))
        assert 2.0 < len(pcm) / 24000 < 8.0 and np.sqrt(np.mean(pcm ** 2)) > 0.01
        for fmt in ("wav", "opus", "mp3", "flac"):
            r = speech(client, input="Hello world.", response_format=fmt)
            audio, rate = decode_any(r.content)
            assert r.status_code == 200 and 0.5 < len(audio) / rate < 3.0 and np.abs(audio).max() > 0.05, fmt
