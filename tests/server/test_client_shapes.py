"""Third-party clients, unchanged: each test sends exactly what the client sends (same library, same
call, same fields and headers), against a live server, with and without API keys.

Client versions (the code the requests were copied from):
* xiaozhi-esp32-server @ 7475ea2b (2026-08-06), main/xiaozhi-server/core/providers/tts/:
  index_stream.py (aiohttp streaming POST, requests non-streaming POST), openai.py (requests POST with
  a Bearer key), custom.py (requests POST of config ``params``; its config.yaml default shape).
* pipecat @ acead050 (v1.7.0-771), src/pipecat/services/openai/tts.py (OpenAITTSService.run_tts).
* livekit-agents @ da6af86a, livekit-plugins-openai 1.7.0, livekit/plugins/openai/tts.py
  (ChunkedStream._run: parses by Content-Type, reports ``request_id``).
* index-tts-vllm @ 5e123d0 (Ksuriuri/index-tts-vllm), api_example.py: ``requests.post(url, json=data)``
  and ``response.content`` written to a .wav file, for ``/tts_url`` (example 1), ``/tts`` (example 2)
  and ``/audio/speech`` (example 3); its api_server.py answers all three with a whole WAV (``audio/wav``).
(py-xiaozhi's OTA and socket are in test_ota.py; the openai SDK itself in test_openai_sdk.py.)
"""

import asyncio
import base64
import io
import json
import sys
import wave
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
import openai
import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, decode_any, live_server, make_ctx, tone_wav  # noqa: E402

KEY = "sk-shapes"
TEXT = "你好，今天天气很好。Take sunglasses."


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One open server, one with API keys and one answering /tts like index-tts-vllm (WAV), all with
    the voice ``jay_klee``."""
    out = {}
    stack = []
    for name, keys, extra in (("open", [], {}), ("keys", [KEY], {}), ("vllm", [], {"tts_route_format": "wav"})):
        ctx = make_ctx(tmp_path_factory.mktemp(name), ToneEngine(), api_keys=keys, **extra)
        ctx.voices.add(tone_wav(1.0), voice_id="jay_klee")
        cm = live_server(ctx)
        out[name] = cm.__enter__()
        stack.append(cm)
    yield out
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


# --- xiaozhi-esp32-server: index_stream -------------------------------------------------------

async def index_stream(api_url: str, text: str, voice: str = "jay_klee") -> tuple[int, bytes]:
    """IndexStreamTTS.text_to_speak: aiohttp, JSON body, no headers, timeout=10, iter_any()."""
    payload = {"text": text, "character": voice}
    async with aiohttp.ClientSession() as session:
        async with session.post(api_url, json=payload, timeout=10) as resp:
            if resp.status != 200:
                return resp.status, (await resp.text()).encode()
            pcm = bytearray()
            async for chunk in resp.content.iter_any():
                data = chunk[0] if isinstance(chunk, (list, tuple)) else chunk
                pcm.extend(data)
            return resp.status, bytes(pcm)


def with_credentials(url: str, key: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://key:{key}@{parts.netloc}{parts.path}"


def test_index_stream_provider(servers):
    status, pcm = asyncio.run(index_stream(servers["open"] + "/tts", TEXT))
    assert status == 200 and len(pcm) % 2 == 0
    # ToneEngine: 0.05 s per character; two sentences and one 100 ms pause, at 24 kHz s16le.
    seconds = 0.05 * (len("你好，今天天气很好。") + len("Take sunglasses.")) + 0.1
    assert len(pcm) / 48000 == pytest.approx(seconds, abs=0.02)


def test_index_stream_provider_with_api_keys(servers):
    """The provider sends no headers; its ``api_url`` is the one thing a user can set."""
    url = servers["keys"] + "/tts"
    status, body = asyncio.run(index_stream(url, TEXT))
    assert status == 401 and "api_key query parameter" in json.loads(body)["error"]["message"]
    for configured in (f"{url}?api_key={KEY}", with_credentials(url, KEY)):
        status, pcm = asyncio.run(index_stream(configured, TEXT))
        assert status == 200 and len(pcm) > 48000, configured
    status, _ = asyncio.run(index_stream(f"{url}?api_key=wrong", TEXT))
    assert status == 401


def test_index_stream_non_streaming_path(servers):
    """IndexStreamTTS.to_tts (wake-word replies): requests.post(api_url, json=payload, timeout=5)."""
    for url in (servers["open"] + "/tts", f"{servers['keys']}/tts?api_key={KEY}",
                with_credentials(servers["keys"] + "/tts", KEY)):
        with requests.post(url, json={"text": "好的。", "character": "jay_klee"}, timeout=5) as response:
            assert response.status_code == 200, (url, response.text)
            assert len(response.content) / 48000 == pytest.approx(0.05 * 3, abs=0.01)


# --- xiaozhi-esp32-server: openai and custom providers ------------------------------------------

def test_srv_openai_provider(servers):
    for base, key in ((servers["open"], "anything"), (servers["keys"], KEY)):
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        data = {"model": "tts-1", "input": TEXT, "voice": "jay_klee", "response_format": "wav", "speed": 1.0}
        response = requests.post(base + "/v1/audio/speech", json=data, headers=headers)
        assert response.status_code == 200, response.text
        audio, rate = decode_any(response.content)
        assert response.content[:4] == b"RIFF" and rate == 24000 and len(audio) > 24000


def test_srv_custom_provider_with_its_default_params(servers):
    """config.yaml's CustomTTS (made for Kokoro-FastAPI), voice set to ours; POST, params as JSON."""
    params = {"input": "{prompt_text}", "response_format": "mp3", "download_format": "mp3", "voice": "default",
              "lang_code": "z", "return_download_link": True, "speed": 1, "stream": False}
    request_params = {k: v.replace("{prompt_text}", TEXT) if isinstance(v, str) else v for k, v in params.items()}
    for base, headers in ((servers["open"], {}), (servers["keys"], {"Authorization": f"Bearer {KEY}"})):
        resp = requests.post(base + "/v1/audio/speech", json=request_params, headers=headers)
        assert resp.status_code == 200, resp.text
        audio, _ = decode_any(resp.content)
        assert len(audio) > 0 and resp.headers["content-type"] == "audio/mpeg"


