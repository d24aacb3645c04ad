"""Our IndexTTS2 engine against the official ``IndexTTS2.infer``: same weights, same work, one run.

Both sides load the SAME official-layout checkpoint directory (random weights built here, or a real
checkpoint), synthesize the same text from the same reference clip, emit the same forced number of
semantic codes with the same beams, run the same number of CFM steps, and are timed the same way:
one untimed warm-up call (which also fills both sides' speaker-conditioning caches), then ``--reps``
timed calls. Printed: per stage (GPT decoding, GPT latent pass, S2M, vocoder, whole call) the mean
seconds of each side and the ratio official / ours (> 1: ours is faster), then a ``JSON`` line.

The two sides need different environments, so there are two processes: this driver runs in the
project venv (our engine, in-process) and starts the official side with the oracle venv's python
(``--official-python``); the official worker prints one ``RESULT {json}`` line that the driver
reads. The random checkpoint is also written by the oracle venv, with the official constructors, so
it is in the official key layout by construction.

How the work is made identical on both sides:
  codes     official: ``infer(..., max_mel_tokens=N, suppress_tokens=[stop, start])``; both are plain
            Hugging Face ``generate`` options passed through ``infer``'s ``**generation_kwargs``
            (``suppress_tokens`` adds HF's SuppressTokensLogitsProcessor, i.e. -inf on those ids),
            so generation always runs to exactly N codes; no official code is changed.
            ours: ``engine.run(..., max_codes=N, suppress_stop=True)`` (stop and start biased away).
  beams     official ``num_beams=B`` (sampling on, the official default); ours
            ``SamplingParams(mode="beam_sample", num_beams=B)`` (B=1: plain sampling on both).
  CFM       the official ``infer`` hard-codes 25 steps; for another ``--cfm-steps`` the worker
            wraps the CFM module's ``inference`` to pass that step count instead (the only
            behavioural patch on the official side). Ours: ``cfm_steps``.
  threads   ``torch.set_num_threads(--threads)`` (and OMP/MKL variables) on both sides.
Other patches on the official side, none on its timed path: ``modelscope`` is stubbed and the Qwen
emotion model is not loaded (not used: no emotion text); the text normaliser takes its wetext
branch (as in tools/golden); at ``--size tiny`` the golden's width patches are applied.

Stage times. Ours: the engine's own per-stage timers. Official: spies around its modules, so both
sides cut the pipeline at the same places: gpt = ``merge_emovec`` + ``inference_speech`` (what the
official ``gpt_gen_time`` covers), split into cond (the official ``merge_emovec`` and
``get_conditioning``, recomputed on every call; ours caches both per voice, so 0) and generate (the
Hugging Face ``generate`` call; ours: ``generate()``, prefill and decode loop), gpt_latent = the GPT forward pass (``gpt_forward_time``),
s2mel = from the end of that pass to the vocoder call (``s2mel_time``: gpt_layer, codec embedding,
length regulator, CFM), vocoder = the BigVGAN call; total = the whole ``infer`` / ``run`` call.
On CUDA the spies synchronize the device, as our engine's timers do.

Sizes (``--size``):
  full   the official config.yaml (GPT 24x1280, w2v-BERT 24x1024, DiT 13x512, BigVGAN 1536 ch).
  small  the official interface widths (w2v 1024, GPT 1280, style 192) with fewer/narrower layers
         (GPT 4 layers, w2v-BERT 18 layers, DiT 5, WaveNet 4, codec 2, BigVGAN 256 ch), so the
         official code needs no width patch; a few minutes on 2 CPU cores.
  tiny   the golden fixture tests/fixtures/pipeline/checkpoints (seconds; used by the smoke test).
Random checkpoints are built once into ``--workdir`` (default /tmp/realtime_tts_compare/<size>)
and reused; ``--checkpoints DIR`` uses an existing official-layout directory (e.g. real weights)
instead. Text tokens come from the checkpoint's bpe.model (built checkpoints use the golden tiny
BPE model, so the text is spelled in short pieces; both sides tokenize identically).

Run from the repo root with the project venv:

    PYTHONPATH=. .venv/bin/python tools/bench/compare_official.py --size small --tokens 50 --reps 3
    PYTHONPATH=. .venv/bin/python tools/bench/compare_official.py --size full --tokens 20 --cfm-steps 5
    # GPU box (oracle venv with a CUDA torch; both sides fp32 unless --dtype fp16):
    PYTHONPATH=. .venv/bin/python tools/bench/compare_official.py --size full --device cuda \\
        --tokens 250 --reps 5 --official-python /path/to/official-venv/bin/python
    # our side only (no oracle venv):
    PYTHONPATH=. .venv/bin/python tools/bench/compare_official.py --size tiny --skip-official
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OFFICIAL_PYTHON = "/work/venvs/official/bin/python"
DEFAULT_OFFICIAL_REPO = "/work/official/index-tts-1eafa93"
TINY_CHECKPOINTS = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints"
STAGES = ("gpt", "gpt_latent", "s2mel", "vocoder", "total")
# inside the gpt stage: speaker/emotion conditioning recomputed per call (official: merge_emovec and
# get_conditioning; ours: none, it is cached per voice) and the decoding itself (official: the Hugging
# Face generate; ours: generate(), prefill and decode loop)
GPT_PARTS = ("gpt_cond", "gpt_generate")
DEFAULT_TEXT = "Hello there, this is a quick benchmark sentence for the speech pipeline."
BUILD_MARKER = "compare_official.json"


def _golden():
    """tools/golden/pipeline.py as a module (its helpers: HF cache layout, stubs, tiny patches)."""
    spec = importlib.util.spec_from_file_location("golden_pipeline", ROOT / "tools" / "golden" / "pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- sizes

def size_spec(size: str, repo: Path) -> dict:
    """config.yaml, w2v-BERT config and BigVGAN config.json for a built random checkpoint."""
    import copy

    import yaml

    cfg = yaml.safe_load((repo / "checkpoints" / "config.yaml").read_text())
    voc = json.loads((repo / "indextts" / "s2mel" / "modules" / "bigvgan" / "config.json").read_text())
    w2v: dict = {}  # transformers' Wav2Vec2BertConfig defaults are w2v-bert-2.0's
    if size == "small":
        cfg = copy.deepcopy(cfg)
        g = cfg["gpt"]
        g["layers"] = 4
        g["condition_module"]["num_blocks"] = 2
        g["emo_condition_module"]["num_blocks"] = 2
        cfg["semantic_codec"].update(vocos_num_layers=2, vocos_intermediate_dim=512)
        cfg["s2mel"]["DiT"]["depth"] = 5
        cfg["s2mel"]["wavenet"]["num_layers"] = 4
        # 18 layers: the official code reads hidden_states[17]
        w2v = dict(num_hidden_layers=18, intermediate_size=1024)
        voc["upsample_initial_channel"] = 256
    elif size != "full":
        raise ValueError(f"no random-checkpoint spec for size {size!r}")
    return {"config": cfg, "w2v": w2v, "bigvgan": voc}


# ----------------------------------------------------------------------------- oracle-venv side

def _official_env(ckpt: Path, threads: int) -> None:
    """Offline HF cache in the checkpoint directory, thread count, stubs; before infer_v2 imports."""
    os.environ["HF_HUB_CACHE"] = str(ckpt / "hf_cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(threads)
    _golden()._stubs()
    import huggingface_hub  # noqa: F401  (reads HF_HUB_CACHE before infer_v2 overrides the variable)


def build_checkpoint(dest: Path, size: str, repo: Path) -> None:
    """A random-weight checkpoint directory in the official layout, from the official constructors."""
    _official_env(dest, torch_threads())
    import torch
    import yaml
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    import indextts.gpt.model_v2 as mv2
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.bigvgan.env import AttrDict
    from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus
    from indextts.s2mel.modules.commons import MyModel
    from indextts.utils.maskgct_utils import build_semantic_codec

    hf_put = _golden().hf_put
    spec = size_spec(size, repo)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(spec["config"], sort_keys=False))
    cfg = OmegaConf.load(dest / "config.yaml")
    shutil.copyfile(ROOT / "tests" / "fixtures" / "gpt" / "tiny_bpe.model", dest / "bpe.model")
    cache = dest / "hf_cache"
    half = lambda sd: {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}  # noqa: E731

    def step(name: str, t0: float) -> float:
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        return time.perf_counter()

    t = time.perf_counter()
    with torch.no_grad():
        torch.manual_seed(1)
        w2v = Wav2Vec2BertModel(Wav2Vec2BertConfig(**spec["w2v"])).eval()
        width = w2v.config.hidden_size
        snap = hf_put(cache, "facebook/w2v-bert-2.0", "config.json").parent
        w2v.half().save_pretrained(snap, safe_serialization=True)  # fp16 on disk; both load it as fp32
        SeamlessM4TFeatureExtractor().save_pretrained(snap)
        del w2v
        torch.save({"mean": 0.1 * torch.randn(width), "var": torch.rand(width) + 0.5}, dest / "wav2vec2bert_stats.pt")
        t = step("w2v-BERT", t)

        torch.manual_seed(2)
        codec = build_semantic_codec(cfg.semantic_codec)
        save_file({k: v.contiguous() for k, v in codec.state_dict().items()},
                  str(hf_put(cache, "amphion/MaskGCT", "semantic_codec/model.safetensors")))
        del codec
        t = step("semantic codec", t)

        torch.manual_seed(3)
        gpt = mv2.UnifiedVoice(**cfg.gpt)
        torch.save(half(gpt.state_dict()), dest / "gpt.pth")  # fp16 on disk (the loaders copy into fp32)
        del gpt
        t = step("GPT", t)

        torch.manual_seed(4)
        s2mel = MyModel(cfg.s2mel, use_gpt_latent=True)
        torch.save({"net": {k: s2mel.models[k].state_dict() for k in ("cfm", "length_regulator", "gpt_layer")},
                    "iters": 0}, dest / "s2mel.pth")
        del s2mel
        torch.manual_seed(5)
        torch.save(half(CAMPPlus(feat_dim=80, embedding_size=192).state_dict()),
                   hf_put(cache, "funasr/campplus", "campplus_cn_common.bin"))
        t = step("S2M + CAMPPlus", t)

        torch.manual_seed(6)
        voc = BigVGAN(AttrDict(dict(spec["bigvgan"])), use_cuda_kernel=False)
        _golden().randomize_bigvgan(voc)  # bounded and non-degenerate
        repo_id = spec["config"]["vocoder"]["name"]
        hf_put(cache, repo_id, "config.json").write_text(json.dumps(spec["bigvgan"], indent=1))
        torch.save({"generator": voc.state_dict()}, hf_put(cache, repo_id, "bigvgan_generator.pt"))
        del voc
        t = step("BigVGAN", t)

        torch.manual_seed(7)
        style = spec["config"]["s2mel"]["style_encoder"]["dim"]
        torch.save(torch.randn(73, style), dest / "feat1.pt")
        torch.save(0.5 * torch.randn(73, spec["config"]["gpt"]["model_dim"]), dest / "feat2.pt")
    (dest / BUILD_MARKER).write_text(json.dumps({"size": size, "repo": str(repo)}))


def _patch_official_runtime(size: str) -> None:
    """Qwen (emotion text, unused here) off; wetext normaliser; at tiny size the golden width patches."""
    import indextts.infer_v2 as iv2

    if size == "tiny":
        _golden()._patch_official()  # includes the Qwen and wetext patches
        return
    iv2.QwenEmotion = lambda model_dir: None
    _golden().patch_wetext()


def official_worker(job: dict, serve: bool = False) -> dict:
    """Time the official ``IndexTTS2.infer`` (runs in the oracle venv); ``serve``: one call per
    seed read from stdin (``--interleave``)."""
    ckpt = Path(job["checkpoints"])
    _official_env(ckpt, job["threads"])
    import torch
    import transformers

    _patch_official_runtime(job["size"])
    import indextts.infer_v2 as iv2

    device = "cuda:0" if job["device"] == "cuda" else job["device"]
    quiet = io.StringIO()  # the official code prints a lot; keep the worker's stdout for RESULT
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(quiet):
        tts = iv2.IndexTTS2(cfg_path=str(ckpt / "config.yaml"), model_dir=str(ckpt), device=device,
                            use_fp16=job["dtype"] == "fp16", use_cuda_kernel=False)
    load_s = time.perf_counter() - t0
    cuda = device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    acc: dict[str, float] = {}
    rec: dict = {}

    def timed(stage, fn, after=None):
        def wrapper(*a, **kw):
            sync()
            t = time.perf_counter()
            out = fn(*a, **kw)
            sync()
            now = time.perf_counter()
            acc[stage] = acc.get(stage, 0.0) + now - t
            if after is not None:
                after(out, now)
            return out
        return wrapper

    def count_codes(out, now):
        codes = out[0]
        rec["codes"] = rec.get("codes", 0) + int(codes.shape[-1])
        rec["stop"] = rec.get("stop", False) or bool((codes == tts.stop_mel_token).any())

    def latent_done(out, now):
        rec["latent_end"] = now

    tts.gpt.merge_emovec = timed("gpt", timed("gpt_cond", tts.gpt.merge_emovec))
    tts.gpt.inference_speech = timed("gpt", tts.gpt.inference_speech, count_codes)
    tts.gpt.get_conditioning = timed("gpt_cond", tts.gpt.get_conditioning)
    tts.gpt.inference_model.generate = timed("gpt_generate", tts.gpt.inference_model.generate)
    tts.gpt.forward = timed("gpt_latent", tts.gpt.forward, latent_done)  # nn.Module.__call__ -> self.forward
    vocoder = tts.bigvgan

    def spy_vocoder(mel):
        sync()
        t = time.perf_counter()
        acc["s2mel"] = acc.get("s2mel", 0.0) + t - rec.pop("latent_end")
        wav = vocoder(mel)
        sync()
        acc["vocoder"] = acc.get("vocoder", 0.0) + time.perf_counter() - t
        return wav

    tts.bigvgan = spy_vocoder
    if job["cfm_steps"] != 25:  # the official infer hard-codes 25 diffusion steps
        cfm = tts.s2mel.models["cfm"]
        inference = cfm.inference

        def cfm_inference(mu, x_lens, prompt, style, f0, n_timesteps, *a, **kw):
            return inference(mu, x_lens, prompt, style, f0, job["cfm_steps"], *a, **kw)

        cfm.inference = cfm_inference
    stop, start = tts.cfg.gpt.stop_mel_token, tts.cfg.gpt.start_mel_token
    text_tokens = len(tts.tokenizer.convert_tokens_to_ids(tts.tokenizer.tokenize(job["text"])))

    def call(seed: int) -> dict:
        acc.clear()
        rec.clear()
        torch.manual_seed(seed)
        sync()
        t = time.perf_counter()
        with contextlib.redirect_stdout(quiet):
            sr, wav = tts.infer(job["ref"], job["text"], None, max_mel_tokens=job["tokens"],
                                num_beams=job["beams"], suppress_tokens=[stop, start])
        sync()
        row = {**{s: acc.get(s, 0.0) for s in STAGES[:-1] + GPT_PARTS}, "total": time.perf_counter() - t,
               "codes": rec["codes"], "stop_emitted": rec["stop"], "audio_s": wav.shape[0] / sr}
        quiet.seek(0)
        quiet.truncate()
        return row

    meta = {"load_s": load_s, "text_tokens": text_tokens, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    if serve:  # --interleave: one call per seed read from stdin, until "quit"
        print("READY " + json.dumps(meta), flush=True)
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            print("RESULT " + json.dumps(call(int(line))), flush=True)
        return meta
    warm = call(job["seed"])
    reps = [call(job["seed"] + 1 + i) for i in range(job["reps"])]
    return {**meta, "warmup": warm, "reps": reps}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------- project-venv side

def our_side(job: dict, before_each=None) -> dict:
    """Time our engine on the same checkpoint directory (runs in the project venv).
    ``before_each(seed)`` runs before each of our calls (``--interleave``: the official call)."""
    import hashlib

    import torch

    from realtime_tts.engine.base import SynthesisOptions, Voice
    from realtime_tts.engine.indextts2 import IndexTTS2Engine
    from realtime_tts.model.gpt import SamplingParams

    threads_before = torch.get_num_threads()
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[job["our_dtype"]]
    t0 = time.perf_counter()
    engine = IndexTTS2Engine.from_checkpoints(job["checkpoints"], device=device, dtype=dtype, cache_dir=None,
                                              cfm_steps=job["cfm_steps"])
    load_s = time.perf_counter() - t0
    gcfg = engine.models.gpt.cfg
    engine.sampling = SamplingParams(mode="beam_sample" if job["beams"] > 1 else "sample", num_beams=job["beams"],
                                     max_mel_tokens=gcfg.max_mel_tokens, runaway_guard=False)
    ref = Path(job["ref"])
    voice = Voice("bench", ref, hashlib.sha256(ref.read_bytes()).hexdigest(), "bench")
    opts = SynthesisOptions(voice=voice)
    text_tokens = sum(len(p) for p in engine.text_ids(job["text"]))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def call(seed: int) -> dict:
        g = torch.Generator(device=device).manual_seed(seed)
        sync()
        t = time.perf_counter()
        out = engine.run(job["text"], opts, generator=g, max_codes=job["tokens"], suppress_stop=True)
        sync()
        total = time.perf_counter() - t
        return {**{s: out.stages.get(s, 0.0) for s in STAGES[:-1]}, "total": total,
                "conditioning": out.stages.get("conditioning", 0.0), "audio_s": out.duration}

    # the code count of each call, read from generate()'s result (same check as the official side)
    from realtime_tts.engine import indextts2 as eng_mod

    counted: dict = {}
    real_generate = eng_mod.generate

    def counting_generate(*a, **kw):
        sync()
        t = time.perf_counter()
        gen = real_generate(*a, **kw)
        sync()
        counted["gpt_generate"] = counted.get("gpt_generate", 0.0) + time.perf_counter() - t
        counted["codes"] = counted.get("codes", 0) + sum(int(c.numel()) for c in gen.codes)
        counted["stop"] = counted.get("stop", False) or any(bool(s) for s in gen.stopped)
        return gen

    eng_mod.generate = counting_generate
    try:
        def counted_call(seed: int) -> dict:
            if before_each is not None:
                before_each(seed)
            counted.clear()
            row = call(seed)
            row["codes"], row["stop_emitted"] = counted["codes"], counted["stop"]
            row["gpt_generate"], row["gpt_cond"] = counted["gpt_generate"], 0.0  # conditioning: cached per voice
            return row

        warm = counted_call(job["seed"])
        reps = [counted_call(job["seed"] + 1 + i) for i in range(job["reps"])]
    finally:
        eng_mod.generate = real_generate
        engine.close()
        threads = torch.get_num_threads()
        torch.set_num_threads(threads_before)  # leave the caller's process as it was
    return {"load_s": load_s, "warmup": warm, "reps": reps, "text_tokens": text_tokens,
            "threads": threads, "torch": torch.__version__, "device": str(device),
            "dtype": job["our_dtype"]}


# ----------------------------------------------------------------------------- driver

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="compare_official", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "small", "full"), default="small")
    ap.add_argument("--checkpoints", type=Path, default=None,
                    help="an existing official-layout checkpoint directory (skips building one)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where random checkpoints are built and kept (default /tmp/realtime_tts_compare/<size>)")
    ap.add_argument("--rebuild", action="store_true", help="build the random checkpoint again")
    ap.add_argument("--tokens", type=int, default=50, help="forced semantic codes per call (default 50 = 1 s)")
    ap.add_argument("--cfm-steps", type=int, default=25, help="flow-matching steps on both sides (default 25)")
    ap.add_argument("--beams", type=int, default=3, help="GPT beams on both sides (default 3, official)")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per side after one warm-up (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on both sides (default: cores)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                    help="fp16: the official use_fp16 (GPT in fp16) and ours in fp16 (GPT + DiT); CUDA only")
    ap.add_argument("--our-dtype", choices=("fp32", "fp16", "bf16"), default=None,
                    help="override our engine's dtype (e.g. bf16, our CUDA default)")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--ref-seconds", type=float, default=3.0, help="synthetic reference clip length (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--official-python", default=DEFAULT_OFFICIAL_PYTHON,
                    help=f"python of the oracle venv (default {DEFAULT_OFFICIAL_PYTHON})")
    ap.add_argument("--official-repo", type=Path, default=Path(DEFAULT_OFFICIAL_REPO))
    ap.add_argument("--skip-official", action="store_true", help="time our engine only")
    ap.add_argument("--interleave", action="store_true",
                    help="both sides loaded at once, calls alternating official/ours (fair under a varying "
                         "machine load; needs the memory of both)")
    ap.add_argument("--official-timeout", type=float, default=3600.0, help="seconds before the official side "
                                                                              "is abandoned (default 3600)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    ap.add_argument("--show", type=Path, default=None, help="print the table of a saved --out file and exit")
    a = ap.parse_args(argv)
    if a.tokens < 1 or a.cfm_steps < 1 or a.beams < 1 or a.reps < 1:
        ap.error("--tokens, --cfm-steps, --beams and --reps must be positive")
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be positive")
    if not 0.5 <= a.ref_seconds <= 15:
        ap.error("--ref-seconds must be within 0.5-15 (the official prompt limit is 15 s)")
    if a.dtype == "fp16" and a.device == "cpu":
        ap.error("--dtype fp16 needs --device cuda (the official code forces fp32 on CPU)")
    if not a.text.strip():
        ap.error("--text is empty")
    return a


def _official_cmd(a: argparse.Namespace, mode: str, payload: dict) -> list[str]:
    return [a.official_python, str(Path(__file__).resolve()), f"--_{mode}", json.dumps(payload)]


def _run_worker(a: argparse.Namespace, mode: str, payload: dict, threads: int) -> dict | None:
    env = dict(os.environ, PYTHONPATH=str(a.official_repo), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(_official_cmd(a, mode, payload), env=env, capture_output=True, text=True,
                          timeout=a.official_timeout)
    for line in proc.stdout.splitlines():
        if mode == "build" and line.startswith("  "):
            print(line)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"official-venv {mode} failed (exit {proc.returncode}):\n{tail}")
    results = [ln[len("RESULT "):] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(results[-1]) if results else None


def interleaved(a: argparse.Namespace, job: dict) -> tuple[dict, dict]:
    """Both sides loaded, calls alternating (official, ours) with the same seeds: a change of the
    machine's load hits both sides alike."""
    env = dict(os.environ, PYTHONPATH=str(a.official_repo), OMP_NUM_THREADS=str(a.threads),
               MKL_NUM_THREADS=str(a.threads))
    proc = subprocess.Popen(_official_cmd(a, "official_serve", job), env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def reply(prefix: str) -> dict:
        for line in proc.stdout:
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])
        raise RuntimeError(f"official-venv worker ended (exit {proc.wait()}) before sending {prefix.strip()}")

    rows: list[dict] = []

    def official_call(seed: int) -> None:
        proc.stdin.write(f"{seed}\n")
        proc.stdin.flush()
        rows.append(reply("RESULT "))

    try:
        print("interleaved: loading the official side ...", flush=True)
        meta = reply("READY ")
        print("interleaved: loading our side; then official, ours, official, ... calls", flush=True)
        ours = our_side(job, before_each=official_call)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(timeout=a.official_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {**meta, "warmup": rows[0], "reps": rows[1:]}, ours


def official_unavailable(a: argparse.Namespace) -> str | None:
    """Why the official side cannot run here (None when it can)."""
    if a.skip_official:
        return "--skip-official"
    if not Path(a.official_python).exists():
        return f"oracle venv python {a.official_python} not found (pass --official-python)"
    if not (a.official_repo / "indextts" / "infer_v2.py").exists():
        return f"official repo {a.official_repo} has no indextts/infer_v2.py (pass --official-repo)"
    return None


def checkpoint_dir(a: argparse.Namespace, skip_reason: str | None) -> Path:
    if a.checkpoints is not None:
        if not (a.checkpoints / "config.yaml").exists():
            raise SystemExit(f"--checkpoints {a.checkpoints}: no config.yaml there")
        return a.checkpoints.resolve()
    if a.size == "tiny":
        return TINY_CHECKPOINTS
    dest = (a.workdir or Path("/tmp/realtime_tts_compare") / a.size).resolve()
    marker = dest / BUILD_MARKER
    if marker.exists() and not a.rebuild and json.loads(marker.read_text()).get("size") == a.size:
        return dest
    if skip_reason is not None:
        raise SystemExit(f"building a random {a.size} checkpoint needs the oracle venv ({skip_reason}); "
                         "use --size tiny or --checkpoints DIR")
    if dest.exists():
        shutil.rmtree(dest)
    print(f"building a random {a.size} checkpoint in {dest} (official constructors, oracle venv) ...", flush=True)
    t = time.perf_counter()
    _run_worker(a, "build", {"dest": str(dest), "size": a.size, "repo": str(a.official_repo)}, a.threads)
    print(f"built in {time.perf_counter() - t:.0f} s", flush=True)
    return dest


def write_reference(path: Path, seconds: float) -> None:
    from realtime_tts.engine.indextts2 import synthetic_voice_wav

    path.write_bytes(synthetic_voice_wav(seconds))


def summarize(side: dict | None) -> dict | None:
    if side is None:
        return None
    reps = side["reps"]
    parts = [p for p in GPT_PARTS if all(p in r for r in reps)]  # absent from files of older runs
    side["mean"] = {s: statistics.mean(r[s] for r in reps) for s in (*STAGES, *parts)}
    side["min"] = {s: min(r[s] for r in reps) for s in (*STAGES, *parts)}
    side["audio_s"] = statistics.mean(r["audio_s"] for r in reps)
    side["rtf"] = side["mean"]["total"] / side["audio_s"] if side["audio_s"] else None
    return side


def _ratio(off: dict, ours: dict) -> dict:
    return {s: off[s] / ours[s] if ours.get(s, 0) > 0 and s in off else None for s in (*STAGES, *GPT_PARTS)}


def print_table(res: dict) -> None:
    off, ours = res["official"], res["ours"]
    c = res["config"]
    print(f"\nIndexTTS2, official vs ours: {c['checkpoints']} ({c['size']}), device {c['device']}, "
          f"threads {c['threads']}, {c['tokens']} codes forced, {c['beams']} beams, {c['cfm_steps']} CFM steps, "
          f"{c['reps']} timed reps after 1 warm-up")
    if off is None:
        print(f"official side skipped: {res['official_skipped']}")
    fmt = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    head = (f"{'stage':<11} {'official mean':>13} {'min':>8} {'ours mean':>10} {'min':>8} "
            f"{'ratio mean':>11} {'ratio min':>10}")
    print(head)
    print("-" * len(head))
    ratio, ratio_min = res["ratio"] or {}, res.get("ratio_min") or {}
    rows = [s for s in ("gpt", *GPT_PARTS, *STAGES[1:]) if s in ours["mean"]]
    for s in rows:
        label = f" {s[4:]}" if s in GPT_PARTS else s  # the parts print indented under gpt
        print(f"{label:<11} {fmt(off['mean'].get(s) if off else None):>13} {fmt(off['min'].get(s) if off else None):>8} "
              f"{ours['mean'][s]:10.3f} {ours['min'][s]:8.3f} {fmt(ratio.get(s), '.2f'):>11} "
              f"{fmt(ratio_min.get(s), '.2f'):>10}")
    print("ratio = official seconds / our seconds (> 1: ours is faster); min = fastest rep (least CPU noise)")
    for name, side in (("official", off), ("ours", ours)):
        if side is not None:
            print(f"{name}: codes/call {side['reps'][0]['codes']}, audio {side['audio_s']:.2f} s, "
                  f"RTF {side['rtf']:.2f}, text tokens {side['text_tokens']}, load {side['load_s']:.1f} s, "
                  f"threads {side['threads']}, torch {side['torch']}"
                  + (f", transformers {side['transformers']}" if "transformers" in side else ""))


def run(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    if a.show is not None:
        res = json.loads(a.show.read_text())
        if res.get("official") and not res.get("ratio_min"):  # files written before ratio_min existed
            res["ratio_min"] = _ratio(res["official"]["min"], res["ours"]["min"])
        print_table(res)
        return res
    import tempfile

    import torch

    if a.threads is None:
        a.threads = torch.get_num_threads()
    skip = official_unavailable(a)
    if skip is not None:
        print(f"official side skipped: {skip}", flush=True)
    ckpt = checkpoint_dir(a, skip)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref, a.ref_seconds)
        job = {"checkpoints": str(ckpt), "size": a.size, "text": a.text, "ref": str(ref), "tokens": a.tokens,
               "cfm_steps": a.cfm_steps, "beams": a.beams, "reps": a.reps, "threads": a.threads, "device": a.device,
               "dtype": a.dtype, "our_dtype": a.our_dtype or a.dtype, "seed": a.seed}
        official = None
        if skip is None and a.interleave:
            official, ours = interleaved(a, job)
        elif skip is None:
            t = time.perf_counter()
            print("official side ...", flush=True)
            official = _run_worker(a, "official", job, a.threads)
            print(f"official side done in {time.perf_counter() - t:.0f} s", flush=True)
        if skip is not None or not a.interleave:
            t = time.perf_counter()
            print("our side ...", flush=True)
            ours = our_side(job)
            print(f"our side done in {time.perf_counter() - t:.0f} s", flush=True)
    official, ours = summarize(official), summarize(ours)
    ratio = ratio_min = None
    if official is not None:
        ratio = _ratio(official["mean"], ours["mean"])
        ratio_min = _ratio(official["min"], ours["min"])
        for name, side in (("official", official), ("ours", ours)):
            bad = [r["codes"] for r in [side["warmup"], *side["reps"]] if r["codes"] != a.tokens]
            if bad:
                print(f"WARNING: {name} side produced {bad} codes instead of {a.tokens}: not the same work")
        if official["text_tokens"] != ours["text_tokens"]:
            print(f"WARNING: text tokens differ (official {official['text_tokens']}, ours {ours['text_tokens']})")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in job.items() if k not in ("ref",)}
    config["ref_seconds"] = a.ref_seconds
    res = {"config": config, "official": official, "official_skipped": skip, "ours": ours, "ratio": ratio,
           "ratio_min": ratio_min}
    print_table(res)
    line = json.dumps(res)
    print("JSON " + line)
    if a.out is not None:
        a.out.write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--_build", "--_official", "--_official_serve"):  # oracle-venv workers
        payload = json.loads(sys.argv[2])
        if sys.argv[1] == "--_build":
            build_checkpoint(Path(payload["dest"]), payload["size"], Path(payload["repo"]))
        elif sys.argv[1] == "--_official_serve":
            official_worker(payload, serve=True)
        else:
            print("RESULT " + json.dumps(official_worker(payload)), flush=True)
        return
    run()


if __name__ == "__main__":
    main()
