"""The xiaozhi OTA endpoint (POST /xiaozhi/ota/): the WebSocket URL, a device token when API keys are
on (which then opens /xiaozhi/v1/ for that device only), the server time, in the firmware's shape.

Requests are the ones the clients send:
* xiaozhi-esp32 firmware (78/xiaozhi-esp32 @ 48142026, main/ota.cc): POST with Device-Id, Client-Id,
  Activation-Version, User-Agent, Accept-Language, Content-Type and the system-info JSON; GET when
  it has no body.
* py-xiaozhi (huangjunsen0406/py-xiaozhi @ 95bd792, src/activation/ota.py): POST with Device-Id,
  Client-Id, Content-Type, User-Agent "<board>/<app>-<version>", Accept-Language zh-CN and
  {"application": {"version", "elf_sha256"}, "board": {"type", "name", "ip", "mac"}}; it then
  connects with "Authorization: Bearer <token>", or "Bearer test-token" when the token is empty.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import client_for, live_server, make_ctx  # noqa: E402

MAC = "aa:bb:cc:dd:ee:ff"
CLIENT = "5f0c6a8e-1d2b-4c3a-9e7f-0a1b2c3d4e5f"
FIRMWARE_HEADERS = {"Device-Id": MAC, "Client-Id": CLIENT, "Activation-Version": "2",
                    "User-Agent": "bread-compact-wifi/1.9.0", "Accept-Language": "zh-CN",
                    "Content-Type": "application/json"}
SYSTEM_INFO = {"version": 2, "flash_size": 16777216, "minimum_free_heap_size": 8318916,
               "mac_address": MAC, "uuid": CLIENT, "chip_model_name": "esp32s3",
               "application": {"name": "xiaozhi", "version": "1.9.0", "compile_time": "Aug  8 2026T12:00:00Z",
                               "idf_version": "v5.4", "elf_sha256": "ab" * 32},
               "board": {"type": "bread-compact-wifi", "ssid": "home", "rssi": -50, "mac": MAC}}
PY_XIAOZHI_HEADERS = {"Device-Id": MAC, "Client-Id": CLIENT, "Content-Type": "application/json",
                      "User-Agent": "bread-compact-wifi/py-xiaozhi-2.0.0", "Accept-Language": "zh-CN"}
PY_XIAOZHI_BODY = {"application": {"version": "2.0.0", "elf_sha256": "unknown"},
                   "board": {"type": "bread-compact-wifi", "name": "py-xiaozhi", "ip": "192.168.1.9", "mac": MAC}}


def test_ota_answers_in_the_firmware_shape_without_keys(tmp_path):
    with client_for(make_ctx(tmp_path)) as client:
        before = int(time.time() * 1000)
        r = client.post("/xiaozhi/ota/", headers=FIRMWARE_HEADERS, content=json.dumps(SYSTEM_INFO))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"server_time", "firmware", "websocket"}  # no activation, no mqtt: straight to the socket
        assert before <= body["server_time"]["timestamp"] <= int(time.time() * 1000)
        assert isinstance(body["server_time"]["timezone_offset"], int)
        assert body["firmware"] == {"version": "1.9.0", "url": ""}  # echoed: never an upgrade
        assert body["websocket"] == {"url": "ws://testserver/xiaozhi/v1/", "token": ""}
        # GET (firmware without a body), no trailing slash, garbage body: still an answer.
        for r in (client.get("/xiaozhi/ota/", headers={"Device-Id": MAC}),
                  client.post("/xiaozhi/ota", headers=FIRMWARE_HEADERS, content=b"not json")):
            assert r.status_code == 200 and r.json()["websocket"]["url"] == "ws://testserver/xiaozhi/v1/"
            assert r.json()["firmware"] == {"version": "", "url": ""}
        r = client.post("/xiaozhi/ota/", headers={**FIRMWARE_HEADERS, "Host": "tts.example:9000"}, json=SYSTEM_INFO)
        assert r.json()["websocket"]["url"] == "ws://tts.example:9000/xiaozhi/v1/"
        r = client.post("/xiaozhi/ota/", headers=FIRMWARE_HEADERS, content=b"x" * 70000)
        assert r.status_code == 413


def test_configured_websocket_url_wins(tmp_path):
    ctx = make_ctx(tmp_path, xiaozhi_websocket_url="wss://voice.example/xiaozhi/v1/")
    with client_for(ctx) as client:
        r = client.post("/xiaozhi/ota/", headers=PY_XIAOZHI_HEADERS, json=PY_XIAOZHI_BODY)
        assert r.json()["websocket"]["url"] == "wss://voice.example/xiaozhi/v1/"
        assert r.json()["firmware"]["version"] == "2.0.0"


def test_with_keys_the_ota_is_public_and_hands_out_a_device_token(tmp_path):
    ctx = make_ctx(tmp_path, api_keys=["sk-admin"])
    with client_for(ctx) as client:
        r = client.post("/xiaozhi/ota/", headers=FIRMWARE_HEADERS, json=SYSTEM_INFO)
        assert r.status_code == 200
        token = r.json()["websocket"]["token"]
        assert token and token != "sk-admin" and "." in token
        r = client.post("/xiaozhi/ota/", headers={"Client-Id": CLIENT}, json=SYSTEM_INFO)
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_device_id"
        # The token is no API key: the HTTP API still refuses it.
        assert client.get("/v1/audio/voices", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_py_xiaozhi_flow_ota_then_socket_with_keys(tmp_path):
    """What py-xiaozhi does at start-up: OTA, then the WebSocket it was given with the token it was given."""
    import httpx

    ctx = make_ctx(tmp_path, api_keys=["sk-admin"])
    with live_server(ctx) as url:
        r = httpx.post(url + "/xiaozhi/ota/", headers=PY_XIAOZHI_HEADERS, json=PY_XIAOZHI_BODY, timeout=10)
        answer = r.json()["websocket"]
        assert answer["url"] == url.replace("http://", "ws://") + "/xiaozhi/v1/"
        assert r.headers["x-request-id"]

        async def connect(token, device=MAC):
            headers = {"Authorization": f"Bearer {token}", "Protocol-Version": "1", "Device-Id": device,
                       "Client-Id": CLIENT}
            async with websockets.connect(answer["url"], additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "hello", "version": 1, "features": {"mcp": True},
                                          "transport": "websocket", "audio_params": {
                                              "format": "opus", "sample_rate": 16000, "channels": 1,
                                              "frame_duration": 60}}))
                return json.loads(await asyncio.wait_for(ws.recv(), 10))

        hello = asyncio.run(connect(answer["token"]))
        assert hello["type"] == "hello" and hello["transport"] == "websocket" and hello["session_id"]
        for token, device in (("test-token", MAC), (answer["token"], "11:22:33:44:55:66")):
            with pytest.raises(websockets.InvalidStatus) as info:
                asyncio.run(connect(token, device))
            assert info.value.response.status_code == 401
