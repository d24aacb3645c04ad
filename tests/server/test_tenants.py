"""Tenant isolation on every route and WebSocket (server/auth.py, voices.py, control.py, xiaozhi.py).

Two tenants (acme, globex), the default tenant of a plain key, and an admin key, on one live
server. The table ``CASES`` has an entry for every route of the app: what another tenant
sees there, or why the route holds no tenant data. ``test_every_route_has_a_case`` walks the
app's routes, so a new route without an isolation case fails it. A voice of another tenant is
"not found" with the very message of a voice that does not exist, so ids do not leak.
"""

import asyncio
import hashlib
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for clients/
from agent_stream_helpers import Raw, is_type  # noqa: E402
from http_helpers import ToneEngine, build_app, live_server, make_ctx, tone_wav  # noqa: E402

from clients.device_simulator import DeviceSimulator  # noqa: E402

KEYS = {"acme": "sk-acme", "globex": "sk-globex", "default": "sk-plain", "admin": "sk-root"}
CLIPS = {("acme", "acme_only"): tone_wav(1.0, freq=200), ("acme", "same_name"): tone_wav(1.0, freq=210),
         ("globex", "same_name"): tone_wav(1.0, freq=400)}
SETTINGS = {"api_keys": [KEYS["default"]], "api_tenants": {"acme": [KEYS["acme"]], "globex": [KEYS["globex"]]},
            "admin_keys": [KEYS["admin"]], "silence_ms": 200, "xiaozhi_prebuffer_packets": 2,
            "xiaozhi_max_lead_ms": 400, "xiaozhi_auth_key": "device-token-secret"}


def auth(who: str, tenant: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    return {**headers, "X-Tenant": tenant} if tenant else headers


def wav_hash(clip: bytes) -> str:
    """The content hash the library gives a clip (it stores 16-bit mono WAV: these are already)."""
    return hashlib.sha256(clip).hexdigest()


class World:
    def __init__(self, ctx, base: str) -> None:
        self.ctx, self.base = ctx, base
        self.ws = base.replace("http://", "ws://")
        self.engine = ctx.engine
        self.data_dir = str(ctx.settings.data_dir)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30)

    def device(self, who: str, device_id: str, **kw) -> DeviceSimulator:
        return DeviceSimulator(self.ws + "/xiaozhi/v1/", device_id=device_id, token=kw.pop("token", KEYS[who]),
                               warn=lambda m: None, **kw)

    def no_paths(self, text: str) -> None:
        assert self.data_dir not in text and "clips/" not in text, text[:300]


