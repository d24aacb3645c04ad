"""Scenario (a): xiaozhi devices (protocol v1/v2/v3) and agent streams that speak, abort,
drop the TCP connection without a close frame, close cleanly and reconnect, at random, until a
deadline; and scenario (d): 4,000-character OpenAI speech requests (mp3, Ogg Opus) meanwhile.

Every client loop is bounded by the deadline and a count; every wait has a timeout. The
clients only count what they receive (no decoding), so the load generator stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

SENTENCES = ["Hello there, how are you today?", "The weather is sunny and warm.", "Let us go for a walk.",
             "你好，很高兴见到你。", "今天天气很好。", "Numbers like 42 and 3.5 are read aloud.",
             "This sentence is a little longer than the others, so it takes a while to say."]
ACTIONS = ("finish", "abort", "drop", "close")  # drop: the TCP connection goes without a close frame
WEIGHTS = (4, 2, 2, 2)
MAX_SESSIONS_PER_CLIENT = 10_000
TURN_TIMEOUT_S = 60.0


@dataclass
class LoadStats:
    sessions: Counter = field(default_factory=Counter)  # kind -> connections opened
    actions: Counter = field(default_factory=Counter)  # "kind:action" -> count
    turns_done: int = 0
    packets: int = 0
    connect_failures: Counter = field(default_factory=Counter)  # reason -> count
    server_closes: Counter = field(default_factory=Counter)  # close code the server chose mid-session
    no_close_frame: int = 0  # sessions the server (or a clean close) ended without a close frame
    no_close_details: list[dict] = field(default_factory=list)  # the first few, to tell what happened
    error_events: Counter = field(default_factory=Counter)  # server error codes
    timeouts: int = 0
    client_errors: Counter = field(default_factory=Counter)  # the harness's own surprises, by type
    http: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"sessions": dict(self.sessions), "actions": dict(self.actions), "turns_done": self.turns_done,
                "packets": self.packets, "connect_failures": dict(self.connect_failures),
                "server_closes": {str(k): v for k, v in self.server_closes.items()},
                "no_close_frame": self.no_close_frame, "no_close_details": self.no_close_details,
                "error_events": dict(self.error_events),
                "timeouts": self.timeouts, "client_errors": dict(self.client_errors), "http": self.http}


async def _until(ws, stats: LoadStats, predicate, timeout: float) -> dict | None:
    """Read until a JSON message matching ``predicate`` (returned) or ``timeout`` (None)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(ws.recv(), left)
        except (asyncio.TimeoutError, TimeoutError):
            return None
        if isinstance(data, bytes):
            stats.packets += 1
            continue
        message = json.loads(data)
        if message.get("type") == "error":
            stats.error_events[str(message.get("code"))] += 1
        if predicate(message):
            return message
    return None


async def close_reading(ws) -> None:
    """Close as a well-behaved client does: reading on while the closing handshake runs. A client
    that stops reading first leaves the server's close frame behind the audio still in flight, and
    once its incoming buffer is full ``close()`` can only time out (python-websockets/websockets
    issue 1555): that would count as the server's missing close frame."""
    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    reader = asyncio.create_task(drain())
    try:
        await ws.close()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class Session:
    """One connection of one client: connect, speak, act, and account for how it ended."""

    kind = ""
    path = ""

    def __init__(self, port: int, rng: random.Random, stats: LoadStats) -> None:
        self.port, self.rng, self.stats = port, rng, stats
        self.ws = None
        self.dropped = False

    def headers(self) -> dict[str, str]:
        return {}

    async def run(self) -> None:
        try:
            self.ws = await connect(f"ws://127.0.0.1:{self.port}{self.path}", additional_headers=self.headers(),
                                    open_timeout=10, close_timeout=10, max_size=None, ping_interval=None)
        except (OSError, InvalidHandshake, asyncio.TimeoutError, TimeoutError) as e:
            self.stats.connect_failures[type(e).__name__] += 1
            return
        self.stats.sessions[self.kind] += 1
        action, step, started = self.rng.choices(ACTIONS, WEIGHTS)[0], "converse", time.monotonic()
        try:
            await self.converse(action)
            if not self.dropped:
                step, started = "close", time.monotonic()
                await close_reading(self.ws)
        except ConnectionClosed as e:
            if e.rcvd is not None:
                self.stats.server_closes[e.rcvd.code] += 1
        finally:
            if not self.dropped and self.ws.protocol.close_rcvd is None:
                self.stats.no_close_frame += 1
                if len(self.stats.no_close_details) < 20:
                    self.stats.no_close_details.append({
                        "kind": self.kind, "action": action, "step": step, "t": time.time(),
                        "seconds": round(time.monotonic() - started, 3), "sent": self.ws.protocol.close_sent is not None,
                        "state": self.ws.protocol.state.name, "local_port": self.ws.local_address[1]})
            if not self.dropped:
                self.ws.transport.abort()  # whatever happened, nothing stays open

    async def converse(self, action: str) -> None:
        raise NotImplementedError

    async def act(self, action: str, stop_message, done) -> None:
        """``finish``: hear the turn out; else listen a while, then abort / drop / close."""
        self.stats.actions[f"{self.kind}:{action}"] += 1
        if action == "finish":
            if await _until(self.ws, self.stats, done, TURN_TIMEOUT_S) is None:
                self.stats.timeouts += 1
            else:
                self.stats.turns_done += 1
            return
        await _until(self.ws, self.stats, lambda m: False, self.rng.uniform(0.1, 2.0))
        if action == "abort":
            await self.ws.send(json.dumps(stop_message))
            if await _until(self.ws, self.stats, done, 15.0) is None:
                self.stats.timeouts += 1
        elif action == "drop":
            self.dropped = True
            self.ws.transport.abort()

    def text(self) -> str:
        return " ".join(self.rng.choice(SENTENCES) for _ in range(self.rng.randint(1, 3)))


