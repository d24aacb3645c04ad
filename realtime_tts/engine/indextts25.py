"""IndexTTS-2.5: official checkpoint in, 22.05 kHz speech out, through the shared staged pipeline.

Per segment (official defaults throughout)::

    text + language -> punctuation map, normalisation per language, case, annotations, MeCab (ja)
                    -> "<|lang|> " + tiktoken ids, cut at 120 tokens like the official front end
         -> GPT: [spk_emb_proj(style) + emotion | 0 | 0] + text (+ language embedding)
                 -> beam-sampled 25 Hz codes (3 beams, top-k 30, top-p 0.8, T 0.8, rep. penalty 10)
         -> EnhancedCodec.decode: codes -> 50 Hz semantic features (no second GPT pass)
         -> S2M: length regulator to int(2 L * 1.72 * duration_factor) frames, 25 Euler CFM
                 steps with CFG 0.7, prompted by the reference mel and its w2v-BERT features
         -> BigVGAN -> waveform in [-1, 1]

``IndexTTS25Family`` is what is specific to this model (``family.py``); ``IndexTTS25Engine`` is
the shared ``PipelineEngine`` on it. The networks and their strict loaders live in
``realtime_tts.model.indextts25``, the text front end in ``realtime_tts.text.multilingual``.

Numerics as the official code: the GPT runs in bf16 where the GPU supports it natively
(``devices.pick_dtype``: compute capability >= 8.0; fp32 on CPU), everything else (codec, S2M,
BigVGAN, every reference-audio model) in fp32. Unlike our IndexTTS-2 engine the S2M estimator
is not cast: the official 2.5 code keeps it fp32.

Deliberate differences from the official code: strict loading of every file (the official loaders
are non-strict or shape-filtered; the released s2mel.pth's unused ``gpt_layer`` is accepted by name
only); the GPT code budget is capped relative to the text length (short-text runaway, see
``SamplingParams.code_budget``); the text front end's own (text/multilingual.py); segments are
the server's sentences, so the official low-memory 40-character pre-split never happens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from realtime_tts.audio.features import mel_spectrogram
from realtime_tts.audio.io import AudioError, load_speaker_prompt
from realtime_tts.model.gpt import LangText, SamplingParams
from realtime_tts.model.indextts25 import (CODE_RATE, DEFAULT_SAMPLING, FAMILY_V25, Models25, Paths25, detect, load_models,
                                           missing_files, resolve)
from realtime_tts.model.s2mel import CheckpointMismatch, mel_frames_25
from realtime_tts.model.weights import for_inference
from realtime_tts.text.multilingual import (SUPPORTED_LANGUAGES, MultilingualFrontEnd, TextTooLongError,
                                            UnsupportedLanguageError, language_id)
from realtime_tts.text.normalize import TextNormalizer

from .base import EngineError
from .checkpoints import CheckpointError, download_command
from .family import ModelFamily, SegmentCondition, blend_emotion, clip_emotion_vector, text_emotion_weights
from .indextts2_load import MelParams
from .pipeline import PipelineEngine

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050
LANGUAGES = SUPPORTED_LANGUAGES  # zh, en, ja, es, ar: what the released checkpoint was trained on
COMMON_ROW = language_id("common")  # the official row for a language it does not know (105)


@dataclass
class VoiceConditioning25:
    """What one speaker clip contributes to every segment spoken with it."""

    ref_mel: torch.Tensor  # [1, n_mels, Tp] log mel of the 22.05 kHz clip
    style: torch.Tensor  # [1, 192] CAMPPlus style (S2M style and the GPT speaker input)
    prompt: torch.Tensor  # [1, Tp, content_dim] S2M prompt condition (regulated w2v-BERT features)
    spk_emovec: torch.Tensor  # [1, C] GPT emotion vector of the speaker features (merge base)


@dataclass
class EmotionConditioning25:
    """The GPT emotion vector of one clip loaded as an emotion reference (16 kHz directly)."""

    emovec: torch.Tensor  # [1, C]


def place(models: Models25, device: torch.device, dtype: torch.dtype) -> Models25:
    """Move to ``device``; only the GPT takes ``dtype`` (as the official ``use_bf16``)."""
    for_inference(device, models.gpt, models.codec, models.s2mel, models.w2v, models.campplus, models.vocoder)
    models.gpt.to(dtype)
    models.emotion.to(device)
    return models


class IndexTTS25Family(ModelFamily):
    """IndexTTS-2.5 (``UnifiedVoice25``, ``EnhancedCodec``, no latent pass); see the module doc."""

    name = "indextts2.5"
    sample_rate = SAMPLE_RATE
    features_stage = "codec"
    code_rate = CODE_RATE  # 25: the codec doubles them to 50 Hz features
    cache_kinds = (VoiceConditioning25, EmotionConditioning25)
    languages = LANGUAGES

    def __init__(self, models: Models25, front: MultilingualFrontEnd, mel: MelParams, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 files: Sequence[Path] = ()) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.models = place(models, self.device, dtype)
        self.gpt, self.s2mel, self.vocoder = models.gpt, models.s2mel, models.vocoder
        self.front, self.mel = front, mel
        self.files = list(files)
        # the language tag that starts every segment's ids -> the GPT's language row
        tags = {front.tokenizer.special_id(f"<|{lang}|>"): language_id(lang) for lang in LANGUAGES}
        self._tag_rows = tags

    # ---- checkpoint layout and detection ----------------------------------------------

    @classmethod
    def detect(cls, path: Path) -> bool:
        try:
            return detect(path) == FAMILY_V25
        except CheckpointMismatch:
            return False

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "IndexTTS25Family":
        missing = missing_files(path)
        if missing:
            lines = "\n".join(f"  - {m}" for m in missing)
            raise CheckpointError(f"the IndexTTS-2.5 checkpoint in {path} is incomplete; missing:\n{lines}\n"
                                  f"Get it with: {download_command(path, FAMILY_V25)}")
        try:
            paths = resolve(path)
            models = load_models(paths, qwen_device=device)
        except CheckpointMismatch as e:
            raise CheckpointError(str(e)) from e
        return cls(models, front_end(paths, models.gpt.cfg), MelParams.from_config(paths.config, paths.config_path),
                   device=device, dtype=dtype, files=weight_files(paths))

    def weight_files(self) -> list[Path]:
        return self.files

    # ---- text front end ----------------------------------------------------------------

    def text_ids(self, text: str, max_tokens: int, language: str | None = None) -> list[list[int]]:
        """``<|lang|>`` + tiktoken ids per segment of at most ``max_tokens`` (the official cut);
        ``language`` None: guessed from the script (text/languages.py)."""
        try:
            pieces = self.front.segments(text, language, max_tokens)
        except (UnsupportedLanguageError, TextTooLongError) as e:
            raise EngineError(str(e)) from None
        if not pieces:
            raise EngineError(f"nothing to say in {text[:40]!r}")
        return pieces

    def gpt_texts(self, conds: Sequence[SegmentCondition], ids: Sequence[torch.Tensor]) -> list[LangText]:
        """Each piece's ids with its language row: the one its leading ``<|lang|>`` tag names (ids
        without a tag, e.g. pre-tokenised benchmark input: the request's language, else the
        official row for an unknown language)."""
        out = []
        for cond, t in zip(conds, ids, strict=True):
            row = self._tag_rows.get(int(t[0])) if t.numel() else None
            out.append(LangText(t, row if row is not None else cond.extra.get("lang_row", COMMON_ROW)))
        return out

    # ---- conditioning ------------------------------------------------------------------

    @torch.inference_mode()
    def voice_conditioning(self, src) -> VoiceConditioning25:
        """Speaker conditioning of one clip (a path, bytes or a file object)."""
        m, p = self.models, self.mel
        try:
            clip = load_speaker_prompt(src)
        except AudioError as e:
            raise EngineError(f"reference voice: {e}") from e
        if clip.info.silent:
            log.warning("reference voice %s is silent; the cloned voice will be poor", getattr(src, "name", src))
        wav16, wav22 = clip.wav_16k.to(self.device), clip.wav_22k.to(self.device)
        feats = m.w2v.encode(wav16)  # [1, T, 1024] normalised layer-17 features
        ref_mel = mel_spectrogram(wav22, p.sample_rate, p.n_fft, p.hop, p.win, p.n_mels, p.fmin, p.fmax)
        style = m.campplus.style(wav16)
        prompt = m.s2mel.prompt_condition(feats, ref_mel, style).cond  # 2.5: the features, not codec codes
        return VoiceConditioning25(ref_mel=ref_mel, style=style, prompt=prompt,
                                   spk_emovec=m.gpt.emotion_vector(feats.to(self.dtype)))

    @torch.inference_mode()
    def emotion_conditioning(self, src) -> EmotionConditioning25:
        """Emotion vector of a clip loaded the official emotion way (16 kHz directly)."""
        m = self.models
        return EmotionConditioning25(emovec=clip_emotion_vector(src, m.w2v, m.gpt, self.device, self.dtype))

    @property
    def emotion_sources(self) -> tuple[str, ...]:
        return ("vector", "reference") + (("text",) if self.models.qwen is not None else ())

    def emotion_weights(self, text: str) -> list[float]:
        """The Qwen emotion model's 8 weights (it loads on the first text emotion, not before)."""
        return text_emotion_weights(self.models.qwen, text)

    def merge_emotion(self, voice: VoiceConditioning25, emovec: torch.Tensor, alpha: float,
                      weights: Sequence[float] | None) -> torch.Tensor:
        return blend_emotion(voice.spk_emovec, emovec, alpha, weights, self.models.emotion, voice.style)

    def segment_condition(self, voice: VoiceConditioning25, emovec: torch.Tensor,
                          language: str | None = None) -> SegmentCondition:
        extra = {}
        if language is not None:  # only read for ids without a language tag (see gpt_texts)
            try:
                extra["lang_row"] = language_id(self.front.resolve_language(language, ""))
            except UnsupportedLanguageError as e:
                raise EngineError(str(e)) from None
        return SegmentCondition(voice=voice, emovec=emovec, gpt=self.gpt.conditioning(voice.style, emovec),
                                prompt=voice.prompt, ref_mel=voice.ref_mel, style=voice.style, extra=extra)

    # ---- decoding and rendering ----------------------------------------------------------

    def default_sampling(self) -> SamplingParams:
        return replace(DEFAULT_SAMPLING, max_mel_tokens=min(DEFAULT_SAMPLING.max_mel_tokens,
                                                            self.gpt.cfg.max_mel_tokens))

    @property
    def codebook_size(self) -> int:
        return self.models.codec.cfg.codebook_size

    def mel_frames(self, codes: int, speed: float) -> int:
        # The official rule int(S_infer frames * 1.72 * duration_factor) with S_infer = 2 frames per
        # code. Our requests carry speed; duration_factor = 1 / speed (a request's duration_factor
        # arrives as speed = 1 / duration_factor, so it comes back to within one rounding).
        return mel_frames_25(2 * codes, 1.0 / speed)

    def s2m_features(self, conds: Sequence[SegmentCondition], ids: Sequence[torch.Tensor],
                     codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``EnhancedCodec.decode`` of each piece's 25 Hz codes -> 50 Hz features, zero-padded.
        Decoded one piece at a time: its convolutions would read a padded neighbour's codes."""
        feats = [self.models.codec.decode(c.view(1, -1))[0] for c in codes]  # [2 L_i, W]
        lens = torch.tensor([f.size(0) for f in feats], device=self.device)
        out = feats[0].new_zeros(len(feats), int(lens.max()), feats[0].size(-1))
        for j, f in enumerate(feats):
            out[j, : f.size(0)] = f
        return out, lens

    def startup_notes(self) -> list[str]:
        return [f"text front end: {line}" for line in self.front.describe()]

    def describe(self) -> dict:
        return {"family": "IndexTTS-2.5", "emotion_text": self.models.qwen is not None,
                "precision": f"GPT {str(self.dtype).replace('torch.', '')}, everything else float32",
                "text_frontend": self.front.describe()}


def front_end(paths: Paths25, gpt_cfg) -> MultilingualFrontEnd:
    """The text front end on the checkpoint's vocabulary (and its glossary.yaml, if any, for zh/en)."""
    normalizer = TextNormalizer()
    try:
        normalizer.load_glossary(paths.root / "glossary.yaml")
        front = MultilingualFrontEnd(paths.tiktoken, normalizer, max_text_tokens=gpt_cfg.max_text_tokens)
    except ValueError as e:
        raise CheckpointError(f"{paths.tiktoken.name}: {e}") from e
    if front.tokenizer.vocab_size > gpt_cfg.text_vocab:
        raise CheckpointError(f"{paths.tiktoken.name}: {front.tokenizer.vocab_size} tokens but the GPT has "
                              f"{gpt_cfg.text_vocab} text embeddings ({paths.config_path} gpt.number_text_tokens)")
    front.load()  # TN grammars and MeCab now, not on a first request
    return front


def weight_files(paths: Paths25) -> list[Path]:
    return [paths.config_path, paths.gpt, paths.codec, paths.s2mel, paths.tiktoken, paths.w2v_stats,
            paths.spk_matrix, paths.emo_matrix, paths.w2v_bert_dir / "config.json", paths.campplus,
            paths.bigvgan_config, paths.bigvgan_generator]


class IndexTTS25Engine(PipelineEngine):
    """The staged pipeline on IndexTTS-2.5 (``from_checkpoints`` for an official directory)."""

    name = IndexTTS25Family.name
    sample_rate = SAMPLE_RATE
    family_class = IndexTTS25Family

    @property
    def models(self) -> Models25:
        return self.family.models
