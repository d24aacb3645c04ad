"""Golden vectors for the IndexTTS-2.5 model side, from the OFFICIAL code at ee40fa7.

Runs in the oracle venv (never in CI; ~2 min on 2 cores):

    PYTHONHASHSEED=0 PYTHONPATH=/work/official/index-tts-ee40fa7 \
        /work/venvs/official/bin/python tools/golden/indextts25.py [--out tests/fixtures/indextts25]

1. Writes the recipe of a tiny official-layout checkpoint (``tiny/``: manifest, digests, static
   files; see tools/golden/tiny25.py) from the official constructors: ``UnifiedVoice(...,
   spk_cond_mode="campplus")``, ``EnhancedCodec``, ``MyModel``, ``CAMPPlus(80, 192)``, BigVGAN,
   transformers' ``Wav2Vec2BertModel``. Then materialises it into a temporary directory and checks
   that the official loaders (non-strict upstream) really loaded every tensor of it.
2. Runs the official modules on it and stores inputs/outputs in ``golden.safetensors`` +
   ``golden.json``: GPT conditioning, prompt rows, prefill/step logits, greedy, beam-sampled and
   sampled codes per language (and a greedy batch of two rows with different left padding); codec
   decode; the S2M path (prompt from w2v features, 2.5 target lengths at three duration factors,
   seeded CFM); BigVGAN; and ``IndexTTS2.infer`` end to end from a speaker clip (two cases).

Inputs that are plain random tensors (features, style, codes) are not stored: golden.json records
the seed and shape, and ``randn(seed, shape)`` below is redrawn identically by the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny25  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = 2500
STOP_BIAS = 2.7  # added to the stop logit's bias, so that some runs stop inside the budget
DIM = 32
CONFORMER = dict(output_size=16, linear_units=32, attention_heads=2, num_blocks=2, input_layer="conv2d2",
                 perceiver_mult=0.1)
SPECIALS = 1673  # tokens the official get_encoding appends after the ranks
TINY_CONFIG = {
    "gpt": dict(model_dim=DIM, max_mel_tokens=1815, max_text_tokens=600, heads=2, use_mel_codes_as_input=True,
                mel_length_compression=1024, layers=2, number_text_tokens=256 + SPECIALS, number_mel_codes=8194,
                start_mel_token=8192, stop_mel_token=8193, start_text_token=0, stop_text_token=1,
                train_solo_embeddings=False, condition_type="conformer_perceiver", condition_module=CONFORMER,
                emo_condition_module=CONFORMER),
    "semantic_codec": dict(codebook_size=8192, hidden_size=1024, codebook_dim=8, vocos_dim=8,
                           vocos_intermediate_dim=16, vocos_num_layers=2),
    "s2mel": {
        "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                            "n_mels": 80, "fmin": 0, "fmax": "None"}},
        "dit_type": "DiT", "reg_loss_type": "l1", "style_encoder": {"dim": 192},
        "length_regulator": {"channels": 32, "is_discrete": False, "in_channels": 1024, "content_codebook_size": 4,
                             "sampling_ratios": [1, 1], "vector_quantize": False, "n_codebooks": 1,
                             "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512},
        "DiT": {"hidden_dim": 32, "num_heads": 2, "depth": 5, "class_dropout_prob": 0.1, "block_size": 8192,
                "in_channels": 80, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
                "content_dim": 32, "content_codebook_size": 4, "content_type": "discrete", "f0_condition": False,
                "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
                "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
                "uvit_skip_connection": True, "add_resblock_in_transformer": False},
        "wavenet": {"hidden_dim": 32, "num_layers": 3, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                    "style_condition": True},
    },
    "gpt_checkpoint": "gpt.pth", "w2v_stat": "wav2vec2bert_stats.pt", "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt", "spk_matrix": "feat1.pt", "emo_num": [3, 17, 2, 8, 4, 5, 10, 24],
    "qwen_emo_path": "qwen0.6bemo4-merge/", "vocoder": {"name": "bigvgan_generator.pt"}, "version": 2.5,
}
W2V = dict(hidden_size=1024, num_hidden_layers=17, num_attention_heads=16, intermediate_size=8,
           output_hidden_size=1024, conv_depthwise_kernel_size=3, left_max_position_embeddings=8,
           right_max_position_embeddings=2, position_embeddings_type="relative_key",
           feature_projection_input_dim=160, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
           feat_proj_dropout=0.0, layerdrop=0.0, conformer_conv_dropout=0.0)
RELEASE_GPT_LAYER = ((256, 1280), (128, 256), (1024, 128))  # net.gpt_layer in the released s2mel.pth
HF_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# GPT cases: (name, text with its language tag, language passed to lang_to_token)
GPT_TEXTS = [
    ("en", "<|en|> hello world! this is a test.", "en"),
    ("zh", "<|zh|> 你好。今天天气很好！", "zh"),
    ("es", '<|es|> ¡HOLA, "AMIGO"! ¿QUÉ TAL?', "es"),
    ("ja", "<|ja|> こんにちは 世界", "ja"),
    ("ar", "<|ar|> مرحبا بالعالم", "ar"),
    ("common", "<|zhen|> 你好 hello", "zhen"),
]
FULL_RUNS = ("en", "zh", "es")  # every decoding mode; the others: greedy + beam_7
MAX_NEW, SHORT = 40, 6
DURATION_FACTORS = (1.0, 0.8, 1.37)
E2E_CASES = [
    {"name": "en", "text": "Hello world! This is a test.", "lang": "EN", "seed": 0, "kwargs": {}},
    {"name": "zh_vector", "text": "你好，今天天气很好。", "lang": "ZH", "seed": 5,
     "kwargs": {"emo_vector": [0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.45, 0.1], "emo_alpha": 0.8,
                "duration_factor": 1.2}},
]
E2E_MAX_MEL_TOKENS = 20


def randn(seed: int, shape) -> torch.Tensor:
    """A plain random input, redrawn by the tests from (seed, shape)."""
    return torch.randn(list(shape), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the recipe

def byte_ranks() -> list[int]:
    """The 256 single bytes in GPT-2's byte order: rank 0 is "!", rank 1 is '"' (as in the real file)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    return bs + [b for b in range(256) if b not in bs]


