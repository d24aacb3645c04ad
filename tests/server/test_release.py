"""Resources a connection opens are released when it ends: speech streams, encoders (and no
native threads per encoder), tasks; a device that stops reading is dropped; the issue's
malformed inputs end-to-end; whole-file bulk priority; HTTP encoding off the event loop."""

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from agent_stream_helpers import is_type, opened  # noqa: E402
from http_helpers import ToneEngine, client_for, live_server, make_ctx  # noqa: E402
from xiaozhi_helpers import device  # noqa: E402

from realtime_tts.audio import stream as audio_stream  # noqa: E402
from realtime_tts.engine.base import SynthesisOptions  # noqa: E402
from realtime_tts.engine.executor import BULK, REALTIME  # noqa: E402
from realtime_tts.server.auth import PRINCIPAL_SCOPE_KEY, Principal  # noqa: E402
from realtime_tts.server.xiaozhi import XiaozhiSession  # noqa: E402


def metric(ctx, name: str, **labels) -> float:
    value = ctx.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


async def until(condition, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


async def server_tasks(base: str) -> float:
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("rtts_live_tasks "))
    return float(line.split()[1])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts native threads through /proc")
async def test_every_endpoint_releases_what_it_opened(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine(), codec_threads=2, silence_ms=100)
    with live_server(ctx) as base:
        ws_base = base.replace("http://", "ws://")
        async with opened(ws_base + "/v1/tts/stream") as c:  # warm-up: the codec pool's threads start
            await c.send(type="text", context_id="w", text="Warm up.", end=True)
            await c.until(is_type("done"))
        await until(lambda: metric(ctx, "rtts_live_speech_streams") == 0)
        tasks_before, threads_before = await server_tasks(base), threads()

        # Eight agent sockets, each with a live Opus encoder (a context still open), at once:
        # FFmpeg creates no threads per encoder, so the process gains none.
        clients = [opened(ws_base + "/v1/tts/stream") for _ in range(8)]
        sockets = [await c.__aenter__() for c in clients]
        for i, c in enumerate(sockets):
            await c.send(type="config", output={"encoding": "opus", "sample_rate": 48000})
            await c.until(is_type("ready"))
            await c.send(type="text", context_id=f"c{i}", text="Still talking. And")
            await c.until(lambda m: isinstance(m, bytes))
        assert metric(ctx, "rtts_live_encoders") == 8 and metric(ctx, "rtts_live_speech_streams") == 8
        assert threads() <= threads_before
        for socket_, c in zip(sockets, clients):
            socket_.ws.transport.abort()  # gone without a close frame (it stopped reading anyway)
            await c.__aexit__(None, None, None)

        # A device with a played turn and an aborted one, then gone without a close frame.
        dev = device(ws_base + "/xiaozhi/v1/")
        await dev.connect()
        await dev.speak("One turn.")
        await dev.next_turn(20)
        await dev.speak(" ".join(["A long turn that is cut."] * 8))
        await dev.wait_for(lambda m: m.get("state") == "sentence_start", 10, since=len(dev.messages))
        await dev.abort()
        await dev.speak("Queued and dropped.")
        dev.ws.transport.abort()
        await dev.close()

        # HTTP: a finished mp3, a whole-file wav and a streamed body the client hangs up on.
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.post("/v1/audio/speech", json={"input": "Mp3 please."})).status_code == 200
            r = await http.post("/v1/audio/speech", json={"input": "Whole. File.", "response_format": "wav",
                                                          "stream": False})
            assert r.status_code == 200
            async with http.stream("POST", "/v1/audio/speech", json={"input": "Cut short. " * 6,
                                                                     "response_format": "opus"}) as resp:
                await resp.aiter_bytes().__anext__()

        await until(lambda: not ctx.devices and all(
            metric(ctx, "rtts_active_connections", endpoint=e) == 0 for e in ("stream", "xiaozhi", "openai")))
        await until(lambda: metric(ctx, "rtts_live_speech_streams") == 0 and metric(ctx, "rtts_live_encoders") == 0)
        assert ctx.executor.queue_depth == 0
        await until(lambda: threads() <= threads_before)
        for _ in range(100):  # tasks a connection started are gone with it
            if await server_tasks(base) <= tasks_before:
                break
            await asyncio.sleep(0.05)
        assert await server_tasks(base) <= tasks_before


class StalledSocket:
    """A WebSocket whose client stops reading once the device's turn has started: every send
    after that waits forever, as it does when the client's buffers are full."""

    def __init__(self) -> None:
        self.headers = {"device-id": "deaf", "protocol-version": "1"}
        self.query_params: dict = {}
        self.scope = {PRINCIPAL_SCOPE_KEY: Principal("default")}  # as the auth middleware leaves it
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None
        self.stalled = False

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send(self, message: dict) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        self.sent.append(message)
        if '"state": "start"' in (message.get("text") or ""):
            self.stalled = True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


