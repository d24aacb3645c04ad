"""Strict loading of an IndexTTS-2.5 checkpoint: paths in, modules out.

The official loaders are lenient (gpt.pth non-strict, codec.pth and s2mel.pth shape-filtered, so
a wrong file silently leaves random weights). Here every file must cover its module exactly, with
two documented exceptions that are checked by name and shape, not ignored blindly:

* ``codec.pth``: the encoder side of ``EnhancedCodec`` (``down``, ``encoder.*``, the VQ
  ``in_project``) serves only training; it is verified, then dropped (see ``enhanced_codec``).
* ``s2mel.pth``: the released file still carries ``net.gpt_layer`` (the IndexTTS-2 latent
  projection, six tensors ``gpt_layer.{0,1,2}.{weight,bias}``) that 2.5 never builds; the official
  loader skips it silently, this one accepts exactly those six names, logs them and drops them.

Every error is a ``CheckpointMismatch`` whose message names the file and the offending keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..bigvgan import BigVGAN, BigVGANConfig
from ..campplus import CAMPPlus
from ..emotion import EmotionMatrix, QwenEmotion
from ..enhanced_codec import EnhancedCodec, EnhancedCodecConfig
from ..gpt import ConformerConfig, GPT25Config, SamplingParams, UnifiedVoice25
from ..s2mel import S2Mel, S2MelConfig
from ..s2mel.checkpoint import CheckpointMismatch, load_strict
from ..w2vbert import SemanticEncoder
from ..weights import torch_load
from .layout import Paths25

log = logging.getLogger(__name__)

CODE_RATE = 25  # semantic codes per second of speech (IndexTTS-2: 50)
# The official 2.5 decoding (infer_v2_5 defaults: sampled beam search, 3 beams, top-k 30, top-p 0.8,
# temperature 0.8, repetition penalty 10, at most 1500 codes = 60 s). Our runaway guard (not
# official) keeps IndexTTS-2's seconds at 25 codes/s: 2 s + ~0.5 s per text token.
DEFAULT_SAMPLING = SamplingParams(max_mel_tokens=1500, runaway_base=2 * CODE_RATE, runaway_per_token=13)
GPT_LAYER_KEYS = tuple(f"gpt_layer.{i}.{p}" for i in range(3) for p in ("weight", "bias"))
CAMPPLUS_STYLE = 192  # the official pipeline builds CAMPPlus(feat_dim=80, embedding_size=192)


# ----------------------------------------------------------------------------- files


def read_checkpoint(path: Path, label: str) -> Any:
    """torch.load on CPU; tensors only, unless the file pickles other objects (training leftovers)."""
    if not Path(path).is_file():
        raise CheckpointMismatch(f"{label}: file not found at {path}")
    try:
        return torch_load(path)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise CheckpointMismatch(f"{label}: cannot read {path} ({type(e).__name__}: {e})") from e


def tensors(obj: Any, label: str, *keys: str, strip_module: bool = False) -> dict[str, torch.Tensor]:
    """The state dict at ``obj[k1][k2]...``: every value a tensor (``module.`` prefixes dropped)."""
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            have = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointMismatch(f"{label}: no entry {key!r} (found: {have})")
        obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatch(f"{label}: {'/'.join(keys) or 'top level'} is not a state dict of tensors")
    if strip_module:
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    return dict(obj)


# ----------------------------------------------------------------------------- configs


def _section(cfg: Mapping, key: str) -> Mapping:
    node = cfg.get(key)
    if not isinstance(node, Mapping):
        raise CheckpointMismatch(f"config.yaml: key {key!r} must be a mapping")
    return node


def _int(node: Mapping, key: str, where: str) -> int:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointMismatch(f"config.yaml {where}: key {key!r} = {value!r} must be an integer")
    return value


def gpt_config(cfg: Mapping, feature_dim: int = 1024) -> GPT25Config:
    """GPT25Config from config.yaml's ``gpt`` section (``condition_module`` is read by no one in
    2.5 and ignored here as upstream); the emotion conformer takes ``feature_dim``-wide w2v-BERT
    features (1024, hard-coded upstream)."""
    g = _section(cfg, "gpt")
    emo = g.get("emo_condition_module")
    if not isinstance(emo, Mapping):
        raise CheckpointMismatch("config.yaml gpt: key 'emo_condition_module' must be a mapping")
    if emo.get("input_layer", "conv2d2") != "conv2d2":
        raise CheckpointMismatch(f"config.yaml gpt.emo_condition_module: input_layer {emo['input_layer']!r} "
                                 "is not supported (conv2d2 only)")
    where = "gpt.emo_condition_module"
    try:
        conformer = ConformerConfig(_int(emo, "output_size", where), _int(emo, "linear_units", where),
                                    _int(emo, "attention_heads", where), _int(emo, "num_blocks", where),
                                    float(emo.get("perceiver_mult", 2)), input_size=feature_dim)
        keys = ("model_dim", "layers", "heads", "max_mel_tokens", "max_text_tokens", "number_text_tokens",
                "number_mel_codes", "start_mel_token", "stop_mel_token", "start_text_token", "stop_text_token")
        return GPT25Config(**{k: _int(g, k, "gpt") for k in keys}, emo_condition_module=conformer)
    except (TypeError, ValueError) as e:
        raise CheckpointMismatch(f"config.yaml gpt: {e}") from e


def codec_config(cfg: Mapping) -> EnhancedCodecConfig:
    sc = _section(cfg, "semantic_codec")
    keys = ("codebook_size", "hidden_size", "codebook_dim", "vocos_dim", "vocos_intermediate_dim", "vocos_num_layers")
    try:
        extra = {"downsample_scale": _int(sc, "downsample_scale", "semantic_codec")} if "downsample_scale" in sc else {}
        if int(sc.get("num_quantizers", 1)) != 1:
            raise ValueError(f"num_quantizers {sc['num_quantizers']} is not supported (1 only)")
        return EnhancedCodecConfig(**{k: _int(sc, k, "semantic_codec") for k in keys}, **extra)
    except ValueError as e:
        raise CheckpointMismatch(f"config.yaml semantic_codec: {e}") from e


def s2mel_config(cfg: Mapping) -> S2MelConfig:
    try:
        return S2MelConfig.from_section(_section(cfg, "s2mel"), gpt_layer_dims=None)
    except ValueError as e:
        raise CheckpointMismatch(f"config.yaml {e}") from e


# ----------------------------------------------------------------------------- modules


def load_gpt(path: Path, cfg: GPT25Config) -> UnifiedVoice25:
    """gpt.pth (flat, or under "model" as the official loader accepts) -> UnifiedVoice25, strict."""
    obj = read_checkpoint(path, path.name)
    keys = ("model",) if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else ()
    gpt = UnifiedVoice25(cfg)
    load_strict(gpt, tensors(obj, path.name, *keys), f"{path.name} ({path})")
    return gpt.eval()


def load_codec(path: Path, cfg: EnhancedCodecConfig) -> EnhancedCodec:
    """codec.pth ``{"model": state_dict}`` -> EnhancedCodec (decode side), strict."""
    codec = EnhancedCodec(cfg)
    try:
        codec.load_official_state_dict(tensors(read_checkpoint(path, path.name), path.name, "model"),
                                       label=f"{path.name} ({path})")
    except ValueError as e:
        raise CheckpointMismatch(str(e)) from e
    return codec.eval()


def load_s2mel(path: Path, cfg: S2MelConfig) -> S2Mel:
    """s2mel.pth ``{"net": {"cfm", "length_regulator"[, "gpt_layer"]}}`` -> S2Mel, strict; a
    ``gpt_layer`` entry must hold exactly the six IndexTTS-2 projection tensors and is dropped."""
    label = f"{path.name} ({path})"
    net = read_checkpoint(path, path.name)
    if not isinstance(net, Mapping) or not isinstance(net.get("net"), Mapping):
        raise CheckpointMismatch(f"{label}: expected a dict with a 'net' entry")
    net = net["net"]
    extra = sorted(set(map(str, net)) - {"cfm", "length_regulator", "gpt_layer"})
    if extra:
        raise CheckpointMismatch(f"{label}: unexpected entries under 'net': {extra}")
    if "gpt_layer" in net:
        found = tuple(sorted("gpt_layer." + k for k in tensors(net, label, "gpt_layer", strip_module=True)))
        if found != tuple(sorted(GPT_LAYER_KEYS)):
            raise CheckpointMismatch(f"{label}: net.gpt_layer holds {list(found)}, expected exactly "
                                     f"{list(GPT_LAYER_KEYS)} (unused by IndexTTS-2.5)")
        log.info("%s: ignoring net.gpt_layer (%s): the IndexTTS-2 latent projection, unused by IndexTTS-2.5",
                 path.name, ", ".join(GPT_LAYER_KEYS))
    s2mel = S2Mel(cfg)
    try:
        s2mel.load_official({k: tensors(net, label, k) for k in ("cfm", "length_regulator")})
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{label}: {e}") from e
    return s2mel.eval()


def load_campplus(path: Path) -> CAMPPlus:
    """campplus_cn_common.bin -> the official full-size CAMPPlus (80 fbank bins -> 192), strict."""
    label = f"{path.name} ({path})"
    model = CAMPPlus(feat_dim=80, embedding_size=CAMPPLUS_STYLE)
    load_strict(model, tensors(read_checkpoint(path, path.name), label), label)
    return model.eval()


def load_vocoder(config_path: Path, generator_path: Path, n_mels: int) -> BigVGAN:
    try:
        vcfg = BigVGANConfig.from_json(config_path)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointMismatch(f"BigVGAN config ({config_path}): {e}") from e
    if vcfg.num_mels != n_mels:
        raise CheckpointMismatch(f"BigVGAN config ({config_path}): num_mels {vcfg.num_mels} differs from the "
                                 f"S2M mel bins {n_mels}")
    vocoder = BigVGAN(vcfg)
    label = f"{generator_path.name} ({generator_path})"
    try:
        vocoder.load_official(tensors(read_checkpoint(generator_path, generator_path.name), label, "generator"))
    except CheckpointMismatch as e:
        raise CheckpointMismatch(f"{label}: {e}") from e
    return vocoder.eval()


def load_emotion_matrix(paths: Paths25, style_dim: int, model_dim: int) -> EmotionMatrix:
    mats = []
    for path, width in ((paths.spk_matrix, style_dim), (paths.emo_matrix, model_dim)):
        obj = read_checkpoint(path, path.name)
        if not isinstance(obj, torch.Tensor) or obj.dim() != 2 or obj.shape[1] != width:
            got = list(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
            raise CheckpointMismatch(f"{path.name} ({path}): expected one [73, {width}] tensor, got {got}")
        mats.append(obj.float())
    try:
        return EmotionMatrix(mats[0], mats[1], paths.config["emo_num"])
    except (TypeError, ValueError) as e:
        raise CheckpointMismatch(f"{paths.spk_matrix.name}, {paths.emo_matrix.name} with emo_num "
                                 f"{paths.config.get('emo_num')!r}: {e}") from e


@dataclass
class Models25:
    """Every network of the IndexTTS-2.5 pipeline, on CPU in fp32 (``place`` them as needed)."""

    gpt: UnifiedVoice25
    codec: EnhancedCodec
    s2mel: S2Mel
    w2v: SemanticEncoder
    campplus: CAMPPlus
    vocoder: BigVGAN
    emotion: EmotionMatrix
    qwen: QwenEmotion | None  # loads its weights on first use only


def load_models(paths: Paths25, qwen_device: str | torch.device = "cpu") -> Models25:
    """Build and strictly load every network of a resolved directory (``layout.resolve``); the
    Qwen emotion model (optional) is only located here and loads on first use, on ``qwen_device``."""
    cfg = paths.config
    try:
        w2v = SemanticEncoder.from_pretrained(paths.w2v_bert_dir, paths.w2v_stats)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointMismatch(f"w2v-BERT ({paths.w2v_bert_dir}, stats {paths.w2v_stats.name}): {e}") from e
    width = w2v.model.config.hidden_size
    gcfg, ccfg, scfg = gpt_config(cfg, width), codec_config(cfg), s2mel_config(cfg)
    for what, value in (("semantic_codec.hidden_size", ccfg.hidden_size),
                        ("s2mel.length_regulator.in_channels", scfg.semantic_dim)):
        if value != width:
            raise CheckpointMismatch(f"{paths.config_path}: {what} {value} differs from the w2v-BERT width {width}")
    if scfg.style_dim != CAMPPLUS_STYLE:
        raise CheckpointMismatch(f"{paths.config_path}: s2mel.style_encoder.dim {scfg.style_dim} differs from "
                                 f"the CAMPPlus style width {CAMPPLUS_STYLE}")
    if gcfg.number_mel_codes - 2 > ccfg.codebook_size:
        raise CheckpointMismatch(f"{paths.config_path}: gpt.number_mel_codes {gcfg.number_mel_codes} leaves "
                                 f"codes the {ccfg.codebook_size}-entry codec cannot decode")
    return Models25(
        gpt=load_gpt(paths.gpt, gcfg), codec=load_codec(paths.codec, ccfg), s2mel=load_s2mel(paths.s2mel, scfg),
        w2v=w2v, campplus=load_campplus(paths.campplus),
        vocoder=load_vocoder(paths.bigvgan_config, paths.bigvgan_generator, scfg.n_mels),
        emotion=load_emotion_matrix(paths, CAMPPLUS_STYLE, gcfg.model_dim),
        qwen=QwenEmotion(paths.qwen_dir, device=qwen_device) if paths.qwen_dir is not None else None,
    )
