"""The IndexTTS2 engine: official checkpoint in, 22.05 kHz speech out, one text segment per call.

Per segment (official defaults throughout)::

    text -> normalise + BPE (split at 120 tokens like the official front end)
         -> GPT: beam-sampled semantic codes (3 beams, top-k 30, top-p 0.8, T 0.8, rep. penalty 10)
         -> GPT latent pass over [cond | text | codes]
         -> S2M: codec embedding + gpt_layer(latent) -> length regulator (int(1.72 L / speed) frames)
                 -> 25 Euler CFM steps with CFG 0.7, prompted by the reference mel
         -> BigVGAN -> waveform in [-1, 1]

Pieces of one segment longer than 120 tokens are joined with 200 ms of silence, as the official
code does between segments (the server adds the same pause between the segments it sends).

``open_batch`` (the batching executor's path) and ``run_batch`` run many segments through shared
passes with continuous batching (``continuous.py``): segments join the running GPT decode at any
step, and pieces whose codes are complete render together (latent pass, masked S2M per speed and
length bucket, masked BigVGAN). Each segment draws from its own generator, so a batched segment
equals the same segment synthesized alone.

Conditioning (w2v-BERT features, codec codes, reference mel, CAMPPlus style, S2M prompt condition,
GPT speaker latents, emotion vectors) is computed once per clip content and cached, in memory
(LRU) and on disk (``cache_dir``), see ``conditioning.py``.

Numerics. CPU: everything fp32 (bf16 on CPU is ~10x slower). CUDA: the GPT and the S2M DiT
estimator run in bf16 when the GPU supports it natively (compute capability >= 8.0), fp32
otherwise; logits, sampling, the CFM state, the length regulator, BigVGAN and every reference-audio
model stay fp32. The official fp16 mode halves only the GPT; bf16 has fp32's range, so the
conformer/perceiver conditioning and the DiT's AdaLN/RoPE paths do not overflow. bf16 output is
not bit-comparable with the official fp32 path: the golden test runs fp32 on CPU.

Deviations from the official code, all deliberate: strict loading of every file (the official S2M
loader silently skips mismatched keys); the GPT code budget is capped relative to the text length
(short-text runaway, see ``SamplingParams.code_budget``); ``speed`` scales the mel length (v2 has no
speed control in the GPT; speed 1.0 is exactly the official length); optional removal of long
silence-code runs (off by default; the official v2 code never calls it).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from realtime_tts.audio.features import mel_spectrogram
from realtime_tts.audio.io import AudioError, load_emotion_prompt, load_speaker_prompt
from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig
from realtime_tts.model.campplus import CAMPPlus
from realtime_tts.model.codec import CodecConfig, SemanticCodec
from realtime_tts.model.emotion import EmotionMatrix, QwenEmotion, scale_by_alpha
from realtime_tts.model.gpt import ConformerConfig, GPTConfig, SamplingParams, UnifiedVoice, generate
from realtime_tts.model.gpt import remove_long_silence as shrink_silence
from realtime_tts.model.s2mel import CheckpointMismatch, PromptCondition, S2Mel, S2MelConfig
from realtime_tts.model.w2vbert import SemanticEncoder
from realtime_tts.text.normalize import TextNormalizer
from realtime_tts.text.tokenizer import TextTokenizer, split_segments

from . import conditioning as cond
from .continuous import ContinuousBatch, check_text
from .base import CancelToken, Emotion, Engine, EngineError, SegmentAudio, SynthesisOptions, Voice
from .checkpoints import CheckpointError, CheckpointPaths, load_state_dict_strict, read_state_dict, resolve

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
MAX_TEXT_TOKENS_PER_SEGMENT = 120  # official default
SEGMENT_GAP_S = 0.2  # official silence between the pieces of a segment
CPU_RTF_2_CORES = 20.0  # measured whole-pipeline RTF on 2 cores, fp32 (reference notes, anchors 4.5)


# ----------------------------------------------------------------------------- devices


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available")
    return dev


def pick_dtype(device: torch.device, dtype: str | torch.dtype = "auto") -> torch.dtype:
    """bf16 on GPUs with native bf16 (sm80+), fp32 otherwise; explicit choices are honoured."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise EngineError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
        chosen = names[dtype]
        if device.type == "cpu" and chosen != torch.float32:
            log.warning("%s on CPU is far slower than fp32 (no native kernels); consider --dtype fp32", dtype)
        return chosen
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float32


