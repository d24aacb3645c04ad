"""Scenario (c): clients that ask for a long stretch of speech and never read it.

xiaozhi devices (hello, listen, a 4,000-character ``speak``), agent streams (a 4,000-character
context) and HTTP speech requests (4,000 characters, raw PCM) are opened on sockets with a
small receive buffer, and never read again. The kernel's TCP table (/proc/net/tcp) shows,
without reading, when the server's writes stall (the client's window is full: data waits in
the server's send queue while the client's receive queue holds unread data) and when the
server drops the connection (its side leaves ESTABLISHED). A server with a write timeout
drops each one about that long after it stalls; one without holds them until the harness
gives up after ``hold_s``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import statistics
import time
import uuid
from dataclasses import dataclass

from .load import long_text
from .wire import OP_TEXT, frame, small_socket, tcp_table

KINDS = ("xiaozhi", "agent", "http")
POLL_S = 0.25


@dataclass
class NonReader:
    kind: str
    sock: socket.socket
    local_port: int
    opened: float
    stalled: float | None = None  # monotonic: the server's writes first waited on this client
    dropped: float | None = None  # monotonic: the server's side left ESTABLISHED
    error: str = ""


def _upgrade(path: str, headers: dict[str, str]) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _requests(kind: str, text: str) -> tuple[bytes, list[bytes]]:
    """(the opening bytes, the frames sent once the upgrade is answered)."""
    if kind == "http":
        body = json.dumps({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}).encode()
        head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return head + body, []
    if kind == "agent":
        return _upgrade("/v1/tts/stream", {}), [
            frame(OP_TEXT, json.dumps({"type": "text", "context_id": "c1", "text": text, "end": True}).encode())]
    hello = {"type": "hello", "version": 1, "transport": "websocket", "features": {"mcp": True},
             "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}}
    headers = {"Device-Id": f"soak-mute-{uuid.uuid4().hex[:8]}", "Client-Id": str(uuid.uuid4()), "Protocol-Version": "1"}
    return _upgrade("/xiaozhi/v1/", headers), [frame(OP_TEXT, json.dumps(m).encode()) for m in (
        hello, {"type": "listen", "state": "start", "mode": "auto"}, {"type": "speak", "text": text})]


async def open_nonreader(kind: str, port: int, text: str) -> NonReader:
    loop = asyncio.get_running_loop()
    sock = small_socket()
    reader = NonReader(kind, sock, 0, time.monotonic())
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
        reader.local_port = sock.getsockname()[1]
        opening, frames = _requests(kind, text)
        await loop.sock_sendall(sock, opening)
        if frames:  # read the upgrade answer (and whatever came with it), then never read again
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
                if not chunk:
                    raise ConnectionError("closed during the upgrade")
                head += chunk
            for data in frames:
                await loop.sock_sendall(sock, data)
    except (OSError, asyncio.TimeoutError, TimeoutError) as e:
        reader.error = f"{type(e).__name__}: {e}"[:120]
    return reader


def _poll(readers: list[NonReader], server_port: int, now: float) -> None:
    table = tcp_table()
    for r in readers:
        if r.dropped is not None or not r.local_port:
            continue
        server_side = table.get((server_port, r.local_port))
        client_side = table.get((r.local_port, server_port))
        if server_side is None or server_side.state != "ESTABLISHED":
            r.dropped = now
        elif r.stalled is None and server_side.tx_queue > 0 and client_side is not None and client_side.rx_queue > 0:
            r.stalled = now


def _times(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"n": len(values), "median_s": round(statistics.median(values), 2), "max_s": round(max(values), 2)}


async def run_nonreaders(port: int, *, count: int, hold_s: float, write_timeout_s: float, grace_s: float) -> dict:
    """Open ``count`` non-readers (40 % xiaozhi, 40 % agent, 20 % HTTP), watch them for up to
    ``hold_s``, then close whatever the server still holds."""
    n_http = count // 5
    n_xiaozhi = (count - n_http) // 2
    kinds = ["xiaozhi"] * n_xiaozhi + ["agent"] * (count - n_http - n_xiaozhi) + ["http"] * n_http
    text = long_text()
    readers = list(await asyncio.gather(*(open_nonreader(k, port, text) for k in kinds)))
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline and any(r.dropped is None and r.local_port for r in readers):
        _poll(readers, port, time.monotonic())
        await asyncio.sleep(POLL_S)
    for r in readers:
        r.sock.close()
    out = {"count": count, "hold_s": hold_s, "write_timeout_s": write_timeout_s, "grace_s": grace_s, "kinds": {}}
    late = 0
    for kind in KINDS:
        group = [r for r in readers if r.kind == kind]
        dropped = [r for r in group if r.dropped is not None]
        after_stall = [r.dropped - r.stalled for r in dropped if r.stalled is not None]
        late += sum(1 for t in after_stall if t > write_timeout_s + grace_s)
        out["kinds"][kind] = {
            "clients": len(group), "open_errors": sum(1 for r in group if r.error),
            "stalled": sum(1 for r in group if r.stalled is not None), "dropped": len(dropped),
            "held_at_end": sum(1 for r in group if r.dropped is None and not r.error),
            "open_to_drop": _times([r.dropped - r.opened for r in dropped]), "stall_to_drop": _times(after_stall)}
    held = sum(k["held_at_end"] for k in out["kinds"].values())
    out["held_at_end"] = held
    out["all_dropped_in_time"] = held == 0 and late == 0
    return out
