"""Per-voice and per-emotion conditioning of the IndexTTS2 engine (cached by ``engine/cache.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
