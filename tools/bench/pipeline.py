"""``realtime-tts bench``: time the whole IndexTTS2 pipeline, stage by stage.

By default the networks are built at full size (the official config) with random weights, so no
checkpoint is needed; ``--checkpoints DIR`` loads real weights instead. The GPT is forced to emit
exactly ``--tokens`` semantic codes per segment (50 codes = 1 s of speech; the stop code is
suppressed), with the official decoding (3-beam sampling) unless ``--decode`` says otherwise, then
the latent pass, 25 CFM steps and BigVGAN run as in serving.

Printed: per segment the seconds spent in each stage, audio seconds and real-time factor; then
the mean per stage, GPT ms per code, overall RTF, and time to first audio (TTFA) for a voice seen
for the first time (conditioning included) and for a cached voice. Run it from the repo root:

    PYTHONPATH=. python tools/bench/pipeline.py --device cuda --tokens 250 --segments 3
    PYTHONPATH=. python tools/bench/pipeline.py --quick            # a fast smoke run
    PYTHONPATH=. python tools/bench/pipeline.py --tiny --device cpu  # tiny random model (tests)

With ``--streams N[,N...]`` or ``--targets`` (or ``realtime-tts bench serve ...``) the serving
benchmark runs instead: the real server under N concurrent clients (tools/bench/serve.py;
``realtime-tts bench serve --help``). ``realtime-tts bench soak`` runs the soak/abuse harness
(tools/soak; ``realtime-tts bench soak --help``).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

STAGES = ("gpt", "gpt_latent", "s2mel", "vocoder")  # gpt: the whole decode, prefill included


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="realtime-tts bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on sm80+ GPUs, else fp32), fp32, bf16, fp16")
    ap.add_argument("--tokens", type=int, default=None, help="semantic codes per segment (default 250 = 5 s; "
                                                              "--quick: 50)")
    ap.add_argument("--segments", type=int, default=None, help="segments to time (default 3; --quick: 2)")
    ap.add_argument("--text-tokens", type=int, default=40, help="text tokens per segment (default 40)")
    ap.add_argument("--ref-seconds", type=float, default=None, help="reference clip length (default 10; --quick: 3)")
    ap.add_argument("--decode", choices=("beam_sample", "sample", "greedy"), default="beam_sample",
                    help="GPT decoding (default: the official 3-beam sampling)")
    ap.add_argument("--cfm-steps", type=int, default=25, help="flow-matching steps (default 25, official)")
    ap.add_argument("--checkpoints", type=Path, default=None, help="load real weights from this directory")
    ap.add_argument("--quick", action="store_true", help="short run: 50 codes, 2 segments, 3 s reference")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of full size (smoke tests)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the GPT decode step and the S2M estimator (the warm-up compiles)")
    ap.add_argument("--seed", type=int, default=0)
    # Handled by run_bench before this parser (the serving benchmark); listed so --help shows them.
    serving = ap.add_argument_group("serving benchmark (the real server under load; all its options: "
                                    "realtime-tts bench serve --help)")
    serving.add_argument("--targets", action="store_true",
                         help="measure the performance targets (single-stream RTF, idle short-sentence TTFA, "
                              "most real-time streams) and print them as a Markdown table")
    serving.add_argument("--streams", metavar="N[,N...]", help="concurrency levels to run, e.g. 1,4,16")
    a = ap.parse_args(argv)
    if a.tokens is None:
        a.tokens = 50 if a.quick else 250
    if a.segments is None:
        a.segments = 2 if a.quick else 3
    if a.ref_seconds is None:
        a.ref_seconds = 3.0 if a.quick else 10.0
    if a.tokens < 1 or a.segments < 1 or a.text_tokens < 1 or a.cfm_steps < 1:
        ap.error("--tokens, --segments, --text-tokens and --cfm-steps must be positive")
    if not 0.5 <= a.ref_seconds <= 15:
        ap.error("--ref-seconds must be within 0.5-15 (the official prompt limit is 15 s)")
    return a


def random_models(device: torch.device, tiny: bool):
    """Every network at full (or tiny) size with random weights, built directly on ``device``."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    from realtime_tts.engine.indextts2_load import MelParams, Models
    from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig
    from realtime_tts.model.campplus import CAMPPlus
    from realtime_tts.model.codec import CodecConfig, SemanticCodec
    from realtime_tts.model.emotion import EmotionMatrix
    from realtime_tts.model.gpt import ConformerConfig, GPTConfig, UnifiedVoice
    from realtime_tts.model.s2mel import S2Mel, S2MelConfig

    if tiny:
        width = 32
        w2v_cfg = Wav2Vec2BertConfig(hidden_size=width, num_hidden_layers=18, num_attention_heads=2,
                                     intermediate_size=32, output_hidden_size=width, conv_depthwise_kernel_size=5,
                                     left_max_position_embeddings=8, right_max_position_embeddings=2)
        g = GPTConfig.tiny()
        gcfg = GPTConfig(**{**g.__dict__,
                            "condition_module": ConformerConfig(16, 32, 2, 2, 2.0, input_size=width),
                            "emo_condition_module": ConformerConfig(16, 24, 1, 2, 0.1, input_size=width)})
        scfg = S2MelConfig(**{**S2MelConfig.tiny().__dict__, "n_mels": 80, "gpt_dim": gcfg.model_dim,
                              "semantic_dim": width})
        ccfg = CodecConfig(codebook_size=gcfg.start_mel_token, hidden_size=width, codebook_dim=8, vocos_dim=16,
                           vocos_intermediate_dim=32, vocos_num_layers=2)
        vcfg = BigVGANConfig.tiny()
        campplus_kw = dict(embedding_size=scfg.style_dim, growth_rate=4, bn_size=2, init_channels=8)
    else:
        w2v_cfg, gcfg, scfg, ccfg, vcfg, campplus_kw = (Wav2Vec2BertConfig(), GPTConfig(), S2MelConfig(),
                                                         CodecConfig(), BigVGANConfig(), {})
    with torch.device(device):
        from realtime_tts.model.w2vbert import SemanticEncoder

        w2v = SemanticEncoder(Wav2Vec2BertModel(w2v_cfg), SeamlessM4TFeatureExtractor(),
                              torch.zeros(w2v_cfg.hidden_size), torch.ones(w2v_cfg.hidden_size))
        models = Models(
            gpt=UnifiedVoice(gcfg), s2mel=S2Mel(scfg), codec=SemanticCodec(ccfg), w2v=w2v,
            campplus=CAMPPlus(**campplus_kw), vocoder=BigVGAN(vcfg),
            emotion=EmotionMatrix(torch.randn(73, scfg.style_dim), torch.randn(73, gcfg.model_dim)),
            tokenizer=None, mel=MelParams(n_mels=scfg.n_mels),
        )
    return models


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _serving_bench(argv: list[str]) -> int:
    """``bench serve ...`` / ``bench --streams ...``: hand over to tools/bench/serve.py."""
    import importlib.util

    key = "realtime_tts_bench_serve"
    if key not in sys.modules:  # registered before it runs: its dataclasses look themselves up there
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name("serve.py"))
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key].run_bench(argv)