# --- pipecat OpenAITTSService --------------------------------------------------------------------

async def pipecat_run_tts(base_url: str, api_key: str, voice: str, **settings) -> tuple[int, bytes]:
    client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url)
    create_params = {"input": TEXT, "model": "gpt-4o-mini-tts", "voice": voice, "response_format": "pcm"}
    if settings.get("instructions"):
        create_params["instructions"] = settings["instructions"]
    if settings.get("speed"):
        create_params["speed"] = settings["speed"]
    try:
        async with client.audio.speech.with_streaming_response.create(**create_params) as r:
            if r.status_code != 200:
                return r.status_code, (await r.text()).encode()
            pcm = bytearray()
            async for chunk in r.iter_bytes(4800):  # pipecat's chunk_size: 100 ms at 24 kHz
                pcm.extend(chunk)
            return r.status_code, bytes(pcm)
    finally:
        await client.close()


@pytest.mark.parametrize("voice", ["alloy", "cedar", "verse"])  # pipecat refuses names outside OpenAI's 13
def test_pipecat_openai_tts(servers, voice):
    for base, key in ((servers["open"], "pipecat"), (servers["keys"], KEY)):
        status, pcm = asyncio.run(pipecat_run_tts(base + "/v1", key, voice, instructions="Warm and calm",
                                                  speed=1.1))
        assert status == 200 and len(pcm) % 2 == 0 and len(pcm) > 48000


# --- livekit-plugins-openai TTS --------------------------------------------------------------------

def livekit_chunked_stream(base_url: str, api_key: str, response_format: str = "mp3", model: str = "gpt-4o-mini-tts"):
    """ChunkedStream._run: stream_format by model, parser by Content-Type, request_id kept."""
    client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    with client.audio.speech.with_streaming_response.create(
            input=TEXT, model=model, voice="ash", response_format=response_format, speed=1.0,
            instructions=openai.omit, stream_format="audio" if model in {"tts-1", "tts-1-hd"} else "sse",
            timeout=httpx.Timeout(30, connect=10.0)) as stream:
        media_type = stream.headers.get("content-type", "").split(";")[0].strip().lower()
        audio = bytearray()
        if media_type != "text/event-stream":
            for chunk in stream.iter_bytes():
                audio.extend(chunk)
        else:
            for line in stream.iter_lines():
                if not line or not line.startswith("data: "):
                    continue
                if line[6:] == "[DONE]":
                    break
                event = json.loads(line[6:])
                if event.get("type") == "speech.audio.delta":
                    audio.extend(base64.b64decode(event.get("delta", "") or event.get("audio", "")))
        return stream.request_id, media_type, bytes(audio)


