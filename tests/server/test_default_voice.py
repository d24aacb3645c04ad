"""``voice: "default"`` and OpenAI's voice names need no configuration: they resolve to the default
voice (``--default-voice``; else, for an engine that clones, the library's first voice; else the
engine's own voice). Pipecat's OpenAITTSService refuses any voice outside OpenAI's names, so those
must always work."""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, client_for, error_of, make_ctx, tone_wav  # noqa: E402

from realtime_tts.server.params import OPENAI_VOICES  # noqa: E402


class CloningToneEngine(ToneEngine):
    needs_voice = True


def said_with(client, engine, voice):
    body = {"input": "Hi.", "response_format": "pcm"}
    if voice is not None:
        body["voice"] = voice
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, (voice, r.text)
    return engine.calls[-1][1].voice


def test_builtin_voice_engine(tmp_path):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path, engine)
    with client_for(ctx) as client:
        for voice in ("default", "Default", *OPENAI_VOICES, None):
            assert said_with(client, engine, voice) is None, voice
        r = client.post("/tts", json={"text": "Hi.", "character": "default"})  # index_stream's voice field
        assert r.status_code == 200 and engine.calls[-1][1].voice is None
        ctx.voices.add(tone_wav(1.0, freq=300), voice_id="default")  # a stored voice of that id wins
        assert said_with(client, engine, "default").id == "default"


def test_cloning_engine_uses_the_first_voice_without_configuration(tmp_path):
    engine = CloningToneEngine()
    ctx = make_ctx(tmp_path, engine)
    with client_for(ctx) as client:
        for voice in ("default", "alloy", None):
            r = client.post("/v1/audio/speech", json={"input": "Hi.", "voice": voice})
            assert r.status_code == 400 and error_of(r)["code"] == "voice_required", voice
        ctx.voices.add(tone_wav(1.0, freq=200), voice_id="first")
        time.sleep(1.1)  # created_at has one-second resolution
        ctx.voices.add(tone_wav(1.0, freq=300), voice_id="second")
        for voice in ("default", "alloy", "coral", None):
            assert said_with(client, engine, voice).id == "first", voice
        assert said_with(client, engine, "second").id == "second"


@pytest.mark.parametrize("engine_cls", [ToneEngine, CloningToneEngine])
def test_configured_default_voice_wins(tmp_path, engine_cls):
    engine = engine_cls()
    ctx = make_ctx(tmp_path, engine, default_voice="chosen")
    ctx.voices.add(tone_wav(1.0, freq=200), voice_id="other")
    ctx.voices.add(tone_wav(1.0, freq=300), voice_id="chosen")
    with client_for(ctx) as client:
        for voice in ("default", "echo", None):
            assert said_with(client, engine, voice).id == "chosen"