def init_rule(file: str, key: str, shape: list[int], dtype: str) -> str:
    leaf = key.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    if dtype == "int64":
        return "arange" if leaf == "input_pos" else "zeros"
    if leaf == "weight_g" and file.endswith("bigvgan_generator.pt"):
        # a bounded, well-conditioned vocoder (gains compound over 6 stages): a few % of the samples
        # reach the +-1 clamp, and fp32 rounding stays ~1e-5 (at 0.5-1.0 it reaches 7e-5)
        return "uniform 0.5 1.0" if "conv_post" in key else "uniform 0.4 0.8"
    if leaf in ("running_var", "weight_g", "var"):
        return "uniform 0.5 1.5"
    if leaf in ("running_mean", "mean", "alpha", "beta", "bias") or (len(shape) == 1 and leaf == "masked_spec_embed"):
        rule = "normal 0 0.1"
        if file == "gpt.pth" and key == "mel_head.bias":
            rule += f" | at {TINY_CONFIG['gpt']['stop_mel_token']} {STOP_BIAS}"
        return rule
    if len(shape) <= 1:
        return "normal 1 0.1"  # norm scales (LayerNorm, BatchNorm, RMSNorm gamma, ConvNeXt layer scale)
    if leaf == "pe":
        return "normal 0 0.5"
    fan_in = shape[0] if key.endswith(HF_CONV1D) else math.prod(shape[1:])
    return f"normal 0 {1 / math.sqrt(fan_in):.6g}"


