"""The model-family seam: what differs between IndexTTS-2 and its successors, one object per family.

The staged pipeline (``pipeline.py``), its scheduler and runner, the S2M solver, the vocoder, the
conditioning caches and the executor are shared. A ``ModelFamily`` supplies the rest:

* checkpoint layout and detection (``detect``, ``load``, ``weight_files``);
* the text front end (``text_ids``: normalise, tokenise, split into pieces);
* conditioning from reference clips (``voice_conditioning``, ``emotion_conditioning``,
  ``emotion_weights``, ``merge_emotion``) and per segment (``segment_condition``: the GPT
  conditioning prefix and the S2M prompt);
* the GPT the decode pool drives (``gpt``: prompt/prefill/decode_step/cfg like ``UnifiedVoice``)
  and its decoding defaults (``default_sampling``);
* the render step from semantic codes to S2M input (``s2m_features``) and the mel length
  (``mel_frames``, the one place it is computed).

IndexTTS-2 (``indextts2.py``): BPE front end, conformer/perceiver speaker latents, features =
codec embedding of the codes + ``gpt_layer`` of a second (latent) GPT pass, 1.72 frames per code.
IndexTTS-2.5 (``indextts25.py``) on the same seam: tiktoken front end with a language tag, the
language row for its GPT's text embedding (``gpt_texts`` pairs each piece's ids with the row its
tag names; the decode pool passes text inputs to the GPT's ``prompt`` unread), CAMPPlus-projected
conditioning, features = its codec's decode of the 25 Hz codes to 50 Hz (no latent pass),
``int(2 L 1.72 duration)`` frames, an S2M prompt from normalised w2v-BERT features. See
docs/architecture.md, "Adding a model family".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from realtime_tts.audio.io import AudioError, load_emotion_prompt
from realtime_tts.model.gpt import SamplingParams

from .base import EngineError


@dataclass
class SegmentCondition:
    """Everything a segment's passes need from its voice and emotion (computed once per segment)."""

    voice: Any  # the family's per-voice conditioning (cached by clip content)
    emovec: torch.Tensor  # [1, C] the segment's emotion vector
    gpt: torch.Tensor  # [1, n, C] the GPT conditioning prefix the decode pool prefills
    prompt: torch.Tensor  # [1, Tp, content_dim] S2M prompt condition
    ref_mel: torch.Tensor  # [1, n_mels, Tp] reference mel (the S2M prompt frames)
    style: torch.Tensor  # [1, style_dim] CAMPPlus speaker style
    extra: dict[str, Any] = field(default_factory=dict)  # family-specific inputs (e.g. a language id)

    @property
    def prompt_frames(self) -> int:
        return self.ref_mel.size(-1)