def expected_cpu_rtf(threads: int | None = None) -> float:
    """Rough whole-pipeline real-time factor on CPU, scaled from the 2-core measurement."""
    n = threads or torch.get_num_threads()
    return max(3.0, CPU_RTF_2_CORES * 2 / max(1, n))


# ----------------------------------------------------------------------------- configs


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


# ----------------------------------------------------------------------------- loading


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

    sc = _section(cfg, "semantic_codec", cfg_path)
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

    net = read_state_dict(paths.s2mel, subkey="net", file_label=paths.s2mel.name)
    try:
        d1 = net["gpt_layer.0.weight"].shape[0]
        d2 = net["gpt_layer.1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{paths.s2mel.name}: no entry {e.args[0]!r} under 'net'") from e
    scfg = s2mel_config(cfg, gcfg.model_dim, (d1, d2), cfg_path)
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

    label = "CAMPPlus (campplus_cn_common.bin)"
    campplus = _campplus_from_state(read_state_dict(paths.campplus, file_label=label), label)
    load_state_dict_strict(campplus, paths.campplus, file_label=label)
    if campplus.xvector.dense.linear.weight.shape[0] != scfg.style_dim:
        raise CheckpointError(f"{label}: style width {campplus.xvector.dense.linear.weight.shape[0]} differs from "
                              f"s2mel.style_encoder.dim {scfg.style_dim} in {cfg_path}")

    try:
        vcfg = BigVGANConfig.from_json(paths.bigvgan_config)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"BigVGAN config ({paths.bigvgan_config}): {e}") from e
    if vcfg.num_mels != scfg.n_mels:
        raise CheckpointError(f"BigVGAN num_mels {vcfg.num_mels} differs from the S2M mel bins {scfg.n_mels}")
    vocoder = BigVGAN(vcfg)
    try:
        vocoder.load_official(read_state_dict(paths.bigvgan_generator, subkey="generator",
                                              file_label="bigvgan_generator.pt"))
    except CheckpointMismatch as e:
        raise CheckpointError(f"bigvgan_generator.pt ({paths.bigvgan_generator}): {e}") from e

    spk = _load_matrix(paths.spk_matrix, paths.spk_matrix.name)
    emo = _load_matrix(paths.emo_matrix, paths.emo_matrix.name)
    if spk.shape[1] != scfg.style_dim or emo.shape[1] != gcfg.model_dim:
        raise CheckpointError(f"emotion matrices: {paths.spk_matrix.name} is {list(spk.shape)} (want [73, "
                              f"{scfg.style_dim}]), {paths.emo_matrix.name} is {list(emo.shape)} (want [73, "
                              f"{gcfg.model_dim}])")
    try:
        matrix = EmotionMatrix(spk, emo, cfg["emo_num"])
    except ValueError as e:
        raise CheckpointError(f"emotion matrices ({paths.spk_matrix.name}, {paths.emo_matrix.name}): {e}") from e

    normalizer = TextNormalizer()
    glossary = paths.root / "glossary.yaml"
    try:
        normalizer.load_glossary(glossary)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    tokenizer = TextTokenizer(paths.bpe_model, normalizer)
    if tokenizer.vocab_size > gcfg.text_vocab:
        raise CheckpointError(f"{paths.bpe_model.name}: {tokenizer.vocab_size} pieces but the GPT has "
                              f"{gcfg.text_vocab} text embeddings")
    qwen = QwenEmotion(paths.qwen_dir, device=device) if paths.qwen_dir is not None else None
    return Models(gpt=gpt, s2mel=s2mel, codec=codec, w2v=w2v, campplus=campplus, vocoder=vocoder,
                  emotion=matrix, tokenizer=tokenizer, mel=MelParams.from_config(cfg, cfg_path), qwen=qwen)