class PathEngine(ToneEngine):
    """Describes itself with server paths, as IndexTTS2 does (checkpoint and cache directories)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def describe(self) -> dict:
        return {**super().describe(), "checkpoint": str(self.root / "checkpoints"),
                "voice_cache": {"disk": str(self.root / "cache") + "/"}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenants")
    ctx = make_ctx(root, PathEngine(root / "data"), **SETTINGS)
    for (tenant, voice_id), clip in CLIPS.items():
        ctx.voices.add(clip, tenant=tenant, voice_id=voice_id)
    with live_server(ctx) as base:
        yield World(ctx, base)


def voice_hash(world: World, tenant: str, voice_id: str) -> str:
    return world.ctx.voices.info(voice_id, tenant=tenant)["content_hash"]


async def not_found_like_missing(resp: httpx.Response, ref: str, http: httpx.AsyncClient, probe) -> None:
    """``resp`` (a foreign voice) says exactly what a voice that exists nowhere says."""
    missing = await probe("no_such_voice")
    assert resp.status_code == missing.status_code == 404, resp.text
    body, other = resp.json()["error"], missing.json()["error"]
    assert body["code"] == "voice_not_found"
    assert body["message"].replace(ref, "X") == other["message"].replace("no_such_voice", "X")


# --- voice library ------------------------------------------------------------------------

async def list_voices(w: World):
    async with w.http() as http:
        acme = (await http.get("/v1/audio/voices", headers=auth("acme"))).json()["data"]
        globex = await http.get("/v1/audio/voices", headers=auth("globex"))
        admin = await http.get("/v1/audio/voices", headers=auth("admin"))
        scoped = (await http.get("/v1/audio/voices", headers=auth("admin", "globex"))).json()["data"]
    assert sorted(v["id"] for v in acme) == ["acme_only", "same_name"] and {v["tenant"] for v in acme} == {"acme"}
    (mine,) = globex.json()["data"]
    assert (mine["id"], mine["tenant"], mine["content_hash"]) == ("same_name", "globex", wav_hash(CLIPS["globex", "same_name"]))
    assert {(v["tenant"], v["id"]) for v in admin.json()["data"]} >= set(CLIPS)  # an admin sees every tenant
    assert [(v["tenant"], v["id"]) for v in scoped] == [("globex", "same_name")]
    w.no_paths(globex.text + admin.text)


async def upload_voice(w: World):
    clip = CLIPS["acme", "acme_only"]
    async with w.http() as http:
        # The same clip under globex is globex's own new voice, not a pointer to acme's.
        mine = await http.post("/v1/audio/voices", headers=auth("globex"), files={"file": ("a.wav", clip)})
        assert mine.status_code == 201 and mine.json()["tenant"] == "globex", mine.text
        w.no_paths(mine.text)
        # acme's id is free in globex's namespace, and taking it there leaves acme's alone.
        taken = await http.post("/v1/audio/voices", headers=auth("globex"), data={"id": "acme_only"},
                                files={"file": ("b.wav", tone_wav(1.0, freq=500))})
        assert taken.status_code == 201, taken.text
        for voice_id in (mine.json()["id"], "acme_only"):
            assert (await http.delete(f"/v1/audio/voices/{voice_id}", headers=auth("globex"))).status_code == 200
    assert voice_hash(w, "acme", "acme_only") == wav_hash(clip)


async def get_voice(w: World):
    async with w.http() as http:
        async def probe(ref):
            return await http.get(f"/v1/audio/voices/{ref}", headers=auth("globex"))
        await not_found_like_missing(await probe("acme_only"), "acme_only", http, probe)
        own = await http.get("/v1/audio/voices/acme_only", headers=auth("acme"))
        assert own.status_code == 200 and own.json()["tenant"] == "acme"
        w.no_paths(own.text)
        assert (await http.get("/v1/audio/voices/acme_only", headers=auth("admin", "acme"))).status_code == 200
        assert (await http.get("/v1/audio/voices/acme_only", headers=auth("admin"))).status_code == 404  # default's


async def delete_voice(w: World):
    async with w.http() as http:
        async def probe(ref):
            return await http.delete(f"/v1/audio/voices/{ref}", headers=auth("globex"))
        await not_found_like_missing(await probe("acme_only"), "acme_only", http, probe)
        assert (await http.delete("/v1/audio/voices/acme_only", headers=auth("default"))).status_code == 404
    assert voice_hash(w, "acme", "acme_only") == wav_hash(CLIPS["acme", "acme_only"])


async def voice_audio(w: World):
    async with w.http() as http:
        async def probe(ref):
            return await http.get(f"/v1/audio/voices/{ref}/audio", headers=auth("globex"))
        await not_found_like_missing(await probe("acme_only"), "acme_only", http, probe)
        for tenant in ("acme", "globex"):  # the same id, each tenant's own clip
            audio = await http.get("/v1/audio/voices/same_name/audio", headers=auth(tenant))
            assert hashlib.sha256(audio.content).hexdigest() == wav_hash(CLIPS[tenant, "same_name"])


# --- speech -------------------------------------------------------------------------------

def speech_case(path: str, body_for):
    """A speech route: another tenant's voice is not found; the same id speaks the caller's clip."""
    async def case(w: World):
        async with w.http() as http:
            async def probe(ref):
                return await http.post(path, headers=auth("globex"), json=body_for(ref))
            await not_found_like_missing(await probe("acme_only"), "acme_only", http, probe)
            for tenant in ("acme", "globex"):
                ok = await http.post(path, headers=auth(tenant), json=body_for("same_name"))
                assert ok.status_code == 200, ok.text
                used = w.engine.calls[-1][1].voice
                assert used.content_hash == wav_hash(CLIPS[tenant, "same_name"]), (path, tenant)
    return case


async def shim_speakers(w: World):
    async with w.http() as http:
        globex = await http.get("/audio/voices", headers=auth("globex"))
        acme = await http.get("/audio/voices", headers=auth("acme"))
    assert list(globex.json()) == ["same_name"] and sorted(acme.json()) == ["acme_only", "same_name"]
    w.no_paths(globex.text + acme.text)


async def agent_stream(w: World):
    for path in ("/v1/tts/stream",):
        async with connect(w.ws + path + "?tenant=globex", additional_headers=auth("globex")) as ws:
            raw = Raw(ws)
            assert (await raw.recv())["type"] == "ready"
            await raw.send(type="text", context_id="c1", text="Hello there.", voice="acme_only")
            error = await raw.expect_error("voice_not_found")
            assert "acme_only" in error["message"]
            await raw.send(type="text", context_id="c2", text="Hello there.", voice="same_name")
            await raw.send(type="end", context_id="c2")
            await raw.until(is_type("done", "c2"))
            assert w.engine.calls[-1][1].voice.content_hash == wav_hash(CLIPS["globex", "same_name"])


# --- xiaozhi devices ----------------------------------------------------------------------

async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def list_devices(w: World):
    async with w.device("acme", "dev-1") as a, w.device("globex", "dev-1") as g, w.http() as http:
        for who, dev in (("acme", a), ("globex", g)):
            (only,) = (await http.get("/v1/xiaozhi/devices", headers=auth(who))).json()["data"]
            assert (only["device_id"], only["tenant"], only["session_id"]) == ("dev-1", who, dev.session_id)
        everyone = (await http.get("/v1/xiaozhi/devices", headers=auth("admin"))).json()["data"]
        assert {(d["tenant"], d["device_id"]) for d in everyone} == {("acme", "dev-1"), ("globex", "dev-1")}
        assert (await http.get("/v1/xiaozhi/devices", headers=auth("default"))).json()["data"] == []


async def speak_device(w: World):
    async with w.device("acme", "acme-dev") as mine, w.device("acme", "dev-2") as a2, \
            w.device("globex", "dev-2") as g2, w.http() as http:
        foreign = await http.post("/v1/xiaozhi/devices/acme-dev/speak", headers=auth("globex"), json={"text": "Hi."})
        missing = await http.post("/v1/xiaozhi/devices/nobody/speak", headers=auth("globex"), json={"text": "Hi."})
        assert foreign.status_code == missing.status_code == 404 and foreign.json()["error"]["code"] == "device_not_connected"
        voice = await http.post("/v1/xiaozhi/devices/dev-2/speak", headers=auth("globex"),
                                json={"text": "Hi.", "voice": "acme_only"})
        assert voice.status_code == 404 and voice.json()["error"]["code"] == "voice_not_found"
        said = await http.post("/v1/xiaozhi/devices/dev-2/speak?wait=true", headers=auth("globex"),
                               json={"text": "Only globex hears this."})
        assert said.status_code == 200 and said.json()["session_id"] == g2.session_id, said.text
        assert (await g2.next_turn(10)).sentences == ["Only globex hears this."]
        assert a2.turns == [] and mine.turns == []
        scoped = await http.post("/v1/xiaozhi/devices/acme-dev/speak?wait=true", headers=auth("admin", "acme"),
                                 json={"text": "Admin for acme."})
        assert scoped.status_code == 200 and (await mine.next_turn(10)).sentences == ["Admin for acme."]


async def abort_device(w: World):
    async with w.device("acme", "acme-abort") as dev, w.http() as http:
        foreign = await http.post("/v1/xiaozhi/devices/acme-abort/abort", headers=auth("globex"))
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "device_not_connected"
        assert (await http.post("/v1/xiaozhi/devices/acme-abort/abort", headers=auth("acme"))).status_code == 200
        assert not dev.closed


def xiaozhi_socket(path: str):
    async def case(w: World):
        url = w.ws + path
        async with DeviceSimulator(url, device_id="same-id", token=KEYS["acme"], warn=lambda m: None) as owner:
            # globex reusing the Device-Id is another device: no takeover, both stay registered.
            async with DeviceSimulator(url, device_id="same-id", token=KEYS["globex"], warn=lambda m: None) as other:
                await until(lambda: ("globex", "same-id") in w.ctx.devices)
                assert w.ctx.devices["acme", "same-id"].session_id == owner.session_id and not owner.closed
                await other.speak("Hello.", voice="acme_only")  # in-band: the voice is acme's
                error = await other.wait_for(lambda m: m.get("type") == "error")
                assert error["code"] == "voice_not_found"
            assert not owner.closed and w.ctx.devices["acme", "same-id"].session_id == owner.session_id
    return case


async def ota(w: World):
    async with w.http() as http:
        ids = {"Device-Id": "ota-dev", "Client-Id": "cid"}
        for path in ("/xiaozhi/ota/", "/xiaozhi/ota"):
            keyed = await http.post(f"{path}?api_key={KEYS['acme']}", headers=ids, json={})
            token = keyed.json()["websocket"]["token"]
            assert keyed.status_code == 200 and token.endswith(".acme"), keyed.text
            assert (await http.get(path, headers={**ids, "Authorization": f"Bearer {KEYS['globex']}"})
                    ).json()["websocket"]["token"].endswith(".globex")
            bad = await http.post(f"{path}?api_key=sk-wrong", headers=ids, json={})
            assert bad.status_code == 401
        plain = (await http.post("/xiaozhi/ota/", headers=ids, json={})).json()["websocket"]["token"]
        assert plain.count(".") == 1  # no key: the default tenant's, in xiaozhi-esp32-server's format
    async with w.device("acme", "ota-dev", client_id="cid", token=token):
        await until(lambda: ("acme", "ota-dev") in w.ctx.devices)  # the token carries the tenant
    forged = token[: -len("acme")] + "globex"  # the tenant is signed: changing it voids the token
    with pytest.raises(Exception) as refused:
        async with w.device("acme", "ota-dev", client_id="cid", token=forged):
            pass
    assert getattr(refused.value, "response", None) is not None and refused.value.response.status_code == 401
    async with w.device("acme", "ota-dev", client_id="cid", token=plain):
        await until(lambda: ("default", "ota-dev") in w.ctx.devices)


# --- routes with no tenant data --------------------------------------------------------------

def no_tenant_data(path: str):
    """A route that serves no tenant's data: it answers the same for everyone, with no server path."""
    async def case(w: World):
        async with w.http() as http:
            answers = [await http.get(path, headers=auth(who)) for who in ("acme", "globex")]
        assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers]
        w.no_paths("".join(a.text for a in answers))
        if path in ("/health", "/v1/models"):  # engine facts: the last component of a path only
            assert '"checkpoint": "checkpoints"' in answers[0].text.replace('":"', '": "'), answers[0].text
    return case


