"""Golden vectors for the IndexTTS2 GPT (UnifiedVoice v2) and the text front end.

Runs in the ORACLE venv against the official code (never in CI):

    PYTHONHASHSEED=0 PYTHONPATH=/work/official/index-tts-1eafa93 \
        /work/venvs/official/bin/python tools/golden/gpt.py [--out tests/fixtures/gpt]

Writes into the output folder:
  tiny_bpe.model        SentencePiece BPE (400 pieces) trained here on the normalised cases
  glossary.yaml         a small glossary in the official format
  text_frontend.json    official TextNormalizer / TextTokenizer / segmentation results
  tiny_gpt.safetensors  official UnifiedVoice state dict at a tiny config (fp16-exact values,
                        stored as fp16; official key layout)
  gpt_golden.safetensors + gpt_golden.json   inputs and outputs of the official model, and the
                        official logits processing (top-k/top-p off) on the first decode steps
  full_shapes.json      key -> shape of the FULL official UnifiedVoice (checkpoints/config.yaml,
                        built on the meta device) and the config's gpt section

``--only full-shapes`` rewrites just full_shapes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

SEED = 1234

TINY_GPT = dict(
    layers=2, model_dim=64, heads=4, max_text_tokens=60, max_mel_tokens=120,
    number_text_tokens=400, number_mel_codes=130, start_mel_token=128, stop_mel_token=129,
    start_text_token=0, stop_text_token=1, use_mel_codes_as_input=True,
    mel_length_compression=1024, train_solo_embeddings=False,
    condition_type="conformer_perceiver",
    condition_module=dict(output_size=16, linear_units=32, attention_heads=2, num_blocks=2,
                          input_layer="conv2d2", perceiver_mult=2),
    emo_condition_module=dict(output_size=16, linear_units=24, attention_heads=1, num_blocks=2,
                              input_layer="conv2d2", perceiver_mult=0.1),
)

# Text front-end cases: zh / en / mixed, numbers, dates, units, symbols, pinyin, names, terms.
NORMALIZE_CASES = [
    "IndexTTS 正式发布1.0版本了，效果666",
    "我爱你！",
    "I love you!",
    "“我爱你”的英语是“I love you”",
    "2.5平方电线",
    "共465篇，约315万字",
    "现在是北京时间2025年01月11日 20:00",
    "速度是10km/h",
    "电话：135-4567-8900",
    "这是1024元的手机，你要吗？",
    "他这条视频点赞3000+，评论1000+",
    "晕XUAN4是一种GAN3觉",
    "受不liao3你了",
    "衣裳不读衣chang2，而是读衣shang5",
    "这个字念ju4还是que4？",
    "xun2找答案",
    "用beta1测试",
    "have you ever been to beta2?",
    "See you at 8:00 AM",
    "This sales for 2.5% off, only $12.5.",
    "where's the money? it's here.",
    "今天是个好日子 it's a good day",
    "such as XTTS, CosyVoice2, Fish-Speech, and F5-TTS",
    "GPT-5-Nano is the smallest variant in the GPT-5 family.",
    "GPT-5-Nano 是 GPT-5 模型家族中最小的变体",
    "2025/09/08 IndexTTS-2 全球发布",
    "约瑟夫·高登-莱维特是演员",
    "导演：克里斯托弗·诺兰；主演：汤姆·哈迪",
    "这酒...里...有毒...",
    "只有,,,才是最好的",
    "《盗梦空间》（2010）【科幻】",
    "第一行\n第二行～结束",
    "user@example.com",
    "12345",
    "",
    "Samsung 9100 PRO PCIe 5.0 SSD M.2, $139.99",
    "我的C++代码用CMake构建",
]
GLOSSARY = {
    "M.2": {"en": "M dot two", "zh": "M 二"},
    "PCIe 5.0": {"en": "PCIE five", "zh": "PCIE 五点零"},
    "PCIe": "PCIE",
    "C++": {"en": "C plus plus", "zh": "C 加加"},
    "CMake": "C Make",
    "SSD": {"en": "S S D"},
}
TOKENIZE_CASES = NORMALIZE_CASES + [
    "a",
    " 好 ",
    "你好。今天天气很好！我们去公园吧？好的，走吧。",
    "Hello there. How are you? I am fine, thanks! And you.",
    "他说：“走吧。”然后离开了。'好' 她回答。",
]
LONG_TEXT = ("清晨拉开窗帘，阳光洒在窗台上。设计师将自然美学融入每个细节，手工陶瓷花瓶可作收纳！"
             "限量款附赠灵感手册，让每个平凡日子都有仪式感。The quick brown fox jumps over the lazy dog, "
             "again and again. 宴会厅灯光暗下的刹那，耳坠开始发光——工艺让宝石如银河流动。"
             "Is it real? Yes, it is. 七夕限定礼盒含定制铭牌...让爱意永恒闪耀。")
SEGMENT_SETTINGS = [(120, 0), (24, 0), (16, 0), (16, 10), (12, 0), (8, 0), (30, 20)]
GPT_TEXTS = {
    "zh": "你好。今天天气很好！",
    "en": "Hello there, how are you?",
    "mixed": "今天是个好日子 it's a good day",
}


def load_normalizer(enable_glossary: bool):
    from indextts.utils.front import TextNormalizer

    n = TextNormalizer(enable_glossary=enable_glossary)
    # On Linux the official code picks WeTextProcessing; we force its wetext branch (the one
    # used on macOS/Windows) because our runtime is built on wetext.
    real = platform.system
    platform.system = lambda: "Darwin"
    try:
        n.load()
    finally:
        platform.system = real
    return n


def train_bpe(out: Path, normalizer) -> Path:
    import sentencepiece as spm
    from indextts.utils.common import tokenize_by_CJK_char

    lines = [tokenize_by_CJK_char(normalizer.normalize(t)) for t in TOKENIZE_CASES + [LONG_TEXT]]
    lines += list(GPT_TEXTS.values())
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(x for x in lines if x) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "tiny_bpe"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=400, model_type="bpe",
            character_coverage=1.0, num_threads=1, hard_vocab_limit=False,
            bos_id=0, eos_id=1, unk_id=2, pad_id=-1, minloglevel=2,
        )
        dst = out / "tiny_bpe.model"
        dst.write_bytes(prefix.with_suffix(".model").read_bytes())
    return dst


def text_golden(out: Path) -> dict:
    import yaml
    from indextts.utils.front import TextTokenizer

    plain = load_normalizer(enable_glossary=True)  # glossary enabled but empty (official default)
    bpe = train_bpe(out, plain)
    (out / "glossary.yaml").write_text(yaml.safe_dump(GLOSSARY, allow_unicode=True), encoding="utf-8")
    gloss = load_normalizer(enable_glossary=True)
    assert gloss.load_glossary_from_yaml(str(out / "glossary.yaml"))
    tok = TextTokenizer(str(bpe), plain)
    res = {
        "backend": "wetext (official wetext branch forced by patching platform.system to 'Darwin')",
        "normalize": [{"text": t, "zh": plain.use_chinese(t), "out": plain.normalize(t),
                       "glossary_out": gloss.normalize(t)} for t in NORMALIZE_CASES],
        "tokenize": [],
        "segments": [],
    }
    for t in TOKENIZE_CASES + [LONG_TEXT]:
        pieces = tok.tokenize(t)
        res["tokenize"].append({"text": t, "pieces": pieces, "ids": tok.convert_tokens_to_ids(pieces)})
    for t in [LONG_TEXT] + TOKENIZE_CASES[-3:]:
        pieces = tok.tokenize(t)
        for max_tokens, quick in SEGMENT_SETTINGS:
            segs = tok.split_segments(pieces, max_tokens, quick_streaming_tokens=quick)
            res["segments"].append({"pieces": pieces, "max_tokens": max_tokens, "quick": quick,
                                    "segments": segs})
    # synthetic token streams that hit the quote duplication, "-" splitting and hard cuts
    synthetic = [
        ["▁A", "B", ".", "'", "▁C", "D", "E", "!", "▁'", "F", "G"],
        ["▁A", "-", "B", "C", "D", "-", "E", "F", "G", "H", "I", "J", "K", "."],
        [f"T{i}" for i in range(30)] + ["."] + [f"U{i}" for i in range(5)],
        ["▁X", ",", "Y", "Z", "▁,", "W", "V", ".", "▁Q", "R", "S", "?", "▁...", "P"],
        ["▁A", "!", "B", "C", "▁!", "D", "E", "F", "▁?", "G"],
    ]
    for pieces in synthetic:
        for max_tokens, quick in [(8, 0), (6, 0), (12, 4), (120, 0)]:
            segs = TextTokenizer.split_segments_by_token(
                pieces, TextTokenizer.punctuation_marks_tokens, max_tokens, quick_streaming_tokens=quick)
            res["segments"].append({"pieces": pieces, "max_tokens": max_tokens, "quick": quick,
                                    "segments": segs})
    res["gpt_text_ids"] = {k: tok.convert_tokens_to_ids(tok.tokenize(v)) for k, v in GPT_TEXTS.items()}
    return res


def gpt_golden(out: Path, text_ids: dict) -> None:
    from safetensors.torch import save_file
    from indextts.gpt.model_v2 import UnifiedVoice

    torch.manual_seed(SEED)
    model = UnifiedVoice(**TINY_GPT)
    with torch.no_grad():
        for p in model.parameters():
            # the official init leaves some tensors constant (speed_emb is all zeros, LayerNorms
            # are 1/0); give every parameter random values so that each one is exercised
            p.add_(torch.randn_like(p) * 0.05)
        # make the stop code reachable within a few dozen steps
        model.mel_head.bias[TINY_GPT["stop_mel_token"]] -= 0.5
        for t in model.state_dict().values():
            t.copy_(t.half().float())  # fp16-exact so the fixture can be stored in fp16
    model.eval()
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "tiny_gpt.safetensors"))
    model.post_init_gpt2_config(use_deepspeed=False, kv_cache=True, half=False)

    g = torch.Generator().manual_seed(SEED + 1)
    spk = torch.randn(1, 41, 1024, generator=g)
    emo = torch.randn(1, 29, 1024, generator=g)
    spk_masked = torch.randn(1, 37, 1024, generator=g)
    t = {"spk_feats": spk, "emo_feats": emo, "spk_feats_masked": spk_masked}
    meta: dict = {"config": TINY_GPT, "seed": SEED, "alpha": 0.6, "masked_length": 30,
                  "text_ids": text_ids, "runs": {}}
    full = lambda x: torch.tensor([x.shape[-1]])  # noqa: E731  infer_v2 passes the feature width
    with torch.no_grad():
        t["spk_latents"] = model.get_conditioning(spk.transpose(1, 2), full(spk))
        t["spk_latents_masked"] = model.get_conditioning(spk_masked.transpose(1, 2), torch.tensor([30]))
        t["emo_vec_emo"] = model.get_emovec(emo, full(emo))
        t["emo_vec_spk"] = model.get_emovec(spk, full(spk))
        emovec = model.merge_emovec(spk, emo, full(spk), full(emo), alpha=meta["alpha"])
        t["emovec"] = emovec
        common = dict(cond_lengths=full(spk), emo_cond_lengths=full(emo), emo_vec=emovec)
        beam = dict(do_sample=True, top_p=0.8, top_k=30, temperature=0.8, num_beams=3,
                    repetition_penalty=10.0, length_penalty=0.0)
        sample = dict(do_sample=True, top_p=0.8, top_k=30, temperature=0.8, num_beams=1,
                      repetition_penalty=10.0)
        max_new, short = 40, 6
        meta["max_new"], meta["short"] = max_new, short
        for name, ids in text_ids.items():
            text = torch.tensor([ids], dtype=torch.int32)
            run = {}
            outg, _ = model.inference_speech(spk, text, emo, **common, do_sample=False, num_beams=1,
                                          repetition_penalty=10.0, max_generate_length=max_new,
                                          return_dict_in_generate=True, output_logits=True)
            run["greedy"] = outg.sequences[0].tolist()
            t[f"{name}.prefill_logits"] = outg.logits[0][0]
            t[f"{name}.greedy_step_logits"] = torch.stack([x[0] for x in outg.logits[:6]])
            for seed in (7, 8, 9):
                torch.manual_seed(seed)
                codes, _ = model.inference_speech(spk, text, emo, **common, **beam, max_generate_length=max_new)
                run[f"beam_{seed}"] = codes[0].tolist()
                torch.manual_seed(seed)
                codes, _ = model.inference_speech(spk, text, emo, **common, **sample, max_generate_length=max_new)
                run[f"sample_{seed}"] = codes[0].tolist()
            # a short budget: beams are cut by the length limit, not by stop tokens
            torch.manual_seed(7)
            codes, _ = model.inference_speech(spk, text, emo, **common, **beam, max_generate_length=short)
            run["beam_short_7"] = codes[0].tolist()
            # second pass on the beam result (cut at the first stop, like infer_v2)
            codes = run["beam_7"]
            stop = TINY_GPT["stop_mel_token"]
            cut = codes[: codes.index(stop)] if stop in codes else codes
            run["latent_codes"] = cut
            c = torch.tensor([cut], dtype=torch.long)
            t[f"{name}.latents"] = model(
                t["spk_latents"], text, torch.tensor([text.shape[-1]]), c, torch.tensor([c.shape[-1]]),
                emo, cond_mel_lengths=full(spk), emo_cond_mel_lengths=full(emo), emo_vec=emovec,
                use_speed=torch.zeros(1).long())
            meta["runs"][name] = run
        meta["processed"] = processed_scores(model, t, spk, emo, text_ids["zh"], common)
    save_file({k: v.contiguous() for k, v in t.items()}, str(out / "gpt_golden.safetensors"))
    (out / "gpt_golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


PROCESSED_STEPS = 6


def processed_scores(model, t: dict, spk, emo, ids: list, common: dict) -> dict:
    """The official logits processing with top-k and top-p off (``top_k=0, top_p=1``), so that only
    the repetition penalty and the temperature act and the penalty's effect is seen directly (with
    top-k 30 the penalised codes mostly fall out of the candidates whatever the penalty). The
    processor list that the vendored ``generate`` builds is wrapped; for the first steps of a beam
    sample run and a plain sample run, its input ids, input scores and output scores are stored."""
    from indextts.gpt import transformers_generation_utils as tgu

    build = tgu.GenerationMixin._get_logits_processor
    steps: list = []
    names: list = []

    def recording(self, *a, **kw):
        processors = build(self, *a, **kw)
        names[:] = [type(p).__name__ for p in processors]

        def call(input_ids, scores, **kw2):
            out = processors(input_ids, scores, **kw2)
            if len(steps) < PROCESSED_STEPS:
                steps.append((input_ids.clone(), scores.clone(), out.clone()))
            return out

        return call

    runs = {"beam": dict(num_beams=3, length_penalty=0.0), "sample": dict(num_beams=1)}
    meta = {}
    tgu.GenerationMixin._get_logits_processor = recording
    try:
        for mode, kw in runs.items():
            steps.clear()
            torch.manual_seed(7)
            model.inference_speech(spk, torch.tensor([ids], dtype=torch.int32), emo, **common, do_sample=True,
                                   top_k=0, top_p=1.0, temperature=0.8, repetition_penalty=10.0,
                                   max_generate_length=PROCESSED_STEPS + 2, **kw)
            for i, (input_ids, scores, out) in enumerate(steps):
                t[f"processed.{mode}.{i}.input_ids"] = input_ids
                t[f"processed.{mode}.{i}.scores"] = scores
                t[f"processed.{mode}.{i}.out"] = out
            meta[mode] = {"steps": len(steps), "processors": list(names), "top_k": 0, "top_p": 1.0,
                          "temperature": 0.8, "repetition_penalty": 10.0, **kw}
    finally:
        tgu.GenerationMixin._get_logits_processor = build
    return meta


def full_shapes(out: Path) -> None:
    """The full-size state-dict layout, so CI can check strict-load compatibility without weights."""
    import yaml
    from indextts.gpt.model_v2 import UnifiedVoice

    repo = Path(sys.modules["indextts"].__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "checkpoints" / "config.yaml").read_text(encoding="utf-8"))["gpt"]
    with torch.device("meta"):
        model = UnifiedVoice(**cfg)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    (out / "full_shapes.json").write_text(json.dumps({"config": cfg, "shapes": shapes}, indent=0), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/gpt")
    ap.add_argument("--only", choices=["all", "full-shapes"], default="all")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full_shapes(out)
    if args.only == "full-shapes":
        return
    if os.environ.get("PYTHONHASHSEED") != "0":
        sys.exit("run with PYTHONHASHSEED=0 (the official normaliser iterates over sets)")
    res = text_golden(out)
    (out / "text_frontend.json").write_text(json.dumps(res, indent=1, ensure_ascii=False), encoding="utf-8")
    gpt_golden(out, res["gpt_text_ids"])
    print("wrote", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
