"""UnifiedVoice v2 in ``campplus`` speaker mode: the IndexTTS-2.5 text-to-semantic GPT.

Same class upstream as IndexTTS-2's GPT (``indextts/gpt/model_v2.py``), built with
``spk_cond_mode="campplus"``: no speaker conformer/perceiver and no ``speed_emb``; instead
``spk_emb_proj`` (Linear 192 -> C) takes the CAMPPlus style of the reference clip (the same [1, 192]
vector S2M uses), and ``lang_embedding`` (107 rows) is added at every text position. Parameter
names are the official ones (456 entries at full size): ``gpt.pth`` loads with strict=True.

Sequence layout (one row):
    [spk_emb_proj(style) + emotion vector | 0 | 0]      3 conditioning vectors
    [0, text ids, 1] + lang_embedding(lang)             text positions 0..n'+1
    [start_mel, code_0, code_1, ...]                    mel positions as IndexTTS-2

Text ids 0 and 1 (the start/stop text ids, which the 2.5 tokenizer also gives to "!" and '"') are
removed before wrapping, so every row upstream starts with r >= 1 zero vectors under attention mask
0 (r = ids removed, the trailing 1 the front end appends included). Masked keys get exactly zero
attention weight and the GPT body has no position input, so those rows change nothing: they are
left out here, and the golden tests check the logits against the padded official rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .base import CodeGPT
from .config import GPT25Config


class LangText(NamedTuple):
    """One text input of the 2.5 GPT: token ids and the language row added to their embeddings
    (what a decode pool hands to ``prompt`` unread)."""

    ids: torch.Tensor  # [n] text token ids
    lang: int  # official language index: en 0, zh 1, es 3, ja 7, ar 13, unknown 105


class UnifiedVoice25(CodeGPT):
    def __init__(self, cfg: GPT25Config):
        super().__init__(cfg)
        self.spk_emb_proj = nn.Linear(cfg.style_dim, cfg.model_dim)
        self.lang_embedding = nn.Embedding(cfg.languages, cfg.model_dim)

    def conditioning(self, style: torch.Tensor, emo_vec: torch.Tensor) -> torch.Tensor:
        """CAMPPlus style [B, 192] + emotion vector [B, C] -> the 3 conditioning vectors [B, 3, C]."""
        if style.ndim != 2 or emo_vec.ndim != 2 or style.size(0) != emo_vec.size(0):
            raise ValueError(f"expected style [B, {self.cfg.style_dim}] and emotion [B, C], "
                             f"got {tuple(style.shape)} and {tuple(emo_vec.shape)}")
        spk = self.spk_emb_proj(style.to(self.spk_emb_proj.weight.dtype)) + emo_vec  # [B, C]
        zeros = spk.new_zeros(spk.size(0), 2, spk.size(1))
        return torch.cat([spk.unsqueeze(1), zeros], dim=1)

    def prompt(self, cond: torch.Tensor, texts: Sequence[torch.Tensor | LangText],
               langs: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generation prompt rows [cond | (0 text 1) + lang | start_mel], right-padded with zeros.

        cond [B, 3, C] (or [1, 3, C], shared); ``texts``: ``LangText`` items, or token-id tensors
        with ``langs``, one language row per text (the official tokenizer's language index)
        -> (emb [B, P, C], lengths [B]).
        """
        if langs is not None:
            if len(langs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(langs)} languages")
            texts = [LangText(t, int(lang)) for t, lang in zip(texts, langs)]
        if not all(isinstance(t, LangText) for t in texts):
            raise ValueError("the IndexTTS-2.5 GPT needs each text's language (LangText items or langs=)")
        rows = self.cfg.languages
        if any(not 0 <= int(t.lang) < rows for t in texts):
            raise ValueError(f"language index out of range [0, {rows}): {[t.lang for t in texts]}")
        dev = self.lang_embedding.weight.device
        blocks = [self._text_block(t.ids, strip=True) + self.lang_embedding(torch.tensor(int(t.lang), device=dev))
                  for t in texts]
        return self._assemble(cond, blocks)
