"""Micro-benchmark of the IndexTTS2 text-to-semantic GPT (UnifiedVoice v2; not a test).

Full-size config (1280 wide, 24 layers, 20 heads; 866 M parameters) with random weights (speed
does not depend on the values). For each text length it times:

  cond      speaker latents + emotion vector from 15 s of w2v-BERT features (once per voice)
  prefill   the prompt [34 conditioning | text + 2 | start] into a fresh KV cache
  step      one ``decode_step`` (batch rows, fixed shapes), the raw per-token cost
  sample    ``generate`` in the fast non-default mode (multinomial, one row per request)
  beam      ``generate`` in the official mode (3 sampled beams = 3 rows per request)
  latents   the teacher-forced second pass over text + codes (input of S2M)

``generate`` runs with ``target_codes`` so that every run makes exactly ``--codes`` codes;
its per-token time includes the prefill-free sampling and beam bookkeeping. Times are the best
of ``--repeats`` runs after one warm-up.

  python tools/bench/gpt.py --quick                        # 2-core CPU, about two minutes
  python tools/bench/gpt.py --device cuda                  # fp32
  python tools/bench/gpt.py --device cuda --dtype bfloat16 --batch 4

Prints a table and one JSON line (prefix "JSON ").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from realtime_tts.model.gpt import GPTConfig, SamplingParams, UnifiedVoice, generate  # noqa: E402

CODE_FPS = 50


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` wall times (seconds), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def build(device: torch.device, dtype: torch.dtype) -> UnifiedVoice:
    cfg = GPTConfig.full()
    with torch.device(device):
        model = UnifiedVoice(cfg)
    return model.to(dtype).eval()


def bench(args, device: torch.device) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    model = build(device, dtype)
    cfg = model.cfg
    b, n = args.batch, args.codes
    feats = torch.randn(b, int(args.ref_secs * CODE_FPS), 1024, device=device, dtype=dtype)

    def conditioning():
        spk = model.speaker_latents(feats)
        return spk, model.merge_emovec(feats, feats, 0.6)

    t_cond = timed(conditioning, device, args.repeats)
    spk, emo = conditioning()
    cond = model.conditioning(spk, emo)
    print(f"conditioning ({args.ref_secs:g} s reference, batch {b}): {t_cond * 1e3:.1f} ms", flush=True)

    rows = []
    header = (f"{'text':>5} {'prompt':>6} {'batch':>5} | {'prefill ms':>10} | {'step ms':>8} | "
              f"{'sample ms/tok':>13} | {'beam ms/tok':>11} | {'latents ms':>10} | {'RTF beam':>8}")
    print(header)
    print("-" * len(header))
    g = torch.Generator(device=device)
    for text_len in args.text_tokens:
        texts = [torch.randint(2, cfg.number_text_tokens, (text_len,), device=device) for _ in range(b)]
        emb, lengths = model.prompt(cond, texts)
        prompt = emb.size(1)
        cache = model.gpt.new_cache(b, prompt + n + 1)
        t_prefill = timed(lambda: model.prefill(emb, lengths, cache), device, args.repeats)

        codes = torch.randint(0, cfg.stop_mel_token, (b,), device=device)
        pos = torch.full((b,), 2, device=device)

        def steps():
            for k in range(n):
                model.decode_step(codes, pos, lengths + k, cache)

        t_step = timed(steps, device, args.repeats) / n

        def run(mode: str):
            g.manual_seed(0)
            p = SamplingParams(mode=mode, max_mel_tokens=n, target_codes=n)
            return generate(model, cond, texts, p, generator=g)

        # generate() = prefill + n sampled steps; subtract the prefill to get the per-token cost
        t_sample = (timed(lambda: run("sample"), device, args.repeats) - t_prefill) / n
        t_beam = None
        if not args.no_beam:
            t_beam3 = timed(lambda: run("beam_sample"), device, args.repeats)
            # the beam prefill runs 3x the rows; time it separately
            emb3, len3 = emb.repeat_interleave(3, 0), lengths.repeat_interleave(3, 0)
            cache3 = model.gpt.new_cache(3 * b, prompt + n + 1)
            t_prefill3 = timed(lambda: model.prefill(emb3, len3, cache3), device, args.repeats)
            t_beam = (t_beam3 - t_prefill3) / n
            del cache3
        code_rows = [torch.randint(0, cfg.stop_mel_token, (n,), device=device) for _ in range(b)]
        t_lat = timed(lambda: model.latents(spk, emo, texts, code_rows), device, args.repeats)
        # real-time factor of the official mode: GPT time per second of speech (50 codes/s)
        rtf = None if t_beam is None else (t_prefill3 + t_beam * n) / (n / CODE_FPS)
        rows.append(dict(text_tokens=text_len, prompt=prompt, batch=b, codes=n,
                         prefill_ms=round(t_prefill * 1e3, 2), step_ms=round(t_step * 1e3, 3),
                         sample_ms_per_token=round(t_sample * 1e3, 3),
                         beam_ms_per_token=None if t_beam is None else round(t_beam * 1e3, 3),
                         latents_ms=round(t_lat * 1e3, 2), rtf_beam=None if rtf is None else round(rtf, 4)))
        beam_s = "-" if t_beam is None else f"{t_beam * 1e3:11.2f}"
        rtf_s = "-" if rtf is None else f"{rtf:8.3f}"
        print(f"{text_len:5d} {prompt:6d} {b:5d} | {t_prefill * 1e3:10.1f} | {t_step * 1e3:8.2f} | "
              f"{t_sample * 1e3:13.2f} | {beam_s:>11} | {t_lat * 1e3:10.1f} | {rtf_s:>8}", flush=True)
        del cache
    return rows, t_cond


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="model dtype (CUDA only for non-float32)")
    ap.add_argument("--batch", type=int, default=1, help="requests decoded together")
    ap.add_argument("--codes", type=int, default=100, help="codes generated per run (50 per second)")
    ap.add_argument("--text-tokens", type=int, nargs="+", default=[20, 60, 120])
    ap.add_argument("--ref-secs", type=float, default=15.0, help="reference length for conditioning")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-beam", action="store_true", help="skip the (3-row) official beam mode")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--quick", action="store_true", help="short CPU run: one text length, 8 codes")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if args.dtype != "float32" and args.device != "cuda":
        ap.error("--dtype other than float32 is for CUDA only")
    if args.batch < 1 or args.repeats < 1 or args.codes < 1:
        ap.error("--batch, --repeats and --codes must be >= 1")
    if not (1 <= min(args.text_tokens) and max(args.text_tokens) <= GPTConfig.full().max_text_tokens):
        ap.error("--text-tokens must be within 1..600")
    if args.quick:
        args.text_tokens, args.codes, args.repeats, args.ref_secs = [40], 8, 1, 6.0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {name}  torch {torch.__version__}  threads {torch.get_num_threads()}  dtype {args.dtype}",
          flush=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        rows, t_cond = bench(args, device)
    print("JSON " + json.dumps(dict(device=name, device_type=device.type, dtype=args.dtype, torch=torch.__version__,
                                    threads=torch.get_num_threads(), conditioning_ms=round(t_cond * 1e3, 2),
                                    ref_secs=args.ref_secs, gpt=rows)))


if __name__ == "__main__":
    main()
