"""``x-request-id`` on every HTTP response, errors and refusals included (LiveKit's OpenAI plugin
warns without one; the openai SDK exposes it as ``request_id``), and URL credentials masked in logs."""

import io
import logging
import sys
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import client_for, live_server, make_ctx  # noqa: E402

from realtime_tts.server.logging import configure_logging, redact  # noqa: E402


def test_every_http_response_carries_a_request_id(tmp_path):
    ctx = make_ctx(tmp_path, api_keys=["sk-k"])
    auth = {"Authorization": "Bearer sk-k"}
    with client_for(ctx) as client:
        responses = [
            client.get("/health"), client.get("/"), client.get("/static/app.js"),
            client.get("/v1/audio/voices", headers=auth),
            client.get("/v1/audio/voices"),  # 401 from the auth middleware
            client.get("/no/such/route", headers=auth),  # 404
            client.post("/v1/audio/speech", headers=auth, content=b"{"),  # 400
            client.post("/v1/audio/speech", headers=auth, json={"input": "Hi.", "response_format": "pcm"}),
            client.post("/xiaozhi/ota/", headers={"Device-Id": "aa"}, json={}),
        ]
        ids = [r.headers.get("x-request-id") for r in responses]
        assert all(ids), [(r.request.url.path, r.status_code) for r, i in zip(responses, ids) if not i]
        assert len(set(ids)) == len(ids)  # one per request
        # A well-formed id from the caller (or a proxy) is kept; a malformed one is replaced.
        assert client.get("/health", headers={"X-Request-Id": "trace-42.a:b"}).headers["x-request-id"] == "trace-42.a:b"
        bad = client.get("/health", headers={"X-Request-Id": "bad id\twith spaces"}).headers["x-request-id"]
        assert bad != "bad id\twith spaces" and " " not in bad
        assert len(client.get("/health").headers.get_list("x-request-id")) == 1


def test_openai_sdk_sees_the_request_id(tmp_path):
    """livekit-plugins-openai 1.7.0 (livekit/agents @ da6af86a, tts.py) reports ``stream.request_id``."""
    with live_server(make_ctx(tmp_path)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with client.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="ash", input="Hello.", response_format="mp3", speed=1.0,
                stream_format="sse") as stream:
            assert stream.request_id
            b"".join(stream.iter_bytes())


def test_credentials_in_urls_never_reach_the_log():
    out = io.StringIO()
    handler = configure_logging("text", stream=out)
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # an earlier live server may have set them to warning
        lg.setLevel(logging.INFO)
    try:
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5",
                                                "/v1/tts/stream?api_key=sk-secret&x=1")
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "POST",
                                                 "/tts?authorization=Bearer%20sk-secret2", "1.1", 200)
    finally:
        logging.getLogger().removeHandler(handler)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    text = out.getvalue()
    assert "sk-secret" not in text and "api_key=***&x=1" in text and "authorization=***" in text
    assert redact("/xiaozhi/v1/?device-id=a&token=abc.123") == "/xiaozhi/v1/?device-id=a&token=***"
