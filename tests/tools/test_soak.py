"""``realtime-tts bench soak`` (tools/soak): its measuring parts on synthetic input, and a smoke run
of the whole harness against a real espeak server (seconds, tiny counts; no figure is asserted,
except that every HTTP endpoint refuses every malformed case of the fuzz below 500)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from realtime_tts.cli import load_soak

ROOT = Path(__file__).resolve().parents[2]
load_soak()
server = importlib.import_module("realtime_tts_soak.server")
report = importlib.import_module("realtime_tts_soak.report")
fuzz = importlib.import_module("realtime_tts_soak.fuzz")
wire = importlib.import_module("realtime_tts_soak.wire")
nonreaders = importlib.import_module("realtime_tts_soak.nonreaders")
sys.path.insert(0, str(ROOT / "tools" / "soak"))
probe = importlib.import_module("probe")


def _line(**record) -> str:
    return json.dumps({"ts": "t", "level": "info", "logger": "x", "msg": "", **record})


def test_scan_log_counts_tracebacks_errors_and_5xx(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("\n".join([
        "realtime-tts: engine espeak (banner on stdout)",
        _line(logger="uvicorn.access", msg='127.0.0.1:5 - "POST /tts HTTP/1.1" 500'),
        _line(logger="uvicorn.access", msg='127.0.0.1:5 - "POST /tts HTTP/1.1" 200'),
        _line(logger="uvicorn.error", msg='127.0.0.1:5 - "WebSocket /v1/tts/stream" 503'),
        _line(logger="realtime_tts.x", msg="status 500 in a message is not an answer"),
        _line(level="error", logger="uvicorn.error", msg="Exception in ASGI application", exc="Traceback ...\nValueError: x"),
        _line(level="error", logger="uvicorn.error", msg="Exception in ASGI application", exc="Traceback ...\nKeyError: y",
              suppressed=3),  # the server's rate limit dropped three more like it
        _line(level="warning", logger="realtime_tts.server.xiaozhi", msg="bad frame", suppressed=2),
        "Traceback (most recent call last):",
        "",
    ]) + "\n")
    out = server.scan_log(log)
    assert (out.tracebacks, out.errors, out.warnings, out.status_5xx, out.status_503, out.not_json) == (6, 5, 3, 2, 1, 2)
    assert "ValueError: x" in out.traceback_heads[0]
    first_line_end = log.read_bytes().index(b"\n") + 1
    assert server.scan_log(log, 0, first_line_end).lines == 1  # a byte window of the log


def test_probe_measures_gaps_dead_air_and_first_audio():
    listener = probe.Listener(port=1, version=1)
    listener.offset = 0.0
    turn = SimpleNamespace(packets=[], chunks=[], stopped_at=None)
    listener.device = SimpleNamespace(turns=[turn])
    listener._spoken = [9.5]
    for t in (10.0, 10.06, 10.12):
        turn.packets.append(SimpleNamespace(arrived=t))
    listener.collect()
    turn.packets += [SimpleNamespace(arrived=t) for t in (10.62, 10.68)]  # more arrive while the turn plays
    turn.stopped_at = 11.0
    next_turn = SimpleNamespace(packets=[SimpleNamespace(arrived=t) for t in (20.0, 20.06)], chunks=[], stopped_at=None)
    listener.device.turns.append(next_turn)
    listener._spoken.append(19.0)
    listener.collect()
    assert listener.packets == 7 and listener.turns == 1
    # every interval inside a turn, not the 9.3 s between turns
    assert [(t, round(g, 3)) for t, g in listener.intervals] == [(10.06, 0.06), (10.12, 0.06), (10.62, 0.5),
                                                                 (10.68, 0.06), (20.06, 0.06)]
    assert [(t, round(g, 3)) for t, g in listener.underruns] == [(10.62, 0.44)]  # 3 packets played by 10.18
    assert [(t, round(w, 3)) for t, w in listener.first_audio] == [(10.0, 0.5), (20.0, 1.0)]
    window = report.device_window(listener.as_dict(), 10.5, 30.0)
    assert window["longest_gap_ms"] == 500.0 and window["longest_wait_for_first_audio_ms"] == 1000.0


def test_health_window_and_resources():
    samples = [(float(t), 0.010, 200) for t in range(99)] + [(99.0, 2.0, 200), (100.0, 0.5, 0), (500.0, 9.0, 200)]
    w = report.health_window(samples, 0, 100)
    assert (w["n"], w["not_200"], w["p50_ms"], w["p99_ms"], w["max_ms"]) == (101, 1, 10.0, 500.0, 2000.0)
    stats = server.ProcStats
    assert report.resources_back(stats(0, 100, 8, 20), stats(1, 110, 8, 30))
    assert not report.resources_back(stats(0, 100, 8, 20), stats(1, 110.5, 8, 20))
    assert not report.resources_back(stats(0, 100, 8, 20), stats(1, 100, 9, 20))


@pytest.mark.parametrize("result,ok", [
    (fuzz.CaseResult("a", "http", status=400), True),
    (fuzz.CaseResult("a", "http", status=500), False),
    (fuzz.CaseResult("a", "http"), False),  # no answer at all
    (fuzz.CaseResult("a", "/ws", close_code=1007), True),
    (fuzz.CaseResult("a", "/ws", close_code=1011), False),
    (fuzz.CaseResult("a", "/ws", closed_without_frame=True), False),
    (fuzz.CaseResult("a", "/ws", close_code=1000, devices_status=500), False),
])
def test_fuzz_judge(result, ok):
    assert fuzz._judge(result).ok is ok


def test_client_frames_follow_rfc6455():
    for n in (0, 5, 125, 126, 65535, 65536):
        payload = os.urandom(n)
        data = wire.frame(wire.OP_BINARY, payload)
        assert data[0] == 0x82 and data[1] & 0x80  # FIN + binary, masked
        size = data[1] & 0x7F
        offset = 2 + {126: 2, 127: 8}.get(size, 0)
        length = size if size < 126 else int.from_bytes(data[2:offset], "big")
        key, body = data[offset:offset + 4], data[offset + 4:]
        assert length == n and bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload


def test_nonreaders_see_stalls_and_drops(monkeypatch):
    entry = wire.TcpEntry
    readers = [nonreaders.NonReader(kind, None, port, 0.0) for kind, port in (("agent", 5001), ("http", 5002))]
    table = {(8000, 5001): entry("ESTABLISHED", 0, 0), (5001, 8000): entry("ESTABLISHED", 0, 0),
             (8000, 5002): entry("ESTABLISHED", 4096, 0), (5002, 8000): entry("ESTABLISHED", 0, 3000)}
    monkeypatch.setattr(nonreaders, "tcp_table", lambda: table)
    nonreaders._poll(readers, 8000, 1.0)
    assert (readers[0].stalled, readers[1].stalled) == (None, 1.0)  # only the one whose window is full
    table[(8000, 5002)] = entry("FIN_WAIT1", 4096, 0)
    del table[(8000, 5001)]
    nonreaders._poll(readers, 8000, 2.0)
    assert (readers[0].dropped, readers[1].dropped, readers[1].stalled) == (2.0, 2.0, 1.0)


def test_tcp_table_reads_this_machine():
    table = wire.tcp_table()
    assert all(isinstance(k, tuple) and len(k) == 2 for k in table)


def test_soak_smoke_run(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "realtime_tts.cli", "bench", "soak", "--duration-s", "4", "--sessions", "3",
           "--agents", "2", "--nonreaders", "5", "--nonreader-hold-s", "3", "--fuzz-random", "10",
           "--settle-s", "1", "--warmup-s", "1", "--out", str(out), "--server-log", str(tmp_path / "server.log")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| (a) load, " in done.stdout and "| (b) fuzz, " in done.stdout and "| (c) non-readers, " in done.stdout
    result = json.loads(out.read_text())
    assert [p["name"] for p in result["phases"]] == ["(a) load", "(b) fuzz", "(c) non-readers"]
    load, fuzzed, mute = (p["result"] for p in result["phases"])
    assert load["sessions"]["xiaozhi"] >= 1 and load["sessions"]["agent"] >= 1 and load["packets"] > 0
    assert not load["client_errors"], load["client_errors"]
    assert [(r["format"], r["status"]) for r in load["http"]] == [("mp3", 200), ("opus", 200)]
    assert all(r["bytes"] > 10_000 for r in load["http"])
    fixed = (len(fuzz.http_cases("x")) + len(fuzz.raw_http_cases("x")) + len(fuzz.agent_cases())
             + len(fuzz.xiaozhi_cases()))
    assert fuzzed["cases"] == fixed + 10 and not fuzzed["timed_out"]
    http_failures = [f for f in fuzzed["failures"] if f["target"] == "http"]
    assert not http_failures, http_failures  # every HTTP endpoint refuses malformed input below 500
    assert mute["count"] == 5 and sum(k["clients"] for k in mute["kinds"].values()) == 5
    assert all(k["open_errors"] == 0 for k in mute["kinds"].values())
    whole = result["whole_run"]
    assert whole["health_samples"] > 20 and whole["device_packets"] > 10
    assert whole["idle"]["rss_mb"] > 10 and whole["idle"]["threads"] >= 1 and whole["final"]["threads"] >= 1
    assert result["machine"]["cores"] >= 1 and result["server_exit_code"] == 0  # a clean stop after SIGINT
    for p in result["phases"]:
        assert isinstance(p["tracebacks"], int) and p["health"]["n"] > 0


async def test_raw_websocket_reads_waits_and_closes_cleanly():
    from websockets.asyncio.server import serve

    async def handler(ws):
        async for message in ws:
            if message == "answer me":
                await ws.send('{"type": "error"}')

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await wire.RawWebSocket.open(port, "/")
        assert ws.status == 101
        await ws.send("ignored")
        silent = await ws.read_until_close(0.3)
        assert silent.timed_out and silent.close_code is None  # the server said nothing: still open
        await ws.send("answer me")
        answered = await ws.read_until_close(5, until=lambda text: "error" in text)
        assert answered.texts == ['{"type": "error"}'] and not answered.timed_out
        closing = await ws.close(4000)
        assert closing.close_code == 4000  # our close was answered with a close frame
