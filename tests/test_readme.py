"""Every README example runs, in order, copy-pasted, against a live server (the espeak engine).

The README's ```bash and ```python blocks are run one after another in a fresh directory (a new
user's checkout: no data, no voices), next to a ``.venv`` whose ``bin/python`` and
``bin/realtime-tts`` run this checkout, while ``realtime-tts serve`` (what ``make serve`` runs)
listens. The only edit is the port (a free one instead of 8000). A block preceded by
``<!-- readme-test: skip (why) -->`` is not run (starting the server, downloading weights, the test
suite itself). ``ffplay`` is optional in the README; where it is missing a stand-in takes the
piped audio and the test checks that audio arrived.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?:<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
RUNNABLE = ("bash", "python")


def readme_blocks(text: str) -> list[dict]:
    return [m.groupdict() for m in FENCE.finditer(text)]


def test_the_block_parser_sees_skips_and_languages():
    blocks = readme_blocks("<!-- readme-test: skip (no) -->\n```bash\nmake serve\n```\ntext\n```python\nx = 1\n```\n")
    assert blocks == [{"why": "no", "lang": "bash", "body": "make serve\n"},
                      {"why": None, "lang": "python", "body": "x = 1\n"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_venv(home: Path, env: dict) -> None:
    """``.venv/bin/python`` and ``.venv/bin/realtime-tts``: this interpreter running this checkout."""
    bin_dir = home / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, run in (("python", f'exec "{sys.executable}" "$@"'),
                      ("realtime-tts", f'exec "{sys.executable}" -m realtime_tts "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{run}\n")
        (bin_dir / name).chmod(0o755)


@pytest.fixture
def user_dir(tmp_path):
    home = tmp_path / "clone"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("REALTIME_TTS_DATA_DIR", None)
    _fake_venv(home, env)
    if shutil.which("ffplay") is None:  # optional in the README: a stand-in keeps what it was piped
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "ffplay").write_text(f'#!/bin/sh\ncat > "{tmp_path}/ffplay.in"\n')
        (shim / "ffplay").chmod(0o755)
        env["PATH"] = f"{shim}:{env['PATH']}"
    return home, env


def test_every_readme_example_runs_in_order(user_dir, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the README's examples use it")
    home, env = user_dir
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b["lang"] in RUNNABLE and b["why"] is None]
    skipped = [b for b in blocks if b["lang"] in RUNNABLE and b["why"] is not None]
    assert len(runnable) >= 7 and len(skipped) <= 3, (len(runnable), [b["why"] for b in skipped])

    port = _free_port()
    server = subprocess.Popen([str(home / ".venv/bin/realtime-tts"), "serve", "--engine", "espeak", "--port", str(port)],
                              cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        for i, block in enumerate(runnable, 1):
            code = block["body"].replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("localhost:8000",
                                                                                      f"localhost:{port}")
            argv = (["bash", "-e", "-o", "pipefail", "-c", code] if block["lang"] == "bash"
                    else [str(home / ".venv/bin/python"), "-c", code])
            run = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=180)
            assert run.returncode == 0, f"README example {i} failed:\n{block['body']}\n{run.stdout}\n{run.stderr}"
            if block["lang"] == "bash" and "curl" in code:
                assert '"error"' not in run.stdout, f"README example {i} got an error:\n{run.stdout}"
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=60)

    # What the examples made is real audio (and the optional player got some, when stood in for).
    from realtime_tts.audio.io import decode_audio

    for name in ("hello.mp3", "alice.wav", "hello.wav", "reply.wav", "heard.wav"):
        channels, rate = decode_audio((home / name).read_bytes())
        assert channels.shape[1] > rate // 2, name
    assert (home / "count.pcm").stat().st_size > 24000
    if (tmp_path / "ffplay.in").exists():
        assert (tmp_path / "ffplay.in").stat().st_size > 24000
    assert (home / "data" / "store" / "voices" / "default" / "alice.json").is_file()
    assert "Traceback" not in log, log
