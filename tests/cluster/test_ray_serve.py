"""Ray Serve in front of the server (server/ray_serve.py): a local Ray cluster, espeak replicas on CPUs.

Ray's CPU counts are logical, so three replicas fit the 2-core CI box. One Ray + Serve
instance serves the whole module (about 15 s to start); the tests run in file order: routing
and streams on a 3-replica app, then its deletion while clients are connected (the drain),
then a separate autoscaling app scaled 1 -> 3 -> 1 by open streams.
"""

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import ROOT, free_port  # noqa: E402
from http_helpers import tone_wav  # noqa: E402

from clients.agent_client import AgentStream, AudioFrame  # noqa: E402
from clients.device_simulator import DeviceSimulator  # noqa: E402
from realtime_tts.config import Settings  # noqa: E402
from realtime_tts.server.lifecycle import GOING_AWAY_REASON  # noqa: E402
from realtime_tts.server.voices import VoiceLibrary  # noqa: E402

ray = pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
serve = pytest.importorskip("ray.serve")
from realtime_tts.cli import replica_context  # noqa: E402
from realtime_tts.server.ray_serve import ClusterOptions, build_application  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
VOICES = [f"voice{i}" for i in range(8)]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster and Serve's proxy on a free port; yields the proxy's base URL."""
    temp = tempfile.mkdtemp(prefix="rtts-ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
           "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the local raylet and every worker inherit it
    port = free_port()
    try:
        ray.init(num_cpus=8, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": None})
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        shutil.rmtree(temp, ignore_errors=True)


def settings_for(tmp: Path, **overrides) -> Settings:
    return Settings(engine="espeak", data_dir=tmp, silence_ms=200, xiaozhi_prebuffer_packets=2, **overrides)


@pytest.fixture(scope="module")
def affinity_app(cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    library = VoiceLibrary(data)
    for i, voice in enumerate(VOICES):  # the replicas share the data directory
        library.add(tone_wav(1.0, freq=150.0 + 20 * i), voice_id=voice)
    settings = settings_for(data, max_streams=4, warm_voices=2, drain_timeout_s=5)
    app = build_application(settings, ClusterOptions(min_replicas=3, max_replicas=3, cpus_per_replica=0.5,
                                                      name="affinity"), replica_context)
    serve.run(app, name="affinity", route_prefix="/")
    yield cluster
    with contextlib.suppress(Exception):
        serve.delete("affinity")


def post_speech(client: httpx.Client, voice: str, **extra) -> httpx.Response:
    body = {"model": "tts-1", "input": "Hello there.", "voice": voice, "response_format": "pcm", **extra}
    return client.post("/v1/audio/speech", json=body, headers={"X-Voice-Id": voice}, timeout=30)


def test_a_voice_lands_on_one_replica(affinity_app):
    with httpx.Client(base_url=affinity_app) as client:
        placed: dict[str, set[str]] = {}
        for _ in range(3):
            for voice in VOICES:
                resp = post_speech(client, voice)
                assert resp.status_code == 200 and len(resp.content) > 1000, resp.text[:200]
                placed.setdefault(voice, set()).add(resp.headers["x-replica-id"])
    assert all(len(replicas) == 1 for replicas in placed.values()), str(placed)  # deterministic, not best-effort
    assert len(set().union(*placed.values())) >= 2  # and the voices spread over the replicas


async def test_sockets_follow_their_voice_and_device(affinity_app):
    ws = affinity_app.replace("http://", "ws://")
    with httpx.Client(base_url=affinity_app) as client:
        home = post_speech(client, "voice3").headers["x-replica-id"]
    for _ in range(2):
        agent = await AgentStream.connect(ws + "/v1/tts/stream?voice=voice3")
        assert agent.ws.response.headers["x-replica-id"] == home
        await agent.close()
    seen = set()
    for _ in range(2):
        async with DeviceSimulator(ws + "/xiaozhi/v1/", device_id="esp32:aa:bb", warn=lambda m: None) as dev:
            seen.add(dev.ws.response.headers["x-replica-id"])
            async with httpx.AsyncClient(base_url=affinity_app) as http:  # the control API finds the device
                spoken = await http.post("/v1/xiaozhi/devices/esp32:aa:bb/speak", json={"text": "Hi there."},
                                         timeout=30)
            assert spoken.status_code == 202, spoken.text
            assert spoken.headers["x-replica-id"] in seen
            turn = await dev.next_turn(timeout=30)
            assert turn.packets
    assert len(seen) == 1


def test_each_replica_keeps_an_lru_of_warm_voices(affinity_app):
    def visit(client, voice):
        resp = client.get("/v1/models", headers={"X-Voice-Id": voice})
        return resp.headers["x-replica-id"], resp.headers["x-voice-cache"]

    with httpx.Client(base_url=affinity_app) as client:
        by_replica: dict[str, list[str]] = {}
        for i in range(200):  # three voice ids that hash to one replica
            voice = f"lru{i}"
            by_replica.setdefault(visit(client, voice)[0], []).append(voice)
            trio = next((v for v in by_replica.values() if len(v) == 3), None)
            if trio:
                break
        a, b, c = trio
        visit(client, a), visit(client, b)  # warm_voices=2: now exactly {a, b}, b the most recent
        pattern = [visit(client, voice)[1] for voice in (c, b, a, b, c)]
    # c pushes out a; b stays warm; a pushes out c; b still warm; c pushes out a.
    assert pattern == ["miss", "hit", "miss", "hit", "miss"]


async def test_streams_through_the_proxy_arrive_whole_and_in_order(affinity_app):
    ws = affinity_app.replace("http://", "ws://")
    text = "The first sentence is here. Then a second one follows. And a third ends it."
    async with await AgentStream.connect(ws + "/v1/tts/stream?voice=voice1") as agent:
        await agent.text("c1", text, end=True)
        seqs, events = [], []
        while True:
            event = await agent.recv(timeout=30)
            if isinstance(event, AudioFrame):
                seqs.append(event.seq)
            else:
                events.append(event["type"])
                if event["type"] in ("done", "error"):
                    break
    assert events[-1] == "done" and events.count("sentence_start") == 3 == events.count("sentence_end")
    assert seqs == list(range(len(seqs))) and len(seqs) > 20  # every frame, in order

    async with DeviceSimulator(ws + "/xiaozhi/v1/", warn=lambda m: None) as dev:
        await dev.speak(text)
        turn = await dev.next_turn(timeout=30)
    kinds = [kind for kind, _ in turn.events]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("sentence") == 3
    assert turn.packets and all(p.samples == 1440 for p in turn.packets) and dev.bad_frames == 0
    assert turn.duration_s > 2.0 and dev.dropped_packets == 0

    async with httpx.AsyncClient(base_url=affinity_app) as http:
        chunks = 0
        async with http.stream("POST", "/v1/audio/speech", json={"input": text, "voice": "voice1",
                               "response_format": "pcm"}, timeout=30) as resp:
            assert resp.status_code == 200
            async for _ in resp.aiter_raw():
                chunks += 1
        assert chunks >= 3  # one per sentence at least: streamed, not buffered
        sse = await http.post("/v1/audio/speech", json={"input": text, "voice": "voice1", "response_format": "pcm",
                                                        "stream_format": "sse"}, timeout=30)
        assert sse.status_code == 200 and sse.text.count("data: ") >= 3


async def test_deleting_the_app_drains_sockets_with_1001(affinity_app):
    ws = affinity_app.replace("http://", "ws://")
    idle = await AgentStream.connect(ws + "/v1/tts/stream?voice=voice2")
    talking = await AgentStream.connect(ws + "/v1/tts/stream?voice=voice2")
    await talking.text("c1", "A context the agent is still writing.")  # open: in flight until it ends
    dev = DeviceSimulator(ws + "/xiaozhi/v1/", warn=lambda m: None)
    await dev.connect()
    await dev.speak("One two three four five. Six seven eight nine ten.")
    await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "start", timeout=30)
    deleting = asyncio.create_task(asyncio.to_thread(serve.delete, "affinity"))
    with pytest.raises(websockets.ConnectionClosed):
        await idle.recv(timeout=20)
    assert (idle.ws.close_code, idle.ws.close_reason) == (1001, GOING_AWAY_REASON)  # not Ray's 1006
    assert await dev.wait_closed(20) == (1001, GOING_AWAY_REASON)
    assert dev.turns[0].stopped_at is not None  # its turn played to the end first
    # The open context was waited for: the agent can still end it, and a new one is refused.
    await talking.text("c2", "Too late.", end=True)
    await talking.end("c1")
    events = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            events.append(await talking.recv(timeout=20))
    kinds = [(e["type"], e.get("context_id")) for e in events if isinstance(e, dict)]
    assert ("done", "c1") in kinds and ("error", "c2") in kinds, kinds
    assert next(e for e in events if isinstance(e, dict) and e["type"] == "error")["code"] == "server_draining"
    assert (talking.ws.close_code, talking.ws.close_reason) == (1001, GOING_AWAY_REASON)
    await asyncio.wait_for(deleting, 60)


def running_replicas(app: str) -> int:
    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


async def test_autoscaling_on_the_stream_load_1_to_3_and_back(cluster, tmp_path):
    serve.delete("affinity")  # done by the drain test already, unless it was deselected
    settings = settings_for(tmp_path, max_streams=2)
    options = ClusterOptions(min_replicas=1, max_replicas=3, cpus_per_replica=0.5, target_load=0.5,
                             upscale_delay_s=0, downscale_delay_s=1, look_back_period_s=1.5, name="scaling")
    serve.run(build_application(settings, options, replica_context), name="scaling", route_prefix="/")
    try:
        assert running_replicas("scaling") == 1
        ws = cluster.replace("http://", "ws://")
        # n streams / (2 * 0.5) per replica -> n replicas. Each stream opens once the replicas before
        # it are up: a WebSocket upgrade beyond a full replica's queue is answered 500 by Ray 2.60
        # (ray_serve.md), which is the proxy's behaviour, not what this test is about.
        sockets = []
        for i in range(3):
            sockets.append(await AgentStream.connect(ws + f"/v1/tts/stream?voice=load{i}", open_timeout=90))
            deadline = time.monotonic() + 60
            while running_replicas("scaling") < i + 1:
                assert time.monotonic() < deadline, f"did not scale up to {i + 1} replicas"
                await asyncio.sleep(0.5)
        for sock in sockets:
            await sock.close()
        deadline = time.monotonic() + 60
        while running_replicas("scaling") > 1:
            assert time.monotonic() < deadline, "did not scale back down to 1 replica"
            await asyncio.sleep(0.5)
    finally:
        serve.delete("scaling")
