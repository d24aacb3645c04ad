"""The ``realtime-tts`` command line: say, serve, engine choice, help."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import httpx
import pytest
import torch

from realtime_tts.cli import build_parser, main
from realtime_tts.engine.select import choose_engine

CLI = [sys.executable, "-m", "realtime_tts"]
FIXTURE_CHECKPOINTS = Path(__file__).parent / "fixtures" / "pipeline" / "checkpoints"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "say", "download", "voices", "bench"):
        assert command in out


def test_serve_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--engine", "--checkpoints", "--api-keys", "--data-dir", "--config"):
        assert flag in out
    assert "REALTIME_TTS_PORT" in out  # the environment variable is named next to the flag


def test_say_writes_a_wav_with_both_languages(tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert main(["say", "Hello there. 你好，世界。", "--out", str(out), "--engine", "espeak"]) == 0
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1
        seconds = w.getnframes() / w.getframerate()
    assert seconds > 1.0
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err and "engine espeak" in err


def test_say_rejects_bad_input(tmp_path, capsys):
    out = str(tmp_path / "x.wav")
    assert main(["say", "...", "--out", out, "--engine", "espeak"]) == 2
    assert "nothing to say" in capsys.readouterr().err
    assert main(["say", "hi", "--out", out, "--engine", "espeak", "--speed", "9"]) == 2
    assert "--speed" in capsys.readouterr().err
    assert main(["say", "hi", "--out", out, "--engine", "espeak", "--voice", str(tmp_path / "nope.wav")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_weights_name_the_download_command(tmp_path, capsys):
    empty = tmp_path / "ckpt"
    empty.mkdir()
    rc = main(["say", "hi", "--out", str(tmp_path / "x.wav"), "--engine", "indextts2", "--checkpoints", str(empty)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "gpt.pth" in err and f"realtime-tts download --dir {empty}" in err


def test_auto_falls_back_to_espeak_and_says_why(tmp_path):
    choice = choose_engine("auto", tmp_path)
    assert choice.name == "espeak"
    assert "realtime-tts download" in choice.reason
    assert choose_engine("espeak", tmp_path).name == "espeak"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("engine", ["espeak", "indextts2", "indextts2.5"])
def test_serve_starts_prints_urls_and_reports_health(tmp_path, engine, request):
    port = _free_port()
    env = {**os.environ, "REALTIME_TTS_DATA_DIR": str(tmp_path / "data")}
    checkpoints = {"indextts2": FIXTURE_CHECKPOINTS, "espeak": tmp_path / "none"}.get(engine) \
        or request.getfixturevalue("tiny25_checkpoint")  # IndexTTS-2.5, drawn from its seed
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--engine", "auto", "--checkpoints",
                             str(checkpoints)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + (60 if engine == "espeak" else 240)  # IndexTTS: load + warm-up on a busy CPU
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.load(r)
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert health is not None, "the server never answered /health"
        assert health["ready"] is True and health["engine"] == engine
        if engine == "indextts2":  # the tiny official-layout checkpoint speaks through the real server
            base = f"http://127.0.0.1:{port}"
            body = {"input": "Hello there.", "response_format": "wav"}
            r = httpx.post(f"{base}/v1/audio/speech", json=body, timeout=120)
            assert r.status_code == 400 and r.json()["error"]["code"] == "voice_required"  # no voice, no default
            clip = (FIXTURE_CHECKPOINTS.parent / "speaker_24k.wav").read_bytes()
            r = httpx.post(f"{base}/v1/audio/voices", files={"file": ("ref.wav", clip)}, data={"id": "ref"}, timeout=60)
            assert r.status_code in (200, 201), r.text
            r = httpx.post(f"{base}/v1/audio/speech", json={**body, "voice": "ref"}, timeout=120)
            assert r.status_code == 200 and r.content[:4] == b"RIFF"
        if engine == "indextts2.5":  # a fresh serve --checkpoints <the tiny 2.5 directory> speaks Japanese
            assert health["engine_info"]["family"] == "IndexTTS-2.5"
            base = f"http://127.0.0.1:{port}"
            clip = (Path(__file__).parent / "fixtures" / "indextts25" / "prompt_24k.wav").read_bytes()
            r = httpx.post(f"{base}/v1/audio/voices", files={"file": ("ref.wav", clip)}, data={"id": "ref"}, timeout=60)
            assert r.status_code in (200, 201), r.text
            r = httpx.post(f"{base}/v1/audio/speech", json={"input": "こんにちは。", "voice": "ref", "language": "ja",
                                                           "response_format": "wav"}, timeout=120)
            assert r.status_code == 200 and r.content[:4] == b"RIFF"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"engine {engine}" in output
    assert f"ws://127.0.0.1:{port}/xiaozhi/v1/" in output and f"http://127.0.0.1:{port}/v1/audio/speech" in output
    assert proc.returncode == 0, output
    if engine == "indextts2.5":  # the text front end's normalisers, logged once at start-up
        assert output.count("text front end: zh/en: text normalisation by") == 1, output


def test_say_language_is_checked_before_loading_and_reaches_the_engine(tmp_path, capsys, tiny25_checkpoint,
                                                                     monkeypatch):
    """``say --language`` on an IndexTTS-2.5 directory: refused before the model loads when the
    engine does not speak it, else handed to every segment (the serve test speaks through the real
    engine; this one records what the engine is asked)."""
    import numpy as np

    from realtime_tts.engine import select
    from realtime_tts.engine.base import Engine, SegmentAudio

    class Recording(Engine):
        name, languages, calls = "indextts2.5", ("zh", "en", "ja", "es", "ar"), []

        def synthesize(self, text, options, cancel):
            self.calls.append((text, options.language))
            return SegmentAudio(pcm=np.zeros(2205, np.float32), sample_rate=22050, stages={})

    loads = []
    monkeypatch.setattr(select, "load_engine", lambda choice, **kw: loads.append(choice.name) or Recording())
    out = tmp_path / "ja.wav"
    argv = ["say", "こんにちは。元気です。", "--out", str(out), "--checkpoints", str(tiny25_checkpoint),
            "--data-dir", str(tmp_path / "data")]
    assert main([*argv, "--language", "fr"]) == 2
    assert "'--language' 'fr' is not spoken by the indextts2.5 engine; use one of zh, en, ja, es, ar" \
        in capsys.readouterr().err
    assert loads == []  # refused before anything loaded
    assert main([*argv, "--language", "ja"]) == 0
    assert "engine indextts2.5" in capsys.readouterr().err  # auto picked it from the directory
    assert loads == ["indextts2.5"] and Recording.calls == [("こんにちは。", "ja"), ("元気です。", "ja")]
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnframes() > 0


def test_say_with_an_indextts2_checkpoint_and_a_cloned_voice(tmp_path, capsys):
    out = tmp_path / "clone.wav"
    voice = FIXTURE_CHECKPOINTS.parent / "speaker_24k.wav"
    rc = main(["say", "Hello there. 你好。", "--out", str(out), "--checkpoints", str(FIXTURE_CHECKPOINTS),
               "--voice", str(voice), "--data-dir", str(tmp_path / "data")])
    assert rc == 0
    assert "engine indextts2" in capsys.readouterr().err  # auto picked it: the directory holds weights
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getnframes() > 0
    assert list((tmp_path / "data" / "conditioning").glob("*.pt"))  # the voice's conditioning was kept


def test_executor_choice_follows_max_batch(tmp_path):
    from realtime_tts.cli import batch_size, build_context
    from realtime_tts.config import Settings
    from realtime_tts.engine.batching import BatchingExecutor
    from realtime_tts.engine.executor import SerialExecutor
    from realtime_tts.engine.select import EngineChoice

    espeak, index = EngineChoice("espeak", "test"), EngineChoice("indextts2", "test")
    assert batch_size(Settings(max_batch=0), "espeak") == 1
    assert batch_size(Settings(max_batch=0, device="cpu"), "indextts2") == 1
    assert batch_size(Settings(max_batch=4), "espeak") == 4
    ctx = build_context(Settings(data_dir=tmp_path, max_batch=1), index)
    assert isinstance(ctx.executor, SerialExecutor) and ctx.engine is None and ctx.engine_name == "indextts2"
    ctx = build_context(Settings(data_dir=tmp_path, max_batch=6, max_queue=10), espeak)
    assert isinstance(ctx.executor, BatchingExecutor) and ctx.executor.max_batch == 6
    assert ctx.executor.max_queue == 10


def test_dtype_setting_reaches_the_engine(tmp_path):
    from realtime_tts.cli import build_context
    from realtime_tts.config import ConfigError, Settings
    from realtime_tts.engine.select import EngineChoice

    with pytest.raises(ConfigError, match="dtype"):
        Settings(dtype="int8").validate()
    settings = Settings(data_dir=tmp_path, checkpoints=FIXTURE_CHECKPOINTS, device="cpu", dtype="fp16")
    engine = build_context(settings, EngineChoice("indextts2", "test")).load_engine()
    try:
        assert engine.dtype == torch.float16 and engine.describe()["dtype"] == "float16"
    finally:
        engine.close()