def place(models: Models, device: torch.device, dtype: torch.dtype) -> Models:
    """Move to ``device``; the GPT and the DiT estimator take ``dtype``, the rest stays fp32."""
    for m in (models.gpt, models.s2mel, models.codec, models.w2v, models.campplus, models.vocoder):
        m.to(device).eval()
        for p in m.parameters():
            p.requires_grad_(False)
    models.gpt.to(dtype)
    models.s2mel.cfm.estimator.to(dtype)
    models.emotion.to(device)
    return models


# ----------------------------------------------------------------------------- engine


def synthetic_voice_wav(seconds: float = 1.5, sr: int = 22050) -> bytes:
    """A voiced synthetic clip as WAV bytes (warm-up and benchmarks; no file needed)."""
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(130 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2 * np.sin(np.pi * t / seconds)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class IndexTTS2Engine(Engine):
    name = "indextts2"
    sample_rate = SAMPLE_RATE
    languages = ("zh", "en")
    clones_voices = True

    @property
    def needs_voice(self) -> bool:
        return self.default_voice is None

    @property
    def emotion_sources(self) -> tuple[str, ...]:
        return ("vector", "reference") + (("text",) if self.models.qwen is not None else ())

    def __init__(self, models: Models, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 sampling: SamplingParams | None = None, cfm_steps: int = 25, cfg_rate: float = 0.7,
                 max_text_tokens_per_segment: int = MAX_TEXT_TOKENS_PER_SEGMENT, cache_capacity: int = 32,
                 cache_dir: str | Path | None = None, fingerprint: str = "", seed: int | None = None,
                 remove_long_silence: bool = False, silence_code: int = 52,
                 default_voice: Voice | None = None, source: str = "", compile: bool = False) -> None:
        from realtime_tts.server.voices import ConditioningCache

        self.device = torch.device(device)
        self.dtype = dtype
        self.models = place(models, self.device, dtype)
        gcfg = models.gpt.cfg
        self.sampling = sampling or SamplingParams(max_mel_tokens=min(1500, gcfg.max_mel_tokens))
        if self.sampling.max_mel_tokens > gcfg.max_mel_tokens:
            raise EngineError(f"max_mel_tokens {self.sampling.max_mel_tokens} exceeds the model's "
                              f"{gcfg.max_mel_tokens}")
        self.cfm_steps, self.cfg_rate = cfm_steps, cfg_rate
        self.max_segment_tokens = min(max_text_tokens_per_segment, gcfg.max_text_tokens)
        self.remove_long_silence, self.silence_code = remove_long_silence, silence_code
        self.default_voice = default_voice
        self.source = source
        self.compiled = compile
        if compile and self.device.type == "cpu":
            log.warning("--compile on CPU makes the GPT slower (docs/benchmarks.md: 270 vs 159 ms per code) and "
                        "S2M no faster; it is meant for CUDA")
        if compile:  # the two hot loops; warmup() pays for the compilation before the server is ready
            self.models.gpt.compile_decode_step()
            self.models.s2mel.cfm.compile_estimator()
        if cache_dir is not None and not fingerprint:
            raise ValueError("a disk conditioning cache needs the model fingerprint (see from_checkpoints)")
        # entries are only valid for these weights: without a fingerprint, for this instance only
        self.fingerprint = fingerprint or f"instance-{os.getpid()}-{id(self)}"
        disk = {}
        if cache_dir is not None:
            disk = dict(disk_dir=Path(cache_dir), dump=cond.dump, load=cond.loader(self.device))
        self.voices = ConditioningCache(cache_capacity, **disk)
        self.emotions = ConditioningCache(cache_capacity, **disk)
        self._emotion_text: dict[str, list[float]] = {}  # Qwen answers, by text hash (small)
        self._seed = seed
        self._calls = itertools.count()  # synthesize calls (batch items) so far: call n uses seed + n
        self._lock = threading.Lock()  # one synthesis at a time (the executor already serialises)
        self.warmed_up = False
        if self.device.type == "cpu":
            log.warning("IndexTTS2 runs on CPU with %d threads: expect a real-time factor of about %.0f "
                        "(seconds of compute per second of speech); use a CUDA GPU for real time",
                        torch.get_num_threads(), expected_cpu_rtf())

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def from_checkpoints(cls, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                         cache_dir: str | Path | None = "auto", **kwargs) -> "IndexTTS2Engine":
        """Load the official checkpoint directory (config.yaml, gpt.pth, ..., hf_cache/).

        ``cache_dir="auto"`` keeps the conditioning cache in ``<path>/.cache/conditioning`` when
        that is writable (memory only otherwise); ``None`` disables the disk cache.
        """
        dev = pick_device(device)
        dt = pick_dtype(dev, dtype)
        paths = resolve(path)
        t0 = time.perf_counter()
        models = load_models(paths, dev, dt)
        files = [paths.config_path, paths.gpt, paths.s2mel, paths.bpe_model, paths.w2v_stats, paths.spk_matrix,
                 paths.emo_matrix, paths.w2v_bert_dir / "config.json", paths.semantic_codec, paths.campplus,
                 paths.bigvgan_config, paths.bigvgan_generator]
        if cache_dir == "auto":
            cache_dir = Path(path) / ".cache" / "conditioning"
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
                if not os.access(cache_dir, os.W_OK):
                    raise OSError("not writable")
            except OSError as e:
                log.warning("conditioning cache at %s unavailable (%s); keeping it in memory only", cache_dir, e)
                cache_dir = None
        engine = cls(models, device=dev, dtype=dt, cache_dir=cache_dir,
                     fingerprint=cond.fingerprint(files, f"{dev.type}:{dt}"), source=str(path), **kwargs)
        log.info("IndexTTS2 loaded from %s on %s (%s) in %.1f s", path, dev, str(dt).replace("torch.", ""),
                 time.perf_counter() - t0)
        return engine

    # ---- conditioning ---------------------------------------------------------------

    def _voice(self, voice: Voice) -> cond.VoiceConditioning:
        key = cond.cache_key("voice", voice.content_hash, self.fingerprint)
        return self.voices.get_or_compute(key, lambda: self.compute_voice(voice.audio_path))

    @torch.inference_mode()
    def compute_voice(self, src) -> cond.VoiceConditioning:
        """Speaker conditioning of one clip (a path, bytes or a file object)."""
        m = self.models
        try:
            clip = load_speaker_prompt(src)
        except AudioError as e:
            raise EngineError(f"reference voice: {e}") from e
        if clip.info.silent:
            log.warning("reference voice %s is silent; the cloned voice will be poor", getattr(src, "name", src))
        wav16, wav22 = clip.wav_16k.to(self.device), clip.wav_22k.to(self.device)
        feats = m.w2v.encode(wav16)  # [1, T, W]
        codes, s_ref = m.codec.quantize(feats)
        p = m.mel
        ref_mel = mel_spectrogram(wav22, p.sample_rate, p.n_fft, p.hop, p.win, p.n_mels, p.fmin, p.fmax)
        style = m.campplus.style(wav16)
        prompt = m.s2mel.prompt_condition(s_ref, ref_mel, style).cond
        gfeats = feats.to(self.dtype)
        latents = m.gpt.speaker_latents(gfeats)
        emovec = m.gpt.emotion_vector(gfeats)
        return cond.VoiceConditioning(feats=feats, codes=codes, ref_mel=ref_mel, style=style, prompt=prompt,
                                      spk_latents=latents, spk_emovec=emovec)

    def _emotion_clip(self, voice: Voice) -> cond.EmotionConditioning:
        key = cond.cache_key("emotion", voice.content_hash, self.fingerprint)
        return self.emotions.get_or_compute(key, lambda: self.compute_emotion(voice.audio_path))

    @torch.inference_mode()
    def compute_emotion(self, src) -> cond.EmotionConditioning:
        """Emotion vector of a clip loaded the official emotion way (16 kHz directly)."""
        try:
            clip = load_emotion_prompt(src)
        except AudioError as e:
            raise EngineError(f"emotion reference: {e}") from e
        feats = self.models.w2v.encode(clip.wav.to(self.device)).to(self.dtype)
        return cond.EmotionConditioning(emovec=self.models.gpt.emotion_vector(feats))

    def _text_weights(self, text: str) -> list[float]:
        key = cond.text_hash(text)
        if key not in self._emotion_text:
            if self.models.qwen is None:
                raise EngineError("emotion text needs the Qwen emotion model (qwen0.6bemo4-merge/ in the "
                                  "checkpoint directory); send an emotion vector or reference clip instead")
            weights = list(self.models.qwen.analyze(text).values())
            if len(self._emotion_text) >= 1024:
                self._emotion_text.pop(next(iter(self._emotion_text)))
            self._emotion_text[key] = weights
        return self._emotion_text[key]

    def emotion_vector(self, voice: Voice, vc: cond.VoiceConditioning, emotion: Emotion | None) -> torch.Tensor:
        """The [1, C] vector added to the speaker latents (official precedence text > vector > clip)."""
        weights = None
        alpha = 1.0
        ref = voice
        if emotion is not None:
            if emotion.text:
                weights = scale_by_alpha(self._text_weights(emotion.text), emotion.alpha)
            elif emotion.vector is not None:
                weights = scale_by_alpha(emotion.vector, emotion.alpha)
            elif emotion.reference is not None:
                ref, alpha = emotion.reference, float(emotion.alpha)
        # without a reference clip the speaker clip (loaded as an emotion clip) is the reference, alpha 1
        e = self._emotion_clip(ref).emovec
        base = vc.spk_emovec
        merged = base + alpha * (e - base)
        if weights is None:
            return merged
        return self.models.emotion.final_emotion_vector(weights, vc.style, merged.float()).to(self.dtype)

    # ---- synthesis ------------------------------------------------------------------

    def text_ids(self, text: str) -> list[list[int]]:
        """Token ids of ``text`` split into pieces of at most the segment limit (official cut)."""
        tok = self.models.tokenizer
        if tok is None:
            raise EngineError("this engine has no text tokenizer (built without bpe.model)")
        pieces = tok.tokenize(text)
        if not pieces:
            raise EngineError(f"nothing to say in {text[:40]!r}")
        ids = tok.convert_tokens_to_ids(pieces)
        unknown = [p for p, i in zip(pieces, ids) if i == tok.unk_id]
        if unknown:
            log.warning("text has %d token(s) the BPE model does not know: %s", len(unknown), unknown[:10])
        segments = split_segments(pieces, self.max_segment_tokens)
        return [tok.convert_tokens_to_ids(s) for s in segments]

    def call_generator(self) -> torch.Generator:
        """The generator of the next synthesize call or batch item.

        A seeded engine seeds call n with ``seed + n``: call 0 draws what the official code draws
        after ``torch.manual_seed(seed)``, and call n draws the same whether it runs alone
        (``synthesize``) or inside a batch (``synthesize_batch``). An unseeded engine seeds each call
        from torch's global RNG.
        """
        n = next(self._calls)
        seed = self._seed + n if self._seed is not None else int(torch.randint(0, 2**62, ()))
        return torch.Generator(device=self.device).manual_seed(seed)

    def synthesize(self, text: str, options: SynthesisOptions, cancel: CancelToken) -> SegmentAudio:
        generator = self.call_generator()  # every call takes its seed, even one that fails
        check_text(text)
        return self.run(text, options, cancel, generator=generator)

    def voice_for(self, options: SynthesisOptions) -> Voice:
        """The reference voice of a request: its own, else the default; EngineError without one."""
        voice = options.voice or self.default_voice
        if voice is None:
            raise EngineError("indextts2 needs a reference voice: upload one or configure default_voice")
        return voice

    def forbidden_codes(self, suppress_stop: bool) -> tuple[int, ...]:
        """Codes the GPT may not choose: stop and start when a code count is forced."""
        cfg = self.models.gpt.cfg
        return (cfg.stop_mel_token, cfg.start_mel_token) if suppress_stop else ()

    def checked_codes(self, codes: torch.Tensor, stopped: bool, text_tokens: int, suppress_stop: bool) -> torch.Tensor:
        """A piece's generated codes made ready for S2M (on the device, long silences shrunk when
        configured); EngineError for codes S2M cannot take."""
        codes = codes.to(self.device)
        book = self.models.codec.cfg.codebook_size
        if codes.numel() and int(codes.max()) >= book:
            # the official code would index out of range here (possible only for the start code)
            raise EngineError(f"the GPT emitted code {int(codes.max())}, outside the {book}-entry codebook")
        if not stopped and not suppress_stop:
            log.warning("generation stopped at the code budget (%d codes) without a stop token; text tokens: %d",
                        codes.numel(), text_tokens)
        if self.remove_long_silence:
            codes = shrink_silence(codes, self.silence_code)
        if codes.numel() == 0:
            raise EngineError("the GPT produced no speech codes for this text")
        return codes

    def run(self, text: str | list[list[int]], options: SynthesisOptions, cancel: CancelToken | None = None, *,
            generator: torch.Generator | None = None, max_codes: int | None = None,
            suppress_stop: bool = False) -> SegmentAudio:
        """The whole pipeline for one segment (text, or pre-tokenised pieces).

        ``generator`` drives every random draw (GPT sampling, then CFM noise, segment by segment),
        in the order of the official code's global RNG. ``max_codes`` caps the codes per piece and
        ``suppress_stop`` forbids the stop (and start) code, so exactly ``max_codes`` codes come out
        (benchmarks, warm-up).
        """
        cancel = cancel or CancelToken()
        stages: dict[str, float] = {}

        def tick(stage: str, t0: float) -> float:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            stages[stage] = stages.get(stage, 0.0) + now - t0
            return now

        voice = self.voice_for(options)
        with self._lock, torch.inference_mode():
            t = time.perf_counter()
            pieces = self.text_ids(text) if isinstance(text, str) else text
            cancel.raise_if_cancelled()
            vc = self._voice(voice)
            emovec = self.emotion_vector(voice, vc, options.emotion)
            t = tick("conditioning", t)
            wavs = []
            for ids in pieces:
                wavs.append(self._piece(ids, vc, emovec, options.speed, cancel, generator, max_codes,
                                        suppress_stop, tick))
        return SegmentAudio(pcm=self._join(wavs), sample_rate=self.sample_rate, stages=stages)

    def _join(self, wavs: list[np.ndarray]) -> np.ndarray:
        """The pieces of one segment, 200 ms of silence between them."""
        gap = np.zeros(int(self.sample_rate * SEGMENT_GAP_S), dtype=np.float32)
        return np.concatenate([w for i, wav in enumerate(wavs) for w in ((gap, wav) if i else (wav,))])

    def _piece(self, ids, vc, emovec, speed, cancel, generator, max_codes, suppress_stop, tick) -> np.ndarray:
        m = self.models
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        params = self.sampling
        if max_codes is not None:
            params = replace(params, max_mel_tokens=max_codes, runaway_guard=False)
        t = time.perf_counter()
        gpt_cond = m.gpt.conditioning(vc.spk_latents, emovec)
        gen = generate(m.gpt, gpt_cond, [ids], params, cancel=cancel, generator=generator,
                       forbid=self.forbidden_codes(suppress_stop))
        codes = self.checked_codes(gen.codes[0], gen.stopped[0], ids.numel(), suppress_stop)
        t = tick("gpt", t)
        cancel.raise_if_cancelled()
        latent = m.gpt.latents(vc.spk_latents, emovec, [ids], [codes]).float()  # [1, L, C]
        t = tick("gpt_latent", t)
        code_emb = m.codec.vq2emb(codes.unsqueeze(0)).transpose(1, 2)  # [1, L, W]
        s_infer = m.s2mel.semantic(code_emb, latent)
        prompt = PromptCondition(cond=vc.prompt, mel=vc.ref_mel, style=vc.style,
                                 lengths=torch.tensor([vc.ref_mel.size(-1)], device=self.device))
        mel, _ = m.s2mel.generate(s_infer, torch.tensor([codes.numel()], device=self.device), prompt, speed=speed,
                                  steps=self.cfm_steps, cfg_rate=self.cfg_rate, generator=generator, cancel=cancel)
        t = tick("s2mel", t)
        cancel.raise_if_cancelled()
        wav = m.vocoder(mel.float())[0, 0]  # [N]
        tick("vocoder", t)
        return wav.float().cpu().numpy()

    # ---- batched synthesis ----------------------------------------------------------

    def synthesize_batch(self, items: list[tuple[str, SynthesisOptions, CancelToken]]
                         ) -> list[SegmentAudio | BaseException]:
        return self.run_batch(items)

    def open_batch(self, capacity: int, **kwargs) -> ContinuousBatch:
        """A continuous batch of up to ``capacity`` decoding segments (the batching executor's
        engine side; see ``continuous.py``)."""
        return ContinuousBatch(self, capacity, **kwargs)

    def run_batch(self, items: list[tuple[str, SynthesisOptions, CancelToken]], *,
                  generators: Sequence[torch.Generator] | None = None, max_codes: Sequence[int] | None = None,
                  suppress_stop: bool = False) -> list[SegmentAudio | BaseException]:
        """Several segments through shared model passes; slot i is item i's audio or its error.

        All items enter one ``ContinuousBatch`` at once and it steps until every one is done: the
        GPT decodes every item's current piece together (each with its own voice and emotion
        conditioning, beams included), pieces render (latent pass, masked S2M per speed and length
        bucket, masked BigVGAN) as their codes complete.

        Randomness: item i draws only from ``generators[i]`` (default: ``call_generator()`` per
        item, as ``synthesize`` takes one per call), in the order ``run`` draws from its generator,
        so item i equals ``run(item i, generator=g)`` with ``g`` seeded like ``generators[i]``, in
        every decoding mode (codes exactly; audio to float rounding of the batched passes).

        A cancelled item leaves at the next step and gets ``Cancelled``; the others go on.
        ``max_codes`` (one per item) and ``suppress_stop`` force code counts as in ``run``.
        """
        if generators is None:
            generators = [self.call_generator() for _ in items]
        if len(generators) != len(items) or not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError(f"run_batch needs one torch.Generator per item ({len(items)}), got {generators!r}")
        if max_codes is not None and len(max_codes) != len(items):
            raise ValueError(f"run_batch needs one max_codes per item ({len(items)}), got {list(max_codes)}")
        results: list[SegmentAudio | BaseException | None] = [None] * len(items)
        batch = self.open_batch(max(1, len(items)), suppress_stop=suppress_stop)
        for i, (text, options, cancel) in enumerate(items):
            try:
                batch.add(i, text, options, cancel, generator=generators[i],
                          max_codes=None if max_codes is None else max_codes[i])
            except Exception as e:
                results[i] = e
        while len(batch):
            for i, result in batch.step():
                results[i] = result
        return results  # type: ignore[return-value]

    # ---- lifecycle ------------------------------------------------------------------

    def warmup(self) -> None:
        """One short synthesis with a synthetic voice (kernels, allocator, caches, and with
        ``compile`` the one compilation of the decode step and the S2M estimator, which then serves
        every batch size and length); the engine's seeded generator and the conditioning cache are
        left untouched."""
        t0 = time.perf_counter()
        vc = self.compute_voice(io.BytesIO(synthetic_voice_wav()))
        with self._lock, torch.inference_mode():
            emo = self.compute_emotion(io.BytesIO(synthetic_voice_wav())).emovec
            merged = vc.spk_emovec + (emo - vc.spk_emovec)
            ids = self.text_ids("Hello.")[0] if self.models.tokenizer is not None else [10, 11, 12]
            g = torch.Generator(device=self.device).manual_seed(0)
            self._piece(ids, vc, merged, 1.0, CancelToken(), g, min(20, self.sampling.max_mel_tokens), True,
                        lambda stage, t: time.perf_counter())
        self.warmed_up = True
        log.info("IndexTTS2 warm-up done in %.1f s", time.perf_counter() - t0)

    def describe(self) -> dict:
        info = {
            **super().describe(),
            "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            "checkpoint": self.source, "decoding": self.sampling.mode, "num_beams": self.sampling.num_beams,
            "cfm_steps": self.cfm_steps, "compiled": self.compiled, "emotion_text": self.models.qwen is not None,
            "voice_cache": {"entries": len(self.voices), "hits": self.voices.hits, "misses": self.voices.misses,
                            "disk": str(self.voices.disk_dir) if self.voices.disk_dir else None},
            "warmed_up": self.warmed_up,
        }
        if self.device.type == "cpu":
            info["expected_rtf"] = round(expected_cpu_rtf(), 1)
        elif self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def close(self) -> None:
        self.voices.clear()
        self.emotions.clear()
        self._emotion_text.clear()
        if self.device.type == "cuda":
            self.models = None  # type: ignore[assignment]
            torch.cuda.empty_cache()
