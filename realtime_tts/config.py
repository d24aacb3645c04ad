"""Server settings: one dataclass, filled from defaults < TOML file < environment < CLI flags.

Every field is an option. Its CLI flag is ``--field-name`` and its environment
variable ``REALTIME_TTS_FIELD_NAME``; the TOML file uses the field name as key
(top level, or under a ``[server]`` table). ``help`` in the field metadata is the
one place an option is documented: ``realtime-tts serve --help`` prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "REALTIME_TTS_"


def opt(default: Any, help: str, *, flag: bool = True, **kw) -> Any:
    """A settings field with its documentation; ``flag=False`` keeps it off the CLI."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata={"help": help, "flag": flag, **kw})
    return field(default=default, metadata={"help": help, "flag": flag, **kw})


class ConfigError(ValueError):
    """A setting has an invalid value or the config file cannot be read."""


@dataclass
class Settings:
    # --- network -----------------------------------------------------------------
    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(8000, "TCP port for every endpoint (HTTP and WebSocket)")
    # --- engine ------------------------------------------------------------------
    engine: str = opt("auto", "speech engine: auto (IndexTTS-2 or IndexTTS-2.5, whichever the checkpoint directory "
                              "holds, else espeak), indextts2, indextts2.5, espeak",
                      choices=("auto", "indextts2", "indextts2.5", "espeak"))
    checkpoints: Path = opt(Path("checkpoints"), "checkpoint directory (official IndexTTS-2 or IndexTTS-2.5 layout)")
    device: str = opt("auto", "torch device for the IndexTTS engines: auto, cpu, cuda, cuda:N")
    dtype: str = opt("auto", "IndexTTS precision: auto (bf16 on sm80+ GPUs, else fp32), fp32, bf16, fp16; IndexTTS-2: "
                             "GPT and S2M estimator, IndexTTS-2.5: the GPT only, as the official code; accuracy "
                             "bounds in docs/precision.md", choices=("auto", "fp32", "bf16", "fp16"))
    compile: bool = opt(False, "IndexTTS engines: torch.compile the GPT decode step and the S2M estimator (faster steps; "
                               "start-up compiles for a minute or more)")
    # --- executor ----------------------------------------------------------------
    max_queue: int = opt(1024, "maximum queued segments across all clients before new work is refused as busy "
                               "(each stream keeps at most 4 segments queued or running)")
    max_batch: int = opt(0, "segments synthesized together (IndexTTS engines: continuous batching, new segments "
                            "join the running GPT decode; 1: one at a time; 0: automatic, 8 for IndexTTS on a "
                            "CUDA GPU, else 1)")
    # --- text --------------------------------------------------------------------
    max_segment_chars: int = opt(120, "maximum characters per synthesized segment")
    first_clause_min_chars: int = opt(8, "first segment of a turn may end at a clause mark (，,、：) once this many characters are buffered")
    max_text_chars: int = opt(4096, "maximum characters of text accepted per request / per context")
    max_buffer_delay_ms: int = opt(1500, "streamed text is auto-flushed after this many ms without new text")
    silence_ms: int = opt(200, "silence inserted between segments (encoded as real audio)")
    # --- streams: backpressure, codec work, priorities (server/speech.py) -----------
    max_lead_s: float = opt(10.0, "per stream, synthesis stops starting new segments while this many seconds of "
                                  "its audio have been made and not yet consumed by the client (bounds memory)")
    write_timeout_s: float = opt(10.0, "a client that accepts no data for this long is disconnected (WebSocket "
                                       "close 1008, HTTP stream aborted) and its synthesis cancelled")
    codec_threads: int = opt(0, "threads for audio encoding, decoding and voice files, off the event loop: one "
                                "pool shared by every connection (0: min(4, CPU count))")
    bulk_min_chars: int = opt(300, "whole-file HTTP responses (stream=false, /tts_url) longer than this many "
                                   "characters run as bulk work: device, agent and streamed requests go first")
    # --- xiaozhi -----------------------------------------------------------------
    xiaozhi_hello_timeout_s: float = opt(10.0, "xiaozhi: close a device that sends no hello within this time")
    xiaozhi_idle_timeout_s: float = opt(180.0, "xiaozhi: close a device connection idle for this long")
    xiaozhi_prebuffer_packets: int = opt(5, "xiaozhi: packets sent at once before real-time pacing starts")
    xiaozhi_max_lead_ms: int = opt(400, "xiaozhi: maximum lead of sent audio over real time (hard cap 1000)")
    xiaozhi_websocket_url: str = opt("", "xiaozhi OTA: the WebSocket URL handed to devices (empty: ws://<the Host the "
                                         "device asked>/xiaozhi/v1/; set it behind a proxy or TLS terminator)")
    xiaozhi_auth_key: str = opt("", "xiaozhi OTA: HMAC key of the device tokens it hands out when API keys are on "
                                    "(empty: derived from the first API key; set xiaozhi-esp32-server's "
                                    "server.auth_key to also accept the tokens its OTA issued)", secret=True)
    # --- agent stream ------------------------------------------------------------
    stream_idle_timeout_s: float = opt(60.0, "agent stream: close a socket idle for this long (keepalive resets it)")
    # --- replicas: capacity, readiness, drain, shared voices (server/lifecycle.py, voice_store.py) ---
    max_streams: int = opt(0, "streams this process serves at once (open WebSockets plus streaming HTTP responses): "
                              "the denominator of the load gauge and, under Ray Serve, max_ongoing_requests; "
                              "0: automatic, 8 per batch slot (measure yours with bench --targets)")
    drain_timeout_s: float = opt(30.0, "on SIGTERM (or a Ray replica stop): how long utterances in flight may take "
                                       "to finish before the remaining sockets are closed with 1001")
    replica_id: str = opt("", "this process's name in the X-Replica-Id header (empty: HOSTNAME:PORT; under Ray "
                              "Serve the replica's id)")
    warm_voices: int = opt(64, "voices a replica keeps warm (least recently used dropped first)")
    voice_store: str = opt("", "shared voice store: s3://BUCKET/PREFIX (S3-compatible; credentials from the usual "
                               "AWS variables or files); empty: the local DATA_DIR/voices")
    voice_store_endpoint: str = opt("", "S3 endpoint URL for stores other than AWS (MinIO, Ceph, R2...)")
    # --- HTTP API, voices, auth, logs (server/openai_api.py, voices.py, auth.py) ------
    api_keys: list = opt([], "API keys accepted as 'Authorization: Bearer <key>' (WebSockets also ?api_key=); JSON list; empty and no keys file: no auth", secret=True)
    api_keys_file: str = opt("", "file with one API key per line (# comments allowed), added to api_keys; lines "
                                 "after '[tenant NAME]' belong to that tenant, after '[admin]' are admin keys")
    api_tenants: dict = opt({}, "tenant -> its API keys, JSON object, e.g. {\"acme\": [\"sk-a1\"]}: each tenant sees "
                                "only its own voices and xiaozhi devices (api_keys belong to the tenant 'default')",
                            secret=True)
    admin_keys: list = opt([], "API keys that may act for any tenant (X-Tenant header) and list every tenant's "
                               "voices and devices; JSON list", secret=True)
    data_dir: Path = opt(Path("data"), "directory where uploaded/imported voices are stored (survives restarts)")
    default_voice: str = opt("", "voice id used when a request names no voice or an unmapped OpenAI voice name (empty: the engine's built-in voice)")
    openai_voice_map: dict = opt({}, "OpenAI voice name -> voice id, JSON object, e.g. {\"alloy\": \"jay_klee\"}; unmapped names use default_voice")
    tts_route_format: str = opt("pcm", "what POST /tts answers when the request does not say (format): pcm (raw 24 kHz "
                                       "s16le, streamed: xiaozhi-esp32-server's index_stream provider) or wav (a whole "
                                       "WAV file, like stock index-tts-vllm)", choices=("pcm", "wav"))
    speaker_json: str = opt("", "index-tts-vllm style speaker.json ({\"name\": [\"a.wav\", ...]}) imported into the voice library at start-up")
    allow_server_paths: bool = opt(False, "let /tts_url and voice references name audio files on the server's disk (trusted deployments only)")
    max_upload_bytes: int = opt(20 * 1024 * 1024, "largest accepted voice upload / request body in bytes")
    voice_min_seconds: float = opt(0.5, "shortest accepted reference clip in seconds")
    voice_max_seconds: float = opt(60.0, "longest accepted reference clip in seconds (the engine itself uses the first 15 s)")
    loop_lag_warn_ms: int = opt(100, "log a warning when the event loop wakes this many ms late (0: never); "
                                     "every lag is in /metrics as rtts_event_loop_lag_seconds")
    log_format: str = opt("text", "log line format: text or json (one JSON object per line)", choices=("text", "json"))

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def validate(self) -> None:
        for f in self.fields():
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name}: {getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        if not (1 <= self.port <= 65535):
            raise ConfigError(f"port: {self.port} is not a valid TCP port")
        if self.loop_lag_warn_ms < 0:
            raise ConfigError("loop_lag_warn_ms must be 0 (never warn) or more")
        if self.max_queue < 1:
            raise ConfigError("max_queue must be at least 1")
        if self.max_batch < 0:
            raise ConfigError("max_batch must be 0 (automatic) or at least 1")
        if self.max_streams < 0:
            raise ConfigError("max_streams must be 0 (automatic) or at least 1")
        if self.drain_timeout_s < 0:
            raise ConfigError("drain_timeout_s must be 0 or more")
        if self.warm_voices < 1:
            raise ConfigError("warm_voices must be at least 1")
        if self.voice_store and not self.voice_store.startswith("s3://"):
            raise ConfigError(f"voice_store: {self.voice_store!r} is not s3://BUCKET[/PREFIX] (leave it empty for "
                              "the local data directory)")
        if self.max_lead_s <= 0:
            raise ConfigError("max_lead_s must be positive")
        if self.write_timeout_s <= 0:
            raise ConfigError("write_timeout_s must be positive")
        if self.codec_threads < 0:
            raise ConfigError("codec_threads must be 0 (automatic) or at least 1")
        if self.bulk_min_chars < 0:
            raise ConfigError("bulk_min_chars must be 0 or more")
        if not (0 <= self.xiaozhi_max_lead_ms <= 1000):
            raise ConfigError("xiaozhi_max_lead_ms must be within 0-1000 (the device drops audio beyond 2.4 s)")

    def public(self) -> dict:
        """Settings safe to show (secrets masked)."""
        out = {}
        for f in self.fields():
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _convert(name: str, type_: Any, raw: Any) -> Any:
    """Convert a TOML/env/CLI value to the field's type, with a clear error."""
    try:
        if type_ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if type_ is Path:
            return Path(raw)
        if type_ in (int, float, str):
            return type_(raw)
        value = json.loads(raw) if isinstance(raw, str) else raw  # env / CLI lists and dicts are JSON
        if type_ in (list, dict) and not isinstance(value, type_):
            raise ValueError(f"expected a JSON {'array' if type_ is list else 'object'}")
        return value
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{name}: cannot use {raw!r} ({e})") from None


def _types() -> dict[str, Any]:
    hints = get_type_hints(Settings)
    out = {}
    for name, hint in hints.items():
        origin = getattr(hint, "__origin__", None)
        out[name] = origin if origin in (list, dict) else hint
    return out


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add ``--config`` and one flag per settings field (default None = not given); ``only``: just these.

    A boolean flag works bare (``--compile``) or with a value (``--compile false``).
    """
    parser.add_argument("--config", type=Path, default=os.environ.get(ENV_PREFIX + "CONFIG"),
                        help=f"TOML config file (env {ENV_PREFIX}CONFIG); flags and env override it")
    types = _types()
    for f in Settings.fields():
        if not f.metadata.get("flag", True) or (only is not None and f.name not in only):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata['help']} (default: {default}; env {env})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if types[f.name] is bool:
            kwargs.update(nargs="?", const="true", metavar="true|false")
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def load_settings(args: argparse.Namespace | None = None, *, environ: dict | None = None, **overrides) -> Settings:
    """Defaults, then the TOML file, then the environment, then CLI flags, then ``overrides``."""
    environ = os.environ if environ is None else environ
    types = _types()
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None) if args is not None else None
    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        data = {**{k: v for k, v in data.items() if not isinstance(v, dict) or k not in ("server",)}, **data.get("server", {})}
        for key, raw in data.items():
            if key not in types:
                raise ConfigError(f"config file {path}: unknown option {key!r}")
            values[key] = _convert(key, types[key], raw)
    for name, type_ in types.items():
        env = ENV_PREFIX + name.upper()
        if env in environ:
            values[name] = _convert(env, type_, environ[env])
    if args is not None:
        for name, type_ in types.items():
            raw = getattr(args, name, None)
            if raw is not None:
                values[name] = _convert("--" + name.replace("_", "-"), type_, raw)
    for name, raw in overrides.items():
        if name not in types:
            raise ConfigError(f"unknown option {name!r}")
        values[name] = raw
    settings = Settings(**values)
    settings.validate()
    return settings
