"""The xiaozhi device simulator: its CLI against a live server, and its checks against a
misbehaving fake server (audio outside Speaking, too much lead, malformed frames)."""

import asyncio
import json
import subprocess
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
from websockets.asyncio.server import serve as ws_serve

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT))
from xiaozhi_helpers import serve  # noqa: E402

from clients.device_simulator import DeviceSimulator, main, simulate  # noqa: E402
from realtime_tts.audio.opus import OpusEncoder  # noqa: E402
from realtime_tts.server.xiaozhi import pack_audio  # noqa: E402


def test_cli_speaks_and_saves_wav(tmp_path, capsys):
    out = tmp_path / "heard.wav"
    with serve(tmp_path) as (ctx, url, _):
        code = main(["--url", url, "--text", "Hello device. Bye now.", "--version", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "sentence: Hello device." in printed and "sentence: Bye now." in printed
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1
        assert w.getnframes() % 1440 == 0
        seconds = w.getnframes() / 24000
    assert abs(seconds - (0.65 + 0.2 + 0.4 + 0.2)) <= 0.13
    summary = json.loads(printed[printed.index("{"): printed.rindex("}") + 1])
    assert summary["protocol_version"] == 3 and summary["dropped_packets"] == 0 and summary["warnings"] == []


def test_cli_reports_connection_errors(capsys):
    assert main(["--url", "ws://127.0.0.1:9/xiaozhi/v1/", "--text", "x", "--timeout", "2"]) == 1
    assert "error:" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "clients.device_simulator", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--version" in result.stdout and "--out" in result.stdout


async def test_waits_for_control_api_speech(tmp_path):
    with serve(tmp_path) as (ctx, url, base):
        task = asyncio.create_task(simulate(url, None, version=2, device_id="sim-ctl"))
        while ("default", "sim-ctl") not in ctx.devices:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base) as http:
            resp = await http.post("/v1/xiaozhi/devices/sim-ctl/speak", json={"text": "Pushed to you."})
            assert resp.status_code == 202
        summary = await asyncio.wait_for(task, 20)
    assert summary["sentences"] == ["Pushed to you."] and summary["packets"] > 0


async def test_simulator_flags_a_misbehaving_server():
    """Audio before tts start is dropped, a 3 s burst exceeds the device buffer, garbage is counted."""
    encoder = OpusEncoder(24000)
    packets = encoder.encode(np.zeros(24000 * 3, np.float32))  # 50 packets, all at once

    async def handler(ws):
        hello = json.loads(await ws.recv())
        version = hello["version"]
        await ws.send(json.dumps({"type": "hello", "transport": "websocket", "session_id": "S"}))
        await ws.recv()  # listen start
        await ws.send(pack_audio(version, packets[0]))  # before tts start: a device drops it
        await ws.send(json.dumps({"type": "tts", "state": "start", "session_id": "S"}))
        await ws.send(json.dumps({"type": "tts", "state": "sentence_start", "text": "Burst.", "session_id": "S"}))
        for packet in packets:
            await ws.send(pack_audio(version, packet))
        await ws.send(b"\x00\x00\x00\x09abc")  # v3 header claiming 9 bytes
        await ws.send(json.dumps({"type": "tts", "state": "stop", "session_id": "S"}))
        await ws.wait_closed()

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        notes = []
        async with DeviceSimulator(f"ws://127.0.0.1:{port}/", version=3, warn=notes.append) as dev:
            turn = await dev.next_turn(10)
            assert dev.dropped_packets == 1
            assert len(turn.packets) == 50 and turn.sentences == ["Burst."]
            assert dev.max_lead_s > 2.4
            assert dev.bad_frames == 1
            assert any("ahead of playback" in n for n in notes) and any("malformed" in n for n in notes)
            assert dev.summary()["warnings"] == notes
