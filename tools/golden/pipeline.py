"""End-to-end golden for the IndexTTS2 engine: a tiny official-layout checkpoint directory and the
waveforms the OFFICIAL ``IndexTTS2.infer`` produces from it.

Runs in the oracle venv (never in CI):

    PYTHONPATH=/work/official/index-tts-1eafa93 /work/venvs/official/bin/python tools/golden/pipeline.py

Writes tests/fixtures/pipeline/:
  checkpoints/            config.yaml gpt.pth s2mel.pth bpe.model wav2vec2bert_stats.pt feat1.pt feat2.pt
                          hf_cache/models--*/{refs/main, snapshots/<rev>/...}  (HF cache layout: w2v-BERT,
                          MaskGCT semantic codec, CAMPPlus, BigVGAN)
  speaker_24k.wav         1.2 s synthetic voiced clip (speaker prompt, 24 kHz so it is resampled)
  emotion_16k.wav         0.9 s synthetic clip (emotion reference)
  golden.safetensors      per case: waveform (float, [-1, 1]), mel, codes; plus the official
                          speaker conditioning (w2v features, style, prompt condition, ref mel)
  golden.json             the cases (text, seed, emotion arguments) and code lengths

Tiny sizes. The official code hard-codes a few widths that a few-MB model cannot keep; the script
patches exactly those constructors (same parameter names, smaller shapes) and nothing else:
  - the two GPT conformers take W-wide features instead of 1024 (W = w2v-BERT width below);
  - S2M ``gpt_layer`` is Linear(64, 16) -> Linear(16, 8) -> Linear(8, W) instead of 1280->256->128->1024;
  - CAMPPlus is built with embedding 8, growth 4, bn_size 2, init_channels 8 instead of the defaults.
Everything else comes from config.yaml / config.json exactly as the official loaders read them.
``modelscope`` (Qwen emotion model only) is stubbed and QwenEmotion is not loaded: the cases use
vector / reference / speaker emotion, not emotion text. The official text normaliser is forced onto
its wetext branch (as tools/golden/gpt.py does), because the runtime uses wetext.

Determinism: ``torch.manual_seed(seed)`` before each ``infer`` call; the official code then draws
the GPT beam samples and the CFM noise from the global CPU generator, which our engine reproduces
with a ``torch.Generator`` seeded the same way. One wrinkle: transformers 4.52's w2v-BERT encoder
draws one ``torch.rand`` per layer per call even in eval mode (its layerdrop check), so a case whose
conditioning is computed inside ``infer`` starts sampling further along the stream; golden.json
records the number of w2v-BERT calls per case (``w2v_calls``) so the test can replay those draws.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "pipeline"

W = 32  # w2v-BERT hidden = codec hidden = regulator input = GPT conformer input
STYLE = 8  # CAMPPlus embedding = S2M style dim
CAMPPLUS_TINY = dict(embedding_size=STYLE, growth_rate=4, bn_size=2, init_channels=8)
GPT_LAYER = (16, 8)
STOP_BIAS = 0.5
VOC_GAIN = 0.5
REV = "0123456789abcdef0123456789abcdef01234567"  # fake snapshot revision of the HF cache

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
TINY_CONFIG = {
    "dataset": {"bpe_model": "bpe.model", "sample_rate": 24000, "squeeze": False,
                "mel": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "win_length": 1024,
                        "n_mels": 100, "mel_fmin": 0, "normalize": False}},
    "gpt": TINY_GPT,
    "semantic_codec": {"codebook_size": 128, "hidden_size": W, "codebook_dim": 8, "vocos_dim": 16,
                       "vocos_intermediate_dim": 32, "vocos_num_layers": 2},
    "s2mel": {
        "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                            "n_mels": 80, "fmin": 0, "fmax": "None"}},
        "dit_type": "DiT",
        "reg_loss_type": "l1",
        "style_encoder": {"dim": STYLE},
        "length_regulator": {"channels": 32, "is_discrete": False, "in_channels": W, "content_codebook_size": 4,
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
    "gpt_checkpoint": "gpt.pth",
    "w2v_stat": "wav2vec2bert_stats.pt",
    "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt",
    "spk_matrix": "feat1.pt",
    "emo_num": [3, 17, 2, 8, 4, 5, 10, 24],
    "qwen_emo_path": "qwen0.6bemo4-merge/",
    "vocoder": {"type": "bigvgan", "name": "nvidia/bigvgan_v2_22khz_80band_256x"},
    "version": 2.0,
}
TINY_BIGVGAN = {
    "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 64, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
    "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "num_mels": 80,
    "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": None,
}
TINY_W2V = dict(
    hidden_size=W, num_hidden_layers=18, num_attention_heads=2, intermediate_size=32, output_hidden_size=W,
    conv_depthwise_kernel_size=5, left_max_position_embeddings=8, right_max_position_embeddings=2,
    position_embeddings_type="relative_key", feature_projection_input_dim=160, hidden_dropout=0.0,
    attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    conformer_conv_dropout=0.0,
)

# The cases; max_mel_tokens bounds the tiny GPT (its position table holds 120 codes).
MAX_MEL_TOKENS = 50
CASES = [
    {"name": "speaker", "text": "Hello there, how are you?", "seed": 7, "kwargs": {}},
    {"name": "vector", "text": "今天是个好日子 it's a good day", "seed": 8,
     "kwargs": {"emo_vector": [0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.45, 0.1], "emo_alpha": 0.8}},
    {"name": "reference", "text": "你好。今天天气很好！", "seed": 9,
     "kwargs": {"emo_audio_prompt": "emotion_16k.wav", "emo_alpha": 0.6}},
]

# A long text for the official segment split at infer()'s default limit (120 tokens): with the
# tiny BPE its first segment is exactly 120 tokens, so 119 or 121 would split it differently.
_SENTENCES = ["你好。今天天气很好！我们去公园吧？好的，走吧。", "Hello there. How are you? I am fine, thanks! And you.",
              "这是1024元的手机，你要吗？", "速度是10km/h。", "See you at 8:00 AM.", "他说：“走吧。”然后离开了。",
              "我爱你！", "I love you!"]
LONG_TEXT = "今天是个好日子天，" + "".join(_SENTENCES * 4)
# code counts whose official mel frame counts are recorded (the S2M length rule, ``code_lens * 1.72``)
FRAME_COUNTS = list(range(1, 301)) + [511, 1000, 1499, 1500]


class _Stop(Exception):
    """Ends a probe run of the official infer() once it has shown what it was asked."""


# ----------------------------------------------------------------------------- patches

def _stubs() -> None:
    """modelscope (Qwen only) and DAC (unused VQ branch of the regulator) are absent from the venv."""
    ms = types.ModuleType("modelscope")
    ms.AutoModelForCausalLM = None
    sys.modules.setdefault("modelscope", ms)
    for name in ("indextts.s2mel.dac", "indextts.s2mel.dac.nn"):
        sys.modules.setdefault(name, types.ModuleType(name))
    stub = types.ModuleType("indextts.s2mel.dac.nn.quantize")
    stub.VectorQuantize = None
    sys.modules.setdefault("indextts.s2mel.dac.nn.quantize", stub)


def _patch_official() -> None:
    import torch
    import indextts.gpt.model_v2 as mv2
    import indextts.s2mel.modules.commons as commons
    import indextts.infer_v2 as iv2

    conformer = mv2.ConformerEncoder

    def tiny_conformer(input_size, **kw):
        return conformer(input_size=W, **kw)

    mv2.ConformerEncoder = tiny_conformer

    init = commons.MyModel.__init__

    def tiny_init(self, args, use_gpt_latent=False, **kw):
        init(self, args, use_gpt_latent=use_gpt_latent, **kw)
        if use_gpt_latent:
            d1, d2 = GPT_LAYER
            self.models["gpt_layer"] = torch.nn.Sequential(
                torch.nn.Linear(TINY_GPT["model_dim"], d1), torch.nn.Linear(d1, d2), torch.nn.Linear(d2, W))

    commons.MyModel.__init__ = tiny_init
    campplus = iv2.CAMPPlus
    iv2.CAMPPlus = lambda feat_dim=80, embedding_size=192: campplus(feat_dim=feat_dim, **CAMPPLUS_TINY)
    iv2.QwenEmotion = lambda model_dir: None
    patch_wetext()


def patch_wetext() -> None:
    """The official normaliser takes its wetext branch (the one it uses off Linux): WeTextProcessing
    needs pynini, which the oracle venv does not install."""
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


def randomize_bigvgan(voc) -> None:
    """A bounded, non-degenerate random BigVGAN (default init is near silent): weight-norm gains,
    snake alpha/beta and biases drawn from torch's global RNG."""
    import torch

    for name, p in voc.named_parameters():
        if name.endswith("weight_g"):
            p.uniform_(0.5, 1.0)
        elif name.endswith((".alpha", ".beta")):
            p.copy_(0.3 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn_like(p))


