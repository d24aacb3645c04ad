"""Logs: credentials never reach them (text and JSON), a malformed WebSocket frame is one line and
no traceback, and one client's repeated warnings are rate-limited with a count of what was dropped."""

import base64
import contextlib
import io
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, make_ctx, served  # noqa: E402

from realtime_tts.server.logging import RateLimit, configure_logging, redact  # noqa: E402

SECRET = "sk-SECRET-4242"


@contextlib.contextmanager
def captured_logs(fmt: str):
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging(fmt, "INFO", stream=stream)
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def ws_open(port: int, path: str) -> socket.socket:
    """A WebSocket opened by hand, so frames can break the rules."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(sock: socket.socket) -> int | None:
    """Read until the server's close frame; its status code (None: closed without one)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    i = 0
    while i + 2 <= len(data):  # walk the server's (unmasked, short) frames
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        head = 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if length >= 126:
            length = int.from_bytes(data[i + 2:i + head], "big")
        if opcode == 0x8:
            return int.from_bytes(data[i + head:i + head + 2], "big")
        i += head + length
    return None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_live_server_logs_hold_no_secret_and_no_traceback(tmp_path, fmt):
    ctx = make_ctx(tmp_path, ToneEngine(), api_keys=[SECRET])
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # as an earlier uvicorn.Config leaves it
    with captured_logs(fmt) as stream, served(ctx) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health?api_key={SECRET}&x=1").status_code == 200
        assert httpx.get(f"{base}/v1/models?token={SECRET}", headers={"Authorization": f"Bearer {SECRET}"}
                         ).status_code == 200
        assert httpx.get(f"{base}/v1/models?access_token={SECRET}").status_code == 401
        for _ in range(3):
            sock = ws_open(port, f"/v1/tts/stream?api_key={SECRET}")
            sock.sendall(masked(0x1, b"\xff\xfe{not utf-8"))
            assert close_code(sock) == 1007
            sock.close()
        time.sleep(0.3)
    out = stream.getvalue()
    lines = out.splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        messages = [r["msg"] for r in records]
        assert not any("exc" in r for r in records)
    else:
        messages = lines
    assert SECRET not in out
    assert any("/health?api_key=***&x=1" in m for m in messages), out  # the line is kept, the key is not
    assert any("/v1/models?access_token=***" in m for m in messages), out
    assert sum("/v1/tts/stream?api_key=***" in m for m in messages) == 3, out  # WebSocket [accepted] lines
    bad_frames = [m for m in messages if "not valid UTF-8" in m]
    assert len(bad_frames) == 3, out
    assert "Traceback" not in out and "UnicodeDecodeError" not in out


def test_redact_covers_every_credential_spelling():
    for text in [f"GET /x?api_key={SECRET}", f"/x?a=1&token={SECRET}&b=2", f"/x?KEY={SECRET}",
                 f"/x?authorization=Bearer%20{SECRET}", f"Authorization: Bearer {SECRET}",
                 f"/x?access_token={SECRET}#frag", f"/ws?Api-Key={SECRET} HTTP/1.1"]:
        assert SECRET not in redact(text), text
        assert "***" in redact(text)
    assert redact("/x?monkey=banana&keyboard=1") == "/x?monkey=banana&keyboard=1"
    assert redact("plain message") == "plain message"


def test_extra_fields_are_redacted_too():
    with captured_logs("json") as stream:
        logging.getLogger("realtime_tts.test").warning("connect", extra={"path": f"/x?api_key={SECRET}"})
    record = json.loads(stream.getvalue())
    assert record["path"] == "/x?api_key=***"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(msg: str = "bad frame from %s", client: str | None = "10.0.0.1:5000", level=logging.WARNING,
           kind: str | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("realtime_tts.server.xiaozhi", level, __file__, 1, msg, ("x",), None)
    if client is not None:
        rec.client = client
    if kind is not None:
        rec.kind = kind
    return rec


def test_rate_limit_per_client_and_kind():
    clock = Clock()
    limit = RateLimit(burst=5, per_minute=6, clock=clock)
    passed = [limit.filter(record(client=f"10.0.0.1:{5000 + i}")) for i in range(20)]  # new source ports
    assert passed == [True] * 5 + [False] * 15
    assert limit.filter(record(client="10.0.0.2:1"))  # another client has its own bucket
    assert limit.filter(record(kind="other_kind"))  # and so has another kind of message
    assert all(limit.filter(record(level=logging.INFO)) for _ in range(50))  # info lines are never limited
    clock.now += 10.0  # 6 per minute: one line every 10 s
    again = record()
    assert limit.filter(again) and again.suppressed == 15
    assert not limit.filter(record())
    clock.now += 60.0
    assert sum(limit.filter(record()) for _ in range(10)) == 5  # refilled to the burst, no further


def test_rate_limit_memory_is_bounded():
    limit = RateLimit(max_keys=100, clock=Clock())
    for i in range(5000):
        limit.filter(record(client=f"10.1.{i // 256}.{i % 256}:1"))
    assert len(limit) == 100


def test_suppressed_count_reaches_the_log_line():
    with captured_logs("text") as stream:
        log = logging.getLogger("realtime_tts.test")
        for _ in range(30):
            log.warning("bad message", extra={"client": "10.9.9.9:1", "kind": "bad_message"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # the burst; the rest waits for the next line that passes
