"""Perceiver resampler: a fixed set of learned latents cross-attends to a variable-length context."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    # upstream sizing rule: 2/3 of dim*mult, truncated; indices 0 and 2 hold the weights
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(nn.Linear(dim, inner * 2), GEGLU(), nn.Linear(inner, dim))


class LatentAttention(nn.Module):
    """Latents attend to [latents ; context] (queries are part of the keys/values)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = latents.shape
        kv_in = torch.cat([latents, context], dim=1)  # [B, N+T, C]
        q = self.to_q(latents).view(b, n, self.heads, self.dim_head).transpose(1, 2)  # [B, H, N, Dh]
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        k = k.view(b, -1, self.heads, self.dim_head).transpose(1, 2)  # [B, H, N+T, Dh]
        v = v.view(b, -1, self.heads, self.dim_head).transpose(1, 2)
        sim = (q @ k.transpose(-2, -1)) * self.dim_head ** -0.5
        # upstream fills with the most negative finite value, not -inf
        sim = sim.masked_fill(~mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        out = sim.softmax(-1) @ v  # [B, H, N, Dh]
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, dim_context: int, num_latents: int, heads: int, ff_mult: float,
                 dim_head: int = 64, depth: int = 2):
        super().__init__()
        self.proj_context = nn.Linear(dim_context, dim) if dim_context != dim else nn.Identity()
        self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([LatentAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim)

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """context [B, T, Dc], mask [B, T] -> [B, N, C]; latents always see themselves."""
        x = self.proj_context(context)
        latents = self.latents.unsqueeze(0).expand(x.size(0), -1, -1)
        mask = torch.cat([mask.new_ones(mask.size(0), latents.size(1)), mask], dim=1)
        for attn, ff in self.layers:
            latents = attn(latents, x, mask) + latents
            latents = ff(latents) + latents
        return self.norm(latents)
