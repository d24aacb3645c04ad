"""The original service's request, ``TTSRequest {voice_id, tts_text, emo_vec, max_tokens, speed}``:
``POST /v1/tts`` (and ``POST /tts`` with those fields) answers one WAV file; every field is checked.

The request shape is the one issue 15 gives for the FastAPI server over IndexTTS2 this project grew
from (its model: voice_id str, tts_text str, emo_vec 8 floats in [0, 1], max_tokens int = 80,
speed float); its users send it with ``requests.post(url, json=...)`` and keep the body."""

import io
import sys
import wave
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, error_of, live_server, make_ctx, tone_wav  # noqa: E402

from realtime_tts.text.segment import split_text  # noqa: E402

LONG = ("The quick brown fox jumps over the lazy dog, and then it runs far away into the woods "
        "where nobody can see it any more, not even the old owl.")


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
def ctx(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine)
    ctx.voices.add(tone_wav(1.0), voice_id="narrator", name="The Narrator")
    return ctx


@pytest.fixture
def client(ctx):
    with client_for(ctx) as c:
        yield c


def frames(r) -> int:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["content-length"] == str(len(r.content))
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        return w.getnframes()


def test_the_original_request_unchanged(ctx, engine):
    body = {"voice_id": "narrator", "tts_text": "你好，今天天气很好。Take sunglasses.",
            "emo_vec": [0, 0, 0, 0, 0, 0, 0.6, 0], "max_tokens": 80, "speed": 1.0}
    with live_server(ctx) as url:
        for path in ("/v1/tts", "/tts"):  # its own route, or the fields detected on /tts
            response = requests.post(url + path, json=body, timeout=30)
            n = frames(response)
            texts = [t for t, _ in engine.calls[-2:]]
            assert texts == ["你好，今天天气很好。", "Take sunglasses."]
            assert n == int(0.05 * 10 * 22050) + int(0.05 * 16 * 22050) + int(0.1 * 22050)
            options = engine.calls[-1][1]
            assert options.voice.id == "narrator" and options.speed == 1.0
            assert options.emotion.vector[6] == pytest.approx(0.6 * 0.6875)  # surprised, weighted like every vector
            assert "x-tts-warning" not in response.headers


def cut(max_chars: int) -> list[str]:
    return split_text(LONG, max_chars=max_chars, first_clause_min_chars=8)  # the server's first-clause rule


def test_max_tokens_bounds_the_sentence_split(client, engine):
    for max_tokens, expected in ((30, cut(30)), (None, cut(80))):
        engine.calls.clear()
        body = {"voice_id": "narrator", "tts_text": LONG}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        frames(client.post("/v1/tts", json=body))
        texts = [t for t, _ in engine.calls]
        assert texts == expected and max(map(len, texts)) <= (max_tokens or 80)
    assert len(cut(30)) > len(cut(80)) > len(cut(120)) > 1  # the bound matters
    # Above the server's own cap (max_segment_chars, 120): cut at the cap, and said so.
    engine.calls.clear()
    r = client.post("/v1/tts", json={"voice_id": "narrator", "tts_text": LONG, "max_tokens": 600})
    frames(r)
    assert [t for t, _ in engine.calls] == cut(120)
    assert r.headers["x-tts-warning"].startswith('max_tokens_clamped="max_tokens 600 is above')


def test_fields_are_optional_as_in_the_model(client, engine):
    frames(client.post("/v1/tts", json={"voice_id": "The Narrator", "tts_text": "Hi."}))  # a name works too
    options = engine.calls[-1][1]
    assert options.voice.id == "narrator" and options.emotion is None and options.speed == 1.0
    frames(client.post("/v1/tts", json={"voice_id": "narrator", "tts_text": "Hi.", "emo_vec": [0] * 8,
                                        "speed": 1.5, "max_tokens": 80.0}))
    options = engine.calls[-1][1]
    assert options.emotion is None and options.speed == 1.5  # all zeros: the voice's own emotion
    r = client.post("/v1/tts", json={"voice_id": "narrator", "tts_text": "Hi.", "speed": 3, "seed": 7})
    frames(r)
    assert engine.calls[-1][1].speed == 2.0
    assert 'speed_clamped="speed 3 is outside' in r.headers["x-tts-warning"]
    assert 'fields_ignored="not fields of TTSRequest, ignored: seed"' in r.headers["x-tts-warning"]


