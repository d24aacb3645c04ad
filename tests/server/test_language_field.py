"""``language`` on the agent stream (config and a context's first text), on xiaozhi in-band speak and
on the device control API: checked against the engine's languages; an unsupported one is an error
naming the supported ones and the socket stays usable; a supported one reaches the engine."""

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from agent_stream_helpers import is_type, opened, serving  # noqa: E402
from http_helpers import ToneEngine  # noqa: E402
from xiaozhi_helpers import device, serve  # noqa: E402


class BilingualTone(ToneEngine):
    languages = ("zh", "en")


async def test_agent_stream_language(tmp_path):
    engine = BilingualTone()
    with serving(tmp_path, engine) as (ctx, url, _):
        async with opened(url) as c:
            await c.send(type="config", language="fr")
            err = await c.expect_error("unsupported_language")
            assert err["param"] == "language" and "zh, en" in err["message"] and "tone" in err["message"]
            await c.send(type="config", language="en-US")
            await c.until(is_type("ready"))
            await c.send(type="text", context_id="a", text="Hello there.", end=True)
            await c.until(is_type("done", "a"))
            assert engine.calls[-1][1].language == "en-US"  # the connection default
            await c.send(type="text", context_id="b", text="你好。", language="zh", end=True)
            await c.until(is_type("done", "b"))
            assert engine.calls[-1][1].language == "zh"  # a context's own
            await c.send(type="text", context_id="c", text="Bonjour.", language="fr-FR", end=True)
            err = await c.expect_error("unsupported_language")
            assert err["context_id"] == "c"
            await c.send(type="text", context_id="c", text="Hello again.", language="auto", end=True)
            await c.until(is_type("done", "c"))  # the refused id is free, the socket usable
            assert engine.calls[-1][1].language is None  # auto: the engine detects it


async def test_xiaozhi_in_band_speak_and_control_api_language(tmp_path):
    engine = BilingualTone()
    with serve(tmp_path, engine) as (ctx, url, base):
        async with device(url, device_id="aa:bb:cc:dd:ee:02") as dev:
            await dev.speak("Bonjour.", language="fr")
            error = await dev.wait_for(lambda m: m.get("type") == "error", 5)
            assert error["code"] == "unsupported_language" and "zh, en" in error["message"]
            await dev.speak("你好。", language="zh-CN")
            await dev.next_turn(20)
            assert engine.calls[-1][1].language == "zh-CN"
            # A piece of an open turn cannot change it: said, not silently dropped.
            await dev.speak("Part one,", flush=False, language="en")
            await dev.speak(" part two.", language="zh", voice="x")
            await dev.next_turn(20)
            warning = await dev.wait_for(lambda m: m.get("type") == "warning", 5)
            assert warning["code"] == "settings_ignored" and warning["message"].startswith("language, voice only")
            assert engine.calls[-1][1].language == "en"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                path = "/v1/xiaozhi/devices/aa:bb:cc:dd:ee:02/speak"
                r = await http.post(path, json={"text": "Hallo.", "language": "de"})
                assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_language"
                assert r.json()["error"]["param"] == "language"
                r = await http.post(path, json={"text": "Hallo.", "language": ["de"]})
                assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_value"
                r = await http.post(path + "?wait=true", json={"text": "Hello.", "language": "en"})
                assert r.status_code == 200 and engine.calls[-1][1].language == "en"
