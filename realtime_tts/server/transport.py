"""Closing a connection ends it, even when the client stopped reading.

asyncio's ``transport.close()`` flushes what is buffered before it lets the socket go; a client
that reads nothing never lets that happen, so a connection the server has given up on (a write
timeout, an aborted response, a WebSocket closed after its peer stalled) would stay open, with
its buffers, until the kernel's keepalive gives up hours later. uvicorn only ever calls
``close()``. The protocol classes here hand uvicorn a transport whose ``close()`` also arms a
check after ``grace_s``: a peer that reads gets everything (the flush has finished by then and
the check finds nothing to do); one that does not is cut off with a TCP reset. A plain
``abort()`` is not enough: it closes the socket with unsent bytes in the kernel's buffer, which
the kernel then keeps trying to deliver, so the peer's connection stays open. Dropping the
socket with a zero linger time discards them and resets the connection.

The close also lingers, as web servers do: it sends what is buffered and a FIN, then reads and
drops whatever the peer still sends until the peer closes too (or ``grace_s`` passes). Closing a
socket with unread input makes the kernel answer with a reset, and a client still sending (one
whose 5 MB message was just refused with 1009, an upload cut short) would lose the close frame or
error response it had not read yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

CLOSE_GRACE_S = 10.0  # time a closed connection's buffered bytes get to reach a reading peer
WS_HIGH_WATER = 8 * 1024  # bytes a WebSocket holds in the process before its writes wait


class _Lingering(asyncio.Protocol):
    """What a half-closed connection's input goes to: dropped; the end of the connection still
    reaches the protocol that served it (and its write flow control, while the rest flushes)."""

    def __init__(self, served: asyncio.BaseProtocol) -> None:
        self.served = served

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the peer closed too: the transport closes itself

    def pause_writing(self) -> None:
        self.served.pause_writing()

    def resume_writing(self) -> None:
        self.served.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.served.connection_lost(exc)


class BoundedCloseTransport:
    """A transport whose ``close()`` lingers, then resets if the flush has not ended in time."""

    def __init__(self, transport: asyncio.Transport, grace_s: float) -> None:
        self._transport, self._grace_s = transport, grace_s
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        t = self._transport
        if t.is_closing() or not t.can_write_eof():
            t.close()
        else:
            t.set_protocol(_Lingering(t.get_protocol()))
            t.write_eof()  # what is buffered, then FIN; the peer's FIN ends it (eof_received)
            t.resume_reading()
        asyncio.get_running_loop().call_later(self._grace_s, self._finish)

    def is_closing(self) -> bool:
        return self._closed or self._transport.is_closing()

    def write(self, data) -> None:
        if not self._closed:  # a late frame (a ping, a keepalive) after the close goes nowhere
            self._transport.write(data)

    def writelines(self, data) -> None:
        if not self._closed:
            self._transport.writelines(data)

    def _finish(self) -> None:
        t = self._transport
        if t.get_write_buffer_size():  # the peer read nothing: drop the rest and reset
            sock = t.get_extra_info("socket")
            with contextlib.suppress(OSError):  # zero linger: close() resets instead of delivering the rest
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        else:
            t.close()  # flushed; a peer that never closed its side is let go (nothing if already closed)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def bounded_close(protocol: type[asyncio.Protocol], grace_s: float,
                  high_water: int | None = None) -> type[asyncio.Protocol]:
    """``protocol`` with every connection's ``close()`` bounded by ``grace_s`` seconds (and, with
    ``high_water``, writes paused once that many bytes wait in the process)."""

    class BoundedClose(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:
            if not isinstance(transport, BoundedCloseTransport):  # an upgraded HTTP connection already is
                transport = BoundedCloseTransport(transport, grace_s)
            if high_water is not None:
                transport.set_write_buffer_limits(high=high_water)
            super().connection_made(transport)

    BoundedClose.__name__ = BoundedClose.__qualname__ = f"BoundedClose{protocol.__name__}"
    return BoundedClose


def protocol_classes(grace_s: float = CLOSE_GRACE_S) -> dict:
    """uvicorn ``Config`` arguments: its automatic HTTP and WebSocket protocols, closes bounded;
    WebSocket writes pause at ``WS_HIGH_WATER`` bytes instead of asyncio's 64 KiB, because a
    device's paced stream (a 60 ms Opus packet is a few hundred bytes) would take minutes to fill
    64 KiB, and the write timeout only starts when writes pause."""
    return {"http": bounded_close(AutoHTTPProtocol, grace_s),
            "ws": bounded_close(AutoWebSocketsProtocol, grace_s, high_water=WS_HIGH_WATER)}