def official_layouts(cfg) -> dict[str, dict[str, torch.Tensor]]:
    """file -> {nested key: tensor} of the official modules built from the tiny config."""
    from indextts.codec.models import EnhancedCodec
    from indextts.gpt.model_v2 import UnifiedVoice
    from indextts.s2mel.modules.bigvgan import bigvgan
    from indextts.s2mel.modules.bigvgan.env import AttrDict
    from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus
    from indextts.s2mel.modules.commons import MyModel
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(0)
    files: dict[str, dict[str, torch.Tensor]] = {}
    files["gpt.pth"] = UnifiedVoice(**cfg.gpt, spk_cond_mode="campplus").state_dict()
    codec = EnhancedCodec(**cfg.semantic_codec, cfg=cfg.semantic_codec)
    files["codec.pth"] = {f"model/{k}": v for k, v in codec.state_dict().items()}
    s2mel = MyModel(cfg.s2mel)
    files["s2mel.pth"] = {f"net/{m}/{k}": v for m in ("cfm", "length_regulator")
                          for k, v in s2mel.models[m].state_dict().items()}
    for i, shape in enumerate(RELEASE_GPT_LAYER):
        files["s2mel.pth"][f"net/gpt_layer/{i}.weight"] = torch.zeros(shape)
        files["s2mel.pth"][f"net/gpt_layer/{i}.bias"] = torch.zeros(shape[0])
    files["hf_cache/campplus_cn_common.bin"] = CAMPPlus(feat_dim=80, embedding_size=192).state_dict()
    voc = bigvgan.BigVGAN(AttrDict(bigvgan_config()), use_cuda_kernel=False)
    files["hf_cache/bigvgan/bigvgan_generator.pt"] = {f"generator/{k}": v for k, v in voc.state_dict().items()}
    w2v = Wav2Vec2BertModel(Wav2Vec2BertConfig(**W2V))
    files["hf_cache/w2v-bert-2.0/model.safetensors"] = {k: v.half() for k, v in w2v.state_dict().items()}
    n = sum(cfg.emo_num)
    files["feat1.pt"] = {"": torch.zeros(n, 192)}
    files["feat2.pt"] = {"": torch.zeros(n, cfg.gpt.model_dim)}
    files["wav2vec2bert_stats.pt"] = {"mean": torch.zeros(1024), "var": torch.zeros(1024)}
    return files


def bigvgan_config() -> dict:
    import indextts.s2mel.modules.bigvgan.bigvgan as bv

    h = json.loads((Path(bv.__file__).parent / "config.json").read_text())
    h["upsample_initial_channel"] = 64
    return h


def write_spec(spec: Path) -> None:
    """tiny/: static files, manifest.json (official layouts + init rules), digests.json."""
    import yaml
    from omegaconf import OmegaConf
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig

    if spec.exists():
        shutil.rmtree(spec)
    static = spec / "static"
    (static / "hf_cache" / "bigvgan").mkdir(parents=True)
    (static / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False), encoding="utf-8")
    import base64

    lines = [f"{base64.b64encode(bytes([b])).decode()} {rank}" for rank, b in enumerate(byte_ranks())]
    (static / "multilingual_zh_ja_yue_char_del.tiktoken").write_text("\n".join(lines) + "\n")
    w2v_dir = static / "hf_cache" / "w2v-bert-2.0"
    Wav2Vec2BertConfig(**W2V).save_pretrained(w2v_dir)
    SeamlessM4TFeatureExtractor().save_pretrained(w2v_dir)
    (static / "hf_cache" / "bigvgan" / "config.json").write_text(json.dumps(bigvgan_config(), indent=1))
    cfg = OmegaConf.load(static / "config.yaml")
    manifest = {"seed": SEED, "files": {}}
    for file, tensors in official_layouts(cfg).items():
        entries = []
        for key, t in tensors.items():
            dtype = str(t.dtype).replace("torch.", "")
            entries.append([key, list(t.shape), dtype, init_rule(file, key, list(t.shape), dtype)])
        manifest["files"][file] = entries
    files = ",\n".join(f"{json.dumps(f)}: [\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in entries) + "\n]"
                       for f, entries in manifest["files"].items())
    (spec / "manifest.json").write_text(f'{{"seed": {SEED}, "files": {{\n{files}\n}}}}\n', encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        digests = tiny25.materialise(tmp, spec, check=False)
    (spec / "digests.json").write_text(json.dumps(digests, indent=1), encoding="utf-8")


# ----------------------------------------------------------------------------- the official model

def patch_wetext() -> None:
    """The official normaliser takes its wetext branch (the one our runtime is built on), as
    tools/golden/gpt.py does."""
    from indextts.utils import front

    load = front.TextNormalizer.load

    def wetext_load(self):
        real = platform.system
        platform.system = lambda: "Darwin"
        try:
            load(self)
        finally:
            platform.system = real

    front.TextNormalizer.load = wetext_load


def load_official(ckpt: Path):
    import indextts.infer_v2_5 as iv

    patch_wetext()
    return iv.IndexTTS2(cfg_path=str(ckpt / "config.yaml"), model_dir=str(ckpt), device="cpu", use_qwen_emo=False)


def check_loaded(tts, spec: Path) -> None:
    """The official loaders skip what does not fit (silently, or with a print): prove that each
    module holds exactly the materialised tensors."""
    manifest = json.loads((spec / "manifest.json").read_text())
    seed = manifest["seed"]

    def expect(file: str, prefix: str = "") -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: tiny25.draw(seed, file, k, shape, dt, rule)
                for k, shape, dt, rule in manifest["files"][file] if k.startswith(prefix)}

    checks = [
        ("gpt.pth", "", tts.gpt), ("codec.pth", "model/", tts.semantic_codec),
        ("s2mel.pth", "net/cfm/", tts.s2mel.models["cfm"]),
        ("s2mel.pth", "net/length_regulator/", tts.s2mel.models["length_regulator"]),
        ("hf_cache/campplus_cn_common.bin", "", tts.campplus_model),
        ("hf_cache/w2v-bert-2.0/model.safetensors", "", tts.semantic_model),
    ]
    for file, prefix, module in checks:
        have = module.state_dict()
        for key, want in expect(file, prefix).items():
            assert key in have, f"{file}: official module has no {key}"
            assert torch.equal(have[key].to(want.dtype if want.dtype == torch.int64 else torch.float32),
                               want.float() if want.is_floating_point() else want), f"{file}: {key} not loaded"
    print("official modules hold every materialised tensor")


