"""UnifiedVoice v2: the IndexTTS2 text-to-semantic GPT.

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

from .config import GPTConfig
from .conformer import ConformerEncoder
from .gpt2 import GPT2, KVCache, prompt_mask, step_mask
from .perceiver import PerceiverResampler


class LearnedPositions(nn.Module):
    """Position table; callers keep positions in range (no host sync in the decode step)."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        return self.emb(pos)


def mel_position(k: torch.Tensor | int, hf_quirk: bool = True):
    """Mel position of the k-th generated code (0-based) when it is fed back during decoding.

    The official HF generation path embeds it at k+2 (attention-mask length minus prefix length),
    while the teacher-forced latent pass uses k+1. ``hf_quirk=True`` reproduces the former.
    """
    return k + 2 if hf_quirk else k + 1


class UnifiedVoice(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        c, sc, ec = cfg.model_dim, cfg.condition_module, cfg.emo_condition_module
        self.conditioning_encoder = ConformerEncoder(sc)
        self.perceiver_encoder = PerceiverResampler(
            c, sc.output_size, cfg.condition_num_latent, sc.attention_heads, sc.perceiver_mult,
            cfg.perceiver_dim_head, cfg.perceiver_depth)
        self.emo_conditioning_encoder = ConformerEncoder(ec)
        self.emo_perceiver_encoder = PerceiverResampler(
            cfg.emo_dim, ec.output_size, 1, ec.attention_heads, ec.perceiver_mult,
            cfg.perceiver_dim_head, cfg.perceiver_depth)
        self.emovec_layer = nn.Linear(cfg.emo_dim, c)
        self.emo_layer = nn.Linear(c, c)
        self.speed_emb = nn.Embedding(2, c)
        self.text_embedding = nn.Embedding(cfg.text_vocab, c)
        self.text_pos_embedding = LearnedPositions(cfg.text_positions, c)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, c)
        self.mel_pos_embedding = LearnedPositions(cfg.mel_positions, c)
        self.gpt = GPT2(c, cfg.layers, cfg.heads, cfg.norm_eps)
        self.final_norm = nn.LayerNorm(c)
        self.text_head = nn.Linear(c, cfg.text_vocab)
        self.mel_head = nn.Linear(c, cfg.number_mel_codes)

    # ---- conditioning -------------------------------------------------------------------

    @staticmethod
    def _lengths(feats: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if feats.ndim != 3:
            raise ValueError(f"features must be [B, T, F], got shape {tuple(feats.shape)}")
        if lengths is None:
            # Official quirk: infer_v2 passes the feature WIDTH (1024) as the length, so clips of
            # up to 1024 frames (~20 s) are never masked. Same default here.
            return torch.full((feats.size(0),), feats.size(-1), dtype=torch.long, device=feats.device)
        return lengths.to(device=feats.device, dtype=torch.long)

    def speaker_latents(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """w2v-BERT features [B, T, 1024] -> speaker latents [B, 32, C].

        ``lengths`` defaults to the official quirk (see ``_lengths``). Explicit lengths give the
        official masking semantics, but a padded row is NOT equal to its unpadded result (the
        conv module's pointwise bias leaks through the zeroed padding, as upstream), so batch
        only clips of equal length; per-voice results are cached anyway.
        """
        x, mask = self.conditioning_encoder(feats, self._lengths(feats, lengths))
        return self.perceiver_encoder(x, mask)

    def emotion_vector(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """w2v-BERT features [B, T, 1024] -> emotion vector [B, C] (``get_emovec``)."""
        x, mask = self.emo_conditioning_encoder(feats, self._lengths(feats, lengths))
        e = self.emo_perceiver_encoder(x, mask).squeeze(1)  # [B, 1024]
        return self.emo_layer(self.emovec_layer(e))

    def merge_emovec(self, spk_feats: torch.Tensor, emo_feats: torch.Tensor, alpha: float = 1.0,
                     spk_lengths: torch.Tensor | None = None,
                     emo_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Blend: emovec(speaker) + alpha * (emovec(emotion ref) - emovec(speaker)) -> [B, C]."""
        base = self.emotion_vector(spk_feats, spk_lengths)
        emo = self.emotion_vector(emo_feats, emo_lengths)
        return base + alpha * (emo - base)

    def conditioning(self, spk_latents: torch.Tensor, emo_vec: torch.Tensor) -> torch.Tensor:
        """[B, 32, C] + [B, C] -> the 34 conditioning vectors [B, 34, C].

        v2 has no GPT-side speed control: the two speed slots are always speed_emb[1], speed_emb[0].
        """
        b = spk_latents.size(0)
        if emo_vec.size(0) != b:
            raise ValueError(f"batch mismatch: {b} speaker latents vs {emo_vec.size(0)} emotion vectors")
        speed = self.speed_emb.weight[[1, 0]].unsqueeze(0).expand(b, -1, -1)  # [B, 2, C]
        return torch.cat([spk_latents + emo_vec.unsqueeze(1), speed.to(spk_latents.dtype)], dim=1)

    # ---- text / mel blocks --------------------------------------------------------------

    def _text_block(self, ids: torch.Tensor, strip: bool) -> torch.Tensor:
        """text ids [n] -> embedded [0, ids, 1] block [n+2, C]."""
        cfg = self.cfg
        ids = torch.as_tensor(ids, device=self.text_embedding.weight.device).long().flatten()
        if strip:
            # generation drops any start/stop id inside the text (latent pass does not)
            ids = ids[(ids != cfg.start_text_token) & (ids != cfg.stop_text_token)]
        if ids.numel() > cfg.max_text_tokens:
            raise ValueError(f"text has {ids.numel()} tokens, the GPT takes at most {cfg.max_text_tokens}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.text_vocab):
            raise ValueError(f"text token id out of range [0, {cfg.text_vocab})")
        ids = torch.cat([ids.new_tensor([cfg.start_text_token]), ids, ids.new_tensor([cfg.stop_text_token])])
        pos = torch.arange(ids.numel(), device=ids.device)
        return self.text_embedding(ids) + self.text_pos_embedding(pos)

    def _mel_embed(self, codes: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.mel_embedding(codes) + self.mel_pos_embedding(pos)

    def prompt(self, cond: torch.Tensor, texts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Generation prompt rows [cond | 0 text 1 | start_mel], right-padded with zeros.

        cond [B, 34, C] (or [1, 34, C], shared) -> (emb [B, P, C], lengths [B]).
        """
        b = len(texts)
        if cond.size(0) not in (1, b):
            raise ValueError(f"batch mismatch: {cond.size(0)} conditionings for {b} texts")
        start = self._mel_embed(torch.tensor([self.cfg.start_mel_token], device=cond.device),
                                torch.zeros(1, dtype=torch.long, device=cond.device))
        rows = [torch.cat([cond[i if cond.size(0) == b else 0], self._text_block(t, strip=True), start])
                for i, t in enumerate(texts)]
        lengths = torch.tensor([r.size(0) for r in rows], device=cond.device)
        out = cond.new_zeros(b, int(lengths.max()), cond.size(-1))
        for i, r in enumerate(rows):
            out[i, : r.size(0)] = r
        return out, lengths

    # ---- incremental decoding -----------------------------------------------------------

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.mel_head(self.final_norm(h))

    def prefill(self, emb: torch.Tensor, lengths: torch.Tensor, cache: KVCache,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """Run the prompt [B, P, C] into slots 0..P-1 of cache ``rows`` [B] (default 0..B-1)
        -> logits at each row's last token [B, V]."""
        b, p, _ = emb.shape
        if p > cache.max_len:
            raise ValueError(f"prompt of {p} tokens does not fit a cache of {cache.max_len}")
        if rows is None:
            rows = torch.arange(b, device=emb.device)
        slots = torch.arange(p, device=emb.device).expand(b, p)
        h = self.gpt(emb, prompt_mask(lengths, p, p), cache, slots, rows)
        last = h[torch.arange(b, device=emb.device), lengths - 1]  # [B, C]
        return self.logits(last)

    def decode_step(self, codes: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                    cache: KVCache, span: int | None = None) -> torch.Tensor:
        """One token per cache row: codes/positions/slots [R] -> logits [R, V].

        Attention reads cache slots 0..span-1 (default: all), so the shapes depend on ``span``
        alone. ``positions`` must stay below ``cfg.mel_positions`` and ``slots`` below ``span``
        (the decode pool guarantees both; nothing here reads values back to the host)."""
        x = self._mel_embed(codes, positions).unsqueeze(1)  # [R, 1, C]
        h = self.gpt(x, step_mask(slots, span or cache.max_len, cache.slot_ids), cache, slots.unsqueeze(1))
        return self.logits(h[:, 0])

    def compile_decode_step(self) -> None:
        """Replace ``decode_step`` on this instance with its ``torch.compile`` version.

        The step is the hot loop of generation (one call per code) and a long chain of small
        kernels; Inductor fuses it into far fewer launches. It compiles whole (``fullgraph``: the
        step has no host syncs to break on) and once for every batch size and cache length
        (``dynamic=True``), so one warm-up call covers them all. The cache is written in place
        exactly as in eager mode, and the weights stay the module's own (state dict unchanged).
        ``span`` is a Python int: each distinct value is a shape, which ``dynamic`` shares.
        """
        self.decode_step = torch.compile(self.decode_step, fullgraph=True, dynamic=True)

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
