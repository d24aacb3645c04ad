"""``realtime-tts bench --streams 1,4,16``: the real server path under N concurrent streams.

The whole server (the Starlette app, executor, engine, encoders, pacing) runs in this process
under uvicorn on a free local port; N simulated clients connect at once and each speaks
``--turns`` turns taken from a standard sentence set (7/16/28/80/200 characters, zh and en),
one turn after another, with a registered voice made from a ``--ref-seconds`` synthetic clip
(primed once, so the voice is cached, as the targets assume). Clients: agent-stream sockets
(``--client agent``, Opus 24 kHz in 60 ms frames) or xiaozhi device simulators
(``--client xiaozhi``, paced Opus as a device hears it).

Reported per concurrency level:
  * TTFA server side (last text of the first sentence received -> first audio packet written,
    the server's own measurement) and client side (first text sent -> first audio received),
    p50/p95 over every turn;
  * queue wait, engine stage times per segment (conditioning, gpt, then gpt_latent for
    IndexTTS-2 or codec for IndexTTS-2.5, s2mel, vocoder), Opus encode time, GPT ms per code
    (estimated from the audio length at the model's code rate: 50 codes/s for IndexTTS-2, 25 for
    IndexTTS-2.5);
  * RTF (engine seconds per audio second) and throughput (audio seconds per wall second);
  * underruns: gaps where a client's playback clock (started at its first packet of a turn)
    runs ahead of the audio received, and the total stall time;
  * peak GPU memory (CUDA only).

``--targets`` measures the performance issue's three targets instead of fixed levels: the
single-stream RTF and the TTFA of short first sentences (<= 20 characters, cached voice, idle
server, ``--targets-turns`` turns), then the most concurrent streams that still play with no
underrun and a p95 TTFA <= 300 ms (levels doubling from 1 up to ``--targets-max``, then halving
the gap between the last that passed and the first that failed). It prints them as a Markdown
table naming the device, commit and settings, ready for docs/benchmarks.md.

``--ray-replicas N`` compares one ``serve`` process with N replicas behind Ray Serve's proxy, both
measured from the client (tools/bench/proxy.py): the proxy's added time to first audio and, with
``--client xiaozhi``, the inter-packet jitter of paced device audio.

Output: a table, one ``JSON {...}`` line, ``--out results.json`` and ``--plot latency.png``.
This is a benchmark, never a test: timings depend on the machine and on what else runs.

    realtime-tts bench --streams 1,4,16 --engine espeak                 # any machine, fast
    realtime-tts bench --streams 1,2 --engine indextts2 --checkpoints tests/fixtures/pipeline/checkpoints \\
        --device cpu --cfm-steps 3 --tokens 20 --lengths 7,16
    realtime-tts bench --streams 1,8,32,64 --engine indextts2 --device cuda   # full-size random weights
    realtime-tts bench --targets --engine indextts2 --device cuda             # the issue's targets table
    realtime-tts bench --targets --model indextts-2.5 --device cuda           # the same for IndexTTS-2.5
    realtime-tts bench --streams 1,8,32 --engine indextts2 --checkpoints checkpoints --client xiaozhi
    realtime-tts bench --streams 1,2,4 --engine espeak --client xiaozhi --ray-replicas 3   # what Ray's proxy adds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_BPE = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints" / "bpe.model"

# The standard sentence set (README benchmark rules): one text per language and length.
SENTENCES: dict[tuple[str, int], str] = {
    ("zh", 7): "你好，很高兴。",
    ("zh", 16): "今天天气很好，我们去公园散步吧。",
    ("zh", 28): "欢迎回来！今天有什么可以帮你的吗？我能帮你查一下天气哦。",
    ("zh", 80): ("人工智能正在改变我们的生活方式。从手机上的语音助手到家里的智能音箱，越来越多的设备能听懂我们说话，"
                 "并用自然的声音回答各种问题。这让我们的交流变得更加轻松和有趣。"),
    ("zh", 200): ("在一个安静的小镇上，住着一位喜欢讲故事的老人。每天傍晚，孩子们都会围坐在他的身边，"
                  "听他讲那些关于远方的故事：高高的雪山，广阔的草原，还有一望无际的大海。老人说，"
                  "他年轻的时候走过很多地方，见过很多人，也经历过很多事情。孩子们问他，最难忘的是什么？"
                  "老人笑着说，最难忘的不是风景，而是路上遇到的善良的人。他们给过他一碗热汤，"
                  "一个温暖的床铺，还有一句简单的问候。正是这些小小的温暖，让他在漫长旅途中从不孤单。"),
    ("en", 7): "Thanks!",
    ("en", 16): "See you at noon.",
    ("en", 28): "Hello! How can I help today?",
    ("en", 80): "The weather today is sunny and warm, so let us go for a walk in the park at two.",
    ("en", 200): ("Once upon a time, in a quiet little town, there lived an old man who loved telling stories. "
                  "Every evening the children gathered around him to hear about mountains, seas and faraway old "
                  "friends of his."),
}
LANGS = ("zh", "en")
LENGTHS = (7, 16, 28, 80, 200)
VOICE_ID = "bench"
OPUS_RATE, FRAME_MS = 24000, 60
# Gaps below this are scheduler noise of this process, not audible stalls.
UNDERRUN_TOLERANCE_S = 0.005
# Natural speech rate, for forced code counts that follow the text.
ZH_CHARS_PER_S, EN_CHARS_PER_S = 4.5, 14.0
SECONDS_PER_50HZ_CODE = 1.72 * 256 / 22050  # mel frames per code x hop / rate (IndexTTS-2 at speed 1)
PIPELINE_ENGINES = ("indextts2", "indextts2.5")
ENGINE_OF_MODEL = {"indextts-2": "indextts2", "indextts-2.5": "indextts2.5"}  # --model -> --engine


def _int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: expected comma-separated integers, got {value!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{what}: empty list")
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="realtime-tts bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=lambda v: _int_list(v, "--streams"),
                    help="concurrency levels, e.g. 1,4,16 (each level is one run)")
    ap.add_argument("--targets", action="store_true",
                    help="measure the targets (single-stream RTF, idle short-sentence TTFA, most real-time "
                         "streams) instead of --streams levels")
    ap.add_argument("--targets-turns", type=int, default=10,
                    help="--targets: turns of the idle single-stream run (default 10)")
    ap.add_argument("--targets-max", type=int, default=128,
                    help="--targets: the most streams the capacity search tries (default 128)")
    ap.add_argument("--ray-replicas", type=int, default=0, metavar="N",
                    help="run the levels twice, against one `serve` process directly and through Ray Serve with N "
                         "replicas, and report what the proxy adds to time to first audio and packet jitter "
                         "(client side; the cluster extra; --engine espeak, or a model with --checkpoints)")
    ap.add_argument("--client", choices=("agent", "xiaozhi"), default="agent",
                    help="agent-stream sockets (default) or xiaozhi device simulators")
    ap.add_argument("--turns", type=int, default=4, help="turns per stream at each level (default 4)")
    ap.add_argument("--langs", default="zh,en", help="languages of the sentence set to use (default zh,en)")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)), type=lambda v: _int_list(v, "--lengths"),
                    help="sentence lengths of the set to use (default 7,16,28,80,200)")
    ap.add_argument("--pace-tokens-per-s", type=float, default=0.0,
                    help="agent client: send text as LLM-like pieces at this rate (default 0: whole turn at once)")
    ap.add_argument("--ref-seconds", type=float, default=10.0, help="reference clip length (default 10 s)")
    ap.add_argument("--engine", choices=("espeak",) + PIPELINE_ENGINES, default=None,
                    help="espeak, indextts2 or indextts2.5 (with --checkpoints: real weights; without: random "
                         "weights at full size); default: the family in --checkpoints, else indextts2")
    ap.add_argument("--model", choices=tuple(ENGINE_OF_MODEL), default=None,
                    help="the model by its download name: --model indextts-2.5 is --engine indextts2.5")
    ap.add_argument("--checkpoints", type=Path, default=None,
                    help="IndexTTS-2 or IndexTTS-2.5 checkpoint directory (the family is read from it)")
    ap.add_argument("--tiny", action="store_true", help="a model without --checkpoints: tiny random model")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="auto", help="auto, fp32, bf16, fp16")
    ap.add_argument("--decode", choices=("beam_sample", "sample", "greedy"), default="beam_sample",
                    help="GPT decoding (default: the official 3-beam sampling)")
    ap.add_argument("--cfm-steps", type=int, default=25, help="flow-matching steps (default 25, official)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the GPT decode step and the S2M estimator (the warm-up compiles)")
    ap.add_argument("--tokens", default="auto",
                    help="semantic codes per segment: natural (the stop code decides), N (forced: N / 50 s of "
                         "speech for IndexTTS-2, N / 25 s for IndexTTS-2.5), or auto (default: natural with "
                         "--checkpoints, else forced in proportion to the text at the model's code rate)")
    ap.add_argument("--max-queue", type=int, default=256, help="server executor queue limit (default 256)")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="segments per engine pass (BatchingExecutor); 1: serial executor; default 0: as serve "
                         "(8 for the IndexTTS engines on CUDA, else 1)")
    ap.add_argument("--turn-timeout", type=float, default=600.0, help="seconds a turn may take (default 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--plot", type=Path, help="write a PNG of TTFA against concurrency here (needs matplotlib)")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = _parser()
    a = ap.parse_args(argv)
    if (a.streams is None) == (not a.targets):
        ap.error("give either --streams levels or --targets")
    if a.targets and (a.targets_turns < 1 or a.targets_max < 1):
        ap.error("--targets-turns and --targets-max must be at least 1")
    if a.ray_replicas < 0 or (a.ray_replicas and a.targets):
        ap.error("--ray-replicas takes N >= 1 replicas and --streams levels (not --targets)")
    try:
        a.engine = resolve_engine(a)
    except ValueError as e:
        ap.error(str(e))
    if a.ray_replicas and a.engine in PIPELINE_ENGINES and a.checkpoints is None:
        ap.error("--ray-replicas: the replicas load their engine from settings: --engine espeak, or a model "
                 "with --checkpoints")
    if a.targets:
        a.streams = []
    if any(n < 1 for n in a.streams):
        ap.error("--streams: every level must be at least 1")
    if a.turns < 1:
        ap.error("--turns must be at least 1")
    a.langs = [x.strip() for x in a.langs.split(",") if x.strip()]
    if not a.langs or any(x not in LANGS for x in a.langs):
        ap.error(f"--langs: choose from {', '.join(LANGS)}")
    if any(n not in LENGTHS for n in a.lengths):
        ap.error(f"--lengths: the standard set has {', '.join(map(str, LENGTHS))}")
    if not 0.5 <= a.ref_seconds <= 15:
        ap.error("--ref-seconds must be within 0.5-15 (the official prompt limit is 15 s)")
    if a.cfm_steps < 1 or a.pace_tokens_per_s < 0 or a.max_queue < 1 or a.turn_timeout <= 0 or a.max_batch < 0:
        ap.error("--cfm-steps, --max-queue and --turn-timeout must be positive, --pace-tokens-per-s and "
                 "--max-batch >= 0")
    if a.tokens not in ("auto", "natural"):
        try:
            a.tokens = int(a.tokens)
        except ValueError:
            ap.error(f"--tokens: expected natural, auto or a number, got {a.tokens!r}")
        if a.tokens < 1:
            ap.error("--tokens must be at least 1")
    if a.engine == "espeak" and (a.checkpoints or a.tiny):
        ap.error("--checkpoints and --tiny apply to --engine indextts2 / indextts2.5 only")
    if a.checkpoints is not None and a.tiny:
        ap.error("--tiny builds random weights; it cannot be combined with --checkpoints")
    if a.checkpoints is not None and not a.checkpoints.is_dir():
        ap.error(f"--checkpoints: no such directory: {a.checkpoints}")
    if a.client == "xiaozhi" and a.pace_tokens_per_s:
        ap.error("--pace-tokens-per-s applies to --client agent only")
    if a.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--plot needs matplotlib: pip install 'realtime-tts[bench]'")
    return a


# --------------------------------------------------------------------------- engine


def _sibling(name: str):
    """Another benchmark module of this directory (tools/ is not a package)."""
    key = f"realtime_tts_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def resolve_engine(a: argparse.Namespace) -> str:
    """``--engine`` / ``--model``, else the family of ``--checkpoints``, else indextts2; ValueError
    when they disagree."""
    named = {x for x in (a.engine, ENGINE_OF_MODEL.get(a.model)) if x is not None}
    if len(named) > 1:
        raise ValueError(f"--engine {a.engine} and --model {a.model} name different engines")
    found = None
    if a.checkpoints is not None and a.checkpoints.is_dir():
        from realtime_tts.engine.select import family_of

        found = family_of(a.checkpoints)
    engine = next(iter(named), None) or found or "indextts2"
    if found is not None and engine in PIPELINE_ENGINES and engine != found:
        title = {"indextts2": "IndexTTS-2", "indextts2.5": "IndexTTS-2.5"}
        raise ValueError(f"--engine {engine}: {a.checkpoints} holds an {title[found]} checkpoint")
    return engine


def forced_codes(text: str, code_rate: int = 50) -> int:
    """Codes a natural speaker would need for ``text`` at ``code_rate`` codes per second
    (IndexTTS-2: 50, IndexTTS-2.5: 25); at least 0.2 s."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff")
    seconds = cjk / ZH_CHARS_PER_S + (len(text) - cjk) / EN_CHARS_PER_S
    return max(code_rate // 5, round(code_rate * seconds))


def seconds_per_code(engine) -> float:
    """Audio seconds per code of the engine's model at speed 1 (IndexTTS-2: 1.72 mel frames)."""
    family = getattr(engine, "family", None)
    return SECONDS_PER_50HZ_CODE * 50 / getattr(family, "code_rate", 50)


def random_engine(a: argparse.Namespace, device, dtype):
    """(engine, what it is) on random weights of the chosen family (full size, or ``--tiny``)."""
    import torch

    from realtime_tts.engine.indextts2 import IndexTTS2Engine
    from realtime_tts.engine.indextts25 import IndexTTS25Engine

    torch.manual_seed(a.seed)
    weights = _sibling("random_weights")
    size = ("tiny" if a.tiny else "full-size") + " configs"
    if a.engine == "indextts2.5":
        family = weights.random_family25(device, dtype, a.tiny)  # the released vocabulary (a test fixture)
        family.front.load()  # text normalisation now, not on a first request
        engine = IndexTTS25Engine(family, cfm_steps=a.cfm_steps, seed=a.seed, compile=a.compile)
        return engine, f"IndexTTS-2.5, random weights, {size}"
    from realtime_tts.text.normalize import TextNormalizer
    from realtime_tts.text.tokenizer import TextTokenizer

    models = weights.random_models(device, a.tiny)
    # Random weights come without a tokenizer; the test fixture's small BPE model stands in
    # (its ids fit any text vocabulary; token counts differ somewhat from the real model's).
    models.tokenizer = TextTokenizer(FIXTURE_BPE, TextNormalizer())
    engine = IndexTTS2Engine(models, device=device, dtype=dtype, cfm_steps=a.cfm_steps, seed=a.seed, compile=a.compile)
    return engine, f"IndexTTS2, random weights, {size}"


def build_engine(a: argparse.Namespace):
    """(engine, what it is) for the options; the engine is not warmed up yet."""
    if a.engine == "espeak":
        from realtime_tts.engine.espeak import EspeakEngine

        return EspeakEngine(), "eSpeak NG"
    from realtime_tts.engine.devices import pick_device, pick_dtype

    device = pick_device(a.device)
    dtype = pick_dtype(device, a.dtype)
    if a.checkpoints is not None:
        if a.engine == "indextts2.5":
            from realtime_tts.engine.indextts25 import IndexTTS25Engine as engine_class
        else:
            from realtime_tts.engine.indextts2 import IndexTTS2Engine as engine_class
        engine = engine_class.from_checkpoints(a.checkpoints, device=device, dtype=dtype, cache_dir=None,
                                               cfm_steps=a.cfm_steps, seed=a.seed, compile=a.compile)
        source = f"{'IndexTTS-2.5' if a.engine == 'indextts2.5' else 'IndexTTS2'} from {a.checkpoints}"
    else:
        engine, source = random_engine(a, device, dtype)
    # per-segment warnings (unknown BPE pieces, code budget reached) would flood the table
    for name in ("realtime_tts.engine.indextts2", "realtime_tts.engine.indextts25", "realtime_tts.engine.runner"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from dataclasses import replace
    from functools import partial

    from realtime_tts.model.gpt import CodeOverride

    engine.sampling = replace(engine.sampling, mode=a.decode, num_beams=3 if a.decode == "beam_sample" else 1)
    tokens = a.tokens
    if tokens == "auto":
        tokens = "natural" if a.checkpoints is not None else "auto"
    if tokens == "natural":
        return engine, source + ", natural code counts"
    # every segment forced to a code count, the stop code forbidden (benchmarks only)
    by_text = partial(forced_codes, code_rate=engine.family.code_rate)
    engine.sampling = replace(engine.sampling, override=CodeOverride(tokens if isinstance(tokens, int) else by_text))
    what = f"{tokens} codes per segment" if isinstance(tokens, int) else "codes forced in proportion to the text"
    return engine, f"{source}, {what}"


# --------------------------------------------------------------------------- the server


@dataclass
class Recorder:
    """What the server reports while a level runs (appended from the loop and worker threads)."""

    ttfa: list[tuple[str, float]] = field(default_factory=list)  # (endpoint, seconds)
    segments: list[dict] = field(default_factory=list)
    encodes: list[tuple[float, float]] = field(default_factory=list)  # (seconds, audio seconds)

    def clear(self) -> None:
        self.ttfa.clear()
        self.segments.clear()
        self.encodes.clear()


def max_batch(a: argparse.Namespace, engine) -> int:
    """``--max-batch`` with 0 resolved as ``serve`` does: batching pays off for the pipeline on a GPU."""
    if a.max_batch > 0:
        return a.max_batch
    device = getattr(engine, "device", None)
    return 8 if a.engine in PIPELINE_ENGINES and device is not None and device.type == "cuda" else 1


@contextlib.contextmanager
def running_server(engine, a: argparse.Namespace, data_dir: Path, rec: Recorder):
    """The app under uvicorn in a thread, with the recorder attached; yields (ctx, port)."""
    import socket

    import uvicorn

    from realtime_tts.audio.stream import SpeechEncoder
    from realtime_tts.config import Settings
    from realtime_tts.engine.base import SegmentAudio
    from realtime_tts.engine.batching import BatchingExecutor
    from realtime_tts.engine.executor import SerialExecutor
    from realtime_tts.server.app import create_app
    from realtime_tts.server.transport import protocol_classes
    from realtime_tts.server.context import ServerContext
    from realtime_tts.server.voices import VoiceLibrary

    settings = Settings(data_dir=data_dir, max_queue=a.max_queue, default_voice=VOICE_ID)
    batch = max_batch(a, engine)
    executor = (BatchingExecutor(engine, max_queue=settings.max_queue, max_batch=batch) if batch > 1
                else SerialExecutor(engine, max_queue=settings.max_queue))
    ctx = ServerContext(settings=settings, executor=executor)
    ctx.voices = VoiceLibrary.from_settings(settings)

    # Server-side TTFA as raw samples (the Prometheus histogram only keeps buckets).
    observe = ctx.metrics.observe_ttfa

    def observe_ttfa(endpoint: str, seconds: float) -> None:
        rec.ttfa.append((endpoint, seconds))
        observe(endpoint, seconds)

    ctx.metrics.observe_ttfa = observe_ttfa

    # Encode time: every stream's SpeechEncoder.segment, for as long as the server runs.
    plain_segment = SpeechEncoder.segment

    def timed_segment(self, pcm):
        t = time.perf_counter()
        frames = plain_segment(self, pcm)
        rec.encodes.append((time.perf_counter() - t, len(pcm) / self.input_rate))
        return frames

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            ws_max_size=4 * 1024 * 1024, **protocol_classes())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-server", daemon=True)
    SpeechEncoder.segment = timed_segment
    thread.start()
    try:
        deadline = time.monotonic() + 600
        while not (server.started and ctx.ready.is_set()):
            if not thread.is_alive():
                raise RuntimeError("the server did not start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready within 600 s")
            time.sleep(0.02)
        app_hook = ctx.executor.on_segment_done

        def on_segment_done(job, result, seconds: float) -> None:
            if app_hook is not None:
                app_hook(job, result, seconds)
            row = {"engine_s": seconds, "queue_s": (job.started_at or job.submitted_at) - job.submitted_at,
                   "chars": len(job.text)}
            if isinstance(result, SegmentAudio):
                row.update(audio_s=result.duration, stages=dict(result.stages))
            else:
                row.update(error=type(result).__name__)
            rec.segments.append(row)

        ctx.executor.on_segment_done = on_segment_done
        yield ctx, port
    finally:
        server.should_exit = True
        thread.join(60)
        SpeechEncoder.segment = plain_segment


# --------------------------------------------------------------------------- the clients


@dataclass
class TurnResult:
    text: str
    ttfa_client_s: float | None = None
    audio_s: float = 0.0
    packets: int = 0
    underruns: int = 0
    stall_s: float = 0.0
    jitter_s: list[float] = field(default_factory=list)  # xiaozhi: |packet gap - frame| after the pre-buffer
    error: str | None = None


def playback_gaps(arrivals: list[tuple[float, float]]) -> tuple[int, float]:
    """(underruns, stalled seconds) of a client that starts playing at its first packet.

    ``arrivals``: (arrival time, audio seconds) per packet in order. The playback clock runs in
    real time; a packet that arrives after everything before it has played is an audible gap.
    """
    underruns, stall, play_end = 0, 0.0, None
    for at, seconds in arrivals:
        if play_end is not None and at > play_end + UNDERRUN_TOLERANCE_S:
            underruns += 1
            stall += at - play_end
        play_end = (at if play_end is None else max(play_end, at)) + seconds
    return underruns, stall


async def agent_turns(url: str, index: int, texts: list[str], a: argparse.Namespace) -> list[TurnResult]:
    from clients.agent_client import AgentStream, AudioFrame, llm_tokens

    config = {"output": {"encoding": "opus", "sample_rate": OPUS_RATE, "frame_ms": FRAME_MS}}
    results = []
    async with await AgentStream.connect(url, config=config, open_timeout=60) as stream:
        for t, text in enumerate(texts):
            cid = f"s{index}-t{t}"
            turn = TurnResult(text)
            results.append(turn)
            pieces = llm_tokens(text, a.seed + index) if a.pace_tokens_per_s > 0 else [text]
            sent: list[float] = []

            async def send() -> None:
                for i, piece in enumerate(pieces):
                    if not sent:
                        sent.append(time.monotonic())
                    await stream.text(cid, piece, **({"voice": VOICE_ID} if i == 0 else {}))
                    if a.pace_tokens_per_s > 0:
                        await asyncio.sleep(1.0 / a.pace_tokens_per_s)
                await stream.end(cid)

            sender = asyncio.create_task(send())
            arrivals: list[tuple[float, float]] = []
            deadline = time.monotonic() + a.turn_timeout
            try:
                while True:
                    event = await stream.recv(max(0.0, deadline - time.monotonic()))
                    if isinstance(event, AudioFrame):
                        if event.context_id == cid:
                            arrivals.append((time.monotonic(), FRAME_MS / 1000))
                        continue
                    if event.get("type") == "error" and event.get("context_id") in (None, cid):
                        turn.error = f"{event.get('code')}: {event.get('message')}"
                        break
                    if event.get("context_id") == cid and event.get("type") in ("done", "cancelled"):
                        break
            except TimeoutError:
                turn.error = f"timeout: no 'done' within {a.turn_timeout} s"
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            _fill(turn, arrivals, sent[0] if sent else None)
            if turn.error and "timeout" in turn.error:
                break  # the socket's state is unknown now
    return results


async def xiaozhi_turns(url: str, index: int, texts: list[str], a: argparse.Namespace) -> list[TurnResult]:
    from clients.device_simulator import SAMPLE_RATE, DeviceSimulator

    results = []
    notes: list[str] = []
    async with DeviceSimulator(url, device_id=f"bench:{index:04d}", warn=notes.append) as device:
        for text in texts:
            turn = TurnResult(text)
            results.append(turn)
            seen = len(device.messages)
            started = time.monotonic()
            await device.speak(text, voice=VOICE_ID)
            try:
                heard = await device.next_turn(a.turn_timeout)
            except (TimeoutError, ConnectionError) as e:
                turn.error = f"{type(e).__name__}: {e or 'no tts stop in time'}"
                break
            errors = [m for _, m in device.messages[seen:] if m.get("type") == "error"]
            if errors:
                turn.error = f"{errors[0].get('code')}: {errors[0].get('message')}"
            _fill(turn, [(p.arrived, p.samples / SAMPLE_RATE) for p in heard.packets], started)
            turn.jitter_s = packet_jitter([p.arrived for p in heard.packets])
    return results


def packet_jitter(arrivals: list[float]) -> list[float]:
    """|gap - frame| between paced packets: every packet after the pre-buffer burst (server/pacing.py)."""
    from realtime_tts.config import Settings
    from realtime_tts.server.pacing import lead_frames

    defaults = Settings()
    lead = lead_frames(FRAME_MS, defaults.xiaozhi_prebuffer_packets, defaults.xiaozhi_max_lead_ms)
    paced = arrivals[lead - 1:]
    return [abs(later - earlier - FRAME_MS / 1000) for earlier, later in zip(paced, paced[1:])]


def _fill(turn: TurnResult, arrivals: list[tuple[float, float]], started: float | None) -> None:
    turn.packets = len(arrivals)
    turn.audio_s = sum(s for _, s in arrivals)
    if arrivals and started is not None:
        turn.ttfa_client_s = arrivals[0][0] - started
    turn.underruns, turn.stall_s = playback_gaps(arrivals)


# --------------------------------------------------------------------------- one level


def _pct(values: list[float]) -> dict | None:
    if not values:
        return None
    xs = sorted(values)

    def q(p: float) -> float:  # linear interpolation between closest ranks
        k = (len(xs) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    return {"n": len(xs), "p50": round(q(0.5), 4), "p95": round(q(0.95), 4), "mean": round(statistics.fmean(xs), 4),
            "max": round(xs[-1], 4)}


def sentence_plan(a: argparse.Namespace) -> list[str]:
    # shortest first in each language pair: a stream's first turn is a short first sentence
    return [SENTENCES[(lang, n)] for n in sorted(a.lengths) for lang in a.langs]


async def run_level(n: int, port: int, a: argparse.Namespace, rec: Recorder, engine) -> dict:
    plan = sentence_plan(a)
    url = (f"ws://127.0.0.1:{port}/v1/tts/stream" if a.client == "agent" else f"ws://127.0.0.1:{port}/xiaozhi/v1/")
    drive = agent_turns if a.client == "agent" else xiaozhi_turns
    # stream i starts at a different place in the set, so short and long texts overlap
    texts = [[plan[(i + t) % len(plan)] for t in range(a.turns)] for i in range(n)]
    cuda = _cuda_device(engine)
    if cuda is not None:
        import torch

        torch.cuda.reset_peak_memory_stats(cuda)
    rec.clear()
    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(drive(url, i, texts[i], a) for i in range(n)), return_exceptions=True)
    wall = time.monotonic() - t0
    await asyncio.sleep(0.05)  # the last segment hooks run on the worker thread
    streams = []
    for i, out in enumerate(outcomes):
        if isinstance(out, BaseException):
            streams.append({"stream": i, "turns": 0, "audio_s": 0.0, "packets": 0, "underruns": 0,
                            "errors": [f"{type(out).__name__}: {out}"]})
            continue
        streams.append({"stream": i, "turns": len(out), "audio_s": round(sum(t.audio_s for t in out), 3),
                        "packets": sum(t.packets for t in out), "underruns": sum(t.underruns for t in out),
                        "stall_s": round(sum(t.stall_s for t in out), 3),
                        "ttfa_client_s": [None if t.ttfa_client_s is None else round(t.ttfa_client_s, 4)
                                          for t in out],
                        "errors": [t.error for t in out if t.error]})
    turns = [t for out in outcomes if not isinstance(out, BaseException) for t in out]
    ok_segments = [s for s in rec.segments if "audio_s" in s]
    stage_names = sorted({k for s in ok_segments for k in s["stages"]},
                         key=lambda k: STAGE_ORDER.index(k) if k in STAGE_ORDER else len(STAGE_ORDER))
    stages_ms = {k: round(1000 * statistics.fmean(s["stages"].get(k, 0.0) for s in ok_segments), 2)
                 for k in stage_names}
    audio = sum(s["audio_s"] for s in ok_segments)
    engine_s = sum(s["engine_s"] for s in ok_segments)
    gpt_per_code = None
    if "gpt" in stage_names and audio > 0:
        codes = sum(s["audio_s"] / seconds_per_code(engine) for s in ok_segments)
        gpt_s = sum(s["stages"].get("gpt", 0.0) + s["stages"].get("gpt_prefill", 0.0) for s in ok_segments)
        gpt_per_code = round(1000 * gpt_s / codes, 3)  # the whole decode, prefill included
    gpu_mb = None
    if cuda is not None:
        import torch

        gpu_mb = round(torch.cuda.max_memory_allocated(cuda) / 2**20, 1)
    return {
        "streams": n,
        "turns": len(turns),
        "turns_ok": sum(1 for t in turns if t.error is None and t.packets > 0),
        "wall_s": round(wall, 3),
        "ttfa_server_s": _pct([s for _, s in rec.ttfa]),
        "ttfa_client_s": _pct([t.ttfa_client_s for t in turns if t.ttfa_client_s is not None]),
        "queue_wait_s": _pct([s["queue_s"] for s in rec.segments]),
        "segments": len(rec.segments),
        "segments_failed": len(rec.segments) - len(ok_segments),
        "stages_ms": stages_ms,
        "gpt_ms_per_code_est": gpt_per_code,
        "encode_ms": round(1000 * statistics.fmean(e[0] for e in rec.encodes), 3) if rec.encodes else None,
        "rtf": round(engine_s / audio, 4) if audio else None,
        "audio_s": round(audio, 3),
        "throughput_x_realtime": round(audio / wall, 3) if wall else None,
        "underruns": sum(t.underruns for t in turns),
        "stall_s": round(sum(t.stall_s for t in turns), 3),
        "jitter_s": _pct([j for t in turns for j in t.jitter_s]),
        "gpu_max_allocated_mb": gpu_mb,
        "streams_detail": streams,
    }


STAGE_ORDER = ["conditioning", "gpt_prefill", "gpt", "gpt_latent", "codec", "s2mel", "vocoder"]


def _cuda_device(engine):
    device = getattr(engine, "device", None)
    return device if device is not None and getattr(device, "type", "") == "cuda" else None


# --------------------------------------------------------------------------- reporting


def _ms(stats: dict | None, key: str) -> str:
    return f"{1000 * stats[key]:.0f}" if stats else "-"


def table(results: dict) -> str:
    phases = any(lv.get("phase", "levels") != "levels" for lv in results["levels"])  # --targets runs

    def phase(lv: dict) -> str:
        return f"{lv.get('phase', ''):>8} " if phases else ""

    lines = [
        f"{'phase':>8} " * phases + f"{'streams':>7} {'turns ok':>9} {'TTFA srv p50/p95 ms':>20} "
        f"{'TTFA cli p50/p95 ms':>20} "
        f"{'queue p95 ms':>12} {'RTF':>7} {'x realtime':>10} {'underruns':>9} {'stall s':>7} {'GPU MB':>8}"
    ]
    for lv in results["levels"]:
        srv, cli = lv["ttfa_server_s"], lv["ttfa_client_s"]
        lines.append(
            f"{phase(lv)}{lv['streams']:>7} {lv['turns_ok']:>4}/{lv['turns']:<4} "
            f"{_ms(srv, 'p50') + ' / ' + _ms(srv, 'p95'):>20} {_ms(cli, 'p50') + ' / ' + _ms(cli, 'p95'):>20} "
            f"{_ms(lv['queue_wait_s'], 'p95'):>12} {lv['rtf'] if lv['rtf'] is not None else '-':>7} "
            f"{lv['throughput_x_realtime'] if lv['throughput_x_realtime'] is not None else '-':>10} "
            f"{lv['underruns']:>9} {lv['stall_s']:>7.2f} "
            f"{lv['gpu_max_allocated_mb'] if lv['gpu_max_allocated_mb'] is not None else '-':>8}")
    stages = list(dict.fromkeys(k for lv in results["levels"] for k in lv["stages_ms"]))
    lines.append("")
    lines.append(f"{'streams':>7} {'segments':>8} " + " ".join(f"{s + ' ms':>15}" for s in stages)
                 + f" {'encode ms':>10} {'GPT ms/code':>11}")
    for lv in results["levels"]:
        per_code = lv["gpt_ms_per_code_est"]
        lines.append(f"{lv['streams']:>7} {lv['segments']:>8} "
                     + " ".join(f"{lv['stages_ms'].get(s, 0.0):>15.1f}" for s in stages)
                     + f" {lv['encode_ms'] if lv['encode_ms'] is not None else '-':>10} "
                     + f"{per_code if per_code is not None else '-':>11}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [lv for lv in results["levels"] if lv["ttfa_server_s"] or lv["ttfa_client_s"]]
    x = [lv["streams"] for lv in levels]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for key, label, style in (("ttfa_server_s", "server", "-"), ("ttfa_client_s", "client", ":")):
        for p, marker, color in (("p50", "o", "C0"), ("p95", "^", "C3")):
            pts = [(n, 1000 * lv[key][p]) for n, lv in zip(x, levels) if lv[key]]
            if pts:
                ax.plot(*zip(*pts), style, marker=marker, color=color, label=f"TTFA {p} ({label})")
    if len(set(x)) > 1 and max(x) / min(x) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(x)))
    ax.set_xticklabels([str(n) for n in sorted(set(x))])
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("time to first audio (ms)")
    ax.set_title(f"{results['engine']} ({results['client']} client)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- main


async def _level(n: int, port: int, a: argparse.Namespace, rec: Recorder, engine, levels: list[dict],
                 phase: str = "levels") -> dict:
    level = {"phase": phase, **await run_level(n, port, a, rec, engine)}
    srv = level["ttfa_server_s"]
    print(f"  {n} stream(s): {level['turns_ok']}/{level['turns']} turns, TTFA p50 {_ms(srv, 'p50')} / p95 "
          f"{_ms(srv, 'p95')} ms, {level['underruns']} underrun(s), {level['wall_s']:.1f} s", flush=True)
    levels.append(level)
    return level


async def _bench(a: argparse.Namespace, engine, port: int, rec: Recorder) -> tuple[list[dict], dict | None]:
    # Prime: one turn caches the voice's conditioning (the targets assume a cached voice).
    await run_level(1, port, argparse.Namespace(**{**vars(a), "turns": 1}), rec, engine)
    levels: list[dict] = []
    for n in a.streams:
        await _level(n, port, a, rec, engine, levels)
    return levels, (await _targets(a, engine, port, rec, levels) if a.targets else None)


TARGET_P95_S = 0.3  # the capacity target: real-time streams with a p95 TTFA within this


def real_time(level: dict) -> bool:
    """Every turn spoke, no playback underrun, p95 server TTFA within the target."""
    srv = level["ttfa_server_s"]
    return (level["turns_ok"] == level["turns"] and level["underruns"] == 0 and srv is not None
            and srv["p95"] <= TARGET_P95_S)


async def _targets(a: argparse.Namespace, engine, port: int, rec: Recorder, levels: list[dict]) -> dict:
    print("targets: idle server, one stream, first sentences of <= 20 characters", flush=True)
    idle_args = argparse.Namespace(**{**vars(a), "turns": a.targets_turns, "lengths": [7, 16]})
    idle = await _level(1, port, idle_args, rec, engine, levels, phase="idle")
    print(f"targets: most real-time streams (no underrun, p95 TTFA <= {1000 * TARGET_P95_S:.0f} ms), "
          f"up to {a.targets_max}", flush=True)
    passed, failed, n = 0, None, 1
    while n <= a.targets_max:  # double until a level fails
        if not real_time(await _level(n, port, a, rec, engine, levels, phase="capacity")):
            failed = n
            break
        passed, n = n, 2 * n
    while failed is not None and failed - passed > max(1, passed // 8):  # then narrow the gap
        n = (passed + failed) // 2
        if real_time(await _level(n, port, a, rec, engine, levels, phase="capacity")):
            passed = n
        else:
            failed = n
    srv = idle["ttfa_server_s"]
    return {
        "single_stream_rtf": idle["rtf"],
        "idle_ttfa_s": None if srv is None else {"p50": srv["p50"], "p95": srv["p95"], "n": srv["n"]},
        "real_time_streams": passed,
        "first_failing_streams": failed,  # None: every level up to --targets-max passed
        "max_tried": a.targets_max,
    }


def _commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def targets_table(results: dict) -> str:
    """The targets as Markdown: device, commit and settings, then target / measured / met."""
    t, info, cfg = results["targets"], results["engine_info"], results["config"]
    device = info.get("gpu") or info.get("device") or "cpu"
    cfg = {**cfg, **({"dtype": info["dtype"]} if "dtype" in info else {})}  # the dtype chosen, not "auto"
    settings = ", ".join(f"{k} {cfg[k]}" for k in ("dtype", "decode", "cfm_steps", "tokens", "ref_seconds",
                                                  "max_batch") if k in cfg)
    if info.get("compiled"):
        settings += ", compiled"
    ttfa = t["idle_ttfa_s"]
    cap = t["real_time_streams"]
    cap_text = f"{cap}" + ("" if t["first_failing_streams"] is not None else f" (every level up to {t['max_tried']})")
    rows = [
        ("single-stream real-time factor", "<= 0.05",
         "-" if t["single_stream_rtf"] is None else f"{t['single_stream_rtf']:.3f}",
         t["single_stream_rtf"] is not None and t["single_stream_rtf"] <= 0.05),
        ("TTFA, first sentence <= 20 chars, cached voice, idle (p50 / p95)", "<= 120 / 200 ms",
         "-" if ttfa is None else f"{1000 * ttfa['p50']:.0f} / {1000 * ttfa['p95']:.0f} ms",
         ttfa is not None and ttfa["p50"] <= 0.12 and ttfa["p95"] <= 0.2),
        ("concurrent real-time streams (no underrun, p95 TTFA <= 300 ms)", ">= 64", cap_text, cap >= 64),
    ]
    lines = [f"{results['engine']}; device {device}; commit {results['commit']}; {settings}", "",
             "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {got} | {'yes' if ok else 'no'} |" for name, goal, got, ok in rows]
    return "\n".join(lines)


def run_bench(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # clients/ lives in the source tree
    if a.ray_replicas:
        return _sibling("proxy").run(a, sys.modules[__name__])
    from realtime_tts.engine.checkpoints import CheckpointError
    from realtime_tts.engine.pipeline import synthetic_voice_wav

    try:
        engine, source = build_engine(a)
    except (CheckpointError, OSError) as e:
        print(f"realtime-tts bench: error: {e}", file=sys.stderr)
        return 2
    print(f"serving bench: {source}; {a.client} client, "
          f"{'targets' if a.targets else 'streams ' + ','.join(map(str, a.streams))}, "
          f"{a.turns} turn(s) per stream, sentences {','.join(a.langs)} x {','.join(map(str, sorted(a.lengths)))} "
          f"chars, reference {a.ref_seconds:.1f} s", flush=True)
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="rtts-bench-") as tmp:
        t0 = time.monotonic()
        try:
            with running_server(engine, a, Path(tmp), rec) as (ctx, port):
                print(f"server ready in {time.monotonic() - t0:.1f} s (engine loaded and warmed up; "
                      f"{type(ctx.executor).__name__}, up to {max_batch(a, engine)} segments per pass)", flush=True)
                wav = synthetic_voice_wav(a.ref_seconds)
                ctx.voices.add(wav, voice_id=VOICE_ID, name="bench reference")
                levels, targets = asyncio.run(_bench(a, engine, port, rec))
                info = ctx.engine.describe()
        except RuntimeError as e:
            print(f"realtime-tts bench: error: {e}", file=sys.stderr)
            return 1
        finally:
            engine.close()
    results = {
        "bench": "serve",
        "engine": source,
        "engine_info": info,
        "client": a.client,
        "commit": _commit(),
        "config": {"streams": a.streams, "turns": a.turns, "langs": a.langs, "lengths": sorted(a.lengths),
                   "ref_seconds": a.ref_seconds, "ref_sha256": hashlib.sha256(wav).hexdigest()[:16],
                   "pace_tokens_per_s": a.pace_tokens_per_s, "frame_ms": FRAME_MS, "opus_rate": OPUS_RATE,
                   "max_batch": max_batch(a, engine),
                   **({"tokens": a.tokens, "cfm_steps": a.cfm_steps, "decode": a.decode, "device": a.device,
                       "dtype": a.dtype} if a.engine in PIPELINE_ENGINES else {})},
        "levels": levels,
    }
    if targets is not None:
        results["targets"] = targets
    print(table(results))
    if targets is not None:
        print()
        print(targets_table(results))
    print("JSON " + json.dumps(results, ensure_ascii=False, separators=(",", ":")))
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
        print(f"wrote {a.out}")
    if a.plot is not None:
        plot(results, a.plot)
        print(f"wrote {a.plot}")
    failed = sum(lv["turns"] - lv["turns_ok"] for lv in levels)
    if failed:
        print(f"warning: {failed} turn(s) got no audio or an error (see streams_detail in the JSON)", file=sys.stderr)
    return 0


def main() -> None:
    sys.exit(run_bench())


if __name__ == "__main__":
    main()
