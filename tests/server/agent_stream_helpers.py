"""Shared pieces for the /v1/tts/stream tests: a live server factory and a raw protocol client.

The raw client deliberately does not use clients/agent_client.py: these tests pin the wire
format (JSON fields, the 8-byte binary header) byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time

import numpy as np
from websockets.asyncio.client import connect

from http_helpers import ENGINE_RATE, ToneEngine, live_server, make_ctx

HEADER = struct.Struct(">BBHI")


@contextlib.contextmanager
def serving(tmp_path, engine=None, **settings):
    """(ctx, ws_url, http_url) of a live uvicorn running the whole app."""
    ctx = make_ctx(tmp_path, engine or ToneEngine(), **settings)
    with live_server(ctx) as url:
        yield ctx, url.replace("http://", "ws://") + "/v1/tts/stream", url


class Raw:
    """A thin protocol client: JSON dicts out, dicts (JSON) or bytes (binary frames) in."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ready: dict | None = None

    async def send(self, **msg) -> None:
        await self.ws.send(json.dumps(msg))

    async def send_raw(self, data) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 30.0):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return raw if isinstance(raw, bytes) else json.loads(raw)

    async def until(self, pred, timeout: float = 60.0) -> list:
        """Receive until ``pred(item)`` holds; returns every item received, that one included."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            item = await self.recv(max(0.01, deadline - time.monotonic()))
            out.append(item)
            if pred(item):
                return out

    async def expect_error(self, code: str, timeout: float = 30.0) -> dict:
        items = await self.until(lambda m: isinstance(m, dict) and m.get("type") == "error", timeout)
        err = items[-1]
        assert err["code"] == code, err
        assert isinstance(err["message"], str) and err["message"], err
        return err


@contextlib.asynccontextmanager
async def opened(url: str, **kw):
    async with connect(url, max_size=None, **kw) as ws:
        raw = Raw(ws)
        raw.ready = await raw.recv()
        assert raw.ready["type"] == "ready", raw.ready
        yield raw


def is_type(kind: str, context_id: str | None = None):
    def pred(m) -> bool:
        if not isinstance(m, dict) or m.get("type") != kind:
            return False
        return context_id is None or m.get("context_id") == context_id
    return pred


def events(items, kind: str | None = None) -> list[dict]:
    return [m for m in items if isinstance(m, dict) and (kind is None or m["type"] == kind)]


def frames(items, slot: int | None = None) -> list[tuple[int, int, int, int, bytes]]:
    """(version, kind, slot, seq, payload) of every binary frame (of one slot)."""
    out = []
    for m in items:
        if isinstance(m, bytes):
            head = HEADER.unpack_from(m)
            if slot is None or head[2] == slot:
                out.append((*head, m[HEADER.size:]))
    return out


def pcm_of(frame_list) -> np.ndarray:
    return np.frombuffer(b"".join(f[4] for f in frame_list), "<i2").astype(np.float32) / 32768


def tone_seconds(texts: list[str], silence_ms: int = 100) -> float:
    """Audio length ToneEngine gives for these segments, each followed by the silence."""
    return sum(0.05 * len(t) + silence_ms / 1000 for t in texts)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


async def wait_for(cond, timeout: float = 20.0) -> None:
    """Poll ``cond()`` until true (a deadline for hangs, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


__all__ = ["ENGINE_RATE", "HEADER", "Raw", "ToneEngine", "dominant_hz", "events", "frames", "is_type", "opened",
           "pcm_of", "serving", "tone_seconds", "wait_for"]