# ----------------------------------------------------------------------------- goldens

def gpt_goldens(tts, t: dict, meta: dict) -> None:
    from indextts.utils.tokenizer import lang_to_token

    gpt = tts.gpt
    inputs = {"style": (101, (1, 192)), "spk_feats": (102, (1, 41, 1024)), "emo_feats": (103, (1, 29, 1024))}
    style, spk, emo = (randn(s, shape) for s, shape in inputs.values())
    meta["gpt"] = {"inputs": {k: [s, list(shape)] for k, (s, shape) in inputs.items()}, "alpha": 0.6,
                   "max_new": MAX_NEW, "short": SHORT, "cases": {}}
    full = lambda x: torch.tensor([x.shape[-1]])  # noqa: E731  infer passes the feature width
    captured: dict = {}
    prepare = gpt.prepare_gpt_inputs

    def spy(conds, text_inputs, langs=None):
        out = prepare(conds, text_inputs, langs)
        captured.update(cond=conds.clone(), emb=out[1].clone(), mask=out[2].clone())
        return out

    gpt.prepare_gpt_inputs = spy
    with torch.no_grad():
        t["gpt.emo_vec_spk"] = gpt.get_emovec(spk, full(spk))
        t["gpt.emo_vec_emo"] = gpt.get_emovec(emo, full(emo))
        emovec = gpt.merge_emovec(spk, emo, full(spk), full(emo), alpha=0.6)
        t["gpt.emovec"] = emovec
        common = dict(emo_speech_condition=emo, cond_lengths=full(spk), emo_cond_lengths=full(emo), emo_vec=emovec,
                      campplus_embedding=style)
        beam = dict(do_sample=True, top_p=0.8, top_k=30, temperature=0.8, num_beams=3, repetition_penalty=10.0,
                    length_penalty=0.0)
        sample = dict(do_sample=True, top_p=0.8, top_k=30, temperature=0.8, num_beams=1, repetition_penalty=10.0)
        for name, text, lang in GPT_TEXTS:
            ids = tts.tokenizer.encode(text, allowed_special="all") + [1]
            text_t = torch.tensor([ids], dtype=torch.int32)
            langs = torch.LongTensor([lang_to_token(lang)])
            run = {"ids": ids, "lang": int(langs[0])}

            def gen(seed=None, **kw):
                if seed is not None:
                    torch.manual_seed(seed)
                return gpt.inference_speech(spk, text_t, langs, **common, **kw)[0]

            out = gen(do_sample=False, num_beams=1, repetition_penalty=10.0, max_generate_length=MAX_NEW,
                      return_dict_in_generate=True, output_logits=True)
            run["greedy"] = out.sequences[0].tolist()
            t[f"gpt.{name}.prefill_logits"] = out.logits[0][0]
            if name in FULL_RUNS:
                t[f"gpt.{name}.greedy_step_logits"] = torch.stack([x[0] for x in out.logits[:6]])
            t[f"gpt.{name}.prompt_emb"] = captured["emb"][0]
            t[f"gpt.{name}.prompt_mask"] = captured["mask"][0].to(torch.int64)
            t["gpt.cond"] = captured["cond"]
            seeds = (7, 8, 9) if name in FULL_RUNS else (7,)
            for seed in seeds:
                run[f"beam_{seed}"] = gen(seed, **beam, max_generate_length=MAX_NEW)[0].tolist()
                if name in FULL_RUNS:
                    run[f"sample_{seed}"] = gen(seed, **sample, max_generate_length=MAX_NEW)[0].tolist()
            if name in FULL_RUNS:
                run["beam_short_7"] = gen(7, **beam, max_generate_length=SHORT)[0].tolist()
            meta["gpt"]["cases"][name] = run
            print(f"gpt {name}: {len(ids)} ids, pad {int((captured['mask'][0] == 0).sum())}, greedy "
                  f"{len(run['greedy'])} codes, beam_7 {len(run['beam_7'])}")
        # a greedy batch of two rows: different lengths and left padding in one official call
        a, b = meta["gpt"]["cases"]["en"], meta["gpt"]["cases"]["es"]
        width = max(len(a["ids"]), len(b["ids"]))
        batch = torch.tensor([r["ids"] + [1] * (width - len(r["ids"])) for r in (a, b)], dtype=torch.int32)
        langs = torch.LongTensor([a["lang"], b["lang"]])
        out = gpt.inference_speech(spk, batch, langs, **common, do_sample=False, num_beams=1, repetition_penalty=10.0,
                                   max_generate_length=MAX_NEW, return_dict_in_generate=True, output_logits=True)[0]
        meta["gpt"]["batch"] = {"cases": ["en", "es"], "greedy": out.sequences.tolist()}
        t["gpt.batch.prefill_logits"] = out.logits[0]
    gpt.prepare_gpt_inputs = prepare


