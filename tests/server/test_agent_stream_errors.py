"""/v1/tts/stream when things go wrong: every bad input gets an ``error`` (code, message,
context_id) and the socket stays usable; cancel (one context, all, mid-playback, while the
engine is busy); closing the socket, server shutdown, engine failures, a full executor,
idle timeout and API keys. Cleanup is checked on the executor (nothing left queued)."""

import asyncio
import json
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).parent))
from agent_stream_helpers import (ToneEngine, events, frames, is_type, opened, serving,  # noqa: E402
                                  wait_for)


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
def server(tmp_path, engine):
    with serving(tmp_path, engine, max_text_chars=200) as (ctx, url, _):
        yield ctx, url


async def still_works(c, cid: str = "probe") -> None:
    await c.send(type="text", context_id=cid, text="Still working.", end=True)
    items = await c.until(is_type("done", cid))
    assert frames(items) and not events(items, "error")


BAD_MESSAGES = [
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "invalid_json"),
    ('"text"', "invalid_json"),
    ({"context_id": "x", "text": "hi"}, "unknown_type"),
    ({"type": "speak", "text": "hi"}, "unknown_type"),
    ({"type": "text", "text": "no context"}, "invalid_field"),
    ({"type": "text", "context_id": "", "text": "empty id"}, "invalid_field"),
    ({"type": "text", "context_id": 7, "text": "number id"}, "invalid_field"),
    ({"type": "text", "context_id": "x" * 200, "text": "long id"}, "invalid_field"),
    ({"type": "text", "context_id": "x", "text": 42}, "invalid_field"),
    ({"type": "text", "context_id": "x", "text": "hi", "end": "yes"}, "invalid_field"),
    ({"type": "text", "context_id": "x", "text": "y" * 201}, "text_too_long"),
    ({"type": "text", "context_id": "x", "text": "hi", "voice": "nobody"}, "voice_not_found"),
    ({"type": "text", "context_id": "x", "text": "hi", "speed": "fast"}, "invalid_value"),
    ({"type": "text", "context_id": "x", "text": "hi", "emotion": {"label": "grumpy"}}, "invalid_value"),
    ({"type": "flush", "context_id": "never"}, "unknown_context"),
    ({"type": "end", "context_id": "never"}, "unknown_context"),
    ({"type": "cancel", "context_id": "never"}, "unknown_context"),
    ({"type": "flush"}, "invalid_field"),
    ({"type": "config", "output": {"encoding": "mp3"}}, "unsupported_encoding"),
    ({"type": "config", "output": {"encoding": "ogg_opus"}}, "unsupported_encoding"),
    ({"type": "config", "output": {"encoding": "pcm_s16le", "sample_rate": 12345}}, "unsupported_sample_rate"),
    ({"type": "config", "output": {"encoding": "opus", "sample_rate": 44100}}, "unsupported_sample_rate"),
    ({"type": "config", "output": {"sample_rate": "24000"}}, "unsupported_sample_rate"),
    ({"type": "config", "output": {"frame_ms": 25}}, "invalid_field"),
    ({"type": "config", "output": "pcm"}, "invalid_field"),
    ({"type": "config", "audio_transport": "carrier-pigeon"}, "invalid_field"),
    ({"type": "config", "max_buffer_delay_ms": -5}, "invalid_field"),
    ({"type": "config", "sentence_timestamps": "yes"}, "invalid_field"),
    ({"type": "config", "voice": {"nothing": 1}}, "invalid_value"),
    (b"\x01\x00\x00\x00binary from the client", "binary_not_supported"),
]


@pytest.mark.parametrize("message,code", BAD_MESSAGES, ids=[c + str(i) for i, (_, c) in enumerate(BAD_MESSAGES)])
async def test_bad_input_gets_an_error_and_the_socket_lives(server, message, code):
    ctx, url = server
    async with opened(url) as c:
        if isinstance(message, dict):
            await c.send(**message)
        else:
            await c.send_raw(message)
        err = await c.expect_error(code)
        assert set(err) <= {"type", "code", "message", "context_id", "param", "index"}
        if isinstance(message, dict) and isinstance(message.get("context_id"), str) and message["context_id"]:
            if len(message["context_id"]) <= 128:
                assert err["context_id"] == message["context_id"]
        await still_works(c)
        if isinstance(message, dict) and message.get("type") == "config":
            await c.send(type="config")  # the failed config changed nothing
            assert (await c.until(is_type("ready")))[-1]["output"] == c.ready["output"]
    assert ctx.executor.queue_depth == 0


