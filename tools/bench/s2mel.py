"""Micro-benchmark of the S2M flow-matching model and the BigVGAN vocoder (not a test).

Full-size IndexTTS2 configs with random weights (speed does not depend on the values).
S2M: time of one ``S2Mel.generate`` call per (reference length, segment length), with the
official 25 Euler steps and CFG (batch of 2 inside); ``--steps`` shortens CPU runs and the
25-step time is then extrapolated linearly (the per-step estimator dominates).
Vocoder: seconds of compute per second of audio.

  python tools/bench/s2mel.py --quick                     # 2-core CPU, a few minutes
  python tools/bench/s2mel.py --device cuda               # full grid, fp32
  python tools/bench/s2mel.py --device cuda --dtype bfloat16 --batch 4

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

from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig  # noqa: E402
from realtime_tts.model.s2mel import S2Mel, S2MelConfig, target_lengths  # noqa: E402

MEL_FPS = 22050 / 256
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
    """Best of ``repeats`` wall times (seconds), after the caller's warm-up."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_s2mel(args, device: torch.device) -> list[dict]:
    cfg = S2MelConfig()
    model = S2Mel(cfg).to(device).eval()
    dtype = getattr(torch, args.dtype)
    if dtype != torch.float32:
        model.cfm.estimator.to(dtype)  # the Euler state and CFG mix stay float32
    rows = []
    warm = False
    for ref_s in args.ref_secs:
        tp = int(ref_s * MEL_FPS)
        prompt = model.prompt_condition(
            torch.randn(args.batch, int(ref_s * CODE_FPS), cfg.semantic_dim, device=device),
            torch.randn(args.batch, cfg.n_mels, tp, device=device),
            torch.randn(args.batch, cfg.style_dim, device=device),
        )
        for seg_s in args.seg_secs:
            n_codes = int(seg_s * CODE_FPS)
            s_infer = torch.randn(args.batch, n_codes, cfg.semantic_dim, device=device)
            code_lens = torch.full((args.batch,), n_codes, device=device)

            def run(steps: int) -> None:
                model.generate(s_infer, code_lens, prompt, target_lens=target_lengths(code_lens, cfg.frames_per_code),
                               steps=steps, generator=None)

            if not warm:
                run(1)  # first-call allocations, kernel selection
                warm = True
            sec = timed(lambda: run(args.steps), device, args.repeats)
            sec25 = sec * 25 / args.steps
            gen = int(n_codes * cfg.frames_per_code)
            rows.append(
                dict(ref_s=ref_s, seg_s=seg_s, batch=args.batch, frames=tp + gen, steps=args.steps,
                     seconds=round(sec, 4), seconds_25_steps=round(sec25, 4),
                     per_segment_25_steps=round(sec25 / args.batch, 4),
                     rtf_25_steps=round(sec25 / (args.batch * seg_s), 4))
            )
            print(f"S2M  ref {ref_s:5.1f}s  seg {seg_s:5.1f}s  batch {args.batch}  frames {tp + gen:5d}  "
                  f"{args.steps:2d} steps {sec:8.3f}s  -> 25 steps {sec25:8.3f}s  "
                  f"({sec25 / args.batch:.3f}s/segment, RTF {sec25 / (args.batch * seg_s):.3f})", flush=True)
    return rows


def bench_vocoder(args, device: torch.device) -> list[dict]:
    model = BigVGAN(BigVGANConfig()).to(device).eval()
    rows = []
    model(torch.randn(1, 80, 16, device=device))  # warm-up
    for seg_s in args.voc_secs:
        mel = torch.randn(args.batch, 80, int(seg_s * MEL_FPS), device=device)
        sec = timed(lambda: model(mel), device, args.repeats)
        per = sec / (args.batch * seg_s)
        rows.append(dict(seg_s=seg_s, batch=args.batch, seconds=round(sec, 4), sec_per_audio_sec=round(per, 4)))
        print(f"BigVGAN  seg {seg_s:5.1f}s  batch {args.batch}  {sec:8.3f}s  ({per:.3f} s per audio second)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="DiT estimator dtype (CUDA only)")
    ap.add_argument("--steps", type=int, default=25, help="Euler steps actually run (time is scaled to 25)")
    ap.add_argument("--batch", type=int, default=1, help="segments per call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-secs", type=float, nargs="+", default=[3.0, 10.0, 15.0])
    ap.add_argument("--seg-secs", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    ap.add_argument("--voc-secs", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--quick", action="store_true", help="reduced grid for a 2-core CPU (a few minutes)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    if args.dtype != "float32" and args.device != "cuda":
        ap.error("--dtype other than float32 is for CUDA only")
    if args.steps < 1 or args.batch < 1 or args.repeats < 1:
        ap.error("--steps, --batch and --repeats must be >= 1")
    if args.quick:
        args.ref_secs, args.seg_secs, args.voc_secs = [3.0, 10.0], [1.0, 3.0], [1.0]
        args.steps, args.repeats = min(args.steps, 2), 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {name}  torch {torch.__version__}  threads {torch.get_num_threads()}  dtype {args.dtype}", flush=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        s2m = bench_s2mel(args, device)
        voc = bench_vocoder(args, device)
    print("JSON " + json.dumps(dict(device=name, device_type=device.type, dtype=args.dtype, torch=torch.__version__,
                                    threads=torch.get_num_threads(), s2mel=s2m, vocoder=voc)))


if __name__ == "__main__":
    main()