def codec_goldens(tts, t: dict, meta: dict) -> None:
    codes = torch.randint(0, 8192, (2, 12), generator=torch.Generator().manual_seed(104))
    meta["codec"] = {"codes": codes.tolist()}
    with torch.no_grad():
        t["codec.s_infer"] = tts.semantic_codec.decode(codes)


def s2mel_goldens(tts, t: dict, meta: dict) -> None:
    inputs = {"feats": (105, (1, 50, 1024)), "ref_mel": (106, (1, 80, 86)), "style": (107, (1, 192))}
    feats, ref_mel, style = (randn(s, shape) for s, shape in inputs.values())
    ref_mel = ref_mel - 4.0
    reg, cfm = tts.s2mel.models["length_regulator"], tts.s2mel.models["cfm"]
    s_infer = t["codec.s_infer"][:1]
    meta["s2mel"] = {"inputs": {k: [s, list(shape)] for k, (s, shape) in inputs.items()}, "ref_mel_shift": -4.0,
                     "cases": []}
    with torch.no_grad():
        prompt = reg(feats, ylens=torch.LongTensor([ref_mel.size(-1)]), n_quantizers=3, f0=None)[0]
        t["s2mel.prompt_condition"] = prompt
        for i, df in enumerate(DURATION_FACTORS):
            target = int(s_infer.shape[1] * 1.72 * df)
            cond = reg(s_infer, ylens=torch.LongTensor([target]), n_quantizers=3, f0=None)[0]
            cat = torch.cat([prompt, cond], dim=1)
            seed = 200 + i
            torch.manual_seed(seed)
            vc = cfm.inference(cat, torch.LongTensor([cat.size(1)]), ref_mel, style, None, 25, inference_cfg_rate=0.7)
            t[f"s2mel.{i}.cond"] = cond
            t[f"s2mel.{i}.mel"] = vc[:, :, ref_mel.size(-1):]
            meta["s2mel"]["cases"].append({"duration_factor": df, "target": target, "seed": seed})
        t["vocoder.wav"] = tts.bigvgan(t["s2mel.0.mel"].float())


