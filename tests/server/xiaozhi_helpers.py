"""Shared pieces of the xiaozhi endpoint tests: a live server with the ToneEngine and the device simulator."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for clients/
from http_helpers import ToneEngine, live_server, make_ctx  # noqa: E402

from clients.device_simulator import SAMPLE_RATE, DeviceSimulator  # noqa: E402

# Small, fast defaults: 2 packets of pre-buffer keep every turn short.
FAST = {"silence_ms": 200, "xiaozhi_prebuffer_packets": 2, "xiaozhi_max_lead_ms": 400}


@contextlib.contextmanager
def serve(tmp_path, engine=None, **overrides):
    """(ctx, ws_url, http_base) of a live server on the ToneEngine."""
    ctx = make_ctx(tmp_path, engine or ToneEngine(), **{**FAST, **overrides})
    with live_server(ctx) as base:
        yield ctx, base.replace("http://", "ws://") + "/xiaozhi/v1/", base


def device(url: str, **kw) -> DeviceSimulator:
    kw.setdefault("warn", lambda msg: None)
    return DeviceSimulator(url, **kw)


def silence_runs_ms(pcm: np.ndarray, *, threshold: float = 0.02, window: int = 120) -> list[float]:
    """Lengths (ms) of the quiet runs strictly inside the audio (leading/trailing quiet ignored)."""
    n = len(pcm) // window
    loud = np.abs(pcm[: n * window]).reshape(n, window).max(axis=1) > threshold
    idx = np.flatnonzero(loud)
    if len(idx) == 0:
        return []
    runs, quiet = [], 0
    for is_loud in loud[idx[0]: idx[-1] + 1]:
        if is_loud:
            if quiet:
                runs.append(quiet * window * 1000 / SAMPLE_RATE)
            quiet = 0
        else:
            quiet += 1
    return runs


async def on_server_loop(session, coro_fn):
    """Run ``coro_fn()`` on the server's event loop (the session lives there) and await it here."""
    loop = session.loop
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(), loop))


async def until(condition, timeout: float = 5.0) -> None:
    """Poll ``condition()`` (server-side state, updated on the server's loop) until true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
