"""Conditioning conformer of UnifiedVoice v2 (speaker and emotion paths).

WeNet-style encoder: Conv2dSubsampling2 front end, pre-norm blocks of
rel-pos self-attention -> conv module -> feed-forward, each block closed by its own LayerNorm.
Parameter names follow the official checkpoint (``embed.conv.0``, ``encoders.N.self_attn`` ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConformerConfig


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """[1, length, dim]; even channels sin, odd channels cos, base 10000."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe.unsqueeze(0)


class RelPositionalEncoding(nn.Module):
    """Scales the input by sqrt(d) and hands out the first T rows of the stored table."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.scale = math.sqrt(dim)
        # persistent: the checkpoint carries it and may hold a rounded copy
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = x.size(1)
        if t >= self.pe.size(1):
            raise ValueError(f"conditioning too long: {t} frames after subsampling, table has {self.pe.size(1)}")
        return x * self.scale, self.pe[:, :t].to(x.dtype)


class Conv2dSubsampling2(nn.Module):
    """[B, T, F] -> [B, (T-1)//2, D]: one 3x3 stride-2 conv over the (time, feature) plane."""

    def __init__(self, in_dim: int, dim: int, pe_len: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, dim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(dim * ((in_dim - 1) // 2), dim))
        self.pos_enc = RelPositionalEncoding(dim, pe_len)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        x = self.conv(x.unsqueeze(1))  # [B, D, T', F']
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))  # [B, T', D]
        x, pos = self.pos_enc(x)
        # the subsampled frame i is kept iff input frame 2 + 2i is valid
        return x, pos, mask[:, 2::2]


class RelPosAttention(nn.Module):
    """Transformer-XL style attention with biases u/v; upstream never applies the rel-shift."""

    def __init__(self, heads: int, dim: int):
        super().__init__()
        self.h = heads
        self.d_k = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)  # [B, T, H, Dk]
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # [B, H, T, Dk]
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos).view(pos.size(0), t, self.h, self.d_k).transpose(1, 2)  # [1, H, T, Dk]
        qu = (q + self.pos_bias_u).transpose(1, 2)
        qv = (q + self.pos_bias_v).transpose(1, 2)
        scores = (qu @ k.transpose(-2, -1) + qv @ p.transpose(-2, -1)) / math.sqrt(self.d_k)
        pad = ~mask[:, None, None, :]  # [B, 1, 1, T]
        attn = scores.masked_fill(pad, float("-inf")).softmax(-1).masked_fill(pad, 0.0)
        out = (attn @ v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class ConvModule(nn.Module):
    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :]  # [B, 1, T]
        x = x.transpose(1, 2).masked_fill(~keep, 0.0)  # [B, D, T]
        x = F.glu(self.pointwise_conv1(x), dim=1)
        x = self.depthwise_conv(x)
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        x = self.pointwise_conv2(x).masked_fill(~keep, 0.0)
        return x.transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        d = cfg.output_size
        self.self_attn = RelPosAttention(cfg.attention_heads, d)
        self.feed_forward = FeedForward(d, cfg.linear_units)
        self.conv_module = ConvModule(d, cfg.kernel_size)
        self.norm_ff = nn.LayerNorm(d)
        self.norm_mha = nn.LayerNorm(d)
        self.norm_conv = nn.LayerNorm(d)
        self.norm_final = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), mask, pos)
        x = x + self.conv_module(self.norm_conv(x), mask)
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.embed = Conv2dSubsampling2(cfg.input_size, cfg.output_size, cfg.pe_len)
        self.encoders = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(cfg.output_size)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, T, F], lengths [B] -> ([B, T', D], keep-mask [B, T'] bool)."""
        if feats.size(1) < 3:
            raise ValueError(f"conditioning needs at least 3 feature frames, got {feats.size(1)}")
        mask = torch.arange(feats.size(1), device=feats.device)[None, :] < lengths[:, None]  # [B, T]
        x, pos, mask = self.embed(feats, mask)
        for block in self.encoders:
            x = block(x, mask, pos)
        return self.after_norm(x), mask
