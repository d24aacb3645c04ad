"""The IndexTTS-2 checkpoint, read into networks: config sections, strict loading, placement.

``load_models`` builds every network from ``config.yaml`` and loads each file strictly
(``CheckpointError`` names the file and the key); ``place`` moves them to the device and dtype.
The checkpoint directory's layout and how its files are found: ``checkpoints.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig
from realtime_tts.model.campplus import CAMPPlus
from realtime_tts.model.codec import CodecConfig, SemanticCodec
from realtime_tts.model.emotion import EmotionMatrix, QwenEmotion
from realtime_tts.model.gpt import ConformerConfig, GPTConfig, UnifiedVoice
from realtime_tts.model.s2mel import CheckpointMismatch, S2Mel, S2MelConfig
from realtime_tts.model.w2vbert import SemanticEncoder
from realtime_tts.model.weights import for_inference
from realtime_tts.text.normalize import TextNormalizer
from realtime_tts.text.tokenizer import TextTokenizer

from .checkpoints import CheckpointError, CheckpointPaths, load_state_dict_strict, read_state_dict


def _section(cfg: Mapping, key: str, path: Path) -> Mapping:
    node = cfg.get(key)
    if not isinstance(node, Mapping):
        raise CheckpointError(f"{path}: key {key!r} must be a mapping")
    return node


def _num(node: Mapping, key: str, where: str, kind=int):
    if key not in node:
        raise CheckpointError(f"{where}: missing key {key!r}")
    try:
        return kind(node[key])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: key {key!r} = {node[key]!r} is not a number") from e


def gpt_config(cfg: Mapping, feature_dim: int, path: Path) -> GPTConfig:
    """GPTConfig from config.yaml's ``gpt`` section; the conformer input width is the w2v-BERT
    width (1024 for the real model, hard-coded upstream)."""
    g = _section(cfg, "gpt", path)
    where = f"{path} gpt"

    def conformer(key: str) -> ConformerConfig:
        c = g.get(key)
        if not isinstance(c, Mapping):
            raise CheckpointError(f"{where}: key {key!r} must be a mapping")
        w = f"{where}.{key}"
        return ConformerConfig(_num(c, "output_size", w), _num(c, "linear_units", w), _num(c, "attention_heads", w),
                               _num(c, "num_blocks", w), _num(c, "perceiver_mult", w, float), input_size=feature_dim)

    keys = ("model_dim", "layers", "heads", "max_mel_tokens", "max_text_tokens", "number_text_tokens",
            "number_mel_codes", "start_mel_token", "stop_mel_token", "start_text_token", "stop_text_token")
    try:
        return GPTConfig(**{k: _num(g, k, where) for k in keys}, condition_module=conformer("condition_module"),
                         emo_condition_module=conformer("emo_condition_module"))
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e


def s2mel_config(cfg: Mapping, gpt_dim: int, gpt_layer_dims: tuple[int, int], path: Path) -> S2MelConfig:
    s = _section(cfg, "s2mel", path)
    where = f"{path} s2mel"
    spect = _section(_section(s, "preprocess_params", path), "spect_params", path)
    reg, dit, wn = (_section(s, k, path) for k in ("length_regulator", "DiT", "wavenet"))
    style = _section(s, "style_encoder", path)
    content = _num(reg, "channels", f"{where}.length_regulator")
    if _num(dit, "content_dim", f"{where}.DiT") != content:
        raise CheckpointError(f"{where}: DiT.content_dim must equal length_regulator.channels ({content})")
    if int(spect.get("n_mels", 80)) != _num(dit, "in_channels", f"{where}.DiT"):
        raise CheckpointError(f"{where}: DiT.in_channels must equal spect_params.n_mels")
    ratios = reg.get("sampling_ratios")
    if not isinstance(ratios, list) or not ratios:
        raise CheckpointError(f"{where}.length_regulator: key 'sampling_ratios' must be a non-empty list")
    try:
        return S2MelConfig(
            n_mels=_num(dit, "in_channels", f"{where}.DiT"), gpt_dim=gpt_dim, gpt_layer_dims=gpt_layer_dims,
            semantic_dim=_num(reg, "in_channels", f"{where}.length_regulator"), content_dim=content,
            regulator_convs=len(ratios),
            regulator_codebook_size=_num(reg, "content_codebook_size", f"{where}.length_regulator"),
            hidden_dim=_num(dit, "hidden_dim", f"{where}.DiT"), num_heads=_num(dit, "num_heads", f"{where}.DiT"),
            depth=_num(dit, "depth", f"{where}.DiT"), style_dim=_num(style, "dim", f"{where}.style_encoder"),
            dit_codebook_size=_num(dit, "content_codebook_size", f"{where}.DiT"),
            wavenet_hidden=_num(wn, "hidden_dim", f"{where}.wavenet"),
            wavenet_layers=_num(wn, "num_layers", f"{where}.wavenet"),
            wavenet_kernel=_num(wn, "kernel_size", f"{where}.wavenet"),
            wavenet_dilation_rate=_num(wn, "dilation_rate", f"{where}.wavenet"),
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from e


@dataclass(frozen=True)
class MelParams:
    """Reference mel settings (s2mel.preprocess_params); fmax: any value but "None" means 8000."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None

    @classmethod
    def from_config(cls, cfg: Mapping, path: Path) -> "MelParams":
        pp = _section(_section(cfg, "s2mel", path), "preprocess_params", path)
        sp = _section(pp, "spect_params", path)
        fmax = sp.get("fmax", "None")
        return cls(sample_rate=int(pp.get("sr", 22050)), n_fft=int(sp.get("n_fft", 1024)),
                   hop=int(sp.get("hop_length", 256)), win=int(sp.get("win_length", 1024)),
                   n_mels=int(sp.get("n_mels", 80)), fmin=float(sp.get("fmin", 0) or 0),
                   fmax=None if fmax == "None" else 8000.0)


