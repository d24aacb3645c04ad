"""The official ``openai`` SDK against a live uvicorn server: sync, streaming, SSE, errors,
and a client that hangs up mid-stream cancelling its queued synthesis."""

import base64
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, decode_any, live_server, make_ctx  # noqa: E402

KEY = "sk-test-123"
TEXT = "Hello from the SDK. This is the second sentence! And a third one?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path_factory.mktemp("sdk"), engine, api_keys=[KEY])
    with live_server(ctx) as url:
        yield url, ctx, engine


@pytest.fixture
def client(server):
    url, _, _ = server
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def test_sync_create_pcm_and_wav(client, server):
    _, ctx, engine = server
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm").content
    texts = [t for t, _ in engine.calls[-3:]]
    seconds = sum(0.05 * len(t) for t in texts) + 2 * ctx.settings.silence_ms / 1000
    assert len(pcm) / 2 / 24000 == pytest.approx(seconds, abs=0.01)
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav").content
    audio, rate = decode_any(wav)
    assert rate == 24000
    np.testing.assert_allclose(audio[: len(pcm) // 2], np.frombuffer(pcm, "<i2") / 32768, atol=1e-4)


def test_streaming_response_arrives_in_pieces(client):
    chunks = []
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="pcm",
        instructions="Cheerful and bright",
    ) as resp:
        assert resp.headers["content-type"] == "audio/pcm"
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
    body = b"".join(chunks)
    assert len(chunks) >= 2, "sentences are written as they are synthesized, not as one body"
    assert len(body) % 2 == 0 and len(body) > 24000


def test_sse_stream_format(client):
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format="pcm", stream_format="sse",
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len(TEXT)
    assert abs(len(audio) / 48 - events[-1]["audio_ms"]) <= 1  # bytes of 24 kHz s16le = 48 per ms


def test_sdk_sees_openai_errors(client, server):
    url, _, _ = server
    with pytest.raises(openai.NotFoundError) as info:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert info.value.body["code"] == "voice_not_found" and info.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="aac")
    assert info.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input="")
    assert info.value.body["code"] == "empty_input"
    bad = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert info.value.body["code"] == "invalid_api_key"
    models = client.models.list()
    assert "tts-1" in [m.id for m in models.data]


def test_hanging_up_cancels_the_rest(server):
    url, ctx, engine = server
    engine.blocked.clear()
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"input": "Short start. BLOCK until cancelled. Never reached. Nor this.", "voice": "alloy",
            "response_format": "pcm"}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", url + "/v1/audio/speech", json=body, headers=headers) as resp:
            assert resp.status_code == 200
            first = next(resp.iter_bytes())
            assert first
            assert engine.blocked.wait(30), "the second sentence started"
        # The connection is closed: the server must cancel the running job and drop the queued ones.
    deadline = time.monotonic() + 30
    while (ctx.executor.queue_depth or ctx.executor._running is not None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ctx.executor.queue_depth == 0 and ctx.executor._running is None
    assert not any(t.startswith(("Never", "Nor")) for t, _ in engine.calls), "queued sentences were dropped"
    # The server is still healthy for the next client.
    r = httpx.post(url + "/v1/audio/speech", json={"input": "Still here.", "voice": "alloy", "response_format": "pcm"},
                   headers=headers, timeout=30)
    assert r.status_code == 200