async def test_a_device_that_stops_reading_is_dropped_and_its_turn_cancelled(tmp_path):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path, engine, write_timeout_s=0.2, silence_ms=100)
    ctx.ready.set()
    await ctx.executor.start()
    try:
        ws = StalledSocket()
        session = XiaozhiSession(ctx, ws)
        run = asyncio.create_task(session.run())
        for message in ({"type": "hello", "version": 1}, {"type": "listen", "state": "start"},
                        {"type": "speak", "text": " ".join(f"Sentence {i} is long enough." for i in range(12))}):
            await ws.incoming.put({"type": "websocket.receive", "text": json.dumps(message)})
        await asyncio.wait_for(run, 30)  # the session ends by itself: the device never answers
        assert ws.closed == (1008, "write timeout: nothing was read for 0.2 s")
        assert ctx.devices == {} and metric(ctx, "rtts_write_timeouts_total", endpoint="xiaozhi") == 1
        assert metric(ctx, "rtts_live_speech_streams") == 0 and metric(ctx, "rtts_live_encoders") == 0
        await ctx.executor.submit("Probe.", SynthesisOptions(), owner="probe").result()
        assert len(engine.calls) <= 1 + 4 + 1  # the first sentence, the window, the probe: not all 12
    finally:
        await ctx.executor.close()
        ctx.codec.shutdown()


DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5000


async def test_the_issues_malformed_inputs_get_clear_answers(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine())
    with live_server(ctx) as base:
        ws_base = base.replace("http://", "ws://")
        async with opened(ws_base + "/v1/tts/stream") as c:
            for frame, code in ((DEEP, "json_too_deep"), ('{"type": "text", "context_id": "x", "text": "a", '
                                                          '"speed": ' + HUGE + "}", "number_too_long"),
                                ('{"type": []}', "unknown_type"),
                                ('{"type": "text", "context_id": "\\ud800", "text": "hi"}', "invalid_string")):
                await c.send_raw(frame)
                await c.expect_error(code)
            await c.send(type="text", context_id="ok", text="Still fine.", end=True)
            await c.until(is_type("done", "ok"))
        async with device(ws_base + "/xiaozhi/v1/", device_id="odd") as dev:
            for frame, code in ((DEEP, "json_too_deep"), ('{"type": "listen", "state": "\\ud800"}', "invalid_string"),
                                ('{"type": "speak", "text": "hi", "speed": ' + HUGE + "}", "number_too_long")):
                since = len(dev.messages)
                await dev.send_raw(frame)
                error = await dev.wait_for(lambda m: m.get("type") == "error", 10, since=since)
                assert error["code"] == code
            async with httpx.AsyncClient(base_url=base) as http:
                listed = await http.get("/v1/xiaozhi/devices")
                assert listed.status_code == 200 and listed.json()["data"][0]["device_id"] == "odd"
            await dev.speak("Still here.")
            assert (await dev.next_turn(20)).sentences == ["Still here."]
        async with connect(ws_base + "/xiaozhi/v1/") as ws:  # before the hello: a close with a reason
            await ws.send('{"type": "hello", "features": {"x": "\\ud800"}}')
            with pytest.raises(Exception):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008 and "surrogate" in ws.close_reason


def test_long_whole_files_run_as_bulk_and_everything_else_realtime(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine(), bulk_min_chars=30)
    seen = []
    real_submit = ctx.executor.submit

    def submit(text, options, *, owner, priority=REALTIME):
        seen.append((owner.split("-")[0], priority))
        return real_submit(text, options, owner=owner, priority=priority)

    ctx.executor.submit = submit
    long_text = "A long text to render. It goes on and on."
    with client_for(ctx) as client:
        def priorities(path, **body):
            seen.clear()
            assert client.post(path, json=body).status_code == 200
            return {p for _, p in seen}

        assert priorities("/v1/audio/speech", input=long_text, response_format="wav", stream=False) == {BULK}
        assert priorities("/tts_url", text=long_text) == {BULK}
        assert priorities("/v1/audio/speech", input="Short. File.", response_format="wav", stream=False) == {REALTIME}
        assert priorities("/v1/audio/speech", input=long_text, response_format="pcm") == {REALTIME}
        assert priorities("/tts", text=long_text) == {REALTIME}


def test_http_encoding_runs_on_the_codec_pool(tmp_path, monkeypatch):
    names = set()
    original = audio_stream.ContainerEncoder.segment

    def segment(self, pcm):
        names.add(threading.current_thread().name)
        return original(self, pcm)

    monkeypatch.setattr(audio_stream.ContainerEncoder, "segment", segment)
    with client_for(make_ctx(tmp_path, ToneEngine())) as client:
        for fmt in ("mp3", "opus", "flac"):
            r = client.post("/v1/audio/speech", json={"input": "Encode me. Off the loop.", "response_format": fmt})
            assert r.status_code == 200 and r.content
    assert names and all(name.startswith("codec") for name in names), names
