"""IndexTTS-2: official checkpoint in, 22.05 kHz speech out, through the staged pipeline.

Per segment (official defaults throughout)::

    text -> normalise + BPE (split at 120 tokens like the official front end)
         -> GPT: beam-sampled semantic codes (3 beams, top-k 30, top-p 0.8, T 0.8, rep. penalty 10)
         -> GPT latent pass over [cond | text | codes]
         -> S2M: codec embedding + gpt_layer(latent) -> length regulator (int(1.72 L / speed) frames)
                 -> 25 Euler CFM steps with CFG 0.7, prompted by the reference mel
         -> BigVGAN -> waveform in [-1, 1]

``IndexTTS2Family`` is what is specific to this model (``family.py``): checkpoint layout and
loading, the BPE front end, per-voice conditioning (w2v-BERT features, codec codes, reference mel,
CAMPPlus style, S2M prompt condition, GPT speaker latents, emotion vectors; cached by the engine),
the GPT conditioning prefix, and the render step from codes to S2M input (GPT latent pass,
``gpt_layer``, codec embedding). ``IndexTTS2Engine`` is the shared ``PipelineEngine`` on it.

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from realtime_tts.audio.features import mel_spectrogram
from realtime_tts.audio.io import AudioError, load_speaker_prompt
from realtime_tts.model.gpt import SamplingParams
from realtime_tts.model.s2mel import target_lengths
from realtime_tts.text.tokenizer import split_segments

from .base import EngineError
from .checkpoints import has_weights, resolve
from .family import ModelFamily, SegmentCondition, blend_emotion, clip_emotion_vector, text_emotion_weights
from .indextts2_load import Models, load_models, place
from .pipeline import MAX_TEXT_TOKENS_PER_SEGMENT, PipelineEngine

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050


@dataclass
class VoiceConditioning:
    """What one speaker clip contributes to every segment spoken with it."""

    feats: torch.Tensor  # [1, T, W] normalised w2v-BERT layer-17 features of the 16 kHz clip
    codes: torch.Tensor  # [1, T] semantic codec codes of the clip
    ref_mel: torch.Tensor  # [1, n_mels, Tp] log mel of the 22.05 kHz clip
    style: torch.Tensor  # [1, style_dim] CAMPPlus style
    prompt: torch.Tensor  # [1, Tp, content_dim] S2M prompt condition (regulated codec embedding)
    spk_latents: torch.Tensor  # [1, 32, C] GPT speaker latents (perceiver output)
    spk_emovec: torch.Tensor  # [1, C] GPT emotion vector of the speaker features (merge base)


@dataclass
class EmotionConditioning:
    """The GPT emotion vector of one clip loaded as an emotion reference (16 kHz directly)."""

    emovec: torch.Tensor  # [1, C]


class IndexTTS2Family(ModelFamily):
    """IndexTTS-2 (``UnifiedVoice`` v2 GPT, MaskGCT codec, latent pass); see the module doc."""

    name = "indextts2"
    sample_rate = SAMPLE_RATE
    features_stage = "gpt_latent"
    code_rate = 50  # 22050 / 256 mel frames per second over 1.72 frames per code
    cache_kinds = (VoiceConditioning, EmotionConditioning)
    languages = ("zh", "en")

    def __init__(self, models: Models, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 files: Sequence[Path] = ()) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.models = place(models, self.device, dtype)
        self.gpt, self.s2mel, self.vocoder = models.gpt, models.s2mel, models.vocoder
        self.files = list(files)

    # ---- checkpoint layout and detection ----------------------------------------------

    @classmethod
    def detect(cls, path: Path) -> bool:
        return has_weights(path)

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "IndexTTS2Family":
        paths = resolve(path)
        files = [paths.config_path, paths.gpt, paths.s2mel, paths.bpe_model, paths.w2v_stats, paths.spk_matrix,
                 paths.emo_matrix, paths.w2v_bert_dir / "config.json", paths.semantic_codec, paths.campplus,
                 paths.bigvgan_config, paths.bigvgan_generator]
        return cls(load_models(paths, device, dtype), device, dtype, files)

    def weight_files(self) -> list[Path]:
        return self.files

    # ---- text front end ----------------------------------------------------------------

    def text_ids(self, text: str, max_tokens: int, language: str | None = None) -> list[list[int]]:
        """BPE ids (zh/en detected from the text; ``language`` is not needed) in pieces of at most
        ``max_tokens``, cut where the official front end cuts."""
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
        return [tok.convert_tokens_to_ids(s) for s in split_segments(pieces, max_tokens)]

    def warmup_ids(self) -> list[int]:
        return self.text_ids("Hello.", MAX_TEXT_TOKENS_PER_SEGMENT)[0] if self.models.tokenizer else [10, 11, 12]

    # ---- conditioning ------------------------------------------------------------------

    @torch.inference_mode()
    def voice_conditioning(self, src) -> VoiceConditioning:
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
        return VoiceConditioning(feats=feats, codes=codes, ref_mel=ref_mel, style=style, prompt=prompt,
                                 spk_latents=m.gpt.speaker_latents(gfeats), spk_emovec=m.gpt.emotion_vector(gfeats))

    @torch.inference_mode()
    def emotion_conditioning(self, src) -> EmotionConditioning:
        """Emotion vector of a clip loaded the official emotion way (16 kHz directly)."""
        m = self.models
        return EmotionConditioning(emovec=clip_emotion_vector(src, m.w2v, m.gpt, self.device, self.dtype))

    def emotion_weights(self, text: str) -> list[float]:
        return text_emotion_weights(self.models.qwen, text)

    def merge_emotion(self, voice: VoiceConditioning, emovec: torch.Tensor, alpha: float,
                      weights: Sequence[float] | None) -> torch.Tensor:
        return blend_emotion(voice.spk_emovec, emovec, alpha, weights, self.models.emotion, voice.style)

    def segment_condition(self, voice: VoiceConditioning, emovec: torch.Tensor,
                          language: str | None = None) -> SegmentCondition:
        return SegmentCondition(voice=voice, emovec=emovec, gpt=self.gpt.conditioning(voice.spk_latents, emovec),
                                prompt=voice.prompt, ref_mel=voice.ref_mel, style=voice.style)

    # ---- decoding and rendering ----------------------------------------------------------

    def default_sampling(self) -> SamplingParams:
        return SamplingParams(max_mel_tokens=min(1500, self.gpt.cfg.max_mel_tokens))

    @property
    def codebook_size(self) -> int:
        return self.models.codec.cfg.codebook_size

    def mel_frames(self, codes: int, speed: float) -> int:
        return int(target_lengths(torch.tensor([codes]), self.s2mel.cfg.frames_per_code, speed)[0])

    def s2m_features(self, conds: Sequence[SegmentCondition], ids: Sequence[torch.Tensor],
                     codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The GPT latent pass over [cond | text | codes], then codec embedding + gpt_layer(latent)."""
        m = self.models
        latent = m.gpt.latents(torch.cat([c.voice.spk_latents for c in conds]), torch.cat([c.emovec for c in conds]),
                               list(ids), list(codes)).float()  # [R, L, C]
        lens = torch.tensor([c.numel() for c in codes], device=self.device)
        padded = torch.zeros(len(codes), latent.size(1), dtype=torch.long, device=self.device)  # code 0 pads; masked
        for j, c in enumerate(codes):
            padded[j, : c.numel()] = c
        return m.s2mel.semantic(m.codec.vq2emb(padded).transpose(1, 2), latent), lens  # [R, L, W], [R]

    @property
    def emotion_sources(self) -> tuple[str, ...]:
        return ("vector", "reference") + (("text",) if self.models.qwen is not None else ())

    def describe(self) -> dict:
        return {"family": "IndexTTS-2", "emotion_text": self.models.qwen is not None}


class IndexTTS2Engine(PipelineEngine):
    """The staged pipeline on IndexTTS-2 (``from_checkpoints`` for an official directory)."""

    name = "indextts2"
    sample_rate = SAMPLE_RATE
    family_class = IndexTTS2Family

    def __init__(self, models: Models | IndexTTS2Family, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, **kwargs) -> None:
        family = models if isinstance(models, IndexTTS2Family) else IndexTTS2Family(models, device, dtype)
        super().__init__(family, **kwargs)

    @property
    def models(self) -> Models:
        return self.family.models