SPEECH = {"model": "tts-1", "input": "Hello there.", "response_format": "pcm"}

CASES = {
    ("GET", "/v1/audio/voices"): list_voices,
    ("POST", "/v1/audio/voices"): upload_voice,
    ("GET", "/v1/audio/voices/{voice_id}"): get_voice,
    ("DELETE", "/v1/audio/voices/{voice_id}"): delete_voice,
    ("GET", "/v1/audio/voices/{voice_id}/audio"): voice_audio,
    ("POST", "/v1/audio/speech"): speech_case("/v1/audio/speech", lambda v: {**SPEECH, "voice": v}),
    ("POST", "/audio/speech"): speech_case("/audio/speech", lambda v: {**SPEECH, "voice": v}),
    ("POST", "/tts"): speech_case("/tts", lambda v: {"text": "Hello there.", "character": v}),
    ("POST", "/v1/tts"): speech_case("/v1/tts", lambda v: {"tts_text": "Hello there.", "voice_id": v}),
    ("POST", "/tts_url"): speech_case("/tts_url", lambda v: {"text": "Hello there.", "spk_audio_path": v}),
    ("GET", "/audio/voices"): shim_speakers,
    ("WS", "/v1/tts/stream"): agent_stream,
    ("GET", "/v1/xiaozhi/devices"): list_devices,
    ("POST", "/v1/xiaozhi/devices/{device_id}/speak"): speak_device,
    ("POST", "/v1/xiaozhi/devices/{device_id}/abort"): abort_device,
    ("WS", "/xiaozhi/v1/"): xiaozhi_socket("/xiaozhi/v1/"),
    ("WS", "/xiaozhi/v1"): xiaozhi_socket("/xiaozhi/v1"),
    ("GET", "/xiaozhi/ota/"): ota,
    ("POST", "/xiaozhi/ota/"): ota,
    ("GET", "/xiaozhi/ota"): ota,
    ("POST", "/xiaozhi/ota"): ota,
    # No tenant data: engine facts, aggregate metrics (no ids), liveness, the static page.
    ("GET", "/health"): no_tenant_data("/health"),
    ("GET", "/v1/models"): no_tenant_data("/v1/models"),
    ("GET", "/metrics"): no_tenant_data("/metrics"),
    ("GET", "/"): no_tenant_data("/"),
    ("GET", "/index.html"): no_tenant_data("/index.html"),
    ("MOUNT", "/static"): no_tenant_data("/static/app.js"),
}