@dataclass
class Models:
    """Every network of the pipeline, on one device."""

    gpt: UnifiedVoice
    s2mel: S2Mel
    codec: SemanticCodec
    w2v: SemanticEncoder
    campplus: CAMPPlus
    vocoder: BigVGAN
    emotion: EmotionMatrix
    tokenizer: TextTokenizer | None  # None: only token ids can be synthesized (bench)
    mel: MelParams
    qwen: QwenEmotion | None = None


def _campplus_from_state(sd: Mapping[str, torch.Tensor], label: str) -> CAMPPlus:
    """CAMPPlus sized from its weights (the official code hard-codes the defaults; small test
    checkpoints shrink them)."""
    try:
        init = sd["xvector.tdnn.linear.weight"].shape[0]
        bn = sd["xvector.block1.tdnnd1.linear1.weight"].shape[0]
        growth = sd["xvector.block1.tdnnd1.cam_layer.linear_local.weight"].shape[0]
        emb = sd["xvector.dense.linear.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{label}: not a CAMPPlus state dict (no key {e.args[0]!r})") from e
    if bn % growth:
        raise CheckpointError(f"{label}: bottleneck width {bn} is not a multiple of the growth rate {growth}")
    return CAMPPlus(feat_dim=80, embedding_size=emb, growth_rate=growth, bn_size=bn // growth, init_channels=init)


def _load_matrix(path: Path, label: str) -> torch.Tensor:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{label}: cannot read {path} ({type(e).__name__}: {e})") from e
    if not isinstance(obj, torch.Tensor) or obj.dim() != 2:
        raise CheckpointError(f"{label} ({path}): expected one 2-D tensor, got "
                              f"{type(obj).__name__}{list(obj.shape) if isinstance(obj, torch.Tensor) else ''}")
    return obj.float()


def load_models(paths: CheckpointPaths, device: torch.device, dtype: torch.dtype) -> Models:
    """Build and strictly load every network; CheckpointError names the file and key on mismatch."""
    cfg, cfg_path = paths.config, paths.config_path
    try:
        w2v = SemanticEncoder.from_pretrained(paths.w2v_bert_dir, paths.w2v_stats)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"w2v-BERT ({paths.w2v_bert_dir}, stats {paths.w2v_stats.name}): {e}") from e
    width = w2v.model.config.hidden_size
    gcfg = gpt_config(cfg, width, cfg_path)
    gpt = UnifiedVoice(gcfg)
    load_state_dict_strict(gpt, paths.gpt, file_label=paths.gpt.name)
    codec = _load_codec(paths, width)
    s2mel = _load_s2mel(paths, gcfg.model_dim, width)
    campplus = _load_campplus(paths, s2mel.cfg.style_dim)
    vocoder = _load_vocoder(paths, s2mel.cfg.n_mels)
    matrix = _load_emotion_matrix(paths, s2mel.cfg.style_dim, gcfg.model_dim)
    tokenizer = _load_tokenizer(paths, gcfg.text_vocab)
    qwen = QwenEmotion(paths.qwen_dir, device=device) if paths.qwen_dir is not None else None
    return Models(gpt=gpt, s2mel=s2mel, codec=codec, w2v=w2v, campplus=campplus, vocoder=vocoder,
                  emotion=matrix, tokenizer=tokenizer, mel=MelParams.from_config(cfg, cfg_path), qwen=qwen)


