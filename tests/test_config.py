"""Settings precedence: defaults < TOML file < environment < CLI flags; clear errors."""

import argparse
from pathlib import Path

import pytest

from realtime_tts.config import ConfigError, Settings, add_arguments, load_settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults():
    s = load_settings(parse([]), environ={})
    assert (s.host, s.port, s.engine, s.silence_ms) == ("127.0.0.1", 8000, "auto", 200)
    assert s.api_keys == [] and s.checkpoints == Path("checkpoints")


def test_file_then_environment_then_flags(tmp_path):
    cfg = tmp_path / "server.toml"
    cfg.write_text('port = 9000\nsilence_ms = 150\n[server]\nhost = "0.0.0.0"\napi_keys = ["a", "b"]\n')
    s = load_settings(parse(["--config", str(cfg)]), environ={})
    assert (s.port, s.silence_ms, s.host, s.api_keys) == (9000, 150, "0.0.0.0", ["a", "b"])
    env = {"REALTIME_TTS_PORT": "9100", "REALTIME_TTS_OPENAI_VOICE_MAP": '{"alloy": "me"}',
           "REALTIME_TTS_ALLOW_SERVER_PATHS": "yes"}
    s = load_settings(parse(["--config", str(cfg)]), environ=env)
    assert s.port == 9100 and s.openai_voice_map == {"alloy": "me"} and s.allow_server_paths is True
    s = load_settings(parse(["--config", str(cfg), "--port", "9200"]), environ=env)
    assert s.port == 9200 and s.silence_ms == 150
    s = load_settings(parse([]), environ={"REALTIME_TTS_CONFIG": str(cfg)})
    assert s.port == 9000  # the file can come from the environment too


@pytest.mark.parametrize("argv, environ, message", [
    (["--port", "eighty"], {}, "--port"),
    (["--port", "70000"], {}, "not a valid TCP port"),
    ([], {"REALTIME_TTS_API_KEYS": "not json"}, "REALTIME_TTS_API_KEYS"),
    ([], {"REALTIME_TTS_API_KEYS": '{"a": 1}'}, "JSON array"),
    ([], {"REALTIME_TTS_ALLOW_SERVER_PATHS": "maybe"}, "REALTIME_TTS_ALLOW_SERVER_PATHS"),
    ([], {"REALTIME_TTS_ENGINE": "festival"}, "engine"),
    ([], {"REALTIME_TTS_XIAOZHI_MAX_LEAD_MS": "5000"}, "2.4 s"),
])
def test_bad_values_are_named(argv, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(parse(argv), environ=environ)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(parse(["--config", str(tmp_path / "nope.toml")]), environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(parse(["--config", str(bad)]), environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'prot'"):
        load_settings(parse(["--config", str(unknown)]), environ={})


def test_secrets_are_masked():
    s = Settings(api_keys=["sk-secret"])
    assert s.public()["api_keys"] == "***" and s.public()["port"] == 8000