def write_prompt(path: Path) -> None:
    import numpy as np
    import soundfile as sf

    sr, seconds = 24000, 1.0
    rng = np.random.default_rng(3)
    tt = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(150 * (1 + 0.05 * np.sin(2 * np.pi * 3.3 * tt))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.25 * np.sin(np.pi * tt / seconds) ** 0.5
    sf.write(path, (x + 0.01 * rng.standard_normal(tt.size)).astype(np.float32), sr, subtype="PCM_16")


def e2e_goldens(tts, t: dict, meta: dict, prompt: Path) -> None:
    rec: dict = {}

    def spy(obj, name, fn):
        orig = getattr(obj, name)
        setattr(obj, name, lambda *a, **kw: fn(orig, *a, **kw))

    def on_gpt(orig, *a, **kw):
        rec.update(ids=a[1][0].tolist(), lang=int(a[2][0]), emovec=kw["emo_vec"].clone(), style=kw["campplus_embedding"])
        return orig(*a, **kw)

    def on_decode(orig, codes):
        rec["codes"] = codes.clone()
        rec["s_infer"] = orig(codes)
        return rec["s_infer"]

    def on_cfm(orig, mu, *a, **kw):
        rec["cat"] = mu.clone()
        rec["cfm_out"] = orig(mu, *a, **kw)
        return rec["cfm_out"]

    def on_emb(orig, *a, **kw):
        rec["w2v_calls"] += 1
        return orig(*a, **kw)

    spy(tts.gpt, "inference_speech", on_gpt)
    spy(tts.semantic_codec, "decode", on_decode)
    spy(tts.s2mel.models["cfm"], "inference", on_cfm)
    spy(tts, "get_emb", on_emb)
    meta["e2e"] = {"max_mel_tokens": E2E_MAX_MEL_TOKENS, "w2v_layers": W2V["num_hidden_layers"], "cases": []}
    for case in E2E_CASES:
        rec.clear()
        rec["w2v_calls"] = 0
        torch.manual_seed(case["seed"])
        random.seed(case["seed"])
        chunks = list(tts.infer(str(prompt), case["text"], None, case["lang"], stream_return=True,
                                max_mel_tokens=E2E_MAX_MEL_TOKENS, **case["kwargs"]))
        assert len(chunks) == 2, f"expected one segment and its silence, got {len(chunks)} chunks"
        name = case["name"]
        for key in ("emovec", "codes", "cat", "cfm_out"):
            t[f"e2e.{name}.{key}"] = rec[key].float() if key != "codes" else rec[key].long()
        t[f"e2e.{name}.wav"] = (chunks[0] / 32767.0).float()
        meta["e2e"]["cases"].append({**case, "ids": rec["ids"], "lang_index": rec["lang"],
                                     "w2v_calls": rec["w2v_calls"]})
        print(f"e2e {name}: ids {len(rec['ids'])}, codes {tuple(rec['codes'].shape)}, "
              f"wav {tuple(chunks[0].shape)}, w2v calls {rec['w2v_calls']}")
    t["e2e.spk_cond_emb"] = tts.cache_spk_cond
    t["e2e.style"] = tts.cache_s2mel_style
    t["e2e.prompt_condition"] = tts.cache_s2mel_prompt
    t["e2e.ref_mel"] = tts.cache_mel


def manifest_full(out: Path) -> None:
    src = Path("/work/shared/reference/indextts2_5_state_dict_manifest.txt")
    if src.is_file():
        head = f"# copy of the reference manifest (full-size official 2.5 key names and shapes, {src.name})\n"
        (out / "manifest_full.txt").write_text(head + src.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "indextts25")
    args = ap.parse_args()
    if os.environ.get("PYTHONHASHSEED") != "0":
        sys.exit("run with PYTHONHASHSEED=0 (the official normaliser iterates over sets)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    write_spec(out / "tiny")
    write_prompt(out / "prompt_24k.wav")
    manifest_full(out)
    from safetensors.torch import save_file

    t: dict[str, torch.Tensor] = {}
    meta: dict = {"official": "index-tts ee40fa7d6c6b8a2c7f06105f9f1e65775b74868c"}
    with tempfile.TemporaryDirectory() as tmp:
        tiny25.materialise(tmp, out / "tiny")
        tts = load_official(Path(tmp))
        check_loaded(tts, out / "tiny")
        gpt_goldens(tts, t, meta)
        codec_goldens(tts, t, meta)
        s2mel_goldens(tts, t, meta)
        e2e_goldens(tts, t, meta, out / "prompt_24k.wav")
    save_file({k: v.detach().contiguous() for k, v in t.items()}, str(out / "golden.safetensors"))
    (out / "golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
