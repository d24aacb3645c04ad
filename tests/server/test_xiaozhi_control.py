"""The device control API: list devices, speak on one (202, or 200 with ?wait=true), abort it,
404 for a device that is not connected, OpenAI-shaped errors, auth."""

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from xiaozhi_helpers import device, serve, until  # noqa: E402

import realtime_tts.server.xiaozhi as xiaozhi  # noqa: E402


def error_of(resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


async def test_speak_list_and_abort(tmp_path):
    with serve(tmp_path) as (ctx, url, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http, \
                device(url, device_id="aa:bb:cc:00:11:22", version=2) as dev:
            listed = (await http.get("/v1/xiaozhi/devices")).json()
            assert listed["object"] == "list"
            (info,) = listed["data"]
            assert info["device_id"] == "aa:bb:cc:00:11:22" and info["protocol_version"] == 2
            assert info["session_id"] == dev.session_id and info["speaking"] is False

            resp = await http.post("/v1/xiaozhi/devices/aa:bb:cc:00:11:22/speak",
                                   json={"text": "From the control API. Second part.", "emotion": "happy"})
            assert resp.status_code == 202, resp.text
            body = resp.json()
            assert body["object"] == "xiaozhi.speak" and body["device_id"] == "aa:bb:cc:00:11:22"
            assert body["segments"] == ["From the control API.", "Second part."]
            assert body["queued_ahead"] == 0 and body["session_id"] == dev.session_id
            turn = await dev.next_turn(20)
            assert turn.sentences == body["segments"] and turn.emotion == "happy"

            # ?wait=true answers when the turn has been played; a second one queues behind the first
            first = await http.post("/v1/xiaozhi/devices/aa:bb:cc:00:11:22/speak", json={"text": "One more."})
            waited = await http.post("/v1/xiaozhi/devices/aa:bb:cc:00:11:22/speak?wait=true",
                                     json={"text": "And the last.", "speed": 9})
            assert first.status_code == 202
            assert waited.status_code == 200, waited.text
            assert waited.json()["state"] == "done" and waited.json()["queued_ahead"] == 1
            (warning,) = waited.json()["warnings"]
            assert warning["code"] == "speed_clamped" and "speed" in warning["message"]
            assert waited.headers["x-tts-warning"].startswith('speed_clamped="speed 9 is outside')
            assert [(await dev.next_turn(5)).sentences for _ in range(2)] == [["One more."], ["And the last."]]

            # abort over HTTP: the device hears tts stop, the long turn is cut
            await http.post("/v1/xiaozhi/devices/aa:bb:cc:00:11:22/speak",
                            json={"text": " ".join(["A long story goes on and on."] * 10)})
            await dev.wait_for(lambda m: m.get("state") == "sentence_start", 10, since=len(dev.messages))
            resp = await http.post("/v1/xiaozhi/devices/aa:bb:cc:00:11:22/abort")
            assert resp.status_code == 200 and resp.json()["dropped_turns"] == 1
            cut = await dev.next_turn(5)
            assert len(cut.sentences) < 10


async def test_unknown_device_and_bad_bodies(tmp_path):
    with serve(tmp_path, max_text_chars=50) as (ctx, url, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http, device(url, device_id="dev-1"):
            resp = await http.post("/v1/xiaozhi/devices/nobody/speak", json={"text": "hi"})
            assert resp.status_code == 404
            error = error_of(resp)
            assert error["code"] == "device_not_connected" and "'nobody' is not connected" in error["message"]
            assert (await http.post("/v1/xiaozhi/devices/nobody/abort")).status_code == 404
            cases = [
                ({"content": b"{not json", "headers": {"content-type": "application/json"}}, "invalid_json"),
                ({"json": {"voice": "x"}}, "missing_required_parameter"),
                ({"json": {"text": "y" * 51}}, "string_above_max_length"),
                ({"json": {"text": "hi", "voice": "no-such-voice"}}, "voice_not_found"),
                ({"json": {"text": "?!"}}, "empty_input"),
            ]
            for kwargs, code in cases:
                resp = await http.post("/v1/xiaozhi/devices/dev-1/speak", **kwargs)
                assert resp.status_code in (400, 404), resp.text
                assert error_of(resp)["code"] == code
            session = ctx.devices["default", "dev-1"]
            assert session.current_turn is None and session.queued_turns == 0


async def test_device_gone_after_disconnect(tmp_path):
    with serve(tmp_path) as (ctx, url, base):
        async with device(url, device_id="short-lived"):
            pass
        await until(lambda: not ctx.devices)
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            resp = await http.post("/v1/xiaozhi/devices/short-lived/speak", json={"text": "hi"})
            assert resp.status_code == 404
            assert (await http.get("/v1/xiaozhi/devices")).json()["data"] == []


async def test_control_api_needs_the_key(tmp_path):
    with serve(tmp_path, api_keys=["sk-good"]) as (ctx, url, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http, \
                device(url, device_id="keyed", token="sk-good") as dev:
            resp = await http.post("/v1/xiaozhi/devices/keyed/speak", json={"text": "hi"})
            assert resp.status_code == 401 and error_of(resp)["code"] == "invalid_api_key"
            resp = await http.post("/v1/xiaozhi/devices/keyed/speak", json={"text": "Keyed."},
                                   headers={"Authorization": "Bearer sk-good"})
            assert resp.status_code == 202
            assert (await dev.next_turn(20)).sentences == ["Keyed."]


async def test_forgotten_open_turn_is_ended(tmp_path, monkeypatch):
    """An in-band turn left open (flush: false, never finished) cannot block the device forever."""
    monkeypatch.setattr(xiaozhi, "TURN_IDLE_END_S", 0.3)
    with serve(tmp_path, max_buffer_delay_ms=100) as (ctx, url, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http, device(url) as dev:
            await dev.speak("Left open", flush=False)
            await dev.wait_for(lambda m: m.get("state") == "start", 10)  # the open turn is current
            resp = await http.post(f"/v1/xiaozhi/devices/{dev.device_id}/speak", json={"text": "Queued behind."})
            assert resp.status_code == 202 and resp.json()["queued_ahead"] == 1
            assert (await dev.next_turn(10)).sentences == ["Left open"]
            assert (await dev.next_turn(10)).sentences == ["Queued behind."]


@pytest.mark.parametrize("method, path", [("GET", "/v1/xiaozhi/devices/x/speak"), ("DELETE", "/v1/xiaozhi/devices")])
async def test_wrong_methods(tmp_path, method, path):
    with serve(tmp_path) as (ctx, url, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            resp = await http.request(method, path)
            assert resp.status_code == 405