# ----------------------------------------------------------------------------- checkpoint

def hf_put(cache: Path, repo_id: str, filename: str) -> Path:
    """Path of ``filename`` in the HF cache layout for ``repo_id`` (parents created)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    path = repo / "snapshots" / REV / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def perturb(module, scale: float) -> None:
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def build_checkpoint(ckpt: Path) -> None:
    import torch
    import yaml
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    import indextts.gpt.model_v2 as mv2
    import indextts.infer_v2 as iv2
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.bigvgan.env import AttrDict
    from indextts.s2mel.modules.commons import MyModel
    from indextts.utils.maskgct_utils import build_semantic_codec

    cache = ckpt / "hf_cache"
    (ckpt / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False, allow_unicode=True))
    cfg = OmegaConf.load(ckpt / "config.yaml")
    shutil.copyfile(ROOT / "tests/fixtures/gpt/tiny_bpe.model", ckpt / "bpe.model")

    # w2v-BERT 2.0 (random, W wide, 18 layers so that hidden_states[17] is not the last one)
    torch.manual_seed(11)
    w2v = Wav2Vec2BertModel(Wav2Vec2BertConfig(**TINY_W2V)).eval()
    perturb(w2v, 0.02)
    snap = hf_put(cache, "facebook/w2v-bert-2.0", "config.json").parent
    w2v.half().save_pretrained(snap, safe_serialization=True)  # fp16 on disk; both loaders compute in fp32
    SeamlessM4TFeatureExtractor().save_pretrained(snap)
    torch.save({"mean": 0.1 * torch.randn(W), "var": torch.rand(W) + 0.5}, ckpt / "wav2vec2bert_stats.pt")

    # MaskGCT semantic codec (config from config.yaml, full key layout incl. the unused decoder)
    torch.manual_seed(12)
    codec = build_semantic_codec(cfg.semantic_codec)
    perturb(codec, 0.05)
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()},
              str(hf_put(cache, "amphion/MaskGCT", "semantic_codec/model.safetensors")))

    # GPT (UnifiedVoice from config.yaml, conformer inputs W wide)
    torch.manual_seed(13)
    gpt = mv2.UnifiedVoice(**cfg.gpt)
    perturb(gpt, 0.05)
    with torch.no_grad():
        gpt.mel_head.bias[TINY_GPT["stop_mel_token"]] -= STOP_BIAS  # stop after a few dozen codes
    # stored in fp16 (half the bytes); the official loader copies it into fp32 parameters, as ours does
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in gpt.state_dict().items()},
               ckpt / "gpt.pth")

    # S2M (MyModel from config.yaml, gpt_layer 64 -> W)
    torch.manual_seed(14)
    s2mel = MyModel(cfg.s2mel, use_gpt_latent=True)
    perturb(s2mel, 0.05)
    net = {k: s2mel.models[k].state_dict() for k in ("cfm", "length_regulator", "gpt_layer")}
    torch.save({"net": net, "iters": 0}, ckpt / "s2mel.pth")

    # CAMPPlus (tiny constructor options; BatchNorm statistics moved off their init too)
    torch.manual_seed(15)
    campplus = iv2.CAMPPlus(feat_dim=80, embedding_size=192)
    perturb(campplus, 0.05)
    with torch.no_grad():
        for name, buf in campplus.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(0.05 * torch.randn_like(buf))
            elif name.endswith("running_var"):
                buf.mul_(torch.rand_like(buf) + 0.5)
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in campplus.state_dict().items()},
               hf_put(cache, "funasr/campplus", "campplus_cn_common.bin"))

    # BigVGAN v2 (config.json + {"generator": weight-norm state dict})
    torch.manual_seed(16)
    voc = BigVGAN(AttrDict(dict(TINY_BIGVGAN)), use_cuda_kernel=False)
    with torch.no_grad():
        randomize_bigvgan(voc)
        voc.conv_post.weight_g.mul_(VOC_GAIN)  # keep most samples inside the +-1 clamp
    repo = TINY_CONFIG["vocoder"]["name"]
    hf_put(cache, repo, "config.json").write_text(json.dumps(TINY_BIGVGAN, indent=1))
    torch.save({"generator": voc.state_dict()}, hf_put(cache, repo, "bigvgan_generator.pt"))

    # emotion matrices [73, style], [73, model_dim]
    torch.manual_seed(17)
    torch.save(torch.randn(73, STYLE), ckpt / "feat1.pt")
    torch.save(0.5 * torch.randn(73, TINY_GPT["model_dim"]), ckpt / "feat2.pt")


def write_clips(out: Path) -> None:
    import numpy as np
    import soundfile as sf

    def voiced(sr: int, seconds: float, f0: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(int(sr * seconds)) / sr
        pitch = f0 * (1 + 0.06 * np.sin(2 * np.pi * 3.1 * t))
        phase = 2 * np.pi * np.cumsum(pitch) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 12))
        env = np.clip(np.sin(np.pi * t / seconds), 0, None) ** 0.5 * (0.6 + 0.4 * np.sin(2 * np.pi * 4.3 * t))
        return (0.25 * env * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    sf.write(out / "speaker_24k.wav", voiced(24000, 1.2, 140.0, 1), 24000, subtype="PCM_16")
    sf.write(out / "emotion_16k.wav", voiced(16000, 0.9, 230.0, 2), 16000, subtype="PCM_16")


# ----------------------------------------------------------------------------- official run

def run_official(out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    import indextts.infer_v2 as iv2

    ckpt = out / "checkpoints"
    tts = iv2.IndexTTS2(cfg_path=str(ckpt / "config.yaml"), model_dir=str(ckpt), use_fp16=False, device="cpu",
                        use_cuda_kernel=False)
    record: dict = {}
    gen = tts.gpt.inference_speech

    def spy_gen(*a, **kw):
        record["gen_kwargs"] = {k: v for k, v in kw.items() if not hasattr(v, "shape")}
        if record.get("probe"):
            raise _Stop
        codes, latent = gen(*a, **kw)
        record["codes"] = codes.clone()
        return codes, latent

    tts.gpt.inference_speech = spy_gen
    bigvgan = tts.bigvgan

    def spy_voc(mel):
        record["mel"] = mel.clone()
        return bigvgan(mel)

    tts.bigvgan = spy_voc
    get_emb = tts.get_emb

    def spy_emb(*a, **kw):
        record["w2v_calls"] += 1
        feat = get_emb(*a, **kw)
        record["w2v_feat"] = feat
        return feat

    semantic_model = tts.semantic_model

    def spy_w2v(*a, **kw):
        out = semantic_model(*a, **kw)
        record["hidden_states"] = out.hidden_states
        return out

    tts.get_emb = spy_emb
    tts.semantic_model = spy_w2v
    tensors, meta = {}, {"max_mel_tokens": MAX_MEL_TOKENS, "cases": []}
    for case in CASES:
        kwargs = dict(case["kwargs"])
        if "emo_audio_prompt" in kwargs:
            kwargs["emo_audio_prompt"] = str(out / kwargs["emo_audio_prompt"])
        record["w2v_calls"] = 0
        torch.manual_seed(case["seed"])
        chunks = list(tts.infer(str(out / "speaker_24k.wav"), case["text"], None, stream_return=True,
                                max_mel_tokens=MAX_MEL_TOKENS, **kwargs))
        assert len(chunks) == 2, f"expected one segment and its silence, got {len(chunks)} chunks"
        wav = chunks[0][0] / 32767.0
        if "silence" in tensors:
            assert torch.equal(chunks[1], tensors["silence"]), "the official silence chunk changed between cases"
        tensors["silence"] = chunks[1].float().contiguous()  # the official pipeline's own gap
        codes = record["codes"][0]
        stop = TINY_GPT["stop_mel_token"]
        n = int((codes == stop).nonzero()[0]) if bool((codes == stop).any()) else codes.numel()
        name = case["name"]
        tensors[f"{name}.wav"] = wav.float().contiguous()
        tensors[f"{name}.mel"] = record["mel"][0].contiguous()
        tensors[f"{name}.codes"] = codes[:n].long().contiguous()
        # transformers 4.52's Wav2Vec2BertEncoder draws one torch.rand per layer per call (its
        # layerdrop check runs even in eval mode): conditioning computed inside infer() advances the
        # global RNG before the GPT samples. The test replays these draws on its generator.
        meta["cases"].append({**case, "w2v_calls": record["w2v_calls"], "gen_kwargs": record["gen_kwargs"],
                              "w2v_layers": TINY_W2V["num_hidden_layers"], "codes": n,
                              "stopped": n < codes.numel(), "samples": wav.numel(),
                              "tokens": tts.tokenizer.convert_tokens_to_ids(tts.tokenizer.tokenize(case["text"]))})
        print(f"{name}: {n} codes (stop: {n < codes.numel()}), {wav.numel()} samples, "
              f"peak {float(wav.abs().max()):.3f}, clipped {float((wav.abs() >= 0.99997).float().mean()):.3f}")
    tensors["speaker.spk_cond_emb"] = tts.cache_spk_cond[0].contiguous()
    tensors["speaker.style"] = tts.cache_s2mel_style[0].contiguous()
    tensors["speaker.prompt_condition"] = tts.cache_s2mel_prompt[0].contiguous()
    tensors["speaker.ref_mel"] = tts.cache_mel[0].contiguous()
    meta["sample_rate"] = 22050  # BigVGAN's rate: what infer_v2 passes as sampling_rate for the silence
    meta["w2v_layer"] = tapped_layer(record)
    meta.update(probe_defaults(tts, out, record))
    meta["code_frames"] = probe_frames(tts, out, record)
    save_file(tensors, str(out / "golden.safetensors"))
    (out / "golden.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


def tapped_layer(record: dict) -> int:
    """Which w2v-BERT hidden state the official get_emb returned (after its stats normalisation):
    the one hidden state that its output is an affine image of."""
    import torch

    feat = record["w2v_feat"][0]
    hits = []
    for i, h in enumerate(record["hidden_states"]):
        h = h[0]
        # feat = (h - mean) / std per channel: undo it with a least-squares fit per channel
        x = torch.stack([h, torch.ones_like(h)], -1).transpose(0, 1)  # [C, T, 2]
        sol = torch.linalg.lstsq(x.double(), feat.transpose(0, 1).double().unsqueeze(-1)).solution
        if float((x.double() @ sol).squeeze(-1).sub(feat.transpose(0, 1).double()).abs().max()) < 1e-4:
            hits.append(i)
    assert len(hits) == 1, f"get_emb output matches hidden states {hits}"
    return hits[0]


def probe_defaults(tts, out: Path, record: dict) -> dict:
    """The official infer() as a user calls it (no generation arguments) on LONG_TEXT: its segment
    split (``max_text_tokens_per_segment`` default) and the keyword arguments it passes to
    ``inference_speech`` (sampling defaults); stopped before generating (the tiny GPT could not
    hold the default 1500 codes)."""
    split = tts.tokenizer.split_segments
    seen: dict = {}

    def spy_split(tokens, max_tokens, *a, **kw):
        segs = split(tokens, max_tokens, *a, **kw)
        seen["max_tokens"], seen["segments"] = max_tokens, segs
        return segs

    tts.tokenizer.split_segments = spy_split
    record["probe"] = True
    try:
        tts.infer(str(out / "speaker_24k.wav"), LONG_TEXT, None)
        raise AssertionError("the probe was not stopped")
    except _Stop:
        pass
    finally:
        record["probe"] = False
        tts.tokenizer.split_segments = split
    ids = [tts.tokenizer.convert_tokens_to_ids(s) for s in seen["segments"]]
    print(f"defaults: {record['gen_kwargs']}; {LONG_TEXT[:20]}...: segments of {[len(s) for s in ids]} tokens")
    return {"default_gen_kwargs": record["gen_kwargs"],
            "long_text": {"text": LONG_TEXT, "max_text_tokens_per_segment": seen["max_tokens"], "segments": ids}}


def probe_frames(tts, out: Path, record: dict) -> list[list[int]]:
    """Mel frames the official pipeline generates for n codes, n in FRAME_COUNTS: infer() runs with
    the GPT replaced by n fixed codes and a zero latent (the tiny GPT holds at most 120 codes) up to
    the length regulator, whose ``ylens`` is recorded; nothing after it runs."""
    import torch

    gen, gpt_forward, regulator = tts.gpt.inference_speech, tts.gpt.forward, tts.s2mel.models["length_regulator"]
    state: dict = {}

    def fixed_codes(*a, **kw):
        return torch.full((1, state["n"]), 5, dtype=torch.long), None

    def zero_latent(*a, **kw):
        return torch.zeros(1, state["n"], TINY_GPT["model_dim"])

    class Spy(torch.nn.Module):
        def forward(self, x, ylens=None, **kw):
            state["frames"] = int(ylens[0])
            raise _Stop

    tts.gpt.inference_speech, tts.gpt.forward, tts.s2mel.models["length_regulator"] = fixed_codes, zero_latent, Spy()
    rows = []
    try:
        for n in FRAME_COUNTS:
            state["n"] = n
            try:
                tts.infer(str(out / "speaker_24k.wav"), "Hello there, how are you?", None)
            except _Stop:
                rows.append([n, state["frames"]])
    finally:
        tts.gpt.inference_speech, tts.gpt.forward = gen, gpt_forward
        tts.s2mel.models["length_regulator"] = regulator
    assert len(rows) == len(FRAME_COUNTS)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    out = args.out.resolve()
    ckpt = out / "checkpoints"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True)
    # the official code reads the external models from the HF cache; point it at ours, offline
    os.environ["HF_HUB_CACHE"] = str(ckpt / "hf_cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(1)
    _stubs()
    import huggingface_hub  # noqa: F401  (reads HF_HUB_CACHE now, before infer_v2 overrides the variable)

    _patch_official()
    os.chdir(out)
    build_checkpoint(ckpt)
    write_clips(out)
    run_official(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
