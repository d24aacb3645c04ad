"""Readiness, the load gauge and graceful drain (server/lifecycle.py), without Ray.

The drain is tested three ways: the Lifecycle alone (which sockets close when), a live
server on the ToneEngine whose SIGTERM handler is called (devices and agent streams over
real sockets), and a real SIGTERM to a `realtime-tts serve --engine espeak` process.
"""

import asyncio
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import ToneEngine, draining_server, free_port, make_ctx, serve_process, wait_ready  # noqa: E402

from clients.agent_client import AgentStream  # noqa: E402
from clients.device_simulator import DeviceSimulator  # noqa: E402
from realtime_tts.server.lifecycle import (  # noqa: E402
    GOING_AWAY_REASON, REFUSED_REASON, Lifecycle, stream_of,
)

FAST = {"silence_ms": 200, "xiaozhi_prebuffer_packets": 2, "xiaozhi_max_lead_ms": 400}


# --- the Lifecycle alone -------------------------------------------------------------------

def test_states_load_and_automatic_capacity(tmp_path):
    warm = {"done": False}
    life = Lifecycle(capacity=4, drain_timeout_s=1, replica_id="r1", warm=lambda: warm["done"])
    assert (life.state, life.ready) == ("starting", False)
    warm["done"] = True
    assert (life.state, life.ready) == ("ready", True)
    streams = [life.open("websocket", "/xiaozhi/v1/") for _ in range(3)]
    assert life.load == 0.75 and life.snapshot() == {"status": "ready", "ready": True, "replica": "r1",
                                                     "streams": 3, "capacity": 4, "load": 0.75}
    life.close(streams[0])
    assert life.load == 0.5

    ctx = make_ctx(tmp_path, ToneEngine(), replica_id="", port=8123)
    auto = Lifecycle.for_context(ctx)
    assert auto.capacity == 8 and auto.replica_id.endswith(":8123")  # 8 per batch slot; HOSTNAME:PORT
    ctx = make_ctx(tmp_path, ToneEngine(), max_streams=3, replica_id="gpu-0")
    assert (Lifecycle.for_context(ctx).capacity, Lifecycle.for_context(ctx).replica_id) == (3, "gpu-0")


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_drain_waits_for_utterances_in_flight_and_closes_the_rest_at_the_deadline():
    now = [0.0]  # the lifecycle's clock (the deadline), moved by hand
    life = Lifecycle(capacity=8, drain_timeout_s=0.8, replica_id="r", clock=lambda: now[0])
    closed: dict[str, float] = {}

    def socket_stream(name):
        stream = life.open("websocket", "/v1/tts/stream")

        async def closer():
            closed[name] = now[0]
            life.close(stream)
        stream.closer = closer
        return stream

    idle, busy, stuck = socket_stream("idle"), socket_stream("busy"), socket_stream("stuck")
    http = life.open("http", "/v1/audio/speech")  # finishes by itself
    end_busy = busy.begin_utterance()
    with stuck.speaking():
        assert not busy.draining
        task = life.start_drain("test")
        assert life.start_drain("again") is task and life.drain_reason == "test"  # idempotent
        assert life.draining and not life.ready and life.state == "draining" and busy.draining
        await until(lambda: "idle" in closed)  # nothing in flight: closed at once
        await asyncio.sleep(0.3)  # a few drain passes: however quiet, an utterance in flight is waited for
        assert set(closed) == {"idle"}
        now[0] = 0.5
        end_busy()
        end_busy()  # ending twice counts once
        await until(lambda: "busy" in closed, timeout=0.5)  # the moment its utterance ends
        assert busy.utterances == 0 and stuck.utterances == 1 and not task.done()
        now[0] = 0.8  # the deadline closes what is left
        await asyncio.wait_for(task, 5)
    assert closed == {"idle": 0.0, "busy": 0.5, "stuck": 0.8}
    assert life.drained.is_set() and life.streams == {http}
    detached = stream_of({"path": "/x"})  # a session run without the middleware: never draining
    with detached.speaking():
        assert not detached.draining and detached.utterances == 1


# --- a live server: what clients see -----------------------------------------------------------

async def test_drain_refuses_new_work_and_lets_a_turn_finish(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine(), replica_id="replica-a", drain_timeout_s=10, **FAST)
    with draining_server(ctx) as (base, server):
        ws = base.replace("http://", "ws://")
        async with httpx.AsyncClient(base_url=base) as http:
            ready = await http.get("/ready")
            assert ready.status_code == 200 and ready.headers["x-replica-id"] == "replica-a"
            assert ready.json()["status"] == "ready" and ready.json()["streams"] == 0
            assert (await http.get("/health")).headers["x-replica-id"] == "replica-a"

            agent = await AgentStream.connect(ws + "/v1/tts/stream")
            assert agent.ws.response.headers["x-replica-id"] == "replica-a"
            dev = DeviceSimulator(ws + "/xiaozhi/v1/", warn=lambda m: None)
            await dev.connect()
            assert (await http.get("/ready")).json()["streams"] == 2
            text = "One two three four five. Six seven eight nine ten."  # ~2.5 s of paced audio
            await dev.speak(text)
            await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "start")

            t0 = time.monotonic()
            server.handle_exit(signal.SIGTERM, None)  # what SIGTERM does
            await asyncio.sleep(0.1)
            draining = await http.get("/ready")
            assert draining.status_code == 503 and draining.json()["status"] == "draining"
            assert (await http.get("/health")).status_code == 200  # alive
            refused = await http.post("/v1/audio/speech", json={"input": "hi", "voice": "x"})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "server_draining"
            assert (await http.get("/v1/audio/voices")).status_code == 200  # other routes still answer
            async with websockets.connect(ws + "/v1/tts/stream") as late:
                with pytest.raises(websockets.ConnectionClosed):
                    await late.recv()
                assert (late.close_code, late.close_reason) == (1013, REFUSED_REASON)

            # The idle agent socket goes at once; the device's turn plays to its end.
            with pytest.raises(websockets.ConnectionClosed):
                await agent.recv(timeout=3)
            assert (agent.ws.close_code, agent.ws.close_reason) == (1001, GOING_AWAY_REASON)
            assert time.monotonic() - t0 < 0.8
            turn = await dev.next_turn(timeout=10)
            assert len(turn.packets) * 0.06 > 2.0 and turn.stopped_at is not None
            assert await dev.wait_closed(5) == (1001, GOING_AWAY_REASON)
        server.thread.join(10)
        assert not server.thread.is_alive()  # drained, then the server exited


