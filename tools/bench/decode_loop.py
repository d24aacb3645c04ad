"""The GPT decode loop on its own (not a test): what ``generate`` costs per code beyond the model's
decode step, in time and in work.

Random weights at the official widths (1280 wide, 20 heads) with ``--layers`` layers (24 = full
size), one request, official decoding (3 sampled beams, top-k 30, top-p 0.8, repetition penalty
10) forced to ``--codes`` codes (``target_codes``), after the prompt of ``--text-tokens`` tokens:

  generate   ms per code of ``generate`` minus its prefill: decode step + sampling + beam bookkeeping
  step       ms per code of the bare ``decode_step`` on 3 rows over the same cache span
  loop       generate - step: what the decode loop adds to the model (sampling, penalties,
             beam choice, cache reorders)
  ops, allocs  aten operators and tensor allocations (``aten::empty*``) per code of ``generate``
             (torch profiler; counts do not depend on the machine's load)

The same script times whichever ``realtime_tts`` is first on PYTHONPATH, so two versions can be
compared by alternating runs:

    PYTHONPATH=. python tools/bench/decode_loop.py --layers 4 --reps 5
    PYTHONPATH=/path/to/other/checkout python tools/bench/decode_loop.py --layers 4 --reps 5

Prints a line of figures and one JSON line (prefix "JSON ").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from realtime_tts.model.gpt import GPTConfig, SamplingParams, UnifiedVoice, generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=24, help="GPT layers (24: full size)")
    ap.add_argument("--codes", type=int, default=50)
    ap.add_argument("--text-tokens", type=int, default=40)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = replace(GPTConfig.full(), layers=args.layers)
    model = UnifiedVoice(cfg).eval()
    n = args.codes
    with torch.inference_mode():
        feats = torch.randn(1, 150, 1024)
        cond = model.conditioning(model.speaker_latents(feats), model.merge_emovec(feats, feats, 0.6))
        texts = [torch.randint(2, cfg.number_text_tokens, (args.text_tokens,))]
        params = SamplingParams(max_mel_tokens=n, target_codes=n)
        g = torch.Generator()

        def run():
            g.manual_seed(0)
            return generate(model, cond, texts, params, generator=g)

        emb, lengths = model.prompt(cond, texts)
        emb3, len3 = emb.repeat_interleave(3, 0), lengths.repeat_interleave(3, 0)
        cache = model.gpt.new_cache(3, emb.size(1) + n + 1)

        def prefill():
            model.prefill(emb3, len3, cache)

        codes = torch.randint(0, cfg.stop_mel_token, (3,))

        def steps():
            for k in range(n):
                model.decode_step(codes, torch.full((3,), k + 2), len3 + k, cache, int(len3[0]) + k + 1)

        first = run().codes[0][:6].tolist()
        rows = []
        for _ in range(args.reps):  # interleaved, so load changes hit all three alike
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            prefill()
            t2 = time.perf_counter()
            steps()
            t3 = time.perf_counter()
            rows.append(((t1 - t0 - (t2 - t1)) / n, (t3 - t2) / n))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    events = prof.key_averages()
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    allocs = sum(e.count for e in events if e.key in ("aten::empty", "aten::empty_strided", "aten::empty_like"))
    gen = [1e3 * r[0] for r in rows]
    step = [1e3 * r[1] for r in rows]
    loop = [a - b for a, b in rows]
    res = dict(layers=args.layers, codes=n, threads=args.threads, torch=torch.__version__,
               generate_ms=[round(x, 2) for x in gen], step_ms=[round(x, 2) for x in step],
               loop_ms_median=round(1e3 * statistics.median(loop), 2),
               generate_ms_median=round(statistics.median(gen), 2), step_ms_median=round(statistics.median(step), 2),
               ops_per_code=round(ops / n, 1), allocs_per_code=round(allocs / n, 1), first_codes=first)
    print(f"layers {args.layers}: generate {res['generate_ms_median']:.1f} ms/code, step {res['step_ms_median']:.1f}, "
          f"loop {res['loop_ms_median']:.1f} (medians of {args.reps}); {res['ops_per_code']} aten ops and "
          f"{res['allocs_per_code']} allocations per code; first codes {first}")
    print("JSON " + json.dumps(res))


if __name__ == "__main__":
    main()
