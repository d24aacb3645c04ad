"""UnifiedVoice v2 as IndexTTS-2 uses it: the text-to-semantic GPT of ``gpt.pth``.

Parameter names are exactly those of the official ``gpt.pth`` (665 entries at full size), so
``load_state_dict(strict=True)`` works on the official layout with no renaming; the only mapping
is structural: the HF ``GPT2Model`` lives under ``gpt.`` as our :class:`GPT2`, and the official
``LearnedPositionEmbeddings`` keep their inner ``.emb`` table.

Sequence layout (one row):
    [32 speaker latents + emotion vector | speed_emb[1] | speed_emb[0]]   34 conditioning vectors
    [0, text ids, 1]                    text_embedding + text positions 0..n+1
    [start_mel, code_0, code_1, ...]    mel_embedding + mel positions (see ``mel_position``)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import CodeGPT, LearnedPositions, mel_position
from .config import GPTConfig
from .conformer import ConformerEncoder
from .gpt2 import prompt_mask
from .perceiver import PerceiverResampler

__all__ = ["LearnedPositions", "UnifiedVoice", "mel_position"]


class UnifiedVoice(CodeGPT):
    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        c, sc = cfg.model_dim, cfg.condition_module
        self.conditioning_encoder = ConformerEncoder(sc)
        self.perceiver_encoder = PerceiverResampler(
            c, sc.output_size, cfg.condition_num_latent, sc.attention_heads, sc.perceiver_mult,
            cfg.perceiver_dim_head, cfg.perceiver_depth)
        self.speed_emb = nn.Embedding(2, c)

    # ---- conditioning -------------------------------------------------------------------

    def speaker_latents(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """w2v-BERT features [B, T, 1024] -> speaker latents [B, 32, C].

        ``lengths`` defaults to the official quirk (see ``_lengths``). Explicit lengths give the
        official masking semantics, but a padded row is NOT equal to its unpadded result (the
        conv module's pointwise bias leaks through the zeroed padding, as upstream), so batch
        only clips of equal length; per-voice results are cached anyway.
        """
        x, mask = self.conditioning_encoder(feats, self._lengths(feats, lengths))
        return self.perceiver_encoder(x, mask)

    def conditioning(self, spk_latents: torch.Tensor, emo_vec: torch.Tensor) -> torch.Tensor:
        """[B, 32, C] + [B, C] -> the 34 conditioning vectors [B, 34, C].

        v2 has no GPT-side speed control: the two speed slots are always speed_emb[1], speed_emb[0].
        """
        b = spk_latents.size(0)
        if emo_vec.size(0) != b:
            raise ValueError(f"batch mismatch: {b} speaker latents vs {emo_vec.size(0)} emotion vectors")
        speed = self.speed_emb.weight[[1, 0]].unsqueeze(0).expand(b, -1, -1)  # [B, 2, C]
        return torch.cat([spk_latents + emo_vec.unsqueeze(1), speed.to(spk_latents.dtype)], dim=1)

    def prompt(self, cond: torch.Tensor, texts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Generation prompt rows [cond | 0 text 1 | start_mel], right-padded with zeros.

        cond [B, 34, C] (or [1, 34, C], shared) -> (emb [B, P, C], lengths [B]).
        """
        return self._assemble(cond, [self._text_block(t, strip=True) for t in texts])

    # ---- second pass: latents for S2M ---------------------------------------------------

    def latents(self, spk_latents: torch.Tensor, emo_vec: torch.Tensor, texts: Sequence[torch.Tensor],
                codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forced pass over [cond | 0 text 1 | start codes stop] -> [B, L_max, C].

        Row i, position j holds final_norm(ln_f(h)) at the input token that predicts code j
        (mel positions 0..L+1 here, the training layout). Rows are right-padded with zeros.
        """
        cond = self.conditioning(spk_latents, emo_vec)
        cfg = self.cfg
        rows, spans = [], []
        for i, (t, c) in enumerate(zip(texts, codes, strict=True)):
            c = torch.as_tensor(c, device=cond.device).long().flatten()
            if c.numel() + 2 > cfg.mel_positions:
                raise ValueError(f"{c.numel()} codes exceed the mel position table")
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= cfg.number_mel_codes):
                raise ValueError(f"mel code out of range [0, {cfg.number_mel_codes})")
            mel = torch.cat([c.new_tensor([cfg.start_mel_token]), c, c.new_tensor([cfg.stop_mel_token])])
            pos = torch.arange(mel.numel(), device=cond.device)
            prefix = torch.cat([cond[i], self._text_block(t, strip=False)])
            rows.append(torch.cat([prefix, self._mel_embed(mel, pos)]))
            spans.append((prefix.size(0), c.numel()))
        lengths = torch.tensor([r.size(0) for r in rows], device=cond.device)
        x = cond.new_zeros(len(rows), int(lengths.max()), cond.size(-1))
        for i, r in enumerate(rows):
            x[i, : r.size(0)] = r
        t = x.size(1)
        h = self.final_norm(self.gpt(x, prompt_mask(lengths, t, t)))
        out = cond.new_zeros(len(rows), max(n for _, n in spans), cond.size(-1))
        for i, (start, n) in enumerate(spans):
            out[i, :n] = h[i, start : start + n]
        return out