@pytest.mark.parametrize("change, status, code, param", [
    ({"voice_id": None}, 400, "missing_required_parameter", "voice_id"),
    ({"voice_id": 5}, 400, "invalid_value", "voice_id"),
    ({"voice_id": "  "}, 400, "invalid_value", "voice_id"),
    ({"voice_id": "nobody"}, 404, "voice_not_found", "voice_id"),
    ({"tts_text": None}, 400, "missing_required_parameter", "tts_text"),
    ({"tts_text": ""}, 400, "empty_input", "tts_text"),
    ({"tts_text": ["Hi."]}, 400, "invalid_value", "tts_text"),
    ({"tts_text": "x" * 4097}, 400, "string_above_max_length", "tts_text"),
    ({"emo_vec": [0.5] * 7}, 400, "invalid_value", "emo_vec"),
    ({"emo_vec": "0,0,0,0,0,0,0,1"}, 400, "invalid_value", "emo_vec"),
    ({"emo_vec": [0, 0, 1.5, 0, 0, 0, 0, 0]}, 400, "invalid_value", "emo_vec"),
    ({"emo_vec": [0, 0, -0.1, 0, 0, 0, 0, 0]}, 400, "invalid_value", "emo_vec"),
    ({"emo_vec": [0, 0, "a", 0, 0, 0, 0, 0]}, 400, "invalid_value", "emo_vec"),
    ({"max_tokens": 3}, 400, "invalid_value", "max_tokens"),
    ({"max_tokens": 601}, 400, "invalid_value", "max_tokens"),
    ({"max_tokens": 80.5}, 400, "invalid_value", "max_tokens"),
    ({"max_tokens": "many"}, 400, "invalid_value", "max_tokens"),
    ({"max_tokens": True}, 400, "invalid_value", "max_tokens"),
    ({"speed": "fast"}, 400, "invalid_value", "speed"),
    ({"speed": 0}, 400, "invalid_value", "speed"),
])
def test_every_field_is_checked(client, engine, change, status, code, param):
    body = {"voice_id": "narrator", "tts_text": "Hi.", "emo_vec": [0] * 8, "max_tokens": 80, "speed": 1.0}
    body = {k: v for k, v in {**body, **change}.items() if v is not None}
    for path in ("/v1/tts", "/tts") if "tts_text" in body else ("/v1/tts",):  # no tts_text: /tts is index_stream's
        r = client.post(path, json=body)
        assert r.status_code == status, r.text
        err = error_of(r)
        assert (err["code"], err["param"]) == (code, param), err
        assert param in err["message"] or err["code"] == "voice_not_found"
    assert engine.calls == []  # nothing was synthesized


def test_index_stream_bodies_still_go_to_index_stream(client, engine):
    r = client.post("/tts", json={"text": "Hi.", "character": "narrator", "tts_text": "ignored"})
    assert r.headers["content-type"] == "application/octet-stream"  # `text` present: index_stream's request
    assert engine.calls[-1][0] == "Hi."


def test_a_speech_route_for_the_lifecycle(client, ctx, engine):
    """Counted on the load gauge and refused while the replica drains, like every speech route."""
    ctx.lifecycle.drain_reason = "test"  # what SIGTERM starts (server/lifecycle.py)
    r = client.post("/v1/tts", json={"voice_id": "narrator", "tts_text": "Hi."})
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_draining"
    assert engine.calls == []
