"""Every HTTP JSON route reads its body through inputs.py: malformed input is a 400/413 naming
the problem, never a 500 or a traceback; form fields are checked the same way; a language the
engine does not speak is a 400 naming the ones it does."""

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, error_of, make_ctx, tone_wav  # noqa: E402

from realtime_tts.engine.espeak import EspeakEngine, voice_for  # noqa: E402

# Every route that takes a JSON body (the control route answers 400 before it looks for the device).
JSON_ROUTES = ["/v1/audio/speech", "/audio/speech", "/tts", "/tts_url", "/v1/xiaozhi/devices/dev-1/speak"]
BODY_LIMIT = 1024 * 1024  # JSON_BODY_LIMIT of every route when max_upload_bytes is small

MALFORMED = [
    # (name, body, status, code, words the message must contain)
    ("deep-array", b"[" * 100_000 + b"]" * 100_000, 400, "json_too_deep", "nests deeper than"),
    ("deep-object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "json_too_deep", "nests deeper than"),
    ("huge-int", b'{"input": "hi", "text": "hi", "speed": ' + b"9" * 5000 + b"}", 400, "number_too_long",
     "5000 characters"),
    ("huge-float", b'{"input": "hi", "text": "hi", "speed": 1.' + b"5" * 5000 + b"}", 400, "number_too_long",
     "characters is longer"),
    ("lone-surrogate", b'{"input": "a\\ud800b", "text": "a\\ud800b"}', 400, "invalid_string",
     "unpaired UTF-16 surrogate"),
    ("surrogate-key", b'{"input": "hi", "text": "hi", "\\udfff": 1}', 400, "invalid_string", "surrogate"),
    ("bad-utf8", b'{"input": "\xff\xfe", "text": "\xff"}', 400, "invalid_utf8", "not valid UTF-8"),
    ("nan", b'{"input": "hi", "text": "hi", "speed": NaN}', 400, "invalid_json", "NaN is not a JSON number"),
    ("empty", b"   ", 400, "invalid_json", "empty"),
    ("truncated", b'{"input": "hi"', 400, "invalid_json", "not valid JSON"),
    ("too-large", b'{"input": "' + b"x" * (BODY_LIMIT + 100_000) + b'"}', 413, "request_too_large", "limit"),
]


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
def ctx(tmp_path, engine):
    return make_ctx(tmp_path, engine, max_upload_bytes=32 * 1024)


@pytest.fixture
def client(ctx):
    with client_for(ctx) as c:
        yield c


def _no_tracebacks(caplog):
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("name,body,status,code,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_json_is_a_clear_client_error(client, engine, caplog, route, name, body, status, code, words):
    caplog.set_level(logging.DEBUG)
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["code"] == code and err["type"] == "invalid_request_error"
    assert words in err["message"], err["message"]
    assert engine.calls == []
    _no_tracebacks(caplog)


def test_a_surrogate_error_names_the_field(client):
    r = client.post("/v1/audio/speech", content=b'{"input": "hi", "voice": "\\ud800"}',
                    headers={"content-type": "application/json"})
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "voice" and "'voice'" in err["message"]


def test_declared_oversize_is_refused_before_reading(client):
    r = client.post("/tts", content=b"{}", headers={"content-type": "application/json",
                                                   "content-length": str(BODY_LIMIT + 1)})
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_strings_arrive_nfc(client, engine):
    r = client.post("/v1/audio/speech", json={"input": "Cafe\u0301 time.", "response_format": "pcm"})
    assert r.status_code == 200, r.text
    assert engine.calls[0][0] == "Caf\u00e9 time."


@pytest.mark.parametrize("body,param", [
    ({"input": "hi", "voice": {"id": ["x"]}}, "voice.id"),
    ({"input": "hi", "emo_control_method": True}, "emo_control_method"),
    ({"input": "hi", "emo_control_method": 2.0}, "emo_control_method"),
])
def test_fields_are_type_checked(client, engine, body, param):
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param
    assert engine.calls == []


# --- form fields --------------------------------------------------------------------------------

def test_upload_form_fields_are_checked_and_normalised(client, caplog):
    caplog.set_level(logging.DEBUG)
    clip = tone_wav(0.6)
    r = client.post("/v1/audio/voices", files={"file": ("a.wav", clip), "id": ("id.txt", b"evil")})
    assert r.status_code == 400 and "Too many files" in error_of(r)["message"]
    r = client.post("/v1/audio/voices", files={"file": ("a.wav", clip)}, data={"id": "nfc", "name": "Zoe\u0308"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Zo\u00eb"
    _no_tracebacks(caplog)


# --- language ------------------------------------------------------------------------------------

@pytest.mark.parametrize("route,body", [
    ("/v1/audio/speech", {"input": "Hello there."}),
    ("/tts", {"text": "Hello there."}),
    ("/tts_url", {"text": "Hello there."}),
])
def test_an_unsupported_language_is_a_400_naming_the_supported_ones(client, engine, route, body):
    engine.languages = ("zh", "en")
    r = client.post(route, json={**body, "language": "fr"})
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["code"], err["param"]) == ("unsupported_language", "language")
    assert "'fr'" in err["message"] and "zh, en" in err["message"]
    assert engine.calls == []
    for ok in ("en", "EN-us", "zh_CN", "auto", ""):
        r = client.post(route, json={**body, "language": ok})
        assert r.status_code == 200, (ok, r.text)
    assert [opts.language for _, opts in engine.calls] == ["en", "EN-us", "zh_CN", None, None]


def test_an_engine_without_a_language_list_takes_any_hint(client, engine):
    assert engine.languages is None
    r = client.post("/v1/audio/speech", json={"input": "Hi there.", "language": "fr", "response_format": "pcm"})
    assert r.status_code == 200 and engine.calls[0][1].language == "fr"


def test_espeak_speaks_every_language_it_declares():
    assert EspeakEngine.languages == ("zh", "en")
    for code in EspeakEngine.languages:
        assert voice_for("text", code) in ("cmn", "en-us")


def test_the_language_message_is_json(client, engine):
    engine.languages = ("en",)
    r = client.post("/v1/audio/speech", json={"input": "Hi.", "language": "x" * 36})
    assert r.status_code == 400 and error_of(r)["param"] == "language"
    json.dumps(r.json())


def test_voice_paths_are_nfc_like_stored_ids(client):
    r = client.post("/v1/audio/voices", files={"file": ("a.wav", tone_wav(0.6))}, data={"id": "Zoe\u0308"})
    assert r.status_code == 201 and r.json()["id"] == "Zo\u00eb"
    assert client.get("/v1/audio/voices/Zoe%CC%88").status_code == 200  # the decomposed spelling finds it
    assert client.delete("/v1/audio/voices/Zoe%CC%88").status_code == 200


@pytest.mark.parametrize("body", [b"[" * 20_000 + b"]" * 20_000, b'{"application": {"version": "\\ud800"}}',
                                  b'{"application": {"version": 1' + b"0" * 5000 + b"}}", b"\xff\xfe", b"{"])
def test_ota_takes_any_body_and_only_loses_the_version(client, caplog, body):
    caplog.set_level(logging.DEBUG)
    r = client.post("/xiaozhi/ota/", content=body, headers={"Device-Id": "aa:bb"})
    assert r.status_code == 200, r.text
    assert r.json()["firmware"]["version"] == ""
    _no_tracebacks(caplog)
    r = client.post("/xiaozhi/ota/", json={"application": {"version": "1.6.0"}}, headers={"Device-Id": "aa:bb"})
    assert r.json()["firmware"]["version"] == "1.6.0"