def _load_codec(paths: CheckpointPaths, width: int) -> SemanticCodec:
    cfg_path = paths.config_path
    sc = _section(paths.config, "semantic_codec", cfg_path)
    try:
        ccfg = CodecConfig(**{k: int(sc[k]) for k in ("codebook_size", "hidden_size", "codebook_dim", "vocos_dim",
                                                       "vocos_intermediate_dim", "vocos_num_layers")})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path} semantic_codec: {e!r}") from e
    if ccfg.hidden_size != width:
        raise CheckpointError(f"{cfg_path}: semantic_codec.hidden_size {ccfg.hidden_size} differs from the "
                              f"w2v-BERT width {width}")
    codec = SemanticCodec(ccfg)
    try:
        codec.load_official_state_dict(read_state_dict(paths.semantic_codec, file_label="semantic codec"))
    except RuntimeError as e:  # includes shape/key errors from load_state_dict
        raise CheckpointError(f"semantic codec ({paths.semantic_codec}): {e}") from e
    return codec


def _load_s2mel(paths: CheckpointPaths, gpt_dim: int, width: int) -> S2Mel:
    cfg_path = paths.config_path
    net = read_state_dict(paths.s2mel, subkey="net", file_label=paths.s2mel.name)
    try:
        d1 = net["gpt_layer.0.weight"].shape[0]
        d2 = net["gpt_layer.1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{paths.s2mel.name}: no entry {e.args[0]!r} under 'net'") from e
    scfg = s2mel_config(paths.config, gpt_dim, (d1, d2), cfg_path)
    if scfg.semantic_dim != width:
        raise CheckpointError(f"{cfg_path}: s2mel.length_regulator.in_channels {scfg.semantic_dim} differs from "
                              f"the w2v-BERT width {width}")
    s2mel = S2Mel(scfg)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in net.items():
        head, _, rest = key.partition(".")
        groups.setdefault(head, {})[rest] = value
    try:
        s2mel.load_official(groups)
    except CheckpointMismatch as e:
        raise CheckpointError(f"{paths.s2mel.name} ({paths.s2mel}): {e}") from e
    return s2mel


def _load_campplus(paths: CheckpointPaths, style_dim: int) -> CAMPPlus:
    label = "CAMPPlus (campplus_cn_common.bin)"
    campplus = _campplus_from_state(read_state_dict(paths.campplus, file_label=label), label)
    load_state_dict_strict(campplus, paths.campplus, file_label=label)
    if campplus.xvector.dense.linear.weight.shape[0] != style_dim:
        raise CheckpointError(f"{label}: style width {campplus.xvector.dense.linear.weight.shape[0]} differs from "
                              f"s2mel.style_encoder.dim {style_dim} in {paths.config_path}")
    return campplus


def _load_vocoder(paths: CheckpointPaths, n_mels: int) -> BigVGAN:
    try:
        vcfg = BigVGANConfig.from_json(paths.bigvgan_config)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"BigVGAN config ({paths.bigvgan_config}): {e}") from e
    if vcfg.num_mels != n_mels:
        raise CheckpointError(f"BigVGAN num_mels {vcfg.num_mels} differs from the S2M mel bins {n_mels}")
    vocoder = BigVGAN(vcfg)
    try:
        vocoder.load_official(read_state_dict(paths.bigvgan_generator, subkey="generator",
                                              file_label="bigvgan_generator.pt"))
    except CheckpointMismatch as e:
        raise CheckpointError(f"bigvgan_generator.pt ({paths.bigvgan_generator}): {e}") from e
    return vocoder


def _load_emotion_matrix(paths: CheckpointPaths, style_dim: int, model_dim: int) -> EmotionMatrix:
    spk = _load_matrix(paths.spk_matrix, paths.spk_matrix.name)
    emo = _load_matrix(paths.emo_matrix, paths.emo_matrix.name)
    if spk.shape[1] != style_dim or emo.shape[1] != model_dim:
        raise CheckpointError(f"emotion matrices: {paths.spk_matrix.name} is {list(spk.shape)} (want [73, "
                              f"{style_dim}]), {paths.emo_matrix.name} is {list(emo.shape)} (want [73, "
                              f"{model_dim}])")
    try:
        return EmotionMatrix(spk, emo, paths.config["emo_num"])
    except ValueError as e:
        raise CheckpointError(f"emotion matrices ({paths.spk_matrix.name}, {paths.emo_matrix.name}): {e}") from e


def _load_tokenizer(paths: CheckpointPaths, text_vocab: int) -> TextTokenizer:
    normalizer = TextNormalizer()
    try:
        normalizer.load_glossary(paths.root / "glossary.yaml")
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    tokenizer = TextTokenizer(paths.bpe_model, normalizer)
    if tokenizer.vocab_size > text_vocab:
        raise CheckpointError(f"{paths.bpe_model.name}: {tokenizer.vocab_size} pieces but the GPT has "
                              f"{text_vocab} text embeddings")
    return tokenizer


def place(models: Models, device: torch.device, dtype: torch.dtype) -> Models:
    """Move to ``device``; the GPT and the DiT estimator take ``dtype``, the rest stays fp32."""
    for_inference(device, models.gpt, models.s2mel, models.codec, models.w2v, models.campplus, models.vocoder)
    models.gpt.to(dtype)
    models.s2mel.cfm.estimator.to(dtype)
    models.emotion.to(device)
    return models
