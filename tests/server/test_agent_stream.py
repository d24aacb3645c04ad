"""/v1/tts/stream end to end against a live uvicorn (ToneEngine): audio before end, the 8-byte
header, pcm/opus at 16/24/48 kHz, base64 transport, context ordering, flush and auto-flush,
options per context, metrics, and 20 concurrent clients on the serialized executor."""

import asyncio
import base64
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agent_stream_helpers import (HEADER, ToneEngine, dominant_hz, events, frames, is_type, opened,  # noqa: E402
                                  pcm_of, serving, tone_seconds)

from realtime_tts.audio.opus import OpusDecoder  # noqa: E402


@pytest.fixture
def server(tmp_path):
    engine = ToneEngine()
    with serving(tmp_path, engine) as (ctx, url, http):
        yield ctx, url, engine


async def test_ready_describes_defaults_and_limits(server):
    ctx, url, _ = server
    async with opened(url) as c:
        r = c.ready
        assert r["output"] == {"encoding": "pcm_s16le", "sample_rate": 24000, "channels": 1, "frame_ms": 20}
        assert r["audio_transport"] == "binary" and isinstance(r["session_id"], str) and r["session_id"]
        assert r["limits"]["max_text_chars"] == ctx.settings.max_text_chars
        assert r["limits"]["speed_range"] == [0.5, 2.0]
        await c.send(type="config", output={"encoding": "opus", "sample_rate": 48000, "frame_ms": 60})
        again = await c.recv()
        assert again["type"] == "ready" and again["session_id"] == r["session_id"]
        assert again["output"] == {"encoding": "opus", "sample_rate": 48000, "channels": 1, "frame_ms": 60}