def run_bench(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return _serving_bench(argv[1:])
    if any(x in ("--streams", "--targets") or x.startswith("--streams=") for x in argv):
        return _serving_bench(argv)
    a = parse_args(argv)
    from realtime_tts.engine.base import CancelToken, SynthesisOptions, Voice
    from realtime_tts.engine.devices import pick_device, pick_dtype
    from realtime_tts.engine.indextts2 import IndexTTS2Engine
    from realtime_tts.engine.pipeline import synthetic_voice_wav
    from realtime_tts.model.gpt import CodeOverride, SamplingParams

    device = pick_device(a.device)
    dtype = pick_dtype(device, a.dtype)
    t0 = time.perf_counter()
    if a.checkpoints is not None:
        engine = IndexTTS2Engine.from_checkpoints(a.checkpoints, device=device, dtype=dtype, cache_dir=None,
                                                  cfm_steps=a.cfm_steps, compile=a.compile)
        source = str(a.checkpoints)
    else:
        torch.manual_seed(a.seed)
        engine = IndexTTS2Engine(random_models(device, a.tiny), device=device, dtype=dtype, cfm_steps=a.cfm_steps,
                                 compile=a.compile)
        source = "random weights, " + ("tiny" if a.tiny else "full-size") + " configs"
    _sync(device)
    load_s = time.perf_counter() - t0
    gcfg = engine.models.gpt.cfg
    tokens = min(a.tokens, gcfg.max_mel_tokens)
    text_tokens = min(a.text_tokens, engine.max_segment_tokens)
    # exactly ``tokens`` codes per segment: the stop code forbidden (a benchmark-only override)
    engine.sampling = SamplingParams(mode=a.decode, num_beams=3 if a.decode == "beam_sample" else 1,
                                     max_mel_tokens=gcfg.max_mel_tokens, runaway_guard=False,
                                     override=CodeOverride(tokens))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"IndexTTS2 pipeline bench: {source}")
    print(f"device {device}{gpu}, dtype {str(dtype).replace('torch.', '')}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"decode {a.decode}{', compiled' if a.compile else ''}, {tokens} codes/segment ({tokens / 50:.1f} s of speech), {text_tokens} text tokens, "
          f"{a.cfm_steps} CFM steps, reference {a.ref_seconds:.1f} s; models ready in {load_s:.1f} s")
    if tokens != a.tokens:
        print(f"note: --tokens capped at the model's max_mel_tokens ({gcfg.max_mel_tokens})")

    t0 = time.perf_counter()
    engine.warmup()
    _sync(device)
    print(f"warm-up: {time.perf_counter() - t0:.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        wav = synthetic_voice_wav(a.ref_seconds)
        path = Path(tmp) / "voice.wav"
        path.write_bytes(wav)
        voice = Voice("bench", path, hashlib.sha256(wav).hexdigest(), "bench")
        opts = SynthesisOptions(voice=voice)
        g = torch.Generator(device=device).manual_seed(a.seed)
        ids = torch.randint(2, gcfg.text_vocab, (text_tokens,), generator=torch.Generator().manual_seed(a.seed))
        rows = []
        for i in range(a.segments):
            _sync(device)
            t = time.perf_counter()
            out = engine.synthesize([ids.tolist()], opts, CancelToken(), generator=g)
            out.stages["gpt"] = out.stages.get("gpt", 0.0) + out.stages.pop("gpt_prefill", 0.0)  # prefill included
            _sync(device)
            rows.append((time.perf_counter() - t, out))

    head = f"{'seg':>3} {'cond':>7} " + " ".join(f"{s:>10}" for s in STAGES) + f" {'total':>8} {'audio':>7} {'RTF':>7}"
    print(head)
    for i, (wall, out) in enumerate(rows):
        st = out.stages
        print(f"{i + 1:>3} {st.get('conditioning', 0):7.3f} " + " ".join(f"{st.get(s, 0):10.3f}" for s in STAGES)
              + f" {wall:8.3f} {out.duration:7.2f} {wall / out.duration:7.3f}")
    warm = rows[1:] or rows
    mean = {s: statistics.mean(r[1].stages.get(s, 0.0) for r in warm) for s in STAGES}
    audio = statistics.mean(r[1].duration for r in warm)
    total = statistics.mean(r[0] for r in warm)
    print("mean over warm segments: " + ", ".join(f"{s} {mean[s]:.3f} s" for s in STAGES))
    print(f"GPT: {1000 * mean['gpt'] / tokens:.1f} ms/code ({tokens / max(mean['gpt'], 1e-9):.0f} codes/s), "
          f"CFM: {1000 * mean['s2mel'] / a.cfm_steps:.1f} ms/step")
    print(f"RTF {total / audio:.3f} ({audio:.2f} s of audio in {total:.3f} s)")
    print(f"TTFA new voice {rows[0][0]:.3f} s (conditioning {rows[0][1].stages.get('conditioning', 0):.3f} s), "
          f"cached voice {warm[0][0]:.3f} s")
    engine.close()
    return 0


def main() -> None:
    sys.exit(run_bench())


if __name__ == "__main__":
    main()