def clip_emotion_vector(src, w2v, gpt, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, C] GPT emotion vector of a clip loaded as an emotion reference, the official way (16 kHz
    directly, no speaker-prompt trimming); both families compute it alike."""
    try:
        clip = load_emotion_prompt(src)
    except AudioError as e:
        raise EngineError(f"emotion reference: {e}") from e
    return gpt.emotion_vector(w2v.encode(clip.wav.to(device)).to(dtype))


def text_emotion_weights(qwen: Any, text: str) -> list[float]:
    """The checkpoint's Qwen emotion model's 8 weights for ``text``; both families ask it alike,
    and EngineError when the checkpoint has none."""
    if qwen is None:
        raise EngineError("emotion text needs the Qwen emotion model (qwen0.6bemo4-merge/ in the "
                          "checkpoint directory); send an emotion vector or reference clip instead")
    return list(qwen.analyze(text).values())


def blend_emotion(base: torch.Tensor, emovec: torch.Tensor, alpha: float, weights: Sequence[float] | None,
                  matrix: Any, style: torch.Tensor) -> torch.Tensor:
    """The official emotion merge both families share: the speaker's own [1, C] vector ``base``
    moved by ``alpha`` towards an emotion clip's ``emovec``; with 8 emotion ``weights`` (a vector or
    the Qwen answer, already scaled by alpha) mixed further through the emotion ``matrix``
    (``EmotionMatrix.final_emotion_vector``, fp32) by the speaker ``style``."""
    merged = base + alpha * (emovec - base)
    if weights is None:
        return merged
    return matrix.final_emotion_vector(weights, style, merged.float()).to(base.dtype)


class ModelFamily(ABC):
    """One model family's loaded networks and what is specific to it (see the module doc)."""

    name: ClassVar[str]
    sample_rate: ClassVar[int]
    features_stage: ClassVar[str]  # stage name of ``s2m_features`` in the timings
    code_rate: ClassVar[int]  # semantic codes (GPT steps) per second of speech at speed 1
    cache_kinds: ClassVar[tuple[type, ...]]  # the dataclasses the conditioning cache stores
    languages: ClassVar[tuple[str, ...]]  # language codes (ISO 639 primary subtags) its front end speaks

    gpt: Any  # the autoregressive model the decode pool drives
    s2mel: Any  # realtime_tts.model.s2mel.S2Mel
    vocoder: Any  # realtime_tts.model.bigvgan.BigVGAN
    device: torch.device
    dtype: torch.dtype

    # ---- checkpoint layout and detection ----------------------------------------------

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` holds a checkpoint of this family (without loading it)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "ModelFamily":
        """Build and strictly load every network; errors name the file and key."""

    @abstractmethod
    def weight_files(self) -> list[Path]:
        """The files whose identity keys the conditioning cache (empty: built in memory)."""

    # ---- text front end ----------------------------------------------------------------

    @abstractmethod
    def text_ids(self, text: str, max_tokens: int, language: str | None = None) -> list[list[int]]:
        """Token ids of ``text`` in pieces of at most ``max_tokens`` (the official split);
        ``language`` is the request's hint (None: detect)."""

    # ---- conditioning ------------------------------------------------------------------

    @abstractmethod
    def voice_conditioning(self, src) -> Any:
        """Per-voice conditioning of a speaker clip (a path, bytes or a file object)."""

    @abstractmethod
    def emotion_conditioning(self, src) -> Any:
        """Conditioning of a clip used as an emotion reference (has ``emovec`` [1, C])."""

    @property
    def emotion_sources(self) -> tuple[str, ...]:
        """The ``Emotion`` drivers this family follows ("vector", "reference", "text")."""
        return ("vector", "reference")

    @abstractmethod
    def emotion_weights(self, text: str) -> list[float]:
        """8 emotion weights for a free-text description; EngineError when unsupported."""

    @abstractmethod
    def merge_emotion(self, voice: Any, emovec: torch.Tensor, alpha: float,
                      weights: Sequence[float] | None) -> torch.Tensor:
        """The segment's [1, C] emotion vector from the voice, an emotion clip's vector, the
        clip's weight ``alpha`` and optional 8 emotion weights."""

    @abstractmethod
    def segment_condition(self, voice: Any, emovec: torch.Tensor, language: str | None = None) -> SegmentCondition:
        """What every pass of one segment needs (GPT prefix, S2M prompt)."""

    def gpt_texts(self, conds: Sequence[SegmentCondition], ids: Sequence[torch.Tensor]) -> Sequence[Any]:
        """The text inputs of the GPT's ``prompt`` for these pieces (the decode pool passes them
        through): the token ids, unless the family's GPT needs more (IndexTTS-2.5: the language)."""
        return ids

    # ---- decoding and rendering ----------------------------------------------------------

    @abstractmethod
    def default_sampling(self) -> SamplingParams:
        """The official decoding configuration."""

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Codes the render step accepts: ``0 .. codebook_size - 1``."""

    @abstractmethod
    def mel_frames(self, codes: int, speed: float) -> int:
        """Mel frames S2M generates for ``codes`` semantic codes at ``speed``."""

    @abstractmethod
    def s2m_features(self, conds: Sequence[SegmentCondition], ids: Sequence[torch.Tensor],
                     codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Semantic codes to S2M input: ([R, L, W] features, [R] valid lengths)."""

    def describe(self) -> dict:
        """Facts for /health (merged into the engine's)."""
        return {}

    def startup_notes(self) -> list[str]:
        """Lines for the start-up log once loaded (e.g. which text normaliser serves which language)."""
        return []

    def warmup_ids(self) -> list[int]:
        """Token ids of a short text for the warm-up run."""
        return self.text_ids("Hello.", 120)[0]