async def test_audio_arrives_before_end_is_sent(server):
    ctx, url, engine = server
    async with opened(url) as c:
        await c.send(type="text", context_id="t1", text="Hello there. How")
        first = await c.until(lambda m: isinstance(m, bytes))  # audio while the turn is still open
        started = events(first, "context_started")[0]
        assert started == {"type": "context_started", "context_id": "t1", "slot": started["slot"]}
        assert events(first, "sentence_start")[0] == {"type": "sentence_start", "context_id": "t1", "index": 0,
                                                      "text": "Hello there.", "audio_ms": 0}
        assert [t for t, _ in engine.calls] == ["Hello there."]

        await c.send(type="text", context_id="t1", text=" are you?")
        await c.send(type="end", context_id="t1")
        rest = await c.until(is_type("done", "t1"))
        items = first + rest
        assert [e["text"] for e in events(items, "sentence_start")] == ["Hello there.", "How are you?"]
        assert events(items, "sentence_start")[1]["audio_ms"] == 700  # 12 chars * 50 ms + 100 ms silence
        assert [e["duration_ms"] for e in events(items, "sentence_end")] == [600, 600]
        done = items[-1]
        assert done == {"type": "done", "context_id": "t1", "audio_ms": done["audio_ms"], "chars": 25, "sentences": 2}

        fs = frames(items)
        assert {(v, k, s) for v, k, s, _, _ in fs} == {(1, 0, started["slot"])}
        assert [seq for _, _, _, seq, _ in fs] == list(range(len(fs)))
        assert {len(p) for *_, p in fs} == {24000 * 20 // 1000 * 2}
        assert done["audio_ms"] == len(fs) * 20
        assert abs(len(fs) * 0.02 - tone_seconds(["Hello there.", "How are you?"])) <= 0.04
        pcm = pcm_of(fs)
        assert np.abs(pcm).max() > 0.2  # the tone, not silence


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
@pytest.mark.parametrize("frame_ms", [20, 60])
async def test_pcm_rates_and_frame_sizes(server, rate, frame_ms):
    _, url, _ = server
    async with opened(url) as c:
        await c.send(type="config", output={"encoding": "pcm_s16le", "sample_rate": rate, "frame_ms": frame_ms})
        assert (await c.recv())["output"]["sample_rate"] == rate
        await c.send(type="text", context_id="a", text="One two three.", end=True)
        items = await c.until(is_type("done"))
    fs = frames(items)
    assert {len(p) for *_, p in fs} == {rate * frame_ms // 1000 * 2}
    assert abs(len(fs) * frame_ms / 1000 - tone_seconds(["One two three."])) <= frame_ms / 1000 * 2
    pcm = pcm_of(fs)
    assert abs(dominant_hz(pcm, rate) - 220.0) < 5


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
async def test_opus_packets_decode_to_whole_frames(server, rate):
    _, url, _ = server
    async with opened(url) as c:
        await c.send(type="config", output={"encoding": "opus", "sample_rate": rate, "frame_ms": 20})
        await c.recv()
        await c.send(type="text", context_id="a", text="Opus frames for you. And another one.", speed=1.5)
        await c.send(type="end", context_id="a")
        items = await c.until(is_type("done"))
    fs = frames(items)
    assert [seq for _, _, _, seq, _ in fs] == list(range(len(fs)))
    decoder = OpusDecoder(rate)
    decoded = [decoder.decode(p) for *_, p in fs]
    assert {len(d) for d in decoded} == {rate // 50}
    assert all(len(p) < rate // 50 for *_, p in fs)  # compressed, not PCM
    pcm = np.concatenate(decoded)
    expected = tone_seconds(["Opus frames for you.", "And another one."])
    assert abs(len(pcm) / rate - expected) <= 0.06
    assert abs(dominant_hz(pcm, rate) - 330.0) < 8  # ToneEngine pitch = 220 Hz * speed


async def test_base64_transport(server):
    _, url, _ = server
    async with opened(url) as c:
        await c.send(type="config", audio_transport="base64", output={"sample_rate": 16000})
        assert (await c.recv())["audio_transport"] == "base64"
        await c.send(type="text", context_id="b", text="Base sixty four.", end=True)
        items = await c.until(is_type("done"))
    assert not [m for m in items if isinstance(m, bytes)]
    audio = events(items, "audio")
    assert [a["seq"] for a in audio] == list(range(len(audio))) and {a["context_id"] for a in audio} == {"b"}
    assert {len(base64.b64decode(a["data"])) for a in audio} == {16000 // 50 * 2}


async def test_contexts_play_in_creation_order(server):
    _, url, _ = server
    async with opened(url) as c:
        await c.send(type="text", context_id="A", text="First context sentence one. ")
        await c.send(type="text", context_id="B", text="Second context speaks later.", end=True)
        await c.send(type="text", context_id="A", text="First context sentence two.")
        await c.send(type="end", context_id="A")
        items = await c.until(is_type("done", "B"))
    slots = {e["context_id"]: e["slot"] for e in events(items, "context_started")}
    assert slots["A"] != slots["B"]
    order = [(m["context_id"], m["type"]) if isinstance(m, dict) else ("A" if HEADER.unpack_from(m)[2] == slots["A"]
                                                                       else "B", "audio") for m in items]
    a_done = order.index(("A", "done"))
    first_b_audio = order.index(("B", "audio"))
    assert a_done < first_b_audio
    assert all(cid == "A" for cid, kind in order[:a_done] if kind in ("audio", "sentence_start"))
    assert [(e["context_id"], e["text"]) for e in events(items, "sentence_start")] == [
        ("A", "First context sentence one."), ("A", "First context sentence two."),
        ("B", "Second context speaks later.")]
    # Each context is its own audio stream: sequence numbers restart.
    assert frames(items, slots["B"])[0][3] == 0


async def test_flush_speaks_buffered_text_and_acknowledges(server):
    _, url, engine = server
    async with opened(url) as c:
        await c.send(type="text", context_id="f", text="no punctuation at all")
        await c.send(type="flush", context_id="f", flush_id="f-1")
        items = await c.until(is_type("flushed"))
        assert items[-1] == {"type": "flushed", "context_id": "f", "flush_id": "f-1"}
        assert [e["text"] for e in events(items, "sentence_start")] == ["no punctuation at all"]
        assert frames(items)  # the flushed text's audio precedes the acknowledgement
        await c.send(type="flush", context_id="f")  # nothing buffered: still acknowledged, numbered
        assert (await c.until(is_type("flushed")))[-1]["flush_id"] == 2
        await c.send(type="text", context_id="f", text=" then more.", end=True)
        done = (await c.until(is_type("done")))[-1]
        assert done["sentences"] == 2
    assert [t for t, _ in engine.calls] == ["no punctuation at all", "then more."]


async def test_idle_text_is_auto_flushed(server):
    _, url, _ = server
    async with opened(url) as c:
        await c.send(type="config", max_buffer_delay_ms=50)
        assert (await c.recv())["max_buffer_delay_ms"] == 50
        await c.send(type="text", context_id="x", text="an LLM that paused mid")
        items = await c.until(lambda m: isinstance(m, bytes))  # neither flush nor end was sent
        assert [e["text"] for e in events(items, "sentence_start")] == ["an LLM that paused mid"]
        await c.send(type="end", context_id="x")
        await c.until(is_type("done"))


async def test_options_on_first_text_and_from_config(server):
    _, url, engine = server
    async with opened(url) as c:
        await c.send(type="config", speed=1.25, emotion={"label": "happy", "strength": 0.5})
        await c.recv()
        await c.send(type="text", context_id="a", text="Config options.", end=True)
        await c.until(is_type("done", "a"))
        await c.send(type="text", context_id="b", text="Own options.", speed=0.75, end=True)
        await c.until(is_type("done", "b"))
        await c.send(type="text", context_id="c", text="Clamped. ", speed=3)
        warn = await c.until(is_type("warning"))
        assert warn[-1]["code"] == "speed_clamped" and warn[-1]["context_id"] == "c"
        await c.send(type="text", context_id="c", text="Later piece.", speed=1.0, end=True)
        items = await c.until(is_type("done", "c"))
        assert events(items, "warning")[0]["code"] == "settings_ignored"
    by_text = {t: o for t, o in engine.calls}
    assert by_text["Config options."].speed == 1.25 and by_text["Config options."].emotion.vector[0] > 0
    assert by_text["Own options."].speed == 0.75 and by_text["Own options."].emotion.vector[0] > 0
    assert by_text["Clamped."].speed == 2.0 and by_text["Later piece."].speed == 2.0


async def test_empty_turn_and_end_flag(server):
    _, url, engine = server
    async with opened(url) as c:
        await c.send(type="text", context_id="e", text="", end=True)
        items = await c.until(is_type("done"))
        assert items[-1] == {"type": "done", "context_id": "e", "audio_ms": 0, "chars": 0, "sentences": 0}
    assert engine.calls == []


async def test_metrics_record_stream_ttfa_and_connections(tmp_path):
    with serving(tmp_path) as (ctx, url, http):
        async with opened(url) as c:
            await c.send(type="text", context_id="m", text="Measure me.", end=True)
            await c.until(is_type("done"))
            body = httpx.get(http + "/metrics").text
            assert 'rtts_active_connections{endpoint="stream"} 1.0' in body
        await asyncio.sleep(0)
        for _ in range(200):
            body = httpx.get(http + "/metrics").text
            if 'rtts_active_connections{endpoint="stream"} 0.0' in body:
                break
            await asyncio.sleep(0.02)
        assert 'rtts_active_connections{endpoint="stream"} 0.0' in body
        assert 'rtts_time_to_first_audio_seconds_count{endpoint="stream"} 1.0' in body


async def test_twenty_concurrent_clients_each_get_their_own_audio(tmp_path):
    engine = ToneEngine()
    with serving(tmp_path, engine) as (ctx, url, _):
        async def client(i: int):
            speed = 0.5 + 0.075 * i  # distinct pitch per client: 220 Hz * speed
            texts = [f"Client {i} says hello.", f"Number {i} is done now."]
            async with opened(url) as c:
                await c.send(type="text", context_id=f"c{i}", text=texts[0] + " Num", speed=speed)
                await asyncio.sleep(0.01 * (i % 3))
                await c.send(type="text", context_id=f"c{i}", text=texts[1][3:], end=True)
                items = await c.until(is_type("done"), timeout=120)
            return i, speed, texts, items

        results = await asyncio.gather(*(client(i) for i in range(20)))
        assert ctx.executor.queue_depth == 0
    assert len(engine.calls) == 40
    for i, speed, texts, items in results:
        assert [e["text"] for e in events(items, "sentence_start")] == texts
        assert {e["context_id"] for e in events(items) if "context_id" in e} == {f"c{i}"}
        assert not events(items, "error")
        fs = frames(items)
        assert [f[3] for f in fs] == list(range(len(fs)))
        assert abs(len(fs) * 0.02 - tone_seconds(texts)) <= 0.04
        pcm = pcm_of(fs)
        assert abs(dominant_hz(pcm, 24000) - 220.0 * speed) < 4, (i, speed)
