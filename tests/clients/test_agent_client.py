"""clients/agent_client.py against a live server (ToneEngine): the async API (one paced turn,
pcm and opus), its error reporting, LLM-like token cutting, and the CLI writing a WAV."""

import asyncio
import subprocess
import sys
import wave
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server"))
from agent_stream_helpers import ToneEngine, dominant_hz, serving, tone_seconds  # noqa: E402

from clients.agent_client import AgentStream, AgentStreamError, AudioFrame, llm_tokens, speak  # noqa: E402

TEXT = "Hello there agent. This sentence streams in pieces! And a third one?"
SENTENCES = ["Hello there agent.", "This sentence streams in pieces!", "And a third one?"]


@pytest.fixture
def server(tmp_path):
    engine = ToneEngine()
    with serving(tmp_path, engine) as (ctx, url, _):
        yield ctx, url, engine


@pytest.mark.parametrize("text", [TEXT, "你好，世界。今天天气很好！", "  spaces\n\nand\tlines  ", "x", ""])
def test_llm_tokens_join_back_exactly(text):
    for seed in range(5):
        pieces = llm_tokens(text, seed)
        assert "".join(pieces) == text and all(pieces)
    assert llm_tokens(text, 3) == llm_tokens(text, 3)
    if text == TEXT:
        assert len(llm_tokens(text)) >= 12  # words, sometimes split: many small pieces


async def test_speak_paced_like_an_llm(server):
    ctx, url, engine = server
    seen = []
    result = await speak(url, llm_tokens(TEXT), pace_tokens_per_s=200, on_sentence=seen.append, speed=1.5)
    assert [s["text"] for s in result.sentences] == SENTENCES == [s["text"] for s in seen]
    assert result.done["chars"] == len(TEXT) and not result.cancelled
    assert result.ttfa_s is not None and result.ttfa_s > 0
    pcm = result.pcm_s16le()
    assert abs(result.duration_s - tone_seconds(SENTENCES)) <= 0.04
    import numpy as np

    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    assert abs(dominant_hz(x, 24000) - 330.0) < 5
    assert [t for t, _ in engine.calls] == SENTENCES and {o.speed for _, o in engine.calls} == {1.5}


async def test_speak_opus_is_decoded(server):
    _, url, _ = server
    result = await speak(url, [TEXT], encoding="opus", sample_rate=48000)
    assert result.encoding == "opus" and len(result.frames) > 10
    assert abs(result.duration_s - tone_seconds(SENTENCES)) <= 0.06


async def test_speak_reports_server_errors(server):
    _, url, _ = server
    with pytest.raises(AgentStreamError) as info:
        await speak(url, ["Hello."], voice="no-such-voice")
    assert info.value.code == "voice_not_found" and info.value.context_id == "turn-1"
    with pytest.raises(AgentStreamError) as info:
        await speak(url, ["Hello."], sample_rate=12345)
    assert info.value.code == "unsupported_sample_rate"


async def test_raw_api_cancel_and_second_context(server):
    _, url, engine = server
    async with await AgentStream.connect(url) as stream:
        assert stream.ready["type"] == "ready"
        await stream.text("a", "BLOCK this for a while.")
        await asyncio.to_thread(engine.blocked.wait, 20)
        await stream.cancel("a")
        while (event := await stream.recv(20)) != {"type": "cancelled", "context_id": "a"}:
            pass
        await stream.text("b", "Next turn.", end=True)
        got = []
        while True:
            event = await stream.recv(20)
            got.append(event)
            if isinstance(event, dict) and event["type"] == "done":
                break
        audio = [e for e in got if isinstance(e, AudioFrame)]
        assert audio and {a.context_id for a in audio} == {"b"}
        assert [a.seq for a in audio] == list(range(len(audio)))


def run_cli(*args, stdin: str | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "clients.agent_client", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def test_cli_writes_a_wav_from_a_file(tmp_path):
    text_file = tmp_path / "in.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out.wav"
    with serving(tmp_path) as (ctx, url, _):
        proc = run_cli("--url", url, "--file", str(text_file), "--pace-tokens-per-s", "100", "--speed", "1.2",
                       "--emotion", "happy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "time to first audio: " in proc.stdout and " ms;" in proc.stdout
    for sentence in SENTENCES:
        assert sentence in proc.stdout
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        assert abs(w.getnframes() / 24000 - tone_seconds(SENTENCES)) <= 0.04


def test_cli_reads_stdin_with_a_key_and_opus(tmp_path):
    out = tmp_path / "stdin.wav"
    with serving(tmp_path, api_keys=["k1"]) as (ctx, url, _):
        proc = run_cli("--url", url, "--api-key", "k1", "--encoding", "opus", "--sample-rate", "16000",
                       "--out", str(out), stdin="Read from standard input.")
        refused = run_cli("--url", url, "--api-key", "wrong", "--out", str(tmp_path / "no.wav"), stdin="Hi.")
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 16000 and w.getnframes() > 16000
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert not (tmp_path / "no.wav").exists()


def test_cli_reports_bad_input_clearly(tmp_path):
    proc = run_cli("--url", "ws://127.0.0.1:9/v1/tts/stream", "--out", str(tmp_path / "x.wav"), stdin="Hello.")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ws://127.0.0.1:9")
    proc = run_cli("--out", str(tmp_path / "x.wav"), stdin="   ")
    assert proc.returncode == 2 and "no text" in proc.stderr
    proc = run_cli("--file", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.wav"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
