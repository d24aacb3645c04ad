"""GET /metrics (Prometheus text) reflects requests, and logs come out as text or JSON lines."""

import io
import json
import logging
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, make_ctx  # noqa: E402

from realtime_tts.server.logging import configure_logging  # noqa: E402


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_counts_requests(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine())
    with client_for(ctx) as client:
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        before = samples(r.text)
        assert before[("rtts_queue_depth", ())] == 0
        assert before.get(("rtts_time_to_first_audio_seconds_count", (("endpoint", "openai"),)), 0) == 0

        assert client.post("/v1/audio/speech", json={"input": "Hi there. Bye.", "voice": "alloy",
                                                     "response_format": "pcm"}).status_code == 200
        assert client.post("/tts", json={"text": "Hello."}).status_code == 200
        assert client.post("/v1/audio/speech", json={"input": "FAIL now.", "voice": "alloy"}).status_code == 500
        after = samples(client.get("/metrics").text)
        assert after[("rtts_time_to_first_audio_seconds_count", (("endpoint", "openai"),))] == 1
        assert after[("rtts_time_to_first_audio_seconds_count", (("endpoint", "tts"),))] == 1
        assert after[("rtts_errors_total", (("kind", "openai_synthesis"),))] == 1
        assert after[("rtts_active_connections", (("endpoint", "openai"),))] == 0  # every stream closed


def test_json_logs_carry_extra_fields():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json", "INFO", stream=stream)
        logging.getLogger("realtime_tts.test").info("speech %s", "done", extra={"endpoint": "openai", "ttfa_ms": 181})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("realtime_tts.test").exception("failed")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert lines[0]["msg"] == "speech done" and lines[0]["level"] == "info"
        assert lines[0]["endpoint"] == "openai" and lines[0]["ttfa_ms"] == 181
        assert lines[0]["logger"] == "realtime_tts.test" and lines[0]["ts"].endswith("Z")
        assert lines[1]["level"] == "error" and "ValueError: boom" in lines[1]["exc"]

        stream.truncate(0)
        stream.seek(0)
        configure_logging("text", "INFO", stream=stream)
        logging.getLogger("realtime_tts.test").info("speech done", extra={"endpoint": "tts"})
        assert stream.getvalue().rstrip().endswith("INFO    realtime_tts.test: speech done endpoint=tts")
        with pytest.raises(ValueError, match="text or json"):
            configure_logging("xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
