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


class BoundedCloseTransport:
    """A transport whose ``close()`` becomes a reset if the flush has not ended in time."""

    def __init__(self, transport: asyncio.Transport, grace_s: float) -> None:
        self._transport, self._grace_s = transport, grace_s
        self._abort: asyncio.TimerHandle | None = None

    def close(self) -> None:
        self._transport.close()
        if self._abort is None:
            self._abort = asyncio.get_running_loop().call_later(self._grace_s, self._cut_if_stuck)

    def _cut_if_stuck(self) -> None:
        if not self._transport.get_write_buffer_size():
            return  # flushed and closed (or nothing left to send): the close did its job
        sock = self._transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # zero linger: close() resets instead of delivering the rest
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

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
