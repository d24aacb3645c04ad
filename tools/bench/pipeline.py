"""``realtime-tts bench``: time the whole pipeline of IndexTTS-2 or IndexTTS-2.5, stage by stage.

By default the networks are built at full size (the official config of ``--model``: indextts-2,
the default, or indextts-2.5) with random weights, so no checkpoint is needed; ``--checkpoints
DIR`` loads real weights instead (the family is read from the directory). The GPT is forced to
emit a fixed number of semantic codes per segment (the stop code is suppressed), with the
official decoding (3-beam sampling) unless ``--decode`` says otherwise, then the family's
features stage (IndexTTS-2: the GPT latent pass; IndexTTS-2.5: the codec decode), the CFM steps
and BigVGAN run as in serving.

Length is given in seconds of speech (``--seconds``, default 5) so that both models make the
same audio: IndexTTS-2 codes are 50 per second, IndexTTS-2.5 codes 25 per second, so for the
same speech IndexTTS-2.5 runs half the GPT steps. ``--tokens N`` forces N of the model's own
codes instead (N / 50 s of speech for IndexTTS-2, N / 25 s for IndexTTS-2.5).

Printed: per segment the seconds spent in each stage, audio seconds and real-time factor; then
the mean per stage, GPT ms per code, GPT codes and GPT seconds per second of audio, overall RTF,
and time to first audio (TTFA) for a voice seen for the first time (conditioning included) and
for a cached voice. ``--out FILE`` writes the same as JSON. Run it from the repo root:

    realtime-tts bench --device cuda --segments 3                 # IndexTTS-2, 5 s segments
    realtime-tts bench --model indextts-2.5 --device cuda          # IndexTTS-2.5, the same 5 s
    realtime-tts bench --quick                                     # 1 s, 2 segments, 3 s reference
    realtime-tts bench --model indextts-2.5 --tiny --device cpu    # tiny random model (tests)

With ``--streams N[,N...]`` or ``--targets`` (or ``realtime-tts bench serve ...``) the serving
benchmark runs instead: the real server under N concurrent clients (tools/bench/serve.py;
``realtime-tts bench serve --help``). ``realtime-tts bench soak`` runs the soak/abuse harness
(tools/soak; ``realtime-tts bench soak --help``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

MODELS = {"indextts-2": "IndexTTS-2", "indextts-2.5": "IndexTTS-2.5"}  # --model -> title
ENGINE_OF = {"indextts-2": "indextts2", "indextts-2.5": "indextts2.5"}  # --model -> engine name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="realtime-tts bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=tuple(MODELS), default=None,
                    help="which model family (default: the one in --checkpoints, else indextts-2)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on sm80+ GPUs, else fp32), fp32, bf16, fp16")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=None,
                        help="seconds of speech per segment (default 5; --quick: 1): 50 codes per second for "
                             "IndexTTS-2, 25 for IndexTTS-2.5")
    length.add_argument("--tokens", type=int, default=None,
                        help="force this many of the model's own codes per segment instead of --seconds "
                             "(N / 50 s of speech for IndexTTS-2, N / 25 s for IndexTTS-2.5)")
    ap.add_argument("--segments", type=int, default=None, help="segments to time (default 3; --quick: 2)")
    ap.add_argument("--text-tokens", type=int, default=40, help="text tokens per segment (default 40)")
    ap.add_argument("--ref-seconds", type=float, default=None, help="reference clip length (default 10; --quick: 3)")
    ap.add_argument("--decode", choices=("beam_sample", "sample", "greedy"), default="beam_sample",
                    help="GPT decoding (default: the official 3-beam sampling)")
    ap.add_argument("--cfm-steps", type=int, default=25, help="flow-matching steps (default 25, official)")
    ap.add_argument("--checkpoints", type=Path, default=None, help="load real weights from this directory")
    ap.add_argument("--quick", action="store_true", help="short run: 1 s of speech, 2 segments, 3 s reference")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of full size (smoke tests)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the GPT decode step and the S2M estimator (the warm-up compiles)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    # Handled by run_bench before this parser (the serving benchmark); listed so --help shows them.
    serving = ap.add_argument_group("serving benchmark (the real server under load; all its options: "
                                    "realtime-tts bench serve --help)")
    serving.add_argument("--targets", action="store_true",
                         help="measure the performance targets (single-stream RTF, idle short-sentence TTFA, "
                              "most real-time streams) and print them as a Markdown table")
    serving.add_argument("--streams", metavar="N[,N...]", help="concurrency levels to run, e.g. 1,4,16")
    a = ap.parse_args(argv)
    if a.seconds is None and a.tokens is None:
        a.seconds = 1.0 if a.quick else 5.0
    if a.segments is None:
        a.segments = 2 if a.quick else 3
    if a.ref_seconds is None:
        a.ref_seconds = 3.0 if a.quick else 10.0
    if (a.tokens is not None and a.tokens < 1) or (a.seconds is not None and a.seconds <= 0):
        ap.error("--tokens and --seconds must be positive")
    if a.segments < 1 or a.text_tokens < 2 or a.cfm_steps < 1:
        ap.error("--segments and --cfm-steps must be positive, --text-tokens at least 2")
    if not 0.5 <= a.ref_seconds <= 15:
        ap.error("--ref-seconds must be within 0.5-15 (the official prompt limit is 15 s)")
    if a.checkpoints is not None and a.tiny:
        ap.error("--tiny builds random weights; it cannot be combined with --checkpoints")
    return a


def _sibling(name: str):
    """Another module of this directory (tools/ is not a package), registered before it runs:
    its dataclasses look themselves up in sys.modules."""
    key = f"realtime_tts_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_model(a: argparse.Namespace) -> str:
    """``--model``, or the family the ``--checkpoints`` directory holds; ValueError on a mismatch."""
    if a.checkpoints is None:
        return a.model or "indextts-2"
    from realtime_tts.engine.select import family_of

    found = {"indextts2": "indextts-2", "indextts2.5": "indextts-2.5"}.get(family_of(a.checkpoints))
    if a.model is not None and found is not None and found != a.model:
        raise ValueError(f"--model {a.model}: {a.checkpoints} holds an {MODELS[found]} checkpoint")
    return a.model or found or "indextts-2"


def build_engine(a: argparse.Namespace, model: str, device: torch.device, dtype: torch.dtype):
    """(engine, where its weights came from), not warmed up."""
    if model == "indextts-2.5":
        from realtime_tts.engine.indextts25 import IndexTTS25Engine as engine_class
    else:
        from realtime_tts.engine.indextts2 import IndexTTS2Engine as engine_class
    if a.checkpoints is not None:
        engine = engine_class.from_checkpoints(a.checkpoints, device=device, dtype=dtype, cache_dir=None,
                                               cfm_steps=a.cfm_steps, compile=a.compile)
        return engine, str(a.checkpoints)
    torch.manual_seed(a.seed)
    weights = _sibling("random_weights")
    if model == "indextts-2.5":
        family = weights.random_family25(device, dtype, a.tiny)
    else:
        from realtime_tts.engine.indextts2 import IndexTTS2Family

        family = IndexTTS2Family(weights.random_models(device, a.tiny), device, dtype)
    engine = engine_class(family, cfm_steps=a.cfm_steps, compile=a.compile)
    return engine, "random weights, " + ("tiny" if a.tiny else "full-size") + " configs"


def bench_text_ids(engine, n: int, seed: int) -> list[int]:
    """``n`` random text ids as the GPT sees them (0 and 1 are the start/stop text ids). For
    IndexTTS-2.5 the first is the ``<|en|>`` language tag, as the front end writes it (it picks
    the GPT's language row), the rest are ids of the vocabulary's ranks."""
    from realtime_tts.engine.indextts25 import IndexTTS25Family

    g = torch.Generator().manual_seed(seed)
    family = engine.family
    if isinstance(family, IndexTTS25Family):
        tok = family.front.tokenizer
        return [tok.special_id("<|en|>")] + torch.randint(2, tok.num_ranks, (n - 1,), generator=g).tolist()
    return torch.randint(2, family.gpt.cfg.text_vocab, (n,), generator=g).tolist()


def time_segments(engine, a: argparse.Namespace, ids: list[int]) -> list[tuple[float, object]]:
    """(wall seconds, SegmentAudio) per segment; the first with a voice the engine has not seen."""
    from realtime_tts.engine.base import CancelToken, SynthesisOptions, Voice
    from realtime_tts.engine.pipeline import synthetic_voice_wav

    device = engine.device
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = synthetic_voice_wav(a.ref_seconds)
        path = Path(tmp) / "voice.wav"
        path.write_bytes(wav)
        opts = SynthesisOptions(voice=Voice("bench", path, hashlib.sha256(wav).hexdigest(), "bench"))
        g = torch.Generator(device=device).manual_seed(a.seed)
        for _ in range(a.segments):
            _sync(device)
            t = time.perf_counter()
            out = engine.synthesize([ids], opts, CancelToken(), generator=g)
            out.stages["gpt"] = out.stages.get("gpt", 0.0) + out.stages.pop("gpt_prefill", 0.0)  # prefill included
            _sync(device)
            rows.append((time.perf_counter() - t, out))
    return rows


def summarise(rows, stages: tuple[str, ...], codes: int, cfm_steps: int) -> dict:
    """Means over the warm segments (all but the first, which pays for the new voice)."""
    warm = rows[1:] or rows
    mean = {s: statistics.mean(r[1].stages.get(s, 0.0) for r in warm) for s in stages}
    audio = statistics.mean(r[1].duration for r in warm)
    total = statistics.mean(r[0] for r in warm)
    return {
        "stages_s": {s: round(v, 4) for s, v in mean.items()}, "audio_s": round(audio, 4), "total_s": round(total, 4),
        "rtf": round(total / audio, 4), "gpt_ms_per_code": round(1000 * mean["gpt"] / codes, 2),
        "gpt_codes_per_audio_s": round(codes / audio, 2), "gpt_s_per_audio_s": round(mean["gpt"] / audio, 4),
        "cfm_ms_per_step": round(1000 * mean["s2mel"] / cfm_steps, 2),
        "ttfa_new_voice_s": round(rows[0][0], 4), "ttfa_cached_voice_s": round(warm[0][0], 4),
        "conditioning_new_voice_s": round(rows[0][1].stages.get("conditioning", 0.0), 4),
    }


def print_report(rows, stages: tuple[str, ...], s: dict) -> None:
    print(f"{'seg':>3} {'cond':>7} " + " ".join(f"{x:>10}" for x in stages) + f" {'total':>8} {'audio':>7} {'RTF':>7}")
    for i, (wall, out) in enumerate(rows):
        st = out.stages
        print(f"{i + 1:>3} {st.get('conditioning', 0):7.3f} " + " ".join(f"{st.get(x, 0):10.3f}" for x in stages)
              + f" {wall:8.3f} {out.duration:7.2f} {wall / out.duration:7.3f}")
    print("mean over warm segments: " + ", ".join(f"{x} {v:.3f} s" for x, v in s["stages_s"].items()))
    print(f"GPT: {s['gpt_ms_per_code']:.1f} ms/code, {s['gpt_codes_per_audio_s']:.1f} codes per second of audio, "
          f"{s['gpt_s_per_audio_s']:.3f} s of GPT per second of audio; CFM: {s['cfm_ms_per_step']:.1f} ms/step")
    print(f"RTF {s['rtf']:.3f} ({s['audio_s']:.2f} s of audio in {s['total_s']:.3f} s)")
    print(f"TTFA new voice {s['ttfa_new_voice_s']:.3f} s (conditioning {s['conditioning_new_voice_s']:.3f} s), "
          f"cached voice {s['ttfa_cached_voice_s']:.3f} s")


def forced_codes(a: argparse.Namespace, code_rate: int, max_codes: int) -> int:
    """Codes per segment: ``--tokens``, or ``--seconds`` at the family's code rate; capped."""
    codes = a.tokens if a.tokens is not None else max(1, round(a.seconds * code_rate))
    return min(codes, max_codes)


def run_bench(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return _sibling("serve").run_bench(argv[1:])
    if any(x in ("--streams", "--targets") or x.startswith("--streams=") for x in argv):
        return _sibling("serve").run_bench(argv)
    a = parse_args(argv)
    from realtime_tts.engine.checkpoints import CheckpointError
    from realtime_tts.engine.devices import pick_device, pick_dtype
    from realtime_tts.model.gpt import CodeOverride

    device = pick_device(a.device)
    dtype = pick_dtype(device, a.dtype)
    t0 = time.perf_counter()
    try:
        model = resolve_model(a)
        engine, source = build_engine(a, model, device, dtype)
    except (ValueError, CheckpointError) as e:
        print(f"realtime-tts bench: {e}", file=sys.stderr)
        return 2
    _sync(device)
    load_s = time.perf_counter() - t0
    family, gcfg = engine.family, engine.family.gpt.cfg
    rate = family.code_rate
    codes = forced_codes(a, rate, gcfg.max_mel_tokens)
    text_tokens = min(a.text_tokens, engine.max_segment_tokens)
    # exactly ``codes`` codes per segment: the stop code forbidden (a benchmark-only override)
    engine.sampling = replace(family.default_sampling(), mode=a.decode, num_beams=3 if a.decode == "beam_sample" else 1,
                              max_mel_tokens=gcfg.max_mel_tokens, runaway_guard=False, override=CodeOverride(codes))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{MODELS[model]} pipeline bench: {source}")
    print(f"device {device}{gpu}, dtype {str(dtype).replace('torch.', '')} (GPT), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"decode {a.decode}{', compiled' if a.compile else ''}, {codes} codes/segment = {codes / rate:.2f} s of "
          f"speech at {rate} codes/s, {text_tokens} text tokens, {a.cfm_steps} CFM steps, reference "
          f"{a.ref_seconds:.1f} s; models ready in {load_s:.1f} s")
    if a.tokens is not None and codes != a.tokens:
        print(f"note: --tokens capped at the model's max_mel_tokens ({gcfg.max_mel_tokens})")

    t0 = time.perf_counter()
    engine.warmup()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    print(f"warm-up: {warmup_s:.2f} s")
    rows = time_segments(engine, a, bench_text_ids(engine, text_tokens, a.seed))
    stages = ("gpt", family.features_stage, "s2mel", "vocoder")  # gpt: the whole decode, prefill included
    summary = summarise(rows, stages, codes, a.cfm_steps)
    print_report(rows, stages, summary)
    engine.close()
    if a.out is not None:
        result = {"model": model, "source": source, "device": str(device) + gpu, "dtype": str(dtype).replace("torch.", ""),
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "decode": a.decode,
                  "compile": a.compile, "codes": codes, "code_rate": rate, "speech_s": round(codes / rate, 4),
                  "text_tokens": text_tokens, "cfm_steps": a.cfm_steps, "ref_seconds": a.ref_seconds,
                  "load_s": round(load_s, 2), "warmup_s": round(warmup_s, 2), **summary,
                  "segments": [{"wall_s": round(w, 4), "audio_s": round(o.duration, 4),
                                "stages_s": {k: round(v, 4) for k, v in o.stages.items()}} for w, o in rows]}
        a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


def main() -> None:
    sys.exit(run_bench())


if __name__ == "__main__":
    main()
