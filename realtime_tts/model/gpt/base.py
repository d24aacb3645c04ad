"""What the IndexTTS-2 and IndexTTS-2.5 GPTs share (the official class ``UnifiedVoice`` v2 in both).

Both stack a row as [conditioning | 0 text 1 | start_mel, codes...] into the same GPT-2 body and
decode with the same heads; they differ only in the conditioning vectors and in what joins the
text embedding. This base holds the shared parameters (official names, so a subclass loads its
``gpt.pth`` strictly), the emotion path, the prompt assembly and the incremental decode step that
``decode.DecodePool`` drives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .config import CodeGPTConfig
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


class CodeGPT(nn.Module):
    """Shared body; subclasses add the speaker conditioning and ``prompt``."""

    def __init__(self, cfg: CodeGPTConfig):
        super().__init__()
        self.cfg = cfg
        c, ec = cfg.model_dim, cfg.emo_condition_module
        self.emo_conditioning_encoder = ConformerEncoder(ec)
        self.emo_perceiver_encoder = PerceiverResampler(
            cfg.emo_dim, ec.output_size, 1, ec.attention_heads, ec.perceiver_mult,
            cfg.perceiver_dim_head, cfg.perceiver_depth)
        self.emovec_layer = nn.Linear(cfg.emo_dim, c)
        self.emo_layer = nn.Linear(c, c)
        self.text_embedding = nn.Embedding(cfg.text_vocab, c)
        self.text_pos_embedding = LearnedPositions(cfg.text_positions, c)
        self.mel_embedding = nn.Embedding(cfg.number_mel_codes, c)
        self.mel_pos_embedding = LearnedPositions(cfg.mel_positions, c)
        self.gpt = GPT2(c, cfg.layers, cfg.heads, cfg.norm_eps)
        self.final_norm = nn.LayerNorm(c)
        self.text_head = nn.Linear(c, cfg.text_vocab)
        self.mel_head = nn.Linear(c, cfg.number_mel_codes)

    # ---- emotion ------------------------------------------------------------------------

    @staticmethod
    def _lengths(feats: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if feats.ndim != 3:
            raise ValueError(f"features must be [B, T, F], got shape {tuple(feats.shape)}")
        if lengths is None:
            # Official quirk: infer_v2 passes the feature WIDTH (1024) as the length, so clips of
            # up to 1024 frames (~20 s) are never masked. Same default here.
            return torch.full((feats.size(0),), feats.size(-1), dtype=torch.long, device=feats.device)
        return lengths.to(device=feats.device, dtype=torch.long)

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

    # ---- text / mel blocks --------------------------------------------------------------

    def _text_block(self, ids: torch.Tensor, strip: bool) -> torch.Tensor:
        """text ids [n] -> embedded [0, ids, 1] block [n'+2, C] (n' = ids kept)."""
        cfg = self.cfg
        ids = torch.as_tensor(ids, device=self.text_embedding.weight.device).long().flatten()
        if strip:
            # generation drops every start/stop id inside the text (the latent pass does not)
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

    def _assemble(self, cond: torch.Tensor, blocks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Generation prompt rows [cond | text block | start_mel], right-padded with zeros.

        cond [B, K, C] (or [1, K, C], shared) + B text blocks [n_i, C] -> (emb [B, P, C], lengths [B]).
        """
        b = len(blocks)
        if cond.size(0) not in (1, b):
            raise ValueError(f"batch mismatch: {cond.size(0)} conditionings for {b} texts")
        start = self._mel_embed(torch.tensor([self.cfg.start_mel_token], device=cond.device),
                                torch.zeros(1, dtype=torch.long, device=cond.device))
        rows = [torch.cat([cond[i if cond.size(0) == b else 0], block, start])
                for i, block in enumerate(blocks)]
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