async def test_drain_deadline_cuts_a_long_turn_with_1001(tmp_path):
    ctx = make_ctx(tmp_path, ToneEngine(), drain_timeout_s=1.0, **FAST)
    with draining_server(ctx) as (base, server):
        dev = DeviceSimulator(base.replace("http://", "ws://") + "/xiaozhi/v1/", warn=lambda m: None)
        await dev.connect()
        await dev.speak("A long turn. " * 12)  # ~8 s of paced audio
        await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "start")
        t0 = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        assert await dev.wait_closed(5) == (1001, GOING_AWAY_REASON)
        assert 0.9 < time.monotonic() - t0 < 2.5
        assert dev.turns and dev.turns[0].stopped_at is None  # cut mid-turn, with a clean close frame


class SlowEngine(ToneEngine):
    """Text with SLOW takes 1.5 s to synthesize: longer in the making than any rule of quiet."""

    def synthesize(self, text, options, cancel):
        if "SLOW" in text:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                cancel.raise_if_cancelled()
                time.sleep(0.01)
        return super().synthesize(text, options, cancel)


async def read_until_closed(agent: AgentStream, timeout: float = 20) -> list:
    events = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            events.append(await agent.recv(timeout=timeout))
    return events


async def test_drain_waits_for_every_utterance_in_flight_and_refuses_new_ones(tmp_path):
    ctx = make_ctx(tmp_path, SlowEngine(), drain_timeout_s=15, **FAST)
    with draining_server(ctx) as (base, server):
        ws = base.replace("http://", "ws://")
        dev = DeviceSimulator(ws + "/xiaozhi/v1/", warn=lambda m: None)
        idle_dev = DeviceSimulator(ws + "/xiaozhi/v1/", warn=lambda m: None)
        await dev.connect()
        await idle_dev.connect()
        agent = await AgentStream.connect(ws + "/v1/tts/stream")
        await dev.speak("SLOW first sentence. A second one.")
        await agent.text("c1", "SLOW hello there. Goodbye now.", end=True)
        await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "start")
        assert (await agent.recv(timeout=5))["type"] == "context_started"

        t0 = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        # Nothing in flight: closed at once.
        assert await idle_dev.wait_closed(1.0) == (1001, GOING_AWAY_REASON)
        # New utterances are refused while the ones in flight go on.
        async with httpx.AsyncClient(base_url=base) as http:
            late = await http.post(f"/v1/xiaozhi/devices/{dev.device_id}/speak", json={"text": "Late."})
        assert late.status_code == 503 and late.json()["error"]["code"] == "server_draining"
        await dev.speak("In-band, late.")
        assert (await dev.wait_for(lambda m: m.get("type") == "error"))["code"] == "server_draining"
        await agent.text("c2", "Too late.", end=True)

        # No frame for 1.5 s while the first sentences are made: waited for all the same.
        events = await read_until_closed(agent)
        assert (agent.ws.close_code, agent.ws.close_reason) == (1001, GOING_AWAY_REASON)
        kinds = [(e.get("type"), e.get("context_id")) for e in events if isinstance(e, dict)]
        assert ("error", "c2") in kinds and ("done", "c1") in kinds
        done = next(e for e in events if isinstance(e, dict) and e.get("type") == "done")
        frames = [e for e in events if not isinstance(e, dict) and e.context_id == "c1"]
        frame_ms = agent.ready["output"]["frame_ms"]
        assert done["sentences"] == 2 and len(frames) * frame_ms == done["audio_ms"] > 0  # every frame, then done
        turn = await dev.next_turn(timeout=10)
        assert turn.sentences == ["SLOW first sentence.", "A second one."] and turn.stopped_at is not None
        assert await dev.wait_closed(5) == (1001, GOING_AWAY_REASON)
        assert time.monotonic() - t0 > 1.5
        assert not [e for e in events if not isinstance(e, dict) and e.context_id != "c1"]  # nothing of c2
        assert len(engine_texts := [t for t, _ in ctx.engine.calls]) == 4 and "Late." not in engine_texts
        await agent.close()
        await dev.close()
        await idle_dev.close()
        server.thread.join(10)
        assert not server.thread.is_alive()


# --- a real SIGTERM to `realtime-tts serve` -----------------------------------------------------

@pytest.mark.slow
async def test_sigterm_drains_the_serve_process(tmp_path):
    port = free_port()
    proc = serve_process(port, "--data-dir", str(tmp_path / "data"), "--drain-timeout-s", "5",
                         "--replica-id", "proc-1")
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", proc)
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/tts/stream") as idle:
            assert idle.response.headers["x-replica-id"] == "proc-1"
            await idle.recv()  # ready
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(idle.recv(), 5)
            assert (idle.close_code, idle.close_reason) == (1001, GOING_AWAY_REASON)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
