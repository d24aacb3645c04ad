"""BigVGAN v2 generator (nvidia/bigvgan_v2_22khz_80band_256x): mel -> 22.05 kHz waveform.

Plain-torch anti-aliased SnakeBeta activations (no fused CUDA kernel). Loads the shipped
``bigvgan_generator.pt`` (``{"generator": state_dict}`` in weight-norm form) strictly and
folds weight norm at load time, as the official code does with remove_weight_norm().

Batches of different lengths: pass ``lengths`` (mel frames per item). Every layer then
treats each item as if it ended at its own length (zeros for the convolutions, the last
sample repeated for the activations' resampling filters), so a batch reproduces each item's
unbatched waveform.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .s2mel.checkpoint import CheckpointMismatch, fold_weight_norm, load_strict


@dataclass(frozen=True)
class BigVGANConfig:
    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    snake_logscale: bool = True
    use_bias_at_final: bool = False
    sampling_rate: int = 22050
    hop_size: int = 256

    def __post_init__(self) -> None:
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if math.prod(self.upsample_rates) != self.hop_size:
            raise ValueError(f"upsample rates multiply to {math.prod(self.upsample_rates)}, hop_size is {self.hop_size}")
        if self.upsample_initial_channel >> len(self.upsample_rates) < 1:
            raise ValueError("upsample_initial_channel too small for the number of upsamplers")

    @classmethod
    def from_dict(cls, h: Mapping) -> "BigVGANConfig":
        """From BigVGAN's config.json; training-only keys are ignored, unsupported variants refused."""
        want = {"resblock": "1", "activation": "snakebeta", "use_tanh_at_final": False}
        for key, value in want.items():
            if h.get(key, value) != value:
                raise ValueError(f"unsupported BigVGAN variant: {key}={h.get(key)!r} (only {value!r} is implemented)")
        kw = {}
        for f in fields(cls):
            if f.name in h:
                v = h[f.name]
                if f.name == "resblock_dilation_sizes":
                    v = tuple(tuple(d) for d in v)
                elif isinstance(v, list):
                    v = tuple(v)
                kw[f.name] = v
        return cls(**kw)

    @classmethod
    def from_json(cls, path: str | Path) -> "BigVGANConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def tiny(cls) -> "BigVGANConfig":
        """Golden-test size: the real 256x structure with narrow channels (64 -> 1)."""
        return cls(upsample_initial_channel=64)


