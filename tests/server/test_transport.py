"""Closing connections (server/transport.py): a client still sending when the server closes gets
the close frame, not a reset."""

import base64
import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, live_server, make_ctx  # noqa: E402

OVERSIZE = 5 * 1024 * 1024  # over the 4 MiB message limit


def handshake(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nDevice-Id: aa:bb\r\nClient-Id: c\r\n"
                  f"Protocol-Version: 1\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response[:200]
    return sock


def send_until_refused(sock: socket.socket) -> None:
    """An oversized binary frame (zero mask), sent until the server stops taking it."""
    sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack(">Q", OVERSIZE) + b"\0\0\0\0")
    sock.settimeout(0.5)
    chunk, sent = b"\0" * 65536, 0
    try:
        while sent < OVERSIZE:
            sent += sock.send(chunk)
    except (socket.timeout, OSError):
        pass  # the server stopped reading or closed: the client is still mid-message


def received(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        data += b"<reset>"
    return data


@pytest.mark.parametrize("path", ["/v1/tts/stream", "/xiaozhi/v1/"])
def test_a_refused_oversized_message_gets_its_close_frame(tmp_path, path):
    ctx = make_ctx(tmp_path, ToneEngine())
    with live_server(ctx) as base:
        sock = handshake(int(base.rsplit(":", 1)[1]), path)
        try:
            send_until_refused(sock)
            time.sleep(0.5)  # the server has refused the message and closed before the client reads
            sock.shutdown(socket.SHUT_WR)  # the client gives up sending, as a real one does on the error
            data = received(sock)
        finally:
            sock.close()
    assert b"<reset>" not in data, data[-64:]
    frame = data[data.index(b"\x88"):]  # the server's close frame: 0x88, length, code 1009 (0x03f1)
    assert frame[2:4] == b"\x03\xf1", frame[:16]
