"""WS /xiaozhi/v1/ under bad input: every mistake gets an error message or a close code with a
reason naming it, and never disturbs the server or another device. Also auth and timeouts."""

import asyncio
import json
import struct
import sys
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from xiaozhi_helpers import device, serve, until  # noqa: E402

HELLO = {"type": "hello", "version": 1, "transport": "websocket", "features": {"mcp": True},
         "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}}


async def closed_with(ws) -> tuple[int, str]:
    """Read until the server closes; (code, reason)."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason


async def next_error(dev, since: int) -> dict:
    return await dev.wait_for(lambda m: m.get("type") == "error", 5, since=since)


BAD_MESSAGES = [
    ("this is not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "invalid_message", "object"),
    ('{"text": "hi"}', "invalid_message", "no 'type'"),
    ('{"type": "dance"}', "unknown_type", "'dance'"),
    ('{"type": "speak"}', "missing_required_parameter", "'text' is required"),
    ('{"type": "speak", "text": 42}', "invalid_value", "must be a string"),
    ('{"type": "speak", "text": "   "}', "empty_input", "empty"),
    ('{"type": "speak", "text": "... !!!"}', "empty_input", "nothing speakable"),
    ('{"type": "speak", "text": "' + "x" * 81 + '"}', "string_above_max_length", "limit is 80"),
    ('{"type": "speak", "text": "hi", "speed": "fast"}', "invalid_value", "'speed' must be a number"),
    ('{"type": "speak", "text": "hi", "emotion": 7}', "invalid_value", "'emotion' must be"),
    ('{"type": "speak", "text": "hi", "voice": "nobody"}', "voice_not_found", "nobody"),
]


async def test_bad_messages_get_errors_and_the_connection_lives_on(tmp_path):
    with serve(tmp_path, max_text_chars=80) as (ctx, url, _):
        async with device(url) as dev, device(url) as other:
            for frame, code, words in BAD_MESSAGES:
                since = len(dev.messages)
                await dev.send_raw(frame)
                error = await next_error(dev, since)
                assert error["code"] == code and words in error["message"], (frame, error)
                assert error["session_id"] == dev.session_id
            assert dev.turns == []  # nothing was spoken
            await dev.speak("Still fine.")
            await other.speak("Me too.")
            assert (await dev.next_turn(20)).sentences == ["Still fine."]
            assert (await other.next_turn(20)).sentences == ["Me too."]
            assert [m for _, m in other.messages if m.get("type") == "error"] == []


@pytest.mark.parametrize("version, garbage", [
    (2, b"\x00\x01\x02"),
    (2, struct.pack(">HHIII", 2, 0, 0, 0, 50) + b"short"),
    (3, b"\x00"),
    (3, struct.pack(">BBH", 0, 0, 9) + b"abc"),
])
async def test_malformed_uplink_frames(tmp_path, version, garbage):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url, version=version) as dev, device(url, version=version) as other:
            since = len(dev.messages)
            await dev.send_raw(garbage)
            error = await next_error(dev, since)
            assert error["code"] == "invalid_frame" and f"protocol version {version}" in error["message"]
            for _ in range(5):  # reported once, not per frame
                await dev.send_raw(garbage)
            await dev.send_raw(b"")  # zero-length frames are ignored
            await dev.speak("After garbage.")
            assert (await dev.next_turn(20)).sentences == ["After garbage."]
            assert [m["code"] for _, m in dev.messages if m.get("type") == "error"] == ["invalid_frame"]
            assert ctx.devices["default", dev.device_id].bad_frames == 6
            await other.speak("Unaffected.")
            assert (await other.next_turn(20)).sentences == ["Unaffected."]


async def test_text_before_hello_closes_1008(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "speak", "text": "hi"}))
            code, reason = await closed_with(ws)
        assert code == 1008 and "expected a hello message first" in reason and "speak" in reason
        async with connect(url) as ws:
            await ws.send("garbage")
            code, reason = await closed_with(ws)
        assert code == 1008 and "hello" in reason


@pytest.mark.parametrize("header, hello_version, words", [
    ("7", 1, "Protocol-Version: unsupported protocol version 7"),
    ("v2", 1, "Protocol-Version: protocol version 'v2' is not a number"),
    (None, 9, "hello.version: unsupported protocol version 9"),
])
async def test_wrong_protocol_version_closes_1008(tmp_path, header, hello_version, words):
    with serve(tmp_path) as (ctx, url, _):
        headers = {"Device-Id": "aa:aa:aa:aa:aa:aa"} | ({"Protocol-Version": header} if header else {})
        async with connect(url, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed):  # the server may close before reading the hello
                await ws.send(json.dumps({**HELLO, "version": hello_version}))
                await asyncio.wait_for(ws.recv(), 10)
            code, reason = await closed_with(ws)
        assert code == 1008 and reason.startswith(words)
        assert ctx.devices == {}


async def test_hello_timeout(tmp_path):
    with serve(tmp_path, xiaozhi_hello_timeout_s=0.3) as (ctx, url, _):
        async with connect(url) as ws:
            await ws.send(b"\x01\x02")  # audio does not count as a hello
            code, reason = await closed_with(ws)
        assert code == 1008 and reason == "no hello message within 0.3 s"
        assert 'kind="xiaozhi_hello_timeout"' in ctx.metrics.render().decode()


async def test_idle_timeout(tmp_path):
    with serve(tmp_path, xiaozhi_idle_timeout_s=0.5) as (ctx, url, _):
        async with device(url) as dev:
            code, reason = await dev.wait_closed(10)
        assert code == 1000 and reason == "idle for 0.5 s"
        await until(lambda: not ctx.devices)


async def test_idle_timer_does_not_cut_a_turn(tmp_path):
    with serve(tmp_path, xiaozhi_idle_timeout_s=1.0) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("Speaking for longer than the idle timeout lasts.")
            turn = await dev.next_turn(20)
            assert turn.duration_s > 1.0 and not dev.closed


async def test_missing_device_id_gets_a_made_up_one(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with connect(url) as ws:
            await ws.send(json.dumps(HELLO))
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            ((_, device_id), session), = ctx.devices.items()
            assert device_id.startswith("anonymous-") and session.session_id == hello["session_id"]


async def test_client_vanishing_mid_turn_leaves_the_server_healthy(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        dev = device(url)
        await dev.connect()
        await dev.speak("A sentence that will never be heard to the end. And another one after it.")
        await dev.wait_for(lambda m: m.get("state") == "sentence_start", 10)
        dev.ws.transport.abort()  # no close handshake: the TCP connection just drops
        await dev.close()
        await until(lambda: not ctx.devices)
        assert ctx.executor.queue_depth == 0
        async with device(url) as again:
            await again.speak("Next device.")
            assert (await again.next_turn(20)).sentences == ["Next device."]


@pytest.mark.parametrize("token, query", [(None, False), ("sk-wrong", False), ("sk-wrong", True)])
async def test_auth_rejects_missing_or_wrong_keys(tmp_path, token, query):
    with serve(tmp_path, api_keys=["sk-good"]) as (ctx, url, _):
        with pytest.raises(websockets.InvalidStatus) as info:
            await device(url, token=token, credentials_in_query=query).connect()
        assert info.value.response.status_code == 401
        assert b"invalid_api_key" in info.value.response.body


@pytest.mark.parametrize("query", [False, True])
async def test_auth_accepts_the_firmware_bearer_header_and_the_query(tmp_path, query):
    with serve(tmp_path, api_keys=["sk-good"]) as (ctx, url, _):
        async with device(url, token="sk-good", credentials_in_query=query) as dev:
            await dev.speak("Authorized.")
            assert (await dev.next_turn(20)).sentences == ["Authorized."]