@pytest.mark.parametrize("model, fmt", [("gpt-4o-mini-tts", "mp3"), ("tts-1", "mp3"), ("gpt-4o-mini-tts", "pcm")])
def test_livekit_openai_tts(servers, model, fmt):
    for base, key in ((servers["open"], "lk"), (servers["keys"], KEY)):
        request_id, media_type, audio = livekit_chunked_stream(base + "/v1", key, fmt, model)
        assert request_id  # the plugin warns without an x-request-id
        assert media_type in ("text/event-stream", "audio/mpeg", "audio/pcm")
        if fmt == "pcm":
            assert len(audio) % 2 == 0 and len(audio) > 48000
        else:
            decoded, rate = decode_any(audio)
            assert len(decoded) > 0.5 * rate


# --- index-tts-vllm: its own example client ----------------------------------------------------------

def index_tts_vllm_example(url: str, data: dict, out: Path) -> bool:
    """api_example.py's examples 2 and 3: POST the JSON, write response.content to a .wav file."""
    response = requests.post(url, json=data)
    if response.status_code == 200:
        with open(out, "wb") as f:
            f.write(response.content)
        return True
    return False


def playable_wav(path: Path) -> tuple[int, float]:
    with wave.open(str(path)) as w:  # a strict reader: exact sizes, PCM
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        frames = w.getnframes()
        assert len(w.readframes(frames)) == frames * 2
        return w.getframerate(), frames / w.getframerate()


def test_index_tts_vllm_example_client(servers, tmp_path):
    # Example 1, /tts_url with its current single `audio_path` (here a voice id: server paths are off).
    out1 = tmp_path / "output_example1.wav"
    assert index_tts_vllm_example(servers["open"] + "/tts_url", {"text": "还是会想你，还是想登你",
                                                                "audio_path": "jay_klee"}, out1)
    assert playable_wav(out1)[0] == 22050
    # Example 2 against a server started with tts_route_format = "wav": the file it saves plays.
    out = tmp_path / "output_example2.wav"
    assert index_tts_vllm_example(servers["vllm"] + "/tts", {"text": "还是会想你，还是想登你", "character": "jay_klee"},
                                  out)
    rate, seconds = playable_wav(out)
    assert rate == 22050 and seconds == pytest.approx(0.05 * 11, abs=0.01)  # the engine's rate, as theirs
    # The default server keeps raw PCM for index_stream; a user of the example can ask per request.
    assert index_tts_vllm_example(servers["open"] + "/tts?format=wav", {"text": "好的。", "character": "jay_klee"}, out)
    assert playable_wav(out)[0] == 22050
    # Example 3, the OpenAI route without /v1: a whole WAV whatever the server's settings.
    for base in (servers["open"], servers["vllm"]):
        out3 = tmp_path / "output_example3.wav"
        assert index_tts_vllm_example(base + "/audio/speech", {"model": "tts-1", "input": "这是一个示例",
                                                              "voice": "jay_klee"}, out3)
        assert playable_wav(out3)[1] == pytest.approx(0.05 * 6, abs=0.02)


def test_index_stream_provider_unchanged_beside_a_wav_default(servers):
    """A server set to answer /tts with WAV still serves the index_stream provider raw PCM when its
    api_url says so (format=pcm in the query)."""
    status, pcm = asyncio.run(index_stream(servers["vllm"] + "/tts?format=pcm", TEXT))
    assert status == 200 and pcm[:4] != b"RIFF" and len(pcm) > 48000
    status, body = asyncio.run(index_stream(servers["vllm"] + "/tts", TEXT))
    assert status == 200 and body[:4] == b"RIFF"
    with wave.open(io.BytesIO(body)) as w:
        assert w.getframerate() == 22050
