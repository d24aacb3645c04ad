"""Scenario (b): malformed input at every endpoint, every case of the hardening issue included,
then seeded random mutations of valid messages.

Each case is judged the way a client would see it:
* HTTP: any answer below 500 is a clear refusal; a 5xx or no answer at all is a failure.
* WebSocket: the server answers with an ``error`` event (the socket then must still close
  cleanly when we close it) or closes with a close frame; 1011 (internal error) or a socket
  dropped without a close frame is a failure. After every xiaozhi case, while that device is
  still connected, ``GET /v1/xiaozhi/devices`` must answer 200 (the issue saw 500s there).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass

import httpx

from .wire import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawWebSocket, frame, raw_http

DEEP = 100_000
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
HUGE_INT = "9" * 5000
SURROGATE = "\\ud800"  # as it appears inside JSON text
JSON_ROUTES = ("/v1/audio/speech", "/audio/speech", "/tts", "/tts_url")
ANSWER_WAIT_S = 1.5


@dataclass
class CaseResult:
    name: str
    target: str
    status: int | None = None  # HTTP status
    close_code: int | None = None  # WebSocket close code from the server's close frame
    closed_without_frame: bool = False
    error_event: str | None = None
    devices_status: int | None = None  # GET /v1/xiaozhi/devices while a fuzzed device is connected
    ok: bool = True
    why: str = ""


def _json_bodies() -> list[tuple[str, bytes]]:
    """(name, raw body) for every JSON route; 'input' and 'text' both carry the text."""
    ok = '"input": "Hello.", "text": "Hello."'
    cases = [
        ("deep-array", DEEP_ARRAY), ("deep-object", DEEP_OBJECT),
        ("huge-int", f'{{{ok}, "speed": {HUGE_INT}}}'), ("huge-float", f'{{{ok}, "speed": 1.{HUGE_INT}}}'),
        ("surrogate-text", f'{{"input": "hi {SURROGATE} there", "text": "hi {SURROGATE} there"}}'),
        ("surrogate-key", f'{{{ok}, "{SURROGATE}": 1}}'), ("surrogate-voice", f'{{{ok}, "voice": "{SURROGATE}"}}'),
        ("nan", f'{{{ok}, "speed": NaN}}'), ("empty", ""), ("truncated", '{"input": "hi'),
        ("array", "[1, 2]"), ("string", '"hello"'), ("null", "null"),
        ("nul-text", '{"input": "\\u0000", "text": "\\u0000"}'),
    ]
    fields = [("input-list", '"input": [], "text": []'), ("input-object", '"input": {}, "text": {}'),
              ("input-number", '"input": 5, "text": 5'), ("text-too-long", f'"input": "{"x" * 5000}", '
                                                                           f'"text": "{"x" * 5000}"'),
              ("voice-list", f'{ok}, "voice": []'), ("voice-id-list", f'{ok}, "voice": {{"id": []}}'),
              ("speed-string", f'{ok}, "speed": "fast"'), ("speed-huge", f'{ok}, "speed": 1e308'),
              ("speed-negative", f'{ok}, "speed": -1'), ("emotion-number", f'{ok}, "emotion": 5'),
              ("emotion-vector-string", f'{ok}, "emotion": {{"vector": "x"}}'),
              ("emotion-mode-list", f'{ok}, "emotion": {{"mode": []}}'), ("language-unknown", f'{ok}, "language": "xx"'),
              ("language-list", f'{ok}, "language": []'), ("format-list", f'{ok}, "response_format": []'),
              ("format-aac", f'{ok}, "response_format": "aac"'), ("stream-format-object", f'{ok}, "stream_format": {{}}'),
              ("sample-rate-string", f'{ok}, "sample_rate": "x", "response_format": "pcm"'),
              ("extra-list", f'{ok}, "extra": []'), ("emo-method-string", f'{ok}, "emo_control_method": "1"'),
              ("model-list", f'{ok}, "model": []'), ("audio-paths-number", f'{ok}, "audio_paths": 5')]
    return [(n, b.encode()) for n, b in cases] + [(n, f"{{{b}}}".encode()) for n, b in fields] + [
        ("bad-utf8", b'{"input": "\xff\xfe", "text": "\xc3\x28"}')]


def http_cases(device_id: str) -> list[tuple[str, str, str, dict, bytes]]:
    """(name, method, path, headers, body) for every HTTP endpoint."""
    json_type = {"content-type": "application/json"}
    out = []
    for route in (*JSON_ROUTES, f"/v1/xiaozhi/devices/{device_id}/speak", "/xiaozhi/ota/"):
        out += [(f"{route} {name}", "POST", route, json_type, body) for name, body in _json_bodies()]
        out.append((f"{route} form-body", "POST", route, {"content-type": "application/x-www-form-urlencoded"},
                    b"input=hi&text=hi"))
    boundary = "soakboundary"
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    out += [
        ("voices not-multipart", "POST", "/v1/audio/voices", json_type, b'{"file": "x"}'),
        ("voices garbage-multipart", "POST", "/v1/audio/voices", multipart, b"--soakboundary\r\ngarbage"),
        ("voices not-audio", "POST", "/v1/audio/voices", multipart, _multipart(boundary, b"not audio at all")),
        ("voices bad-id", "POST", "/v1/audio/voices", multipart, _multipart(boundary, b"RIFF0000", voice_id="../x")),
        ("voices bad-utf8-name", "POST", "/v1/audio/voices", multipart,
         _multipart(boundary, b"RIFF0000", name=b"\xff\xfe\xed\xa0\x80")),
    ]
    for name, path in [("voice surrogate-path", "/v1/audio/voices/%ED%A0%80"),
                       ("voice traversal", "/v1/audio/voices/..%2F..%2Fetc%2Fpasswd"),
                       ("voice long-id", "/v1/audio/voices/" + "x" * 5000), ("voice nul", "/v1/audio/voices/a%00b"),
                       ("voice audio missing", "/v1/audio/voices/nope/audio"), ("health bad-query", "/health?x=%ff%fe"),
                       ("devices", "/v1/xiaozhi/devices"), ("metrics", "/metrics"), ("models", "/v1/models"),
                       ("speakers", "/audio/voices"), ("no-route", "/v1/%ED%A0%80")]:
        out.append((name, "GET", path, {}, b""))
    out += [("voice delete-missing", "DELETE", "/v1/audio/voices/nope", {}, b""),
            ("abort missing-device", "POST", "/v1/xiaozhi/devices/%ED%A0%80/abort", {}, b"")]
    return out


def _multipart(boundary: str, data: bytes, voice_id: str | None = None, name: bytes | None = None) -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
             + data + b"\r\n"]
    if voice_id is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="id"\r\n\r\n{voice_id}\r\n'.encode())
    if name is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode() + name + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def raw_http_cases(device_id: str) -> list[tuple[str, bytes, bool]]:
    """(name, bytes, must the server answer?): requests no HTTP client library would send."""
    declared = [(f"{route} declared-huge", f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 900000000\r\n\r\n{{}}".encode(), True)
                for route in (*JSON_ROUTES, f"/v1/xiaozhi/devices/{device_id}/speak", "/v1/audio/voices")]
    return declared + [(name, data, False) for name, data in RAW_HTTP]


RAW_HTTP = [
    ("garbage", b"GARBAGE\r\n\r\n"),
    ("negative-length", b"POST /tts HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ("bad-header", b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: \x00\x01\r\n\r\n"),
    ("long-request-line", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("tls-hello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64),
    ("bad-upgrade", b"GET /v1/tts/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"),
]


def _text(s: str) -> bytes:
    return frame(OP_TEXT, s.encode("utf-8", "surrogatepass"))


def protocol_frames() -> list[tuple[str, list[bytes]]]:
    """Frames that break RFC 6455 itself (any WebSocket endpoint)."""
    return [
        ("invalid-utf8-frame", [frame(OP_TEXT, b"\xff\xfe{not utf-8")]),
        ("surrogate-utf8-frame", [frame(OP_TEXT, b'{"type": "\xed\xa0\x80"}')]),
        ("oversized-message", [frame(OP_TEXT, b"[" + b"1," * (2_500_000) + b"1]")]),
        ("unmasked-frame", [frame(OP_TEXT, b'{"type":"ping"}', mask=False)]),
        ("reserved-bits", [frame(OP_TEXT, b"{}", rsv=1)]),
        ("unknown-opcode", [frame(0x3, b"x")]),
        ("long-ping", [frame(OP_PING, b"x" * 200)]),
        ("stray-continuation", [frame(OP_CONT, b"x")]),
        ("unfinished-then-text", [frame(OP_TEXT, b'{"ty', fin=False), frame(OP_TEXT, b'pe": 1}')]),
    ]


def agent_cases() -> list[tuple[str, list[bytes]]]:
    """(name, frames sent after ``ready``) for ``/v1/tts/stream``."""
    messages = [
        ("deep-array", DEEP_ARRAY), ("deep-object", DEEP_OBJECT),
        ("huge-int", f'{{"type": "text", "context_id": "a", "text": "hi", "speed": {HUGE_INT}}}'),
        ("type-list", '{"type": []}'), ("type-object", '{"type": {}}'), ("type-null", '{"type": null}'),
        ("context-surrogate", f'{{"type": "text", "context_id": "{SURROGATE}", "text": "hi"}}'),
        ("text-surrogate", f'{{"type": "text", "context_id": "a", "text": "hi {SURROGATE}", "end": true}}'),
        ("context-list", '{"type": "text", "context_id": [], "text": "hi"}'),
        ("text-list", '{"type": "text", "context_id": "a", "text": []}'),
        ("cancel-object", '{"type": "cancel", "context_id": {}}'), ("flush-unknown", '{"type": "flush", "context_id": "x"}'),
        ("config-output-list", '{"type": "config", "output": []}'),
        ("config-rate-string", '{"type": "config", "output": {"sample_rate": "x"}}'),
        ("config-deep-voice", '{"type": "config", "voice": ' + "[" * 40 + "]" * 40 + "}"),
        ("not-json", "not json at all"), ("array", "[1, 2, 3]"), ("string", '"text"'),
        ("text-too-long", '{"type": "text", "context_id": "a", "text": "' + "x" * 20_000 + '"}'),
        ("unknown-type", '{"type": "launch_missiles"}'),
    ]
    return [(n, [_text(m)]) for n, m in messages] + [("binary", [frame(OP_BINARY, b"\x01\x00\x00\x00")])] \
        + protocol_frames()


def _hello(version: int, **extra) -> str:
    body = {"type": "hello", "version": version, "transport": "websocket", "features": {"mcp": True},
            "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}, **extra}
    return json.dumps(body)


def xiaozhi_cases() -> list[tuple[str, bool, list[bytes]]]:
    """(name, send a valid hello first?, frames) for ``/xiaozhi/v1/``."""
    first = [
        ("hello-deep", DEEP_OBJECT), ("hello-huge-int", _hello(1)[:-1] + f', "x": {HUGE_INT}}}'),
        ("hello-surrogate-feature", _hello(1).replace('"mcp": true', f'"mcp": "{SURROGATE}"')),
        ("hello-version-list", _hello(1).replace('"version": 1', '"version": []')),
        ("hello-version-9", _hello(9)), ("text-before-hello", "garbage"), ("listen-before-hello", '{"type": "listen"}'),
    ]
    after = [
        ("listen-state-surrogate", f'{{"type": "listen", "state": "{SURROGATE}", "mode": "auto"}}'),
        ("listen-state-list", '{"type": "listen", "state": [], "mode": {}}'),
        ("abort-reason-object", '{"type": "abort", "reason": {}}'),
        ("speak-text-list", '{"type": "speak", "text": []}'),
        ("speak-surrogate", f'{{"type": "speak", "text": "hi {SURROGATE}"}}'),
        ("speak-huge-speed", f'{{"type": "speak", "text": "hi", "speed": {HUGE_INT}}}'),
        ("speak-deep", '{"type": "speak", "text": "hi", "emotion": ' + DEEP_ARRAY + "}"),
        ("hello-again-surrogate", _hello(1).replace('"mcp": true', f'"mcp": "{SURROGATE}"')),
        ("type-list", '{"type": []}'), ("mcp-deep", '{"type": "mcp", "payload": ' + DEEP_OBJECT + "}"),
    ]
    cases = [(n, False, [_text(m)]) for n, m in first] + [("binary-before-hello", False, [frame(OP_BINARY, b"\0")])]
    cases += [(n, True, [_text(m)]) for n, m in after]
    cases += [("binary-short-header", True, [frame(OP_BINARY, b"\x00\x02")]),
              ("binary-length-mismatch", True, [frame(OP_BINARY, b"\x00\x00\xff\xff" + b"x" * 10)])]
    return cases + [(n, True, frames) for n, frames in protocol_frames()]


class Fuzzer:
    def __init__(self, port: int, seed: int, deadline: float) -> None:
        self.port, self.rng, self.deadline = port, random.Random(seed), deadline
        self.results: list[CaseResult] = []
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def done(self) -> bool:
        return time.monotonic() >= self.deadline

    async def http_case(self, name: str, method: str, path: str, headers: dict, body: bytes) -> None:
        result = CaseResult(name, "http")
        try:
            r = await self.http.request(method, path, headers=headers, content=body or None)
            result.status = r.status_code
        except httpx.HTTPError as e:
            result.why = f"no answer: {type(e).__name__}"
        self.results.append(_judge(result))

    async def raw_http_case(self, name: str, data: bytes, must_answer: bool) -> None:
        result = CaseResult(f"raw {name}", "http" if must_answer else "http-raw")
        result.status = await raw_http(self.port, data)
        if result.status is None and not must_answer:  # closing a connection that is not HTTP at all is fair
            result.why = "connection closed without an HTTP answer"
        self.results.append(_judge(result))

    async def ws_case(self, name: str, path: str, headers: dict, setup: list[bytes], frames: list[bytes],
                      ready: str | None, devices_check: bool) -> None:
        result = CaseResult(name, path)
        try:
            ws = await RawWebSocket.open(self.port, path, headers)
        except (OSError, asyncio.TimeoutError, TimeoutError) as e:
            result.ok, result.why = False, f"cannot connect: {type(e).__name__}"
            self.results.append(result)
            return
        try:
            if ws.status == 101 and ready is not None:
                for data in setup:
                    await ws.send_frame(data)
                await ws.read_until_close(5.0, until=lambda t: f'"type": "{ready}"' in t or f'"type":"{ready}"' in t)
            for data in frames:
                await ws.send_frame(data)
            seen = await ws.read_until_close(ANSWER_WAIT_S, until=lambda t: '"error"' in t)
            if devices_check:
                result.devices_status = (await self.http.get("/v1/xiaozhi/devices")).status_code
            if seen.close_code is None and (seen.timed_out or seen.texts):
                errors = [t for t in seen.texts if '"error"' in t]
                result.error_event = errors[-1][:200] if errors else None
                seen = await ws.close()  # still open: a clean close must be answered
            result.status = seen.http_status
            result.close_code = seen.close_code
            result.closed_without_frame = seen.close_code is None and seen.http_status is None
        except (ConnectionError, RuntimeError, httpx.HTTPError) as e:
            result.why = f"{type(e).__name__}: {e}"[:200]
            result.closed_without_frame = True
        finally:
            ws.abort()
        self.results.append(_judge(result))

    async def run_fixed(self) -> None:
        for case in http_cases("soak-nobody"):
            if self.done():
                return
            await self.http_case(*case)
        for case in raw_http_cases("soak-nobody"):
            await self.raw_http_case(*case)
        for name, frames in agent_cases():
            if self.done():
                return
            await self.ws_case(f"agent {name}", "/v1/tts/stream", {}, [], frames, "ready", False)
        for name, hello_first, frames in xiaozhi_cases():
            if self.done():
                return
            version = self.rng.choice((1, 2, 3))
            headers = {"Device-Id": f"soak-fuzz-{uuid.uuid4().hex[:8]}", "Client-Id": str(uuid.uuid4()),
                       "Protocol-Version": str(version)}
            setup = [_text(_hello(version)), _text('{"type": "listen", "state": "start", "mode": "auto"}')]
            await self.ws_case(f"xiaozhi v{version} {name}", "/xiaozhi/v1/", headers, setup if hello_first else [],
                               frames, "hello" if hello_first else None, True)

    async def run_random(self, n: int) -> None:
        """Seeded mutations of valid messages: cut, flipped bytes, a field replaced by a hostile value."""
        hostile = [[], {}, None, True, -1, 1e308, int("9" * 60), "\ud800", "x" * 10_000, [[[[[]]]]], "\u0000"]
        for i in range(n):
            if self.done():
                return
            kind = self.rng.choice(("http", "agent"))
            base = ({"input": "Hi.", "text": "Hi.", "voice": "alloy", "speed": 1.0, "response_format": "pcm"}
                    if kind == "http" else {"type": "text", "context_id": "a", "text": "Hi.", "end": True})
            base[self.rng.choice(list(base))] = self.rng.choice(hostile)
            raw = json.dumps(base).encode("utf-8", "surrogatepass")
            if self.rng.random() < 0.5:
                raw = bytearray(raw)
                for _ in range(self.rng.randint(1, 4)):
                    raw[self.rng.randrange(len(raw))] = self.rng.randrange(256)
                raw = bytes(raw[:self.rng.randint(1, len(raw))])
            if kind == "http":
                route = self.rng.choice(JSON_ROUTES)
                await self.http_case(f"random-{i} {route}", "POST", route, {"content-type": "application/json"}, raw)
            else:
                await self.ws_case(f"random-{i} agent", "/v1/tts/stream", {}, [], [frame(OP_TEXT, raw)], "ready", False)

    async def close(self) -> None:
        await self.http.aclose()


def _judge(result: CaseResult) -> CaseResult:
    bad = []
    if result.status is not None and result.status >= 500:
        bad.append(f"HTTP {result.status}")
    if result.target == "http" and result.status is None:
        bad.append("no HTTP answer")
    if result.close_code == 1011:
        bad.append("closed with 1011 (internal error)")
    if result.closed_without_frame:
        bad.append("socket closed without a close frame")
    if result.devices_status is not None and result.devices_status != 200:
        bad.append(f"GET /v1/xiaozhi/devices answered {result.devices_status}")
    result.ok = not bad
    result.why = "; ".join(bad + ([result.why] if result.why else []))
    return result


async def run_fuzz(port: int, *, rounds: int, random_cases: int, seed: int, duration_s: float) -> dict:
    fuzzer = Fuzzer(port, seed, time.monotonic() + duration_s)
    try:
        for _ in range(rounds):
            await fuzzer.run_fixed()
        await fuzzer.run_random(random_cases)
    finally:
        await fuzzer.close()
    results = fuzzer.results
    failures = [asdict(r) for r in results if not r.ok]
    return {"cases": len(results), "failed": len(failures),
            "status_5xx": sum(1 for r in results if (r.status or 0) >= 500 or (r.devices_status or 0) >= 500),
            "close_1011": sum(1 for r in results if r.close_code == 1011),
            "closed_without_frame": sum(1 for r in results if r.closed_without_frame),
            "close_codes": dict(Counter(str(r.close_code) for r in results if r.close_code is not None)),
            "failures": failures[:200], "timed_out": fuzzer.done()}
