"""``realtime-tts``: serve, say, download, voices, bench."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import logging
import socket
import sys
import time
from pathlib import Path

from . import config

log = logging.getLogger("realtime_tts")

DESCRIPTION = """\
Streaming text-to-speech server for voice agents: IndexTTS-2 (zh, en) or IndexTTS-2.5
(zh, en, ja, es, ar) voice cloning with emotion and speed control, streamed sentence by
sentence over WebSocket (xiaozhi devices, LLM agents) and an OpenAI-compatible HTTP API,
all on one port."""

EPILOG = """\
examples:
  realtime-tts serve                          # http://127.0.0.1:8000, engine chosen automatically
  realtime-tts serve --host 0.0.0.0 --engine indextts2 --checkpoints /models/IndexTTS-2
  realtime-tts say "Hello there. 你好。" --out hello.wav
  realtime-tts download --dir checkpoints     # fetch the IndexTTS-2 weights (~6 GB)
  realtime-tts download --model indextts-2.5 --dir checkpoints-2.5
  realtime-tts serve --checkpoints checkpoints-2.5   # auto: the directory says 2 or 2.5
  realtime-tts say "こんにちは。" --language ja --checkpoints checkpoints-2.5 --voice me.wav -o ja.wav
run 'realtime-tts COMMAND --help' for every option of a command."""


def _urls(host: str, port: int) -> list[str]:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown}:{port}"
    ws = f"ws://{shown}:{port}"
    return [
        f"  browser page     {base}/",
        f"  health           {base}/health",
        f"  ready            {base}/ready",
        f"  OpenAI speech    POST {base}/v1/audio/speech",
        f"  agent stream     {ws}/v1/tts/stream",
        f"  xiaozhi device   {ws}/xiaozhi/v1/",
        f"  metrics          {base}/metrics",
    ]


def _choose(settings) -> "EngineChoice":  # noqa: F821
    from .engine.select import choose_engine

    return choose_engine(settings.engine, settings.checkpoints)


# --- serve ---------------------------------------------------------------------------------

def batch_size(settings, engine_name: str) -> int:
    """``--max-batch``, with 0 resolved: batching pays off only for the IndexTTS engines on a GPU."""
    from .engine.select import PIPELINE_ENGINES

    if settings.max_batch > 0:
        return settings.max_batch
    if engine_name not in PIPELINE_ENGINES or settings.device == "cpu":
        return 1
    import torch

    return 8 if torch.cuda.is_available() else 1


def build_context(settings, choice) -> "ServerContext":  # noqa: F821
    """Everything ``serve`` runs, before the engine is loaded (the app's lifespan loads it)."""
    from .engine.batching import BatchingExecutor
    from .engine.executor import SerialExecutor
    from .engine.select import load_engine
    from .server.context import ServerContext
    from .server.voices import VoiceLibrary

    max_batch = batch_size(settings, choice.name)
    executor = (BatchingExecutor(None, max_queue=settings.max_queue, max_batch=max_batch) if max_batch > 1
                else SerialExecutor(None, max_queue=settings.max_queue))
    ctx = ServerContext(settings=settings, executor=executor)
    ctx.engine_name = choice.name
    ctx.load_engine = lambda: load_engine(choice, checkpoints=settings.checkpoints, device=settings.device,
                                          dtype=settings.dtype, compile=settings.compile,
                                          cache_dir=Path(settings.data_dir) / "conditioning")
    ctx.voices = VoiceLibrary.from_settings(settings)
    return ctx


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a taken port fails with one clear line, before any banner."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise config.ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts do not wait for TIME_WAIT
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise config.ConfigError(f"port {port} on {host} is already in use (is another server running?); "
                                     "stop it or choose another port with --port") from None
        raise config.ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app, uvicorn_config
    from .server.lifecycle import DrainingServer
    from .server.logging import configure_logging

    settings = config.load_settings(args)
    configure_logging(settings.log_format)
    sock = bind_socket(settings.host, settings.port)
    server = None
    try:
        choice = _choose(settings)
        ctx = build_context(settings, choice)
        batching = f", up to {ctx.executor.max_batch} segments per pass" if hasattr(ctx.executor, "max_batch") else ""
        print(f"realtime-tts: engine {choice.name} ({choice.reason}){batching}", flush=True)
        print(f"realtime-tts: listening on {settings.host}:{settings.port}", flush=True)
        print("\n".join(_urls(settings.host, settings.port)), flush=True)
        server = DrainingServer(uvicorn_config(create_app(ctx), settings), ctx.lifecycle)
        try:
            server.run(sockets=[sock])  # SIGTERM: drain (server/lifecycle.py), then exit
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a clean stop
            pass
    finally:
        sock.close()
    return 0 if server is not None and server.started else 1  # 1: the app failed to start (logged)


# --- serve-ray -----------------------------------------------------------------------------

def replica_context(settings) -> "ServerContext":  # noqa: F821
    """What one Ray Serve replica runs (the same as ``serve``, engine loaded in the app's lifespan)."""
    return build_context(settings, _choose(settings))


def ray_app(args: dict):
    """``serve run deploy/ray/serve.yaml``: ``args`` = {settings: {...}, cluster: {...}} from the file."""
    import types

    import ray

    from .server.ray_serve import ClusterOptions, build_application

    unknown = set(args) - {"settings", "cluster"}
    if unknown:
        raise config.ConfigError(f"serve.yaml args: unknown keys {sorted(unknown)} (use settings: and cluster:)")
    settings = config.load_settings(types.SimpleNamespace(config=None, **(args.get("settings") or {})))
    try:
        options = ClusterOptions(**(args.get("cluster") or {}))
    except TypeError as e:
        raise config.ConfigError(f"serve.yaml args.cluster: {e}") from None
    return build_application(settings, options, replica_context,
                             cluster_gpus=ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else 0.0)


def run_serve_ray(args: argparse.Namespace) -> int:
    import signal

    import ray
    from ray import serve

    from .server.logging import configure_logging
    from .server.ray_serve import ClusterOptions, build_application

    settings = config.load_settings(args)
    configure_logging(settings.log_format)
    low = args.replicas or args.min_replicas
    options = ClusterOptions(min_replicas=low, max_replicas=args.replicas or max(args.max_replicas, low),
                             gpus_per_replica=args.gpus_per_replica, cpus_per_replica=args.cpus_per_replica,
                             target_load=args.target_load, load_factor=args.load_factor, max_queued=args.max_queued)
    options.validate()
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:  # a local cluster: its workers import this very checkout
        ray.init(_temp_dir=args.ray_temp_dir or None,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        app = build_application(settings, options, replica_context,
                                cluster_gpus=ray.cluster_resources().get("GPU", 0.0))
        print(f"realtime-tts: starting {options.min_replicas}-{options.max_replicas} replicas on Ray "
              f"({ray.cluster_resources().get('GPU', 0):g} GPUs in the cluster)", flush=True)
        serve.run(app, name=options.name, route_prefix="/")
        print(f"realtime-tts: serving through Ray Serve on {settings.host}:{settings.port}", flush=True)
        print("\n".join(_urls(settings.host, settings.port)), flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # only now: Ray's own processes keep the defaults
        signal.sigwait(stop)
        print("realtime-tts: stopping: replicas drain (up to --drain-timeout-s)", flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0


def _serve_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray Serve")
    group.add_argument("--ray-address", default="", help="Ray cluster to join (ray://HOST:10001 or auto); "
                                                         "empty: start a local one on this machine")
    group.add_argument("--ray-temp-dir", default="", help="Ray's session and log folder (local cluster only)")
    group.add_argument("--replicas", type=int, default=0, help="a fixed number of replicas (no autoscaling)")
    group.add_argument("--min-replicas", type=int, default=1, help="autoscaling lower bound (default 1)")
    group.add_argument("--max-replicas", type=int, default=1, help="autoscaling upper bound (default 1)")
    group.add_argument("--gpus-per-replica", type=float, default=None,
                       help="GPUs each replica reserves (default: 1 when the cluster has GPUs, else 0)")
    group.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    group.add_argument("--target-load", type=float, default=0.7,
                       help="autoscale to keep (streams + queued) / capacity near this (default 0.7)")
    group.add_argument("--load-factor", type=float, default=1.5,
                       help="voice affinity gives way when a replica carries this times the mean load "
                            "(default 1.5)")
    group.add_argument("--max-queued", type=int, default=-1,
                       help="streams waiting in Ray's proxy per replica before 503 (default: the capacity)")


# --- say -----------------------------------------------------------------------------------

def _voice_from_file(path: Path):
    from .engine.base import Voice

    if not path.is_file():
        raise config.ConfigError(f"--voice: no such file: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Voice(id=path.stem, audio_path=path, content_hash=digest, name=path.stem)


def _emotion(args: argparse.Namespace):
    from .engine.base import EMOTIONS, Emotion

    if args.emotion_vector:
        try:
            weights = tuple(float(x) for x in args.emotion_vector.split(","))
        except ValueError:
            raise config.ConfigError("--emotion-vector: expected 8 comma-separated numbers") from None
        if len(weights) != len(EMOTIONS):
            raise config.ConfigError(f"--emotion-vector: expected {len(EMOTIONS)} weights ({', '.join(EMOTIONS)}),"
                                     f" got {len(weights)}")
        return Emotion(vector=weights, alpha=args.emotion_alpha)
    if args.emotion_text:
        return Emotion(text=args.emotion_text, alpha=args.emotion_alpha)
    if args.emotion_audio:
        return Emotion(reference=_voice_from_file(Path(args.emotion_audio)), alpha=args.emotion_alpha)
    return None


def run_say(args: argparse.Namespace) -> int:
    import numpy as np

    from .audio.containers import wav_bytes
    from .engine.base import SPEED_MAX, SPEED_MIN, CancelToken, SynthesisOptions
    from .engine.select import load_engine
    from .text.segment import split_text

    settings = config.load_settings(args)
    text = sys.stdin.read() if args.text == "-" else args.text
    segments = split_text(text, max_chars=settings.max_segment_chars)
    if not segments:
        raise config.ConfigError("nothing to say: the text has no letters or digits")
    if not SPEED_MIN <= args.speed <= SPEED_MAX:
        raise config.ConfigError(f"--speed must be within {SPEED_MIN}-{SPEED_MAX}, got {args.speed}")
    options = SynthesisOptions(voice=_voice_from_file(Path(args.voice)) if args.voice else None,
                               emotion=_emotion(args), speed=args.speed)
    choice = _choose(settings)
    print(f"engine {choice.name} ({choice.reason})", file=sys.stderr, flush=True)
    from .engine.select import languages_of
    from .server.capabilities import LanguageError, check_language, engine_notices

    try:  # before loading: a language the engine does not speak fails at once
        language = check_language(args.language, languages_of(choice), choice.name, "--language")
    except LanguageError as e:
        raise config.ConfigError(e.message) from None
    options = dataclasses.replace(options, language=language)
    engine = load_engine(choice, checkpoints=settings.checkpoints, device=settings.device, dtype=settings.dtype,
                         compile=settings.compile, cache_dir=Path(settings.data_dir) / "conditioning")

    notices = engine_notices(engine, options)  # the same notices a server's clients get
    for notice in notices:
        print(f"warning: {notice.message}", file=sys.stderr, flush=True)
    if notices:
        print("  (the IndexTTS engines clone voices and take emotions: realtime-tts download fetches their "
              "weights)", file=sys.stderr, flush=True)
    try:
        silence = np.zeros(engine.sample_rate * settings.silence_ms // 1000, np.float32)
        parts, started, audio_s = [], time.monotonic(), 0.0
        for i, segment in enumerate(segments, 1):
            t0 = time.monotonic()
            audio = engine.synthesize(segment, options, CancelToken())
            audio_s += audio.duration
            print(f"[{i}/{len(segments)}] {audio.duration:5.2f} s audio in {time.monotonic() - t0:5.2f} s: {segment}",
                  file=sys.stderr, flush=True)
            parts += [audio.pcm, silence] if i < len(segments) else [audio.pcm]
    finally:
        engine.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(wav_bytes(np.concatenate(parts), engine.sample_rate))
    elapsed = time.monotonic() - started
    print(f"wrote {out} ({audio_s:.2f} s of speech, real-time factor {elapsed / max(audio_s, 1e-9):.2f})",
          file=sys.stderr)
    return 0


# --- the parser ----------------------------------------------------------------------------

# The settings ``say`` reads (the rest only matter to a server).
SAY_SETTINGS = ("engine", "checkpoints", "device", "dtype", "compile", "max_segment_chars", "silence_ms", "data_dir")


def _engine_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    config.add_arguments(parser, only=only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime-tts", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the server (HTTP + WebSocket on one port)",
                           description="Run the server. Every option can also come from a TOML file "
                                       "(--config) or an environment variable; flags win.")
    _engine_flags(serve)
    serve.set_defaults(func=run_serve)

    serve_ray = sub.add_parser("serve-ray", help="run replicas behind Ray Serve (needs the cluster extra)",
                               description="Run N replicas of the server (one GPU each on a GPU cluster) behind "
                                           "Ray Serve's proxy, with voice affinity, autoscaling on the stream load "
                                           "and drain on stop. Every serve option applies to each replica.")
    _engine_flags(serve_ray)
    _serve_ray_flags(serve_ray)
    serve_ray.set_defaults(func=run_serve_ray)

    say = sub.add_parser("say", help="synthesize text to a WAV file offline (same engine as serve)",
                         description="Synthesize TEXT ('-' reads stdin) into a WAV file, sentence by sentence.")
    say.add_argument("text", metavar="TEXT", help="what to say; '-' reads it from stdin")
    say.add_argument("--out", "-o", required=True, help="output WAV file")
    say.add_argument("--voice", help="reference clip to clone (wav, mp3, flac, ogg, m4a)")
    say.add_argument("--speed", type=float, default=1.0, help="0.5-2.0 (default 1.0)")
    say.add_argument("--emotion-vector", help="8 comma-separated weights: happy,angry,sad,afraid,disgusted,"
                                              "melancholic,surprised,calm")
    say.add_argument("--emotion-text", help="describe the emotion in words (the Qwen emotion model of the checkpoint)")
    say.add_argument("--emotion-audio", help="emotion reference clip")
    say.add_argument("--emotion-alpha", type=float, default=1.0, help="emotion strength 0-1 (default 1.0)")
    say.add_argument("--language", help="language of TEXT (IndexTTS-2.5: zh, en, ja, es or ar; default: guessed "
                                         "from the script)")
    _engine_flags(say, only=SAY_SETTINGS)
    say.set_defaults(func=run_say)

    from .engine.download import add_download_parser

    add_download_parser(sub)

    voices = sub.add_parser("voices", help="manage the voice library (list, add, import speaker.json, delete)",
                            add_help=False)
    voices.add_argument("rest", nargs=argparse.REMAINDER)

    bench = sub.add_parser("bench", help="benchmark the engine on this machine (not a test)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def run_voices(argv: list[str]) -> int:
    from .server.voices import main as voices_main

    return voices_main(argv, prog="realtime-tts voices")


def load_soak():
    """tools/soak (a package of the source tree, not of the installed one) as ``realtime_tts_soak``."""
    import importlib
    import importlib.util

    init = Path(__file__).resolve().parents[1] / "tools" / "soak" / "__init__.py"
    if not init.is_file():
        raise config.ConfigError(f"realtime-tts bench soak needs a source checkout ({init.parent} not found)")
    if "realtime_tts_soak" not in sys.modules:
        spec = importlib.util.spec_from_file_location("realtime_tts_soak", init,
                                                      submodule_search_locations=[str(init.parent)])
        sys.modules["realtime_tts_soak"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["realtime_tts_soak"])
    return importlib.import_module("realtime_tts_soak.main")


def run_bench(argv: list[str]) -> int:
    import importlib.util

    if argv[:1] == ["soak"]:  # the soak/abuse harness (tools/soak): no torch needed
        return load_soak().run_soak(argv[1:])
    # The benchmark lives with the other benchmarks in the source tree, not in the package.
    path = Path(__file__).resolve().parents[1] / "tools" / "bench" / "pipeline.py"
    if not path.is_file():
        print(f"realtime-tts bench needs a source checkout ({path} not found)", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("realtime_tts_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_bench(argv)


def main(argv: list[str] | None = None) -> int:
    from .engine.checkpoints import CheckpointError
    from .server.voice_store import VoiceStoreError

    argv = sys.argv[1:] if argv is None else list(argv)
    # These commands own their whole argument list (their --help included).
    passthrough = {"voices": run_voices, "bench": run_bench}
    try:
        if argv and argv[0] in passthrough:
            return passthrough[argv[0]](argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (config.ConfigError, CheckpointError, VoiceStoreError) as e:  # a store that cannot be reached at start-up
        print(f"realtime-tts: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