async def test_text_limit_is_per_context(server):
    ctx, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="t", text="a" * 150)
        await c.send(type="text", context_id="t", text="b" * 60)  # 210 > 200: dropped
        err = await c.expect_error("text_too_long")
        assert err["context_id"] == "t"
        await c.send(type="text", context_id="t", text=" fits.", end=True)
        done = (await c.until(is_type("done", "t")))[-1]
        assert done["chars"] == 156
        await c.send(type="text", context_id="u", text="c" * 150 + ".", end=True)  # a new context, a new budget
        await c.until(is_type("done", "u"))


async def test_text_flush_and_end_after_end_are_refused(server):
    _, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="t", text="Ending now.", end=True)
        seen = []
        for msg in ({"type": "text", "context_id": "t", "text": "late"}, {"type": "flush", "context_id": "t"},
                    {"type": "end", "context_id": "t"}):
            await c.send(**msg)
            seen += await c.until(is_type("error"))
            assert seen[-1]["code"] == "context_ended" and seen[-1]["context_id"] == "t"
        if not events(seen, "done"):
            await c.until(is_type("done", "t"))
        await c.send(type="text", context_id="t", text="Reusing a finished id.")
        assert "finished" in (await c.expect_error("context_ended"))["message"]
        await c.send(type="cancel", context_id="t")  # cancelling a finished context: acknowledged, harmless
        assert (await c.until(is_type("cancelled")))[-1] == {"type": "cancelled", "context_id": "t"}
        await still_works(c)


async def test_config_is_locked_while_a_context_is_open(server):
    _, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="open", text="Still open")
        await c.send(type="config", output={"encoding": "opus"})
        await c.expect_error("config_locked")
        await c.send(type="end", context_id="open")
        await c.until(is_type("done"))
        await c.send(type="config", output={"encoding": "opus"})
        assert (await c.until(is_type("ready")))[-1]["output"]["encoding"] == "opus"


async def test_cancel_while_the_engine_is_busy(server, engine):
    ctx, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="t", text="Hello there. BLOCK on this one. Never said.")
        first = await c.until(lambda m: isinstance(m, bytes))  # the first sentence is already playing
        slot = events(first, "context_started")[0]["slot"]
        await asyncio.to_thread(engine.blocked.wait, 20)
        await c.send(type="cancel", context_id="t")
        items = await c.until(is_type("cancelled"))
        assert items[-1] == {"type": "cancelled", "context_id": "t"}
        assert not events(items, "done") and not events(items, "error")
        # The socket stays usable, and nothing more of "t" arrives.
        await c.send(type="text", context_id="next", text="After the cancel.", end=True)
        later = await c.until(is_type("done", "next"))
        assert not frames(later, slot) and not [e for e in events(later) if e.get("context_id") == "t"]
        assert [e["text"] for e in events(later, "sentence_start")] == ["After the cancel."]
        await c.send(type="text", context_id="t", text="more")
        await c.expect_error("context_ended")
    texts = [t for t, _ in engine.calls]
    assert "Never said." not in texts and texts[-1] == "After the cancel."
    assert ctx.executor.queue_depth == 0


async def test_cancel_a_queued_context_and_cancel_all(server, engine):
    ctx, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="a", text="BLOCK the first context.")
        await c.send(type="text", context_id="b", text="Queued behind it.", end=True)
        await asyncio.to_thread(engine.blocked.wait, 20)
        await c.send(type="cancel", context_id="b")
        assert (await c.until(is_type("cancelled")))[-1]["context_id"] == "b"
        await c.send(type="cancel")  # no context_id: everything
        items = await c.until(is_type("cancelled"))
        assert items[-1] == {"type": "cancelled", "context_id": "a"}
        await c.send(type="cancel")  # nothing left: still acknowledged
        assert (await c.until(is_type("cancelled")))[-1] == {"type": "cancelled", "context_id": None}
        await still_works(c)
    assert ctx.executor.queue_depth == 0


