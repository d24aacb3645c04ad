"""An honest fallback: on an engine that cannot clone or take an emotion (the eSpeak NG engine), a
voice or an emotion is still accepted, and every endpoint says it is not used: the X-TTS-Warning
header over HTTP, ``warning`` events on the agent stream and on xiaozhi sockets, the control API's
``warnings``; /v1/models, /health and ``describe()`` tell the truth. All of it is driven by the
engine's ``Capabilities``, never by its name."""

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agent_stream_helpers import is_type, opened  # noqa: E402
from http_helpers import ToneEngine, client_for, live_server, make_ctx, tone_wav  # noqa: E402
from xiaozhi_helpers import FAST, device  # noqa: E402

from realtime_tts.engine.base import Capabilities, Emotion, SynthesisOptions, Voice  # noqa: E402
from realtime_tts.server.capabilities import Notice, header, ignored  # noqa: E402

VOICE = Voice(id="alice", audio_path=Path("/x.wav"), content_hash="h")
SF_MEMBER = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)="((?:[^"\\]|\\["\\])*)"\s*(?:,|$)')


def parse_warning(value: str) -> dict[str, str]:
    """An RFC 8941 dictionary of sf-strings, strictly: the whole value must parse."""
    out, pos = {}, 0
    while pos < len(value):
        m = SF_MEMBER.match(value, pos)
        assert m, f"not an RFC 8941 dictionary at {pos}: {value!r}"
        out[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
        pos = m.end()
    return out


# --- the rules, without a server ----------------------------------------------------------------

def test_ignored_options_follow_the_capabilities():
    none = Capabilities()
    opts = SynthesisOptions(voice=VOICE, emotion=Emotion(vector=(0.5,) + (0.0,) * 7))
    assert [n.code for n in ignored(none, opts, "espeak")] == ["voice_ignored", "emotion_ignored"]
    assert "espeak" in ignored(none, opts, "espeak")[0].message and "'alice'" in ignored(none, opts, "x")[0].message
    full = Capabilities(voice_cloning=True, emotion=("vector", "text", "reference"))
    assert ignored(full, opts, "espeak") == []  # the name does not matter, the capabilities do
    # An engine with some emotion drivers: the one that drives this emotion counts (text > vector > reference).
    partial = Capabilities(voice_cloning=True, emotion=("vector", "reference"))
    assert ignored(partial, opts, "e") == []
    text = SynthesisOptions(emotion=Emotion(text="cheerful", vector=(0.5,) + (0.0,) * 7))
    (notice,) = ignored(partial, text, "e")
    assert notice.code == "emotion_ignored" and "text" in notice.message and "vector, reference" in notice.message
    assert ignored(partial, SynthesisOptions(emotion=Emotion(reference=VOICE)), "e") == []
    # Speed: followed unless the engine says it is not.
    assert ignored(Capabilities(speed=None), SynthesisOptions(speed=1.0), "e") == []
    assert [n.code for n in ignored(Capabilities(speed=None), SynthesisOptions(speed=1.5), "e")] == ["speed_ignored"]
    assert ignored(none, SynthesisOptions(speed=1.5), "e") == []


def test_the_warning_header_is_an_rfc8941_dictionary():
    assert header([]) == {}
    notices = [Notice("voice_ignored", 'voice "a\\b" is not used, sorry'), Notice("emotion_ignored", "é and 你")]
    (name, value), = header(notices).items()
    assert name == "X-TTS-Warning"
    value.encode("ascii")  # a header value any client can read
    assert parse_warning(value) == {"voice_ignored": 'voice "a\\b" is not used, sorry', "emotion_ignored": "? and ?"}


def test_engines_describe_their_capabilities():
    from realtime_tts.engine.espeak import EspeakEngine
    from realtime_tts.engine.indextts2 import IndexTTS2Engine

    espeak = EspeakEngine()
    caps = espeak.capabilities()
    assert (caps.voice_cloning, caps.emotion, caps.languages, caps.speed) == (False, (), ("zh", "en"), (0.5, 2.0))
    info = espeak.describe()
    assert {k: info[k] for k in ("voice_cloning", "emotion", "languages", "speed", "clones_voices")} == {
        "voice_cloning": False, "emotion": [], "languages": ["zh", "en"], "speed": [0.5, 2.0], "clones_voices": False}
    # IndexTTS2 clones; emotion text needs the Qwen emotion model, the other drivers do not.
    assert IndexTTS2Engine.clones_voices is True
    from realtime_tts.engine.indextts2 import IndexTTS2Family

    sources = IndexTTS2Family.emotion_sources.fget
    assert sources(SimpleNamespace(models=SimpleNamespace(qwen=None))) == ("vector", "reference")
    assert sources(SimpleNamespace(models=SimpleNamespace(qwen=object()))) == ("vector", "reference", "text")
    # the engine reports what its model family follows
    engine = SimpleNamespace(family=SimpleNamespace(emotion_sources=("vector",), languages=("zh",)))
    assert IndexTTS2Engine.emotion_sources.fget(engine) == ("vector",)
    assert IndexTTS2Engine.languages.fget(engine) == ("zh",)


# --- a live server on eSpeak NG --------------------------------------------------------------------

@pytest.fixture(scope="module")
def espeak_server(tmp_path_factory):
    from realtime_tts.engine.espeak import EspeakEngine

    ctx = make_ctx(tmp_path_factory.mktemp("espeak"), EspeakEngine(), **FAST)
    ctx.voices.add(tone_wav(1.0), voice_id="alice")
    with live_server(ctx) as url:
        yield ctx, url


VOICE_AND_EMOTION = {"emotion": {"label": "happy", "strength": 0.8}}
ROUTES = [  # every HTTP speech route, with a voice and an emotion in its own field names
    ("/v1/audio/speech", {"input": "Hello there.", "voice": "alice", "response_format": "wav", **VOICE_AND_EMOTION}),
    ("/audio/speech", {"model": "tts-1", "input": "Hello there.", "voice": "alice", **VOICE_AND_EMOTION}),
    ("/tts", {"text": "Hello there.", "character": "alice", **VOICE_AND_EMOTION}),
    ("/tts_url", {"text": "Hello there.", "spk_audio_path": "alice", "emo_control_method": 2,
                  "emo_vec": [0, 0, 0.6, 0, 0, 0, 0, 0]}),
    ("/v1/tts", {"voice_id": "alice", "tts_text": "Hello there.", "emo_vec": [0, 0, 0.6, 0, 0, 0, 0, 0]}),
]


def test_capability_fields_tell_the_truth(espeak_server):
    ctx, url = espeak_server
    caps = httpx.get(url + "/v1/models").json()["data"][0]["capabilities"]
    assert caps["voice_cloning"] is False and caps["emotion"] == [] and caps["languages"] == ["zh", "en"]
    assert caps["speed_range"] == [0.5, 2.0] and caps["engine"]["name"] == "espeak"
    info = httpx.get(url + "/health").json()["engine_info"]
    assert info["voice_cloning"] is False and info["emotion"] == [] and info["languages"] == ["zh", "en"]
    assert info == ctx.engine.describe()


@pytest.mark.parametrize("route, body", ROUTES, ids=[r for r, _ in ROUTES])
def test_every_http_route_warns_what_is_not_used(espeak_server, route, body):
    _, url = espeak_server
    r = httpx.post(url + route, json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"RIFF" or route == "/tts"  # the audio still comes
    warning = parse_warning(r.headers["x-tts-warning"])
    assert set(warning) == {"voice_ignored", "emotion_ignored"}, warning
    assert "espeak engine cannot clone a voice" in warning["voice_ignored"] and "'alice'" in warning["voice_ignored"]
    assert "no emotion control" in warning["emotion_ignored"]
    plain = {k: v for k, v in body.items() if k in ("input", "text", "tts_text", "model", "response_format")}
    if route == "/v1/tts":
        plain["voice_id"] = "alice"  # TTSRequest needs a voice: that one warning stays
    r = httpx.post(url + route, json=plain, timeout=60)
    assert r.status_code == 200, r.text
    expected = {"voice_ignored"} if route == "/v1/tts" else set()
    assert set(parse_warning(r.headers.get("x-tts-warning", ""))) == expected


async def test_agent_stream_sends_warning_events(espeak_server):
    _, url = espeak_server
    ws_url = url.replace("http://", "ws://") + "/v1/tts/stream"
    async with opened(ws_url) as c:
        assert c.ready["capabilities"]["voice_cloning"] is False and c.ready["capabilities"]["emotion"] == []
        await c.send(type="config", voice="alice")
        items = await c.until(is_type("warning"))
        assert [i["type"] for i in items] == ["ready", "warning"] and items[1]["code"] == "voice_ignored"
        await c.send(type="text", context_id="t1", text="Hello there.", emotion="happy", end=True)
        items = await c.until(is_type("done", "t1"))
        kinds = [(i["type"], i.get("code")) for i in items if isinstance(i, dict)]
        assert kinds[:2] == [("context_started", None), ("warning", "voice_ignored")]
        assert kinds[2] == ("warning", "emotion_ignored") and items[2]["context_id"] == "t1"
        assert any(isinstance(i, bytes) for i in items)  # and it speaks
        await c.send(type="text", context_id="t2", text="Again.", end=True)  # the defaults: said once already
        items = await c.until(is_type("done", "t2"))
        assert not [i for i in items if isinstance(i, dict) and i["type"] == "warning"]


async def test_xiaozhi_speak_and_control_api_warn(espeak_server):
    ctx, url = espeak_server
    ws_url = url.replace("http://", "ws://") + "/xiaozhi/v1/"
    async with device(ws_url, device_id="aa:bb:cc:dd:ee:01") as dev:
        await dev.speak("Hello there.", voice="alice", emotion="happy")
        turn = await dev.next_turn(30)
        assert turn.sentences == ["Hello there."]
        warnings = [m for _, m in dev.messages if m.get("type") == "warning"]
        assert [w["code"] for w in warnings] == ["voice_ignored", "emotion_ignored"]
        assert all(w["session_id"] == dev.session_id for w in warnings)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.post("/v1/xiaozhi/devices/aa:bb:cc:dd:ee:01/speak?wait=true",
                                json={"text": "Hi.", "voice": "alice"})
            assert r.status_code == 200, r.text
            assert [w["code"] for w in r.json()["warnings"]] == ["voice_ignored"]
            assert set(parse_warning(r.headers["x-tts-warning"])) == {"voice_ignored"}


def test_an_engine_named_espeak_that_clones_gets_no_warning(tmp_path):
    """Capabilities, not names: a cloning engine called "espeak" warns of nothing; a "tone" that
    cannot clone does."""
    class ClonesDespiteItsName(ToneEngine):
        name = "espeak"

    class CannotClone(ToneEngine):
        clones_voices = False
        emotion_sources = ()

    for engine, expected in ((ClonesDespiteItsName(), set()), (CannotClone(), {"voice_ignored", "emotion_ignored"})):
        ctx = make_ctx(tmp_path / engine.__class__.__name__, engine)
        ctx.voices.add(tone_wav(1.0), voice_id="alice")
        with client_for(ctx) as client:
            r = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": "alice", "emotion": "sad",
                                                      "response_format": "pcm"})
            assert r.status_code == 200
            assert set(parse_warning(r.headers.get("x-tts-warning", ""))) == expected, engine
            models = client.get("/v1/models").json()["data"][0]["capabilities"]
            assert models["voice_cloning"] is engine.clones_voices
            assert models["emotion"] == (["vector", "label", "text", "reference"] if engine.emotion_sources else [])


def test_speed_clamp_is_in_the_same_header(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine())
    with client_for(ctx) as client:
        r = client.post("/v1/audio/speech", json={"input": "Hi.", "speed": 4, "response_format": "pcm"})
        assert parse_warning(r.headers["x-tts-warning"]) == {
            "speed_clamped": "speed 4 is outside the supported speed range 0.5-2.0; used 2"}
        assert r.headers["x-speed-clamped"] == "2"  # the older headers stay


def test_warning_events_are_plain_json():
    """What a socket sends for a notice: type, code, message (and the context), nothing else."""
    payload = Notice("voice_ignored", "not used").payload(context_id="t")
    assert json.loads(json.dumps(payload)) == {"type": "warning", "code": "voice_ignored", "message": "not used",
                                               "context_id": "t"}