def kaiser_sinc(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter, [1, 1, kernel_size], normalised to unit sum."""
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    if kernel_size % 2 == 0:
        time = torch.arange(-half, half) + 0.5
    else:
        time = torch.arange(kernel_size) - half
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (filt / filt.sum()).view(1, 1, kernel_size)


def hold_last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Repeat each item's last valid sample over its padding: [B, C, T]."""
    B, C, T = x.shape
    idx = torch.minimum(torch.arange(T, device=x.device)[None, :], (lengths - 1)[:, None])
    return torch.gather(x, 2, idx[:, None, :].expand(B, C, T))


def zero_tail(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x * (torch.arange(x.size(-1), device=x.device)[None, None, :] < lengths[:, None, None]).to(x.dtype)


class SnakeBeta(nn.Module):
    """x + sin^2(a x) / b per channel; a, b stored as logs (snake_logscale)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        a = torch.exp(self.alpha)[None, :, None]
        b = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a).pow(2)


class UpSample2x(nn.Module):
    """x2 up-sampling: replicate pad, 12-tap Kaiser-sinc transposed conv, trim."""

    def __init__(self, kernel_size: int = 12):
        super().__init__()
        self.pad = kernel_size // 2 - 1
        self.trim_left = self.pad * 2 + (kernel_size - 2) // 2
        self.trim_right = self.pad * 2 + (kernel_size - 1) // 2
        self.register_buffer("filter", kaiser_sinc(0.25, 0.3, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, C, 2T]
        C = x.size(1)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = 2 * F.conv_transpose1d(x, self.filter.expand(C, -1, -1), stride=2, groups=C)
        return x[..., self.trim_left : -self.trim_right]


class LowPass(nn.Module):
    def __init__(self, kernel_size: int = 12):
        super().__init__()
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc(0.25, 0.3, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, 2T] -> [B, C, T]
        C = x.size(1)
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(C, -1, -1), stride=2, groups=C)


class DownSample2x(nn.Module):
    def __init__(self):
        super().__init__()
        self.lowpass = LowPass()  # key path downsample.lowpass.filter


class AntiAliasedSnakeBeta(nn.Module):
    """SnakeBeta evaluated at twice the rate: up x2 -> SnakeBeta -> low-pass down x2."""

    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample2x()
        self.downsample = DownSample2x()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            return self.downsample.lowpass(self.act(self.upsample(x)))
        x = self.act(self.upsample(hold_last(x, lengths)))
        x = self.downsample.lowpass(hold_last(x, 2 * lengths))
        return zero_tail(x, lengths)  # the next conv must see zeros past the end


class AMPBlock(nn.Module):
    """BigVGAN resblock "1": for each dilation d, x += conv_1(act(conv_d(act(x))))."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations
        )
        # official order: activations[2i] before convs1[i], activations[2i+1] before convs2[i]
        self.activations = nn.ModuleList(AntiAliasedSnakeBeta(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            h = c1(self.activations[2 * i](x, lengths))
            x = x + c2(self.activations[2 * i + 1](h, lengths))
        return x


class BigVGAN(nn.Module):
    def __init__(self, cfg: BigVGANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or BigVGANConfig()
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, ch0, 7, 1, padding=3)
        # each upsampler sits alone in a ModuleList: official key path ups.<i>.0.*
        self.ups = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose1d(ch0 >> i, ch0 >> (i + 1), k, u, padding=(k - u) // 2)])
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(ch0 >> (i + 1), k, d)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        ch = ch0 >> len(cfg.upsample_rates)
        self.activation_post = AntiAliasedSnakeBeta(ch)
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, bias=cfg.use_bias_at_final)

    def forward(
        self,
        mel: torch.Tensor,  # [B, num_mels, T]
        lengths: torch.Tensor | None = None,  # [B] valid mel frames; None: all T
    ) -> torch.Tensor:  # [B, 1, T * hop], in [-1, 1]; zero past lengths * hop
        if mel.dim() != 3 or mel.size(1) != self.cfg.num_mels:
            raise ValueError(f"mel must be [B, {self.cfg.num_mels}, T], got {tuple(mel.shape)}")
        if lengths is not None:
            if lengths.shape != (mel.size(0),) or int(lengths.min()) < 1 or int(lengths.max()) > mel.size(-1):
                raise ValueError(f"lengths {lengths.tolist()} do not fit mel of shape {tuple(mel.shape)}")
            if int(lengths.min()) == mel.size(-1):
                lengths = None  # nothing padded: take the plain path
        n_k = len(self.cfg.resblock_kernel_sizes)
        x = self.conv_pre(mel if lengths is None else zero_tail(mel, lengths))
        for i, (up,) in enumerate(self.ups):
            if lengths is not None:
                x = zero_tail(x, lengths)
                lengths = lengths * self.cfg.upsample_rates[i]
            x = up(x)
            blocks = self.resblocks[i * n_k : (i + 1) * n_k]
            x = sum(block(x, lengths) for block in blocks) / n_k
        x = self.conv_post(self.activation_post(x, lengths))
        x = torch.clamp(x, -1.0, 1.0)  # v2 config: no tanh at the end
        return x if lengths is None else zero_tail(x, lengths)

    # ----- loading ---------------------------------------------------------------
    def load_official(self, generator_state: Mapping[str, torch.Tensor]) -> None:
        """Strictly load ``ckpt["generator"]`` (weight-norm pairs are folded; plain weights accepted)."""
        load_strict(self, fold_weight_norm(generator_state), "bigvgan generator")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> "BigVGAN":
        """From a folder holding config.json and bigvgan_generator.pt (the HF repo layout)."""
        model_dir = Path(model_dir)
        cfg = BigVGANConfig.from_json(model_dir / "config.json")
        ckpt = torch.load(model_dir / "bigvgan_generator.pt", map_location="cpu", weights_only=True)
        if not isinstance(ckpt, Mapping) or "generator" not in ckpt:
            raise CheckpointMismatch(f"{model_dir / 'bigvgan_generator.pt'}: expected a dict with a 'generator' entry")
        model = cls(cfg)
        model.load_official(ckpt["generator"])
        return model.to(device).eval()