async def test_closing_the_socket_cancels_its_work(server, engine):
    ctx, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="t", text="BLOCK here. Two. Three. Four. Five.")
        await asyncio.to_thread(engine.blocked.wait, 20)
        assert ctx.executor.queue_depth > 0
    await wait_for(lambda: ctx.executor.queue_depth == 0)
    async with opened(url) as c:  # the engine worker is free again
        await still_works(c)
    assert [t for t, _ in engine.calls] == ["BLOCK here.", "Still working."]


async def test_engine_failure_fails_only_that_context(server, engine):
    ctx, url = server
    async with opened(url) as c:
        await c.send(type="text", context_id="bad", text="Good start. This will FAIL now. Never reached.", end=True)
        items = await c.until(is_type("error"))
        err = items[-1]
        assert err["code"] == "synthesis_failed" and err["context_id"] == "bad" and err["index"] == 1
        assert [e["text"] for e in events(items, "sentence_start")] == ["Good start."]
        await still_works(c)
        await c.send(type="flush", context_id="bad")
        await c.expect_error("context_ended")
    assert ctx.executor.queue_depth == 0


async def test_full_executor_answers_busy(tmp_path):
    engine = ToneEngine()
    with serving(tmp_path, engine, max_queue=1) as (ctx, url, _):
        async with opened(url) as c:
            await c.send(type="text", context_id="big", text="BLOCK one. Two. Three. Four.", end=True)
            err = await c.expect_error("server_busy")
            assert err["context_id"] == "big"
            await c.send(type="text", context_id="big", text="more")
            await c.expect_error("context_ended")
            await still_works(c)
        await wait_for(lambda: ctx.executor.queue_depth == 0)


async def test_idle_socket_is_closed(tmp_path):
    with serving(tmp_path, stream_idle_timeout_s=0.3) as (ctx, url, _):
        async with opened(url) as c:
            await c.expect_error("idle_timeout", timeout=20)
            with pytest.raises(ConnectionClosed) as info:
                await c.recv(timeout=20)
            assert info.value.rcvd.code == 1000 and "idle" in info.value.rcvd.reason
        async with opened(url) as c:  # a context left open, waiting for text, is idle too
            await c.send(type="text", context_id="t", text="An agent that never finishes")
            await c.expect_error("idle_timeout", timeout=20)
            with pytest.raises(ConnectionClosed):
                while True:
                    await c.recv(timeout=20)
        await wait_for(lambda: ctx.executor.queue_depth == 0)


async def test_keepalive_is_accepted_silently(server):
    _, url = server
    async with opened(url) as c:
        await c.send(type="keepalive")
        await still_works(c)  # the next thing received is the probe's, not an error


async def test_api_key_required_on_the_socket(tmp_path):
    with serving(tmp_path, api_keys=["sekret"]) as (ctx, url, _):
        with pytest.raises(InvalidStatus) as info:
            async with opened(url):
                pass
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            async with opened(url + "?api_key=wrong"):
                pass
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
        async with opened(url + "?api_key=sekret") as c:
            await still_works(c)
        async with opened(url, additional_headers={"Authorization": "Bearer sekret"}) as c:
            await still_works(c)


async def test_server_shutdown_closes_sockets_and_cancels_work(tmp_path):
    engine = ToneEngine()
    with serving(tmp_path, engine) as (ctx, url, _):
        c_cm = opened(url)
        c = await c_cm.__aenter__()
        await c.send(type="text", context_id="t", text="BLOCK forever. And more.")
        await asyncio.to_thread(engine.blocked.wait, 20)
        # Leaving the block shuts uvicorn down with the socket still open.
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await c.recv(timeout=20)
    assert info.value.rcvd.code in (1001, 1012)  # ours, or uvicorn's "service restart"
    await c_cm.__aexit__(None, None, None)
    assert ctx.executor.queue_depth == 0
