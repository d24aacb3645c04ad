"""The server on the real IndexTTS2 engine (tiny official-layout checkpoint, tests/fixtures/pipeline):
the xiaozhi device endpoint and the agent text-stream endpoint speak cloned audio end to end.
Three CFM steps and a 30-code budget keep each sentence short on a CI CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from agent_stream_helpers import events, frames, is_type, opened, pcm_of, serving  # noqa: E402
from xiaozhi_helpers import FAST, device, serve  # noqa: E402

from realtime_tts.engine.indextts2 import IndexTTS2Engine  # noqa: E402
from realtime_tts.model.gpt import SamplingParams  # noqa: E402

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"


@pytest.fixture(scope="module")
def engine() -> IndexTTS2Engine:
    return IndexTTS2Engine.from_checkpoints(FIX / "checkpoints", device="cpu", dtype="fp32", cache_dir=None,
                                            cfm_steps=3, sampling=SamplingParams(max_mel_tokens=30), seed=0)


def add_speaker(ctx) -> None:
    ctx.voices.add((FIX / "speaker_24k.wav").read_bytes(), voice_id="speaker", name="speaker")


async def test_xiaozhi_speaks_with_indextts2(tmp_path, engine):
    with serve(tmp_path, engine, default_voice="speaker", **FAST) as (ctx, url, _):
        add_speaker(ctx)
        async with device(url) as dev:
            await dev.speak("Hello there. How are you?")
            turn = await dev.next_turn(120)
            kinds = [k for k, _ in turn.events]
            assert kinds[0] == "start" and kinds[-1] == "stop"
            assert [d for k, d in turn.events if k == "sentence"] == ["Hello there.", "How are you?"]
            assert turn.packets and all(p.samples == 1440 for p in turn.packets)  # 60 ms at 24 kHz
            assert np.abs(turn.pcm).max() > 0.01  # speech from the vocoder, not silence
            assert dev.dropped_packets == 0 and dev.bad_frames == 0
            assert not [m for _, m in dev.messages if m.get("type") == "error"]
        assert engine.conditioner.voices.misses >= 1  # the voice's conditioning went through the engine cache


async def test_agent_stream_speaks_with_indextts2(tmp_path, engine):
    with serving(tmp_path, engine, default_voice="speaker") as (ctx, url, _):
        add_speaker(ctx)
        async with opened(url) as c:
            await c.send(type="text", context_id="a", text="今天天气很好！")
            await c.send(type="end", context_id="a")
            items = await c.until(is_type("done", "a"), timeout=120)
            assert [e["text"] for e in events(items, "sentence_start")] == ["今天天气很好！"]
            assert not events(items, "error")
            fs = frames(items)
            assert fs and items[-1]["audio_ms"] == len(fs) * 20
            assert np.abs(pcm_of(fs)).max() > 0.01
