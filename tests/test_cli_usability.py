"""What a new user trips over on the command line: a taken port, bare boolean flags, help that lists
what each command uses, an honest warning when a voice cannot be cloned."""

import errno
import os
import socket
import subprocess
import sys

import pytest

from realtime_tts import config
from realtime_tts.cli import build_parser, main

CLI = [sys.executable, "-m", "realtime_tts"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_a_taken_port_is_one_clear_line_and_no_banner(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = subprocess.run([*CLI, "serve", "--port", str(port), "--engine", "espeak",
                               "--data-dir", str(tmp_path / "data")],
                              capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no banner, no URLs that would not answer
    assert proc.stderr.splitlines() == [
        f"realtime-tts: error: port {port} on 127.0.0.1 is already in use (is another server running?); "
        "stop it or choose another port with --port"]


def test_the_port_is_bound_before_the_banner(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--engine", "espeak",
                             "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        first = proc.stdout.readline()
        assert first.startswith("realtime-tts: engine espeak"), first
        with socket.socket() as late, pytest.raises(OSError) as info:  # the port is already ours
            late.bind(("127.0.0.1", port))
        assert info.value.errno == errno.EADDRINUSE
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


@pytest.mark.parametrize("argv, expected", [
    (["--compile"], True), (["--compile", "false"], False), (["--compile", "true"], True), ([], False),
    (["--allow-server-paths", "--port", "9001"], True),
])
def test_boolean_flags_work_bare(argv, expected):
    args = build_parser().parse_args(["serve", *argv])
    settings = config.load_settings(args, environ={})
    assert (settings.allow_server_paths if "--allow-server-paths" in argv else settings.compile) is expected
    if "--port" in argv:
        assert settings.port == 9001  # a bare flag does not swallow the next option


def test_say_help_lists_only_what_say_uses(capsys):
    out = _help(["say", "--help"], capsys)
    for flag in ("--out", "--voice", "--speed", "--emotion-vector", "--engine", "--checkpoints", "--device",
                 "--dtype", "--compile", "--data-dir", "--config"):
        assert flag in out, flag
    for flag in ("--port", "--host", "--api-keys", "--max-queue", "--xiaozhi", "--default-voice", "--log-format",
                 "--speaker-json", "--max-batch"):
        assert flag not in out, flag


def test_bench_help_shows_targets(capsys):
    out = _help(["bench", "--help"], capsys)
    assert "--targets" in out and "--streams" in out and "realtime-tts bench serve --help" in out


def test_say_warns_when_the_engine_cannot_clone(tmp_path, capsys):
    clip = tmp_path / "ref.wav"
    assert main(["say", "Hello.", "--out", str(clip), "--engine", "espeak"]) == 0
    capsys.readouterr()
    assert main(["say", "Hello.", "--out", str(tmp_path / "x.wav"), "--engine", "espeak", "--voice", str(clip),
                 "--emotion-vector", "0,0,0,0,0,0,0.6,0"]) == 0
    err = capsys.readouterr().err
    # The server's notices (server/capabilities.py), driven by the engine's capabilities.
    assert "warning: the espeak engine cannot clone a voice: the reference voice 'ref' is not used" in err
    assert "warning: the espeak engine has no emotion control: the emotion is not used" in err
    assert main(["say", "Hello.", "--out", str(tmp_path / "y.wav"), "--engine", "espeak"]) == 0
    assert "warning" not in capsys.readouterr().err
