"""WaveNet head of the DiT (official ``WN`` built from encodec-style ``SConv1d`` layers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reflect_pad(x: torch.Tensor, pad: int, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reflect-pad [B, C, T] by ``pad`` on both sides, reflecting at each item's own end.

    With ``lengths`` None every item fills T. Frames past an item's end in the output are
    junk; callers mask them.
    """
    if pad == 0:
        return x
    if lengths is None:
        return F.pad(x, (pad, pad), mode="reflect")
    B, C, T = x.shape
    src = torch.arange(-pad, T + pad, device=x.device)[None, :].expand(B, -1)  # [B, T+2p]
    last = (lengths - 1)[:, None]
    src = torch.where(src < 0, -src, src)
    src = torch.where(src > last, 2 * last - src, src).clamp(0, T - 1)
    return torch.gather(x, 2, src[:, None, :].expand(B, C, -1))


class _Conv(nn.Module):
    """Holds the conv under ``.conv`` so keys read ``<layer>.conv.conv.*`` as in the official WN."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = nn.Conv1d(*args, **kwargs)


class ReflectConv1d(nn.Module):
    """Stride-1 Conv1d with symmetric reflect padding (official SConv1d, non-causal)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = _Conv(in_ch, out_ch, kernel, dilation=dilation)
        total = (kernel - 1) * dilation
        if total % 2:
            raise ValueError("only odd effective kernels are supported")
        self.pad = total // 2

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv.conv(reflect_pad(x, self.pad, lengths))


class WaveNet(nn.Module):
    """Non-causal gated WaveNet with a global condition (the time embedding).

    Each layer: dilated conv -> + condition slice -> tanh * sigmoid -> 1x1 conv into a
    residual half (all layers but the last) and a skip half; output = sum of skips.
    Dropout is inactive at inference and omitted.
    """

    def __init__(self, hidden: int, kernel: int, dilation_rate: int, n_layers: int, gin: int):
        super().__init__()
        self.hidden = hidden
        self.cond_layer = ReflectConv1d(gin, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            ReflectConv1d(hidden, 2 * hidden, kernel, dilation_rate**i) for i in range(n_layers)
        )
        self.res_skip_layers = nn.ModuleList(
            ReflectConv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers)
        )

    def forward(
        self,
        x: torch.Tensor,  # [B, H, T]
        mask: torch.Tensor,  # [B, 1, T] float
        g: torch.Tensor,  # [B, gin, 1]
        lengths: torch.Tensor | None = None,  # [B], None when no item is padded
    ) -> torch.Tensor:  # [B, H, T]
        g = self.cond_layer(g)  # [B, 2*H*n_layers, 1]
        out = torch.zeros_like(x)
        h2 = 2 * self.hidden
        n = len(self.in_layers)
        for i, (conv_in, conv_rs) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = conv_in(x, lengths) + g[:, i * h2 : (i + 1) * h2]
            acts = torch.tanh(a[:, : self.hidden]) * torch.sigmoid(a[:, self.hidden :])
            rs = conv_rs(acts)
            if i < n - 1:
                x = (x + rs[:, : self.hidden]) * mask
                out = out + rs[:, self.hidden :]
            else:
                out = out + rs
        return out * mask