class XiaozhiSession(Session):
    kind, path = "xiaozhi", "/xiaozhi/v1/"

    def headers(self) -> dict[str, str]:
        self.version = self.rng.choice((1, 2, 3))
        return {"Device-Id": f"soak-{self.rng.getrandbits(40):010x}", "Client-Id": str(uuid.uuid4()),
                "Protocol-Version": str(self.version)}

    async def converse(self, action: str) -> None:
        await self.ws.send(json.dumps({"type": "hello", "version": self.version, "transport": "websocket",
                                       "features": {"mcp": True}, "audio_params": {
                                           "format": "opus", "sample_rate": 16000, "channels": 1,
                                           "frame_duration": 60}}))
        if await _until(self.ws, self.stats, lambda m: m.get("type") == "hello", 10.0) is None:
            self.stats.timeouts += 1
            return
        await self.ws.send(json.dumps({"type": "listen", "state": "start", "mode": "auto"}))
        await self.ws.send(json.dumps({"type": "speak", "text": self.text()}))
        await self.act(action, {"type": "abort"}, lambda m: m.get("type") == "tts" and m.get("state") == "stop")


class AgentSession(Session):
    kind, path = "agent", "/v1/tts/stream"

    async def converse(self, action: str) -> None:
        if await _until(self.ws, self.stats, lambda m: m.get("type") == "ready", 10.0) is None:
            self.stats.timeouts += 1
            return
        await self.ws.send(json.dumps({"type": "text", "context_id": "c1", "text": self.text(), "end": True}))
        await self.act(action, {"type": "cancel", "context_id": "c1"},
                       lambda m: m.get("type") in ("done", "cancelled"))


async def client_loop(cls, port: int, seed: int, deadline: float, stats: LoadStats) -> None:
    """One simulated client: sessions one after another (a reconnect after each) until ``deadline``."""
    rng = random.Random(seed)
    for _ in range(MAX_SESSIONS_PER_CLIENT):
        if time.monotonic() >= deadline:
            return
        try:
            await cls(port, rng, stats).run()
        except Exception as e:  # e.g. a server message that is not JSON: counted, the client goes on
            stats.client_errors[f"{type(e).__name__}: {str(e)[:80]}"] += 1
        await asyncio.sleep(rng.uniform(0.0, 0.5))


def long_text(chars: int = 4000) -> str:
    words, out = SENTENCES[:3] + SENTENCES[5:], []
    while sum(len(s) + 1 for s in out) < chars:
        out.append(words[len(out) % len(words)])
    return " ".join(out)[:chars]


async def big_speech(port: int, response_format: str, stats: LoadStats, timeout: float = 600.0) -> None:
    """One 4,000-character OpenAI speech request, read to the end; its window and outcome."""
    record = {"format": response_format, "start": time.time(), "status": None, "bytes": 0, "first_byte_s": None}
    body = {"model": "tts-1", "voice": "alloy", "input": long_text(), "response_format": response_format}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as http:
            async with http.stream("POST", "/v1/audio/speech", json=body) as response:
                record["status"] = response.status_code
                async for chunk in response.aiter_bytes():
                    if record["first_byte_s"] is None:
                        record["first_byte_s"] = round(time.time() - record["start"], 3)
                    record["bytes"] += len(chunk)
    except httpx.HTTPError as e:
        record["error"] = f"{type(e).__name__}: {e}"[:200]
    record["end"] = time.time()
    stats.http.append(record)


async def run_load(port: int, *, sessions: int, agents: int, duration_s: float, seed: int,
                   big_requests: bool) -> LoadStats:
    """Scenario (a), with scenario (d)'s two big requests at 20 % and 55 % of the duration."""
    stats = LoadStats()
    deadline = time.monotonic() + duration_s
    tasks = [asyncio.create_task(client_loop(XiaozhiSession, port, seed * 100_003 + i, deadline, stats))
             for i in range(sessions)]
    tasks += [asyncio.create_task(client_loop(AgentSession, port, seed * 200_003 + i, deadline, stats))
              for i in range(agents)]
    if big_requests:
        async def later(delay: float, fmt: str) -> None:
            await asyncio.sleep(delay)
            await big_speech(port, fmt, stats)

        tasks += [asyncio.create_task(later(0.2 * duration_s, "mp3")),
                  asyncio.create_task(later(0.55 * duration_s, "opus"))]
    await asyncio.gather(*tasks)
    return stats
