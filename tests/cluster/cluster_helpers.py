"""Shared pieces of the replica tests: a live server that drains like `serve`, ports, processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT))  # the repo root, for clients/
from http_helpers import ToneEngine, build_app, make_ctx  # noqa: E402,F401

from realtime_tts.server.lifecycle import DrainingServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def draining_server(ctx):
    """The app under uvicorn in a thread, as `serve` runs it; yields (http base URL, server).

    ``server.handle_exit(signal.SIGTERM, None)`` is what a SIGTERM does (uvicorn only installs
    signal handlers on the main thread, so the test calls the handler itself).
    """
    app = build_app(ctx)
    port = free_port()
    server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), ctx.lifecycle)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and ctx.ready.is_set()):
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        server.thread = thread
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


def serve_process(port: int, *args: str, env: dict | None = None, log=None) -> subprocess.Popen:
    """`realtime-tts serve --engine espeak` on ``port`` (this checkout's code), its own process group."""
    command = [sys.executable, "-m", "realtime_tts.cli", "serve", "--engine", "espeak", "--host", "127.0.0.1",
               "--port", str(port), *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True)


def wait_ready(base: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready within {timeout:g} s")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (a drain), then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
