"""API keys: every HTTP route but /health and the page needs a Bearer key; WebSockets also take
``api_key``/``authorization`` query parameters and are refused with a real HTTP 401 at the upgrade."""

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import client_for, free_port, make_ctx, make_settings  # noqa: E402

from realtime_tts.config import ConfigError  # noqa: E402
from realtime_tts.server.auth import (OPEN, AuthMiddleware, Principal, auth_middleware,  # noqa: E402
                                      device_token_secret, issue_device_token, load_api_keys, load_key_table,
                                      principal_of, verify_device_token)

MISSING = {"error": {"message": "missing API key: send 'Authorization: Bearer <key>'",
                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
INVALID = {"error": {"message": "invalid API key", "type": "invalid_request_error", "param": None,
                     "code": "invalid_api_key"}}


def test_keys_from_settings_and_file(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nk-file-1\n\n  k-file-2  \n")
    settings = make_settings(tmp_path, api_keys=["k1", " "], api_keys_file=str(keys_file))
    assert load_api_keys(settings) == ["k1", "k-file-1", "k-file-2"]
    assert load_key_table(settings).owners == {"k1": "default", "k-file-1": "default", "k-file-2": "default"}
    assert not load_key_table(make_settings(tmp_path))  # no keys: an open server
    with pytest.raises(ConfigError, match="api_keys_file: cannot read"):
        load_api_keys(make_settings(tmp_path, api_keys_file=str(tmp_path / "missing.txt")))
    assert make_settings(tmp_path, api_keys=["secret"]).public()["api_keys"] == "***"


def test_http_routes_need_a_key(tmp_path):
    ctx = make_ctx(tmp_path, api_keys=["sk-good", "sk-other"])
    with client_for(ctx) as client:
        for method, path in [("GET", "/v1/audio/voices"), ("POST", "/v1/audio/voices"), ("GET", "/v1/models"),
                             ("POST", "/v1/audio/speech"), ("POST", "/tts"), ("GET", "/metrics"),
                             ("GET", "/v1/audio/voices/x"), ("DELETE", "/v1/audio/voices/x")]:
            r = client.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.json() == (MISSING_QUERY if path == "/tts" else MISSING)
            assert r.headers["www-authenticate"] == "Bearer"
            r = client.request(method, path, headers={"Authorization": "Bearer sk-wrong"})
            assert (r.status_code, r.json()) == (401, INVALID_WS if path == "/tts" else INVALID), (method, path)
        ok = client.get("/v1/audio/voices", headers={"Authorization": "Bearer sk-other"})
        assert ok.status_code == 200 and ok.json()["object"] == "list"
        assert client.get("/v1/audio/voices", headers={"Authorization": "bearer sk-good"}).status_code == 200
        assert client.get("/v1/audio/voices", headers={"X-API-Key": "sk-good"}).status_code == 200
        # The key is never taken from the query string on plain HTTP (it would land in access logs).
        assert client.get("/v1/audio/voices?api_key=sk-good").status_code == 401
        # Public: the health check and the page's static files (the page asks for the key itself).
        assert client.get("/health").status_code in (200, 503)
        page = client.get("/")
        assert page.status_code == 200 and "<title>realtime-tts</title>" in page.text
        assert client.get("/static/app.js").status_code == 200


def _ws_app(keys):
    async def echo(ws):
        await ws.accept()
        await ws.send_text("hello " + ws.query_params.get("who", ""))
        await ws.close()

    return Starlette(routes=[WebSocketRoute("/ws", echo)], middleware=auth_middleware(make_settings(Path("/tmp"), api_keys=keys)))


def test_websocket_key_sources_and_denial():
    client = TestClient(_ws_app(["sk-ws"]))
    for url, headers in [("/ws?api_key=sk-ws", {}), ("/ws?authorization=Bearer%20sk-ws", {}),
                         ("/ws?authorization=sk-ws", {}), ("/ws", {"Authorization": "Bearer sk-ws"})]:
        with client.websocket_connect(url, headers=headers) as ws:
            assert ws.receive_text() == "hello "
    for url in ("/ws", "/ws?api_key=nope"):
        with pytest.raises(Exception) as info:
            with client.websocket_connect(url):
                pass
        resp = info.value  # TestClient raises WebSocketDenialResponse carrying the HTTP response
        assert resp.status_code == 401
        assert resp.json() == (MISSING_WS if url == "/ws" else INVALID_WS)


MISSING_QUERY = {"error": {**MISSING["error"], "message": MISSING["error"]["message"]
                           + " (or the api_key query parameter)"}}
MISSING_WS = {"error": {**MISSING["error"], "message": MISSING["error"]["message"] + " (or the api_key query parameter)"}}
INVALID_WS = {"error": {**INVALID["error"], "message": "invalid API key (or the api_key query parameter)"}}


def test_websocket_without_denial_extension_closes_1008():
    """Servers without the ASGI denial-response extension get a policy-violation close instead."""
    sent = []

    async def app(scope, receive, send):
        raise AssertionError("must not be reached")

    middleware = AuthMiddleware(app, keys=["k"])
    messages = iter([{"type": "websocket.connect"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b"", "extensions": {}}
    asyncio.run(middleware(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008,
                     "reason": "missing API key: send 'Authorization: Bearer <key>' (or the api_key query parameter)"}]


def test_live_uvicorn_refuses_the_upgrade_with_http_401():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_ws_app(["sk-live"]), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)

        async def attempt(url, headers=None):
            async with websockets.connect(url, additional_headers=headers) as ws:
                return await ws.recv()

        base = f"ws://127.0.0.1:{port}/ws"
        assert asyncio.run(attempt(base + "?who=q&api_key=sk-live")) == "hello q"
        assert asyncio.run(attempt(base + "?who=h", {"Authorization": "Bearer sk-live"})) == "hello h"
        with pytest.raises(websockets.InvalidStatus) as info:
            asyncio.run(attempt(base + "?api_key=bad"))
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body) == INVALID_WS
    finally:
        server.should_exit = True
        thread.join(20)


def test_basic_auth_password_and_tts_query_key(tmp_path):
    """xiaozhi-esp32-server's index_stream provider can configure only its URL: ``?api_key=`` on /tts
    and ``http://user:KEY@host/tts`` (HTTP Basic, which aiohttp and requests derive from the URL)."""
    ctx = make_ctx(tmp_path, api_keys=["sk-good"])
    basic = "Basic " + base64.b64encode(b"anyone:sk-good").decode()
    with client_for(ctx) as client:
        assert client.get("/v1/audio/voices", headers={"Authorization": basic}).status_code == 200
        wrong = "Basic " + base64.b64encode(b"anyone:sk-bad").decode()
        assert client.get("/v1/audio/voices", headers={"Authorization": wrong}).status_code == 401
        assert client.get("/v1/audio/voices", headers={"Authorization": "Basic %%%"}).status_code == 401
        body = {"text": "Hi.", "character": "nobody"}
        assert client.post("/tts?api_key=sk-good", json=body).status_code == 404  # past auth: unknown voice
        assert client.post("/tts?api_key=sk-bad", json=body).status_code == 401
        # Only /tts takes the query key among the HTTP routes.
        assert client.post("/v1/audio/speech?api_key=sk-good", json={"input": "Hi."}).status_code == 401


def test_device_tokens_round_trip_and_bind_to_the_device():
    secret = "s3cret"
    token = issue_device_token(secret, "client-1", "aa:bb:cc:dd:ee:ff", now=1_000_000)
    sig, ts = token.split(".")
    assert ts == "1000000" and "=" not in sig
    assert verify_device_token(secret, token, "client-1", "aa:bb:cc:dd:ee:ff", now=1_000_000 + 3600)
    assert not verify_device_token(secret, token, "client-2", "aa:bb:cc:dd:ee:ff", now=1_000_000)
    assert not verify_device_token(secret, token, "client-1", "aa:bb:cc:dd:ee:00", now=1_000_000)
    assert not verify_device_token("other", token, "client-1", "aa:bb:cc:dd:ee:ff", now=1_000_000)
    assert not verify_device_token(secret, token, "client-1", "aa:bb:cc:dd:ee:ff", now=1_000_000 + 31 * 86400)
    assert not verify_device_token("", token, "client-1", "aa:bb:cc:dd:ee:ff", now=1_000_000)
    for bad in ("", "nodot", "sig.notanumber", "."):
        assert not verify_device_token(secret, bad, "client-1", "aa:bb:cc:dd:ee:ff")
    # xiaozhi-esp32-server's AuthManager format: urlsafe base64 HMAC-SHA256 of "client|device|ts", unpadded.
    expected = base64.urlsafe_b64encode(hmac.new(b"s3cret", b"client-1|aa:bb:cc:dd:ee:ff|1000000",
                                                 hashlib.sha256).digest()).decode().rstrip("=")
    assert sig == expected


def test_device_token_opens_only_the_xiaozhi_socket(tmp_path):
    settings = make_settings(tmp_path, api_keys=["sk-k"], xiaozhi_auth_key="shared")
    assert device_token_secret(settings) == "shared"
    derived = device_token_secret(make_settings(tmp_path, api_keys=["sk-k"]))
    assert derived and derived != "sk-k" and derived == device_token_secret(make_settings(tmp_path, api_keys=["sk-k"]))
    assert device_token_secret(make_settings(tmp_path)) == ""  # no keys: no tokens needed

    async def hello(ws):
        await ws.accept()
        await ws.send_text("in")
        await ws.close()

    app = Starlette(routes=[WebSocketRoute("/xiaozhi/v1/", hello), WebSocketRoute("/v1/tts/stream", hello)],
                    middleware=auth_middleware(settings))
    client = TestClient(app)
    token = issue_device_token("shared", "cid", "aa:bb")
    ids = {"Device-Id": "aa:bb", "Client-Id": "cid"}
    with client.websocket_connect("/xiaozhi/v1/", headers={**ids, "Authorization": f"Bearer {token}"}) as ws:
        assert ws.receive_text() == "in"
    with client.websocket_connect(f"/xiaozhi/v1/?device-id=aa:bb&client-id=cid&authorization=Bearer%20{token}") as ws:
        assert ws.receive_text() == "in"  # the browser form: identity and token in the query
    for url, headers in [("/xiaozhi/v1/", {"Device-Id": "other", "Client-Id": "cid", "Authorization": f"Bearer {token}"}),
                         ("/v1/tts/stream", {**ids, "Authorization": f"Bearer {token}"})]:
        with pytest.raises(Exception) as info:
            with client.websocket_connect(url, headers=headers):
                pass
        assert info.value.status_code == 401, url


KEYS_FILE = """# plain keys: the default tenant, as before tenants
k-plain
[tenant acme]
k-acme-1
   k-acme-2
[admin]
k-root
[ tenant globex ]
k-globex
"""


def test_key_file_sections_and_settings_map_keys_to_tenants(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(KEYS_FILE)
    settings = make_settings(tmp_path, api_keys=["k1"], api_tenants={"acme": ["k-acme-3"], "initech": "k-ini"},
                             admin_keys=["k-admin"], api_keys_file=str(keys_file))
    assert load_key_table(settings).owners == {
        "k1": "default", "k-acme-3": "acme", "k-ini": "initech", "k-admin": None, "k-plain": "default",
        "k-acme-1": "acme", "k-acme-2": "acme", "k-root": None, "k-globex": "globex"}
    assert load_key_table(settings).tenants == {"default", "acme", "initech", "globex"}
    public = settings.public()
    assert public["api_tenants"] == "***" and public["admin_keys"] == "***"

    twice = make_settings(tmp_path, api_tenants={"acme": ["k-secret-value"], "globex": ["k-secret-value"]})
    with pytest.raises(ConfigError) as info:
        load_key_table(twice)
    assert "tenant 'acme' and tenant 'globex'" in str(info.value) and "k-secret-value" not in str(info.value)
    with pytest.raises(ConfigError, match="tenant 'Not Ok' is not"):
        load_key_table(make_settings(tmp_path, api_tenants={"Not Ok": ["k"]}))
    keys_file.write_text("[tenant ../etc]\nk\n")
    with pytest.raises(ConfigError, match="line 1: tenant '../etc' is not"):
        load_key_table(make_settings(tmp_path, api_keys_file=str(keys_file)))
    keys_file.write_text("k-admin-too\n[admin]\nk-admin-too\n")
    with pytest.raises(ConfigError, match="line 3: a key is listed for both tenant 'default' and the admin keys"):
        load_key_table(make_settings(tmp_path, api_keys_file=str(keys_file)))


def _principal_app(settings):
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def who(request):
        p = principal_of(request.scope)
        return JSONResponse({"tenant": p.tenant, "admin": p.admin, "sees_all": p.sees_all})

    async def ws_who(ws):
        await ws.accept()
        await ws.send_text(principal_of(ws.scope).tenant)
        await ws.close()

    return Starlette(routes=[Route("/who", who), WebSocketRoute("/ws", ws_who)], middleware=auth_middleware(settings))


def test_the_principal_is_resolved_once_into_the_scope(tmp_path):
    settings = make_settings(tmp_path, api_keys=["k-plain"], api_tenants={"acme": ["k-acme"]}, admin_keys=["k-root"])
    client = TestClient(_principal_app(settings))

    def who(key, **headers):
        return client.get("/who", headers={"Authorization": f"Bearer {key}", **headers})

    assert who("k-plain").json() == {"tenant": "default", "admin": False, "sees_all": False}
    assert who("k-acme").json() == {"tenant": "acme", "admin": False, "sees_all": False}
    assert who("k-acme", **{"X-Tenant": "acme"}).json()["tenant"] == "acme"
    refused = who("k-acme", **{"X-Tenant": "globex"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_forbidden"
    assert who("k-plain", **{"X-Tenant": "acme"}).status_code == 403
    assert who("k-root").json() == {"tenant": "default", "admin": True, "sees_all": True}
    assert who("k-root", **{"X-Tenant": "acme"}).json() == {"tenant": "acme", "admin": True, "sees_all": False}
    assert client.get("/who?tenant=acme", headers={"Authorization": "Bearer k-root"}).json()["tenant"] == "acme"
    assert who("k-root", **{"X-Tenant": "ACME!"}).json()["error"]["code"] == "invalid_tenant"
    with client.websocket_connect("/ws?api_key=k-root&tenant=acme") as ws:
        assert ws.receive_text() == "acme"
    with pytest.raises(Exception) as info:
        with client.websocket_connect("/ws?api_key=k-acme&tenant=globex"):
            pass
    assert info.value.status_code == 403

    open_server = TestClient(_principal_app(make_settings(tmp_path)))  # no keys: everyone is the default tenant
    assert open_server.get("/who").json() == {"tenant": "default", "admin": False, "sees_all": False}
    assert OPEN == Principal("default")


def test_device_tokens_carry_the_tenant():
    secret = "s3cret"
    plain = issue_device_token(secret, "cid", "dev", now=1_000_000)
    assert plain.count(".") == 1 and verify_device_token(secret, plain, "cid", "dev", now=1_000_000) == "default"
    acme = issue_device_token(secret, "cid", "dev", tenant="acme", now=1_000_000)
    sig, ts, tenant = acme.split(".")
    assert (ts, tenant) == ("1000000", "acme") and verify_device_token(secret, acme, "cid", "dev", now=1_000_000) == "acme"
    expected = base64.urlsafe_b64encode(hmac.new(b"s3cret", b"cid|dev|1000000|acme", hashlib.sha256).digest())
    assert sig == expected.decode().rstrip("=")
    for forged in (f"{sig}.{ts}.globex", f"{sig}.{ts}", f"{sig}.{ts}.", f"{sig}.{ts}.Not Ok"):
        assert verify_device_token(secret, forged, "cid", "dev", now=1_000_000) is None, forged
