"""GPT-2 decoder stack (pre-norm blocks, no token or position embedding of its own) with a
static KV cache.

Names match the Hugging Face ``GPT2Model`` state dict the official checkpoint stores under
``gpt.``: ``h.N.ln_1``, ``h.N.attn.c_attn`` (a transposed ``Conv1D`` weight [C, 3C]) and so on.

The cache ``[layers, rows, heads, max_len, head_dim]`` (K and V) belongs to a decode pool and
outlives any one request: every row has its own write slots, so rows of different prompt lengths
and at different steps decode together. A decode step runs every row and reads slots 0..span-1
under a mask; a prefill writes a prompt into the rows it is given and attends only to itself.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Conv1D(nn.Module):
    """HF GPT-2 projection: ``x @ weight + bias`` with weight stored as [in, out]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1] + (self.weight.size(1),)
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(shape)


class KVCache:
    """Preallocated keys/values for every layer; rows are sequences (or beams)."""

    def __init__(self, layers: int, rows: int, heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        self.k = torch.zeros(layers, rows, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.rows = torch.arange(rows, device=device)[:, None]  # [R, 1], row index for slot writes
        self.slot_ids = torch.arange(max_len, device=device)  # [S], for step masks without a new arange

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def grow(self, max_len: int) -> None:
        """Reallocate with ``max_len`` slots per row, keeping what is stored."""
        if max_len <= self.max_len:
            return
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[:3] + (max_len, old.size(4)))
            new[:, :, :, : old.size(3)] = old
            setattr(self, name, new)
        self.slot_ids = torch.arange(max_len, device=self.k.device)

    def copy_row(self, dst: int, src: int, used: int) -> None:
        """Row ``dst`` takes the history (slots 0..used-1) of row ``src`` (beam search: a beam
        continues another beam's sequence), copied in place."""
        for cache in (self.k, self.v):
            cache[:, dst, :, :used].copy_(cache[:, src, :, :used])


class LayerCache(NamedTuple):
    """One layer's view of the cache for a forward pass."""

    k: torch.Tensor  # [rows, H, max_len, D]
    v: torch.Tensor
    rows: torch.Tensor  # [B, 1] cache rows of the batch rows
    slots: torch.Tensor  # [B, T] slots of the batch tokens
    read: bool  # attend to the cache (decode step) or only to the tokens of this pass (prefill)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: "LayerCache | None") -> torch.Tensor:
        """x [B, T, C]; mask [B, 1, T, S] (True = may attend).

        With a cache, x's keys/values are written into slots ``cache.slots`` [B, T] of rows
        ``cache.rows`` [B, 1]; a decode step (``cache.read``) then attends to slots 0..S-1 of the
        cache, a prefill to the prompt's own keys."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = k.view(b, t, self.heads, self.head_dim)
        v = v.view(b, t, self.heads, self.head_dim)
        if cache is not None:
            cache.k[cache.rows, :, cache.slots] = k  # writes [B, T, H, D] into the per-row slots
            cache.v[cache.rows, :, cache.slots] = v
        if cache is not None and cache.read:
            s = mask.size(-1)
            k, v = cache.k[:, :, :s], cache.v[:, :, :s]
        else:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = Conv1D(dim, 4 * dim)
        self.c_proj = Conv1D(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2 "gelu_new"


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim)

    def forward(self, x, mask, cache):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, eps: float = 1e-5):
        super().__init__()
        self.heads = heads
        self.h = nn.ModuleList(Block(dim, heads, eps) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim, eps=eps)

    def new_cache(self, rows: int, max_len: int, device=None, dtype=None) -> KVCache:
        p = self.ln_f.weight
        dim = p.numel()
        return KVCache(len(self.h), rows, self.heads, max_len, dim // self.heads,
                       device or p.device, dtype or p.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None,
                slots: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, C] -> ln_f(h) [B, T, C]; ``mask`` [B, 1, T, S], True = may attend.

        * no cache: plain masked self-attention (S = T);
        * cache, no ``rows``: a decode step of every cache row (B = rows); x goes into ``slots``
          [B, T] and attends to cache slots 0..S-1;
        * cache and ``rows`` [B]: a prefill of those cache rows; x goes into ``slots`` and attends
          to itself (S = T).
        """
        read = rows is None
        if cache is not None:
            rows = cache.rows if rows is None else rows[:, None]
        for i, block in enumerate(self.h):
            layer_cache = None if cache is None else LayerCache(cache.k[i], cache.v[i], rows, slots, read)
            x = block(x, mask, layer_cache)
        return self.ln_f(x)


def prompt_mask(lengths: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """[B, 1, T, S]: causal over a right-padded prompt of T tokens stored in slots 0..T-1 of S.

    Keys stop at each row's length; padded query rows still see key 0, so nothing is NaN.
    """
    q = torch.arange(t, device=lengths.device)
    k = torch.arange(s, device=lengths.device)
    mask = (k[None, :] <= q[:, None])[None] & (k[None, :] < lengths[:, None])[:, None, :]
    return mask.unsqueeze(1)


def step_mask(slots: torch.Tensor, s: int, slot_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1, 1, S]: a decode step at ``slots`` [B] sees every slot up to and including its own
    (``slot_ids``: a prebuilt ``arange`` of at least S, e.g. the cache's)."""
    k = torch.arange(s, device=slots.device) if slot_ids is None else slot_ids[:s]
    return (k[None, :] <= slots[:, None])[:, None, None, :]