def app_routes(app) -> set[tuple[str, str]]:
    from starlette.routing import Mount, Route, WebSocketRoute

    found = set()
    for route in app.routes:
        if isinstance(route, Route):
            found |= {(method, route.path) for method in route.methods if method != "HEAD"}
        elif isinstance(route, WebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, Mount):
            found.add(("MOUNT", route.path))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return found


def test_every_route_has_a_case(tmp_path):
    routes = app_routes(build_app(make_ctx(tmp_path, ToneEngine())))
    missing = sorted(routes - set(CASES))
    assert not missing, f"routes without a tenant isolation case in CASES (add one): {missing}"
    assert not set(CASES) - routes, f"cases for routes that no longer exist: {sorted(set(CASES) - routes)}"


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: " ".join(r))
async def test_route_isolates_tenants(world, route):
    await CASES[route](world)


async def test_a_key_cannot_act_for_another_tenant(world):
    async with world.http() as http:
        refused = await http.get("/v1/audio/voices", headers=auth("acme", "globex"))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_forbidden"
        assert (await http.get("/v1/audio/voices", headers=auth("acme", "acme"))).status_code == 200
        bad = await http.get("/v1/audio/voices", headers=auth("admin", "Not A Tenant"))
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tenant"
    with pytest.raises(Exception) as info:
        async with connect(world.ws + "/v1/tts/stream?tenant=acme", additional_headers=auth("globex")):
            pass
    assert info.value.response.status_code == 403

