"""Backpressure end to end on a live server: clients that stop reading are dropped after the
write timeout, their synthesis is cancelled, and what was made for them stays within the lead
(counted in sentences synthesized, never in seconds of wall time)."""

import asyncio
import json
import socket
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, live_server, make_ctx  # noqa: E402


# 40 sentences of ~110 characters: 5.5 s of tone each, 220 s in all (21 MB of 48 kHz PCM).
SENTENCES = [f"Sentence {i:02d} " + "la " * 33 + "end." for i in range(40)]
TEXT = " ".join(SENTENCES)
SETTINGS = {"write_timeout_s": 0.5, "max_lead_s": 2.0, "max_text_chars": 10_000, "silence_ms": 100}
MOST_SENTENCES = 20  # what may be made for a client that never reads: the lead, the window and the
#                      socket buffers (kernel autotuning on loopback can hold a few MB), far from all 40


def small_socket(port: int) -> socket.socket:
    """A client socket that takes little into its kernel buffer, so the server's writes block soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def server_let_go(sock: socket.socket) -> bool:
    """The server ended the TCP connection (RST or FIN), seen without reading a byte of it."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state != 1  # 1: TCP_ESTABLISHED


def metric(ctx, name: str, **labels) -> float:
    value = ctx.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(condition, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def settled(ctx, endpoint: str) -> None:
    """The server let go of the client: connection, streams, encoders and queued jobs."""
    await until(lambda: metric(ctx, "rtts_active_connections", endpoint=endpoint) == 0)
    await until(lambda: metric(ctx, "rtts_live_speech_streams") == 0 and metric(ctx, "rtts_live_encoders") == 0)
    assert ctx.executor.queue_depth == 0


async def probe(base: str) -> None:
    """The server still serves (and every job queued before this one has run or been dropped)."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        r = await http.post("/v1/audio/speech", json={"input": "Still here.", "response_format": "pcm"})
        assert r.status_code == 200 and r.content


async def test_agent_client_that_never_reads_is_dropped_and_its_synthesis_cancelled(tmp_path):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path, engine, **SETTINGS)
    with live_server(ctx) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = small_socket(port)
        ws = await connect(f"ws://127.0.0.1:{port}/v1/tts/stream", sock=sock, max_queue=1)
        try:
            await ws.send(json.dumps({"type": "config", "output": {"encoding": "pcm_s16le", "sample_rate": 48000}}))
            await ws.send(json.dumps({"type": "text", "context_id": "t", "text": TEXT, "end": True}))
            # ... and never read again.
            await until(lambda: metric(ctx, "rtts_write_timeouts_total", endpoint="stream") == 1)
            await settled(ctx, "stream")
            await until(lambda: server_let_go(sock), timeout=30)  # not held open for the unread bytes
        finally:
            ws.transport.abort()
        await probe(base)
    spoken = [t for t, _ in engine.calls if t.startswith("Sentence")]
    assert 1 <= len(spoken) <= MOST_SENTENCES, len(spoken)


async def test_http_client_that_never_reads_is_aborted_and_its_synthesis_cancelled(tmp_path):
    engine = ToneEngine()
    ctx = make_ctx(tmp_path, engine, **SETTINGS)
    with live_server(ctx) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = small_socket(port)
        try:
            body = json.dumps({"input": TEXT, "voice": "alloy", "response_format": "pcm", "sample_rate": 48000})
            request = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
            await asyncio.get_running_loop().sock_sendall(sock, request)
            # ... and never read the response.
            await until(lambda: metric(ctx, "rtts_write_timeouts_total", endpoint="openai") == 1)
            await settled(ctx, "openai")
            await until(lambda: server_let_go(sock), timeout=30)  # not held open for the unread bytes
        finally:
            sock.close()
        await probe(base)
    spoken = [t for t, _ in engine.calls if t.startswith("Sentence")]
    assert 1 <= len(spoken) <= MOST_SENTENCES, len(spoken)


def test_serve_bounds_every_close():
    """`serve` runs uvicorn with the bounded-close protocols these tests run under."""
    from realtime_tts.config import Settings
    from realtime_tts.server.app import uvicorn_config

    config = uvicorn_config(None, Settings(write_timeout_s=7))
    assert config.http.__name__.startswith("BoundedClose") and config.ws.__name__.startswith("BoundedClose")
    assert config.ws_ping_interval == config.ws_ping_timeout == 7  # no pong for that long: not reading


async def test_serve_negotiates_no_websocket_compression(tmp_path):
    """Audio frames do not deflate: `serve` declines permessage-deflate even when a client (here
    the websockets library, which asks by default) offers it."""
    from http_helpers import served

    with served(make_ctx(tmp_path, ToneEngine())) as port:
        async with connect(f"ws://127.0.0.1:{port}/v1/tts/stream", compression="deflate") as ws:
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]  # offered
            assert ws.protocol.extensions == [] and "Sec-WebSocket-Extensions" not in ws.response.headers


def test_websocket_writes_wait_early_and_closes_are_bounded():
    """A WebSocket pauses its writes at WS_HIGH_WATER bytes (so a paced device stream that is not
    read meets the write timeout within seconds, not minutes), and its transport's close is bounded."""
    import asyncio as aio

    from realtime_tts.server.transport import WS_HIGH_WATER, BoundedCloseTransport, bounded_close

    class Protocol(aio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

    class Transport:
        high = None

        def set_write_buffer_limits(self, high=None, low=None):
            self.high = high

    raw = Transport()
    protocol = bounded_close(Protocol, 10.0, high_water=WS_HIGH_WATER)()
    protocol.connection_made(raw)
    assert isinstance(protocol.transport, BoundedCloseTransport) and raw.high == WS_HIGH_WATER <= 16 * 1024
    again = bounded_close(Protocol, 10.0)()
    again.connection_made(protocol.transport)  # an upgraded connection: wrapped once
    assert again.transport is protocol.transport
