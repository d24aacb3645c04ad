"""GPT-2 decoder stack (pre-norm blocks, no token or position embedding of its own) with a
static KV cache.

Names match the Hugging Face ``GPT2Model`` state dict the official checkpoint stores under
``gpt.``: ``h.N.ln_1``, ``h.N.attn.c_attn`` (a transposed ``Conv1D`` weight [C, 3C]) and so on.

The cache is allocated once per generation: ``[layers, rows, heads, max_len, head_dim]`` for K and
for V. Every row has its own write slots, so rows of different prompt lengths decode together.
A decode step reads the whole cache under a mask, so its shapes never change (CUDA-graph
friendly); a prefill reads only the slots it writes.
"""

from __future__ import annotations

import math

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

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def reorder(self, rows: torch.Tensor, used: int) -> None:
        """Row i takes the history of row ``rows[i]`` (beam search); only ``used`` slots move."""
        for cache in (self.k, self.v):
            for layer in cache:
                part = layer[:, :, :used]
                part.copy_(part.index_select(0, rows))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                slots: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, C]; mask [B, 1, T, S] (True = may attend); slots [B, T] cache positions of x.

        With a cache, x is written into its slots and attention reads slots 0..S-1."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = k.view(b, t, self.heads, self.head_dim)
        v = v.view(b, t, self.heads, self.head_dim)
        if cache is None:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        else:
            k_cache, v_cache, rows = cache  # [B, H, max_len, D], [B, 1]
            k_cache[rows, :, slots] = k  # writes [B, T, H, D] into the per-row slots
            v_cache[rows, :, slots] = v
            s = mask.size(-1)
            k, v = k_cache[:, :, :s], v_cache[:, :, :s]
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

    def forward(self, x, mask, cache, slots):
        x = x + self.attn(self.ln_1(x), mask, cache, slots)
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
                slots: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, C] -> ln_f(h) [B, T, C]. Without a cache ``mask`` is [B, 1, T, T]; with a
        cache it is [B, 1, T, S] over cache slots 0..S-1 and ``slots`` [B, T] says where x goes."""
        for i, block in enumerate(self.h):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i], cache.rows)
            x = block(x, mask, layer_cache, slots)
        return self.ln_f(x)


def prompt_mask(lengths: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """[B, 1, T, S]: causal over a right-padded prompt of T tokens stored in slots 0..T-1 of S.

    Keys stop at each row's length; padded query rows still see key 0, so nothing is NaN.
    """
    q = torch.arange(t, device=lengths.device)
    k = torch.arange(s, device=lengths.device)
    mask = (k[None, :] <= q[:, None])[None] & (k[None, :] < lengths[:, None])[:, None, :]
    return mask.unsqueeze(1)


def step_mask(slots: torch.Tensor, s: int) -> torch.Tensor:
    """[B, 1, 1, S]: a decode step at ``slots`` [B] sees every slot up to and including its own."""
    k = torch.arange(s, device=slots.device)
    return (k[None, :] <= slots[:, None])[:, None, None, :]
