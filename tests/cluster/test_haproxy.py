"""deploy/haproxy/haproxy.cfg in front of three `realtime-tts serve --engine espeak` processes.

Debian's haproxy runs the shipped file unchanged (replica addresses from the environment).
Checked: the same voice / device always lands on the same process, sockets and HTTP alike;
the control API reaches the process holding the device; and a process draining on SIGTERM
gets no new sockets while its device finishes its turn.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import ROOT, free_port, serve_process, stop_process, wait_ready  # noqa: E402

from clients.device_simulator import DeviceSimulator  # noqa: E402
from realtime_tts.server.lifecycle import GOING_AWAY_REASON  # noqa: E402

HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180),
              pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (`make haproxy` installs "
                                                         "Debian's; CI runs it through `make test`)")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three replicas p0-p2 behind HAProxy; yields (haproxy base URL, {replica id: process})."""
    tmp = tmp_path_factory.mktemp("fleet")
    ports = [free_port() for _ in range(3)]
    procs = {f"p{i}": serve_process(port, "--data-dir", str(tmp / "data"), "--replica-id", f"p{i}",
                                    "--drain-timeout-s", "15", "--silence-ms", "200")
             for i, port in enumerate(ports)}
    front = free_port()
    env = {**os.environ, "RTTS_BIND": "127.0.0.1", "RTTS_PORT": str(front),
           **{f"RTTS_REPLICA_{i}": f"127.0.0.1:{port}" for i, port in enumerate(ports)}}
    haproxy = None
    try:
        for proc, port in zip(procs.values(), ports):
            wait_ready(f"http://127.0.0.1:{port}", proc)
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(ROOT / "deploy/haproxy/haproxy.cfg")], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{front}"
        deadline = time.monotonic() + 30
        while len(seen_replicas(base)) < 3:  # every server's checks have risen
            assert haproxy.poll() is None, "haproxy exited: run `haproxy -c -f deploy/haproxy/haproxy.cfg`"
            assert time.monotonic() < deadline, "haproxy did not bring the three replicas up"
            time.sleep(0.3)
        yield base, procs
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        for proc in procs.values():
            stop_process(proc)


def seen_replicas(base: str) -> set:
    seen = set()
    with contextlib.suppress(httpx.HTTPError):
        for i in range(12):  # no key: round robin
            seen.add(httpx.get(base + "/v1/models", timeout=2).headers.get("x-replica-id"))
    return seen - {None}


def replica_for(base: str, voice: str) -> str:
    return httpx.get(base + "/v1/models", headers={"X-Voice-Id": voice}, timeout=5).headers["x-replica-id"]


async def test_the_same_voice_and_device_land_on_the_same_replica(fleet):
    base, _ = fleet
    ws = base.replace("http://", "ws://")
    placed = {voice: {replica_for(base, voice) for _ in range(3)} for voice in (f"v{i}" for i in range(9))}
    assert all(len(r) == 1 for r in placed.values()), placed
    assert len(set().union(*placed.values())) >= 2
    for voice in ("v1", "v2"):  # the voice query parameter routes sockets the same way
        async with websockets.connect(f"{ws}/v1/tts/stream?voice={voice}") as sock:
            assert sock.response.headers["x-replica-id"] in placed[voice]
    homes = set()
    for _ in range(3):
        async with DeviceSimulator(ws + "/xiaozhi/v1/", device_id="esp32:11:22", warn=lambda m: None) as dev:
            homes.add(dev.ws.response.headers["x-replica-id"])
    assert len(homes) == 1
    async with DeviceSimulator(ws + "/xiaozhi/v1/", device_id="esp32:11:22", warn=lambda m: None) as dev:
        async with httpx.AsyncClient(base_url=base) as http:
            spoken = await http.post("/v1/xiaozhi/devices/esp32:11:22/speak", json={"text": "Hello."}, timeout=10)
        assert spoken.status_code == 202 and spoken.headers["x-replica-id"] in homes
        assert (await dev.next_turn(timeout=20)).packets


async def test_a_draining_replica_gets_no_new_sockets(fleet):
    base, procs = fleet
    ws = base.replace("http://", "ws://") + "/xiaozhi/v1/"
    dev = DeviceSimulator(ws, device_id="esp32:dr:ain", warn=lambda m: None)
    await dev.connect()
    home = dev.ws.response.headers["x-replica-id"]
    await dev.speak("A long turn to keep the drain open. " * 4)  # ~7 s of paced audio
    await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "start", timeout=20)
    procs[home].send_signal(signal.SIGTERM)
    await asyncio.sleep(2.5)  # HAProxy's /ready check (every 1 s) marks it down
    for _ in range(5):  # the same device reconnecting: its replica drains, another one takes it
        async with DeviceSimulator(ws, device_id="esp32:dr:ain", warn=lambda m: None) as again:
            assert again.ws.response.headers["x-replica-id"] != home
    turn = await dev.next_turn(timeout=30)  # the draining replica finishes the turn in flight
    assert turn.stopped_at is not None
    assert await dev.wait_closed(10) == (1001, GOING_AWAY_REASON)
    assert await asyncio.to_thread(procs[home].wait, 20) == 0
