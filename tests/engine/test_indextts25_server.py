"""The server on the IndexTTS-2.5 engine (the tiny official-layout checkpoint drawn from its seed,
tests/conftest.py): zh, en, ja, es and ar text spoken on the xiaozhi WebSocket, the agent stream and
the OpenAI speech route, through the continuous-batching executor; each request's language reaches
the GPT as its language row; /health and /v1/models name the family and its languages; an
unsupported language is refused at the edge naming the supported ones. Three CFM steps and a
30-code budget keep each sentence short on a CI CPU."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from agent_stream_helpers import events, frames, is_type, opened, pcm_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from indextts25_helpers import LANG_ROWS, spy_prompt_langs  # noqa: E402
from http_helpers import decode_any, live_server, make_ctx  # noqa: E402
from xiaozhi_helpers import FAST, device  # noqa: E402

from realtime_tts.engine.batching import BatchingExecutor  # noqa: E402
from realtime_tts.engine.indextts25 import IndexTTS25Engine  # noqa: E402
from realtime_tts.model.indextts25 import DEFAULT_SAMPLING  # noqa: E402

PROMPT = Path(__file__).resolve().parents[1] / "fixtures" / "indextts25" / "prompt_24k.wav"
SPEECH = {"zh": "今天天气很好。", "en": "Hello there.", "ja": "こんにちは。", "es": "¿Qué tal amigo?", "ar": "مرحبا بكم."}
LANGUAGES = ["zh", "en", "ja", "es", "ar"]


@pytest.fixture(scope="module")
def engine(tiny25_checkpoint) -> IndexTTS25Engine:
    return IndexTTS25Engine.from_checkpoints(tiny25_checkpoint, device="cpu", dtype="fp32", cache_dir=None,
                                             cfm_steps=3, sampling=replace(DEFAULT_SAMPLING, max_mel_tokens=30),
                                             seed=0)


@pytest.fixture
def rows(engine, monkeypatch) -> list[int]:
    """The language row of every text the GPT is prompted with."""
    return spy_prompt_langs(engine, monkeypatch)


@pytest.fixture
def server(tmp_path, engine):
    """(ctx, http base) of a live server on the engine, continuous batching of up to 4 segments."""
    ctx = make_ctx(tmp_path, engine, default_voice="speaker", **FAST)
    ctx.executor = BatchingExecutor(engine, max_queue=64, max_batch=4)
    ctx.voices.add(PROMPT.read_bytes(), voice_id="speaker", name="speaker")
    with live_server(ctx) as base:
        yield ctx, base


def loud(pcm: np.ndarray) -> bool:
    return pcm.size > 0 and float(np.abs(pcm).max()) > 0.01


async def test_xiaozhi_speaks_every_language(server, rows):
    _, base = server
    async with device(base.replace("http://", "ws://") + "/xiaozhi/v1/") as dev:
        for lang, text in SPEECH.items():
            await dev.speak(text, language=lang)
            turn = await dev.next_turn(120)
            assert [d for k, d in turn.events if k == "sentence"] == [text]
            assert loud(turn.pcm), lang
        await dev.speak("Bonjour.", language="fr")
        error = await dev.wait_for(lambda m: m.get("type") == "error", 10)
        assert error["code"] == "unsupported_language" and "zh, en, ja, es, ar" in error["message"]
        assert dev.bad_frames == 0
    assert rows == [LANG_ROWS[lang] for lang in SPEECH]


async def test_agent_stream_speaks_every_language_at_once(server, rows):
    _, base = server
    async with opened(base.replace("http://", "ws://") + "/v1/tts/stream") as c:
        for lang, text in SPEECH.items():  # five contexts in flight together: one continuous batch
            await c.send(type="text", context_id=lang, text=text, language=lang, end=True)
        items, done = [], set()
        while done != set(SPEECH):
            got = await c.until(is_type("done"), timeout=120)
            items += got
            done.add(got[-1]["context_id"])
    assert not events(items, "error")
    starts = {e["context_id"]: e["text"] for e in events(items, "sentence_start")}
    assert starts == SPEECH
    slots = {e["context_id"]: e["slot"] for e in events(items, "context_started")}
    for lang in SPEECH:
        assert loud(pcm_of(frames(items, slots[lang]))), lang
    assert sorted(rows) == sorted(LANG_ROWS.values())


async def test_openai_speech_in_every_language_and_the_language_check(server, rows):
    _, base = server
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        answers = await asyncio.gather(*(
            http.post("/v1/audio/speech", json={"input": text, "voice": "speaker", "response_format": "wav",
                                                "language": lang})
            for lang, text in SPEECH.items()))
        for r in answers:
            assert r.status_code == 200 and r.content[:4] == b"RIFF"
            pcm, rate = decode_any(r.content)
            assert loud(pcm)
        assert sorted(rows) == sorted(LANG_ROWS.values())
        rows.clear()
        r = await http.post("/v1/audio/speech", json={"input": SPEECH["ja"], "voice": "speaker",
                                                      "response_format": "pcm"})  # no language: the script says ja
        assert r.status_code == 200 and rows == [LANG_ROWS["ja"]]
        r = await http.post("/v1/audio/speech", json={"input": "Bonjour.", "voice": "speaker", "language": "fr"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "unsupported_language" and err["param"] == "language"
        assert "zh, en, ja, es, ar" in err["message"]


async def test_health_and_models_name_the_family_and_languages(server):
    _, base = server
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        health = (await http.get("/health")).json()
        info = health["engine_info"]
        assert health["engine"] == "indextts2.5" and info["family"] == "IndexTTS-2.5"
        assert info["languages"] == LANGUAGES and info["text_frontend"]
        models = (await http.get("/v1/models")).json()["data"]
        assert "indextts2.5" in [m["id"] for m in models]
        caps = models[0]["capabilities"]
        assert caps["languages"] == LANGUAGES and caps["engine"]["family"] == "IndexTTS-2.5"
        assert caps["emotion"] == ["vector", "label", "reference"]  # no Qwen directory in the fixture
