"""MaskGCT RepCodec semantic codec (encoder + factorised VQ), weight-compatible with
amphion/MaskGCT `semantic_codec/model.safetensors`.

IndexTTS2 uses it two ways:
- `quantize(feat [B, T, 1024])` -> (codes [B, T], S_ref [B, T, 1024]): the speaker prompt's
  w2v-BERT features are encoded, snapped to the nearest of 8192 codewords (cosine) and projected
  back; S_ref feeds the S2M length regulator.
- `vq2emb(codes [B, L])` -> [B, 1024, L]: GPT output codes to S2M input. Unlike the official
  call pattern (quirk 9), this works for any batch size.

The checkpoint also holds a decoder (`decoder.*`, 121 entries, ~22 M parameters) that inference
never runs. `load_official_state_dict` checks that every decoder entry is present with the expected
shape (so a wrong file is still caught) and then drops it; everything else loads strictly.
Weight norm of the 1x1 projections is kept in its (weight_g, weight_v) form and evaluated with
torch's own weight-norm kernel, so outputs match the official module bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class CodecConfig:
    codebook_size: int = 8192
    hidden_size: int = 1024
    codebook_dim: int = 8
    vocos_dim: int = 384
    vocos_intermediate_dim: int = 2048
    vocos_num_layers: int = 12


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T]
        h = self.norm(self.dwconv(x).transpose(1, 2))  # [B, T, C]
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, in_dim: int, dim: int, hidden: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(in_dim, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, hidden, 1.0 / num_layers) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, T] -> [B, T, dim]
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class WNPointwise(nn.Module):
    """1x1 Conv1d under weight norm (dim 0), stored as (weight_g, weight_v) like the checkpoint."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(out_dim, in_dim, 1) * 0.02)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def weight(self) -> torch.Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)  # [out, in, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in, T] -> [B, out, T]
        return F.conv1d(x, self.weight(), self.bias)


class FactorizedVQ(nn.Module):
    """Project to a low-dim space, pick the nearest codeword by cosine, project back."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_project = WNPointwise(dim, codebook_dim)
        self.out_project = WNPointwise(codebook_dim, dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        # z: [B, D, T] -> codes [B, T]
        e = F.normalize(self.in_project(z).transpose(1, 2).reshape(-1, self.codebook.embedding_dim))
        c = F.normalize(self.codebook.weight)
        # squared euclidean distance between unit vectors, written out in the same form as the
        # official module so that near-ties resolve identically
        dist = e.pow(2).sum(1, keepdim=True) - 2 * e @ c.t() + c.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1).indices.view(z.shape[0], z.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, L] -> [B, D, L]; un-normalised codebook rows are projected back
        return self.out_project(self.codebook(codes).transpose(1, 2))


class ResidualVQ(nn.Module):
    """Container kept only for the checkpoint's `quantizer.quantizers.0.*` names (one stage)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList([FactorizedVQ(dim, codebook_size, codebook_dim)])

    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, L] -> [B, D, L]
        return self.quantizers[0].decode(codes)


class SemanticCodec(nn.Module):
    def __init__(self, cfg: CodecConfig = CodecConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Sequential(
            VocosBackbone(cfg.hidden_size, cfg.vocos_dim, cfg.vocos_intermediate_dim, cfg.vocos_num_layers),
            nn.Linear(cfg.vocos_dim, cfg.hidden_size),
        )
        self.quantizer = ResidualVQ(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)

    @torch.no_grad()
    def quantize(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # feat: [B, T, hidden] (equal-length rows) -> codes [B, T] int64, S_ref [B, T, hidden]
        if feat.dim() != 3 or feat.shape[-1] != self.cfg.hidden_size:
            raise ValueError(f"expected [B, T, {self.cfg.hidden_size}], got {tuple(feat.shape)}")
        z = self.encoder(feat.transpose(1, 2)).transpose(1, 2)  # [B, hidden, T]
        vq = self.quantizer.quantizers[0]
        codes = vq.encode(z)
        return codes, vq.decode(codes).transpose(1, 2)

    @torch.no_grad()
    def vq2emb(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, L] -> [B, hidden, L]
        if codes.dim() != 2:
            raise ValueError(f"expected codes [B, L], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cfg.codebook_size):
            raise ValueError(f"codes must be in [0, {self.cfg.codebook_size})")
        return self.quantizer.vq2emb(codes)

    # ------------------------------------------------------------ checkpoint

    def decoder_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the unused `decoder.*` entries the official file carries (same layout as the encoder)."""
        return {"decoder." + k: tuple(v.shape) for k, v in self.encoder.state_dict().items()}

    def load_official_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strict load of an official RepCodec state dict; `decoder.*` is verified then dropped."""
        expected_dec = self.decoder_shapes()
        dec = {k: v for k, v in sd.items() if k.startswith("decoder.")}
        missing = sorted(set(expected_dec) - set(dec))
        unexpected = sorted(set(dec) - set(expected_dec))
        wrong = sorted(k for k in set(dec) & set(expected_dec) if tuple(dec[k].shape) != expected_dec[k])
        if missing or unexpected or wrong:
            raise RuntimeError(f"semantic codec decoder entries do not match: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        self.load_state_dict({k: v for k, v in sd.items() if not k.startswith("decoder.")}, strict=True)

    @classmethod
    def from_file(cls, path: str, cfg: CodecConfig = CodecConfig()) -> "SemanticCodec":
        """Load `semantic_codec/model.safetensors` (or a torch.save'd state dict) from a local path."""
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(cfg)
        model.load_official_state_dict({k: v.float() for k, v in sd.items()})
        return model.eval()
