"""DiT velocity estimator of the S2M flow-matching model (official ``DiT`` + gpt-fast blocks)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import S2MelConfig
from .wavenet import WaveNet


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoid of 1000*t (cos half, then sin half) -> MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        half = freq_dim // 2
        # a checkpoint buffer: the stored values are used, not recomputed
        self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # [B] -> [B, hidden]
        args = 1000 * t[:, None].float() * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class AdaRMSNorm(nn.Module):
    """RMSNorm whose gain and bias come from the time embedding: w(c) * norm(x) + b(c)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # x [B, T, D], c [B, 1, D]
        w, b = self.project_layer(c).chunk(2, dim=-1)
        return w * self.norm(x) + b


def rope_table(max_pos: int, head_dim: int, base: float) -> torch.Tensor:
    """[max_pos, head_dim/2, 2] (cos, sin), computed as gpt-fast does (float32 polar)."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_pos, dtype=torch.float32), freqs)
    cis = torch.polar(torch.ones_like(angles), angles)
    return torch.stack([cis.real, cis.imag], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1), (x2, x3)... x: [B, T, H, Dh], rope: [T, Dh/2, 2]."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]
    out = torch.stack([xs[..., 0] * cos - xs[..., 1] * sin, xs[..., 1] * cos + xs[..., 0] * sin], dim=-1)
    return out.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.num_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.hidden_dim, 3 * cfg.num_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(2)  # [B, T, H, Dh]
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU."""

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_dim, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.hidden_dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.ffn_norm = AdaRMSNorm(cfg.hidden_dim, cfg.norm_eps)
        self.attention_norm = AdaRMSNorm(cfg.hidden_dim, cfg.norm_eps)
        # present in every block of the checkpoint; only the second-half blocks use it
        self.skip_in_linear = nn.Linear(2 * cfg.hidden_dim, cfg.hidden_dim)

    def forward(self, x, c, rope, mask, skip: torch.Tensor | None = None):
        if skip is not None:
            x = self.skip_in_linear(torch.cat([x, skip], dim=-1))
        h = x + self.attention(self.attention_norm(x, c), rope, mask)
        return h + self.feed_forward(self.ffn_norm(h, c))


class Transformer(nn.Module):
    """Bidirectional gpt-fast stack with U-ViT skips.

    Blocks [0, depth//2) push their outputs; blocks (depth//2, depth) pop them (LIFO);
    the middle block neither pushes nor pops.
    """

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = AdaRMSNorm(cfg.hidden_dim, cfg.norm_eps)

    def forward(self, x, c, rope, mask):
        mid = len(self.layers) // 2
        skips: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, c, rope, mask, skips.pop() if i > mid else None)
            if i < mid:
                skips.append(x)
        return self.norm(x, c)


class FinalLayer(nn.Module):
    """Affine-free LayerNorm modulated by the time embedding, then a Linear."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)  # weight-normed in the checkpoint, folded at load
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # x [B, T, D], c [B, D]
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = F.layer_norm(x, (x.size(-1),), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        return self.linear(x)


class DiT(nn.Module):
    """Predicts the flow velocity of the noisy mel given prompt mel, content and style."""

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        d, m = cfg.hidden_dim, cfg.n_mels
        self.transformer = Transformer(cfg)
        self.t_embedder = TimestepEmbedder(d)
        self.t_embedder2 = TimestepEmbedder(cfg.wavenet_hidden)
        self.cond_projection = nn.Linear(cfg.content_dim, d)
        self.cond_x_merge_linear = nn.Linear(d + 2 * m + cfg.style_dim, d)
        self.skip_linear = nn.Linear(d + m, d)
        self.conv1 = nn.Linear(d, cfg.wavenet_hidden)
        self.wavenet = WaveNet(
            cfg.wavenet_hidden, cfg.wavenet_kernel, cfg.wavenet_dilation_rate, cfg.wavenet_layers, cfg.wavenet_hidden
        )
        self.res_projection = nn.Linear(d, cfg.wavenet_hidden)
        self.final_layer = FinalLayer(cfg.wavenet_hidden)
        self.conv2 = nn.Conv1d(cfg.wavenet_hidden, m, 1)
        # Stored in the checkpoint, never used by the continuous-content path.
        self.x_embedder = nn.Linear(m, d)
        self.cond_embedder = nn.Embedding(cfg.dit_codebook_size, d)
        self.content_mask_embedder = nn.Embedding(1, d)
        self.register_buffer("input_pos", torch.arange(cfg.max_positions))
        self.register_buffer("rope", rope_table(cfg.max_positions, cfg.head_dim, cfg.rope_base), persistent=False)

    def forward(
        self,
        x: torch.Tensor,  # [B, n_mels, T] noisy mel
        prompt_x: torch.Tensor,  # [B, n_mels, T] reference mel on the prompt frames, else 0
        lengths: torch.Tensor,  # [B] valid frames (prompt + generated)
        t: torch.Tensor,  # [B] flow time
        style: torch.Tensor,  # [B, style_dim]
        mu: torch.Tensor,  # [B, T, content_dim]
        padded: bool | None = None,  # any item shorter than T; pass it to avoid a device sync per call
    ) -> torch.Tensor:  # [B, n_mels, T] velocity
        B, _, T = x.shape
        if T > self.rope.size(0):
            raise ValueError(f"{T} frames exceed the model's {self.rope.size(0)}-frame position table")
        if padded is None:
            padded = int(lengths.min()) < T
        valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # [B, T]
        attn_mask = valid[:, None, None, :] if padded else None  # keys only
        mask = valid[:, None, :].to(x.dtype)  # [B, 1, T]

        t1 = self.t_embedder(t)  # [B, D]
        xt = x.transpose(1, 2)  # [B, T, n_mels]
        h = torch.cat([xt, prompt_x.transpose(1, 2), self.cond_projection(mu), style[:, None, :].expand(B, T, -1)], -1)
        h = self.cond_x_merge_linear(h)  # [B, T, D]
        h = self.transformer(h, t1[:, None, :], self.rope[:T], attn_mask)
        h = self.skip_linear(torch.cat([h, xt], dim=-1))  # long skip from the noisy input

        w = self.conv1(h).transpose(1, 2)  # [B, Hw, T]
        t2 = self.t_embedder2(t)
        w = self.wavenet(w, mask, t2[:, :, None], lengths if padded else None).transpose(1, 2)
        w = self.final_layer(w + self.res_projection(h), t1).transpose(1, 2)  # [B, Hw, T]
        return self.conv2(w)
