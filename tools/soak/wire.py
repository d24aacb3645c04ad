"""Raw wire access for the soak harness: a WebSocket client that may break the rules, raw HTTP,
and the kernel's view of a TCP connection (to see whether the server still holds a socket
whose client never reads).

Everything is bounded: every read has a timeout, every buffer a size limit.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass, field

MAX_READ = 8 * 1024 * 1024  # bytes a raw client keeps before it stops reading

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients, unless ``mask=False``)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    body = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") \
        if n else b""
    return head + key + body


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack(">H", code) + reason.encode()


@dataclass
class Closing:
    """How a raw connection ended, as the client saw it."""

    close_code: int | None = None  # from the server's close frame; None: no close frame
    close_reason: str = ""
    texts: list[str] = field(default_factory=list)
    binaries: int = 0
    timed_out: bool = False  # the server kept the socket open past the read timeout
    http_status: int | None = None  # a refused upgrade: the HTTP status instead


class RawWebSocket:
    """``await RawWebSocket.open(port, path, headers)``; then ``send``/``send_frame``/``read_until_close``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, head: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.status = status  # 101 when upgraded
        self.head = head

    @classmethod
    async def open(cls, port: int, path: str, headers: dict[str, str] | None = None,
                   timeout: float = 10.0) -> RawWebSocket:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except BaseException:
            writer.transport.abort()
            raise
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        return cls(reader, writer, status, head)

    async def send_frame(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.send_frame(frame(OP_TEXT, message.encode("utf-8", "surrogatepass")))
        else:
            await self.send_frame(frame(OP_BINARY, message))

    async def read_frame(self, timeout: float) -> tuple[int, bytes]:
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
        if n > MAX_READ:
            raise ValueError(f"server frame of {n} bytes")
        payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return b0 & 0x0F, payload

    async def read_until_close(self, timeout: float = 10.0, *, until=None) -> Closing:
        """Read frames until the server's close frame (answered; the socket is then dropped), EOF,
        or ``timeout`` of silence or ``until(text)`` returning True (the socket stays open)."""
        out = Closing(http_status=None if self.status == 101 else self.status)
        if self.status != 101:
            self.abort()
            return out
        try:
            while True:
                opcode, payload = await self.read_frame(timeout)
                if opcode == OP_CLOSE:
                    out.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                    out.close_reason = payload[2:].decode("utf-8", "replace")
                    self.writer.write(frame(OP_CLOSE, payload[:2]))
                    break
                if opcode == OP_TEXT:
                    text = payload.decode("utf-8", "replace")
                    if len(out.texts) < 1000:
                        out.texts.append(text)
                    if until is not None and until(text):
                        return out
                elif opcode == OP_BINARY:
                    out.binaries += 1
                elif opcode == OP_PING:
                    self.writer.write(frame(OP_PONG, payload))
        except (asyncio.TimeoutError, TimeoutError):
            out.timed_out = True
            return out
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # EOF or reset without a close frame: close_code stays None
        self.abort()
        return out

    async def close(self, code: int = 1000, timeout: float = 10.0) -> Closing:
        """A clean close from our side; the server must answer with its close frame."""
        try:
            await self.send_frame(frame(OP_CLOSE, close_payload(code)))
        except (ConnectionError, RuntimeError):
            pass
        return await self.read_until_close(timeout)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (an abrupt disconnect)."""
        self.writer.transport.abort()


async def raw_http(port: int, request: bytes, timeout: float = 10.0) -> int | None:
    """Send ``request`` bytes as they are; the response's status (None: no HTTP answer)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split(b" ", 2)
        return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None
    except (asyncio.TimeoutError, TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.transport.abort()


# --- the kernel's view of a connection --------------------------------------------------------

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


@dataclass(frozen=True)
class TcpEntry:
    state: str
    tx_queue: int  # bytes sent but not yet acknowledged / waiting for the peer's window
    rx_queue: int  # bytes received, not yet read by the application


def tcp_table() -> dict[tuple[int, int], TcpEntry]:
    """Every IPv4 loopback TCP socket: (local port, remote port) -> entry (Linux /proc/net/tcp)."""
    out: dict[tuple[int, int], TcpEntry] = {}
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            cols = line.split()
            local, remote, state, queues = cols[1], cols[2], cols[3], cols[4]
            tx, rx = (int(x, 16) for x in queues.split(":"))
            key = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
            out[key] = TcpEntry(TCP_STATES.get(state, state), tx, rx)
    return out


def small_socket(rcvbuf: int = 4096) -> socket.socket:
    """A non-blocking client socket with a small receive buffer (a reader that stops early fills it soon)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    return sock
