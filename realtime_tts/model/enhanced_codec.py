"""IndexTTS-2.5 semantic codec (official ``EnhancedCodec``, ``codec.pth``): 25 Hz codes -> 50 Hz
semantic features for S2M.

The official module is IndexTTS-2's RepCodec (same VocosBackbone encoder/decoder and factorised VQ,
so the :mod:`codec` pieces are reused) plus a stride-2 ``down`` conv before the encoder and an
``up`` conv after the decoder: codes run at half the w2v-BERT frame rate. Inference only decodes::

    codes [B, L] -> codebook rows (not normalised) -> out_project 8 -> 1024   [B, 1024, L]
                 -> decoder (VocosBackbone + Linear)                         [B, L, 1024]
                 -> nearest x2 in time -> ``up`` Conv1d(k3, pad 1), no activation
                 -> S_infer [B, 2L, 1024]

``codec.pth`` holds 243 entries (``{"model": state_dict}``). The encoder side (``down``, ``encoder.*``,
``quantizer.*.in_project``: 25 M parameters at full size) serves only the training-time ``quantize``;
``load_official_state_dict`` checks every one of those entries by name and shape, then drops them,
and loads the rest strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .codec import CodecConfig, VocosBackbone, WNPointwise


@dataclass(frozen=True)
class EnhancedCodecConfig(CodecConfig):
    """``semantic_codec`` section of the 2.5 config; ``downsample_scale`` is the official default
    (the released config.yaml does not set it)."""

    downsample_scale: int = 2

    def __post_init__(self) -> None:
        if self.downsample_scale != 2:
            raise ValueError(f"only downsample_scale 2 is supported (official default), got {self.downsample_scale}")


class CodeDecoder(nn.Module):
    """Checkpoint names ``quantizer.quantizers.0.{codebook, out_project}``: codes -> projected rows."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.out_project = WNPointwise(codebook_dim, dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # codes [B, L] -> [B, dim, L]
        return self.out_project(self.codebook(codes).transpose(1, 2))


class Quantizers(nn.Module):
    """Container for the ``quantizer.quantizers.0`` names (one stage)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList([CodeDecoder(dim, codebook_size, codebook_dim)])


class EnhancedCodec(nn.Module):
    def __init__(self, cfg: EnhancedCodecConfig = EnhancedCodecConfig()):
        super().__init__()
        self.cfg = cfg
        self.quantizer = Quantizers(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)
        self.decoder = nn.Sequential(
            VocosBackbone(cfg.hidden_size, cfg.vocos_dim, cfg.vocos_intermediate_dim, cfg.vocos_num_layers),
            nn.Linear(cfg.vocos_dim, cfg.hidden_size),
        )
        self.up = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, kernel_size=3, stride=1, padding=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, L] -> semantic features [B, 2L, hidden] at 50 Hz."""
        if codes.dim() != 2:
            raise ValueError(f"expected codes [B, L], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cfg.codebook_size):
            raise ValueError(f"codes must be in [0, {self.cfg.codebook_size})")
        x = self.decoder(self.quantizer.quantizers[0](codes))  # [B, L, hidden]
        x = F.interpolate(x.transpose(1, 2), scale_factor=2, mode="nearest")  # [B, hidden, 2L]
        return self.up(x).transpose(1, 2)

    # ------------------------------------------------------------ checkpoint

    def encoder_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the official entries that only ``quantize`` uses (118 at full size)."""
        c = self.cfg
        h = c.hidden_size
        shapes = {"down.weight": (h, h, 3), "down.bias": (h,)}
        shapes.update({"encoder." + k: tuple(v.shape) for k, v in self.decoder.state_dict().items()})
        wn = WNPointwise(h, c.codebook_dim)
        shapes.update({"quantizer.quantizers.0.in_project." + k: tuple(v.shape) for k, v in wn.state_dict().items()})
        return shapes

    def load_official_state_dict(self, sd: dict[str, torch.Tensor], label: str = "codec.pth") -> None:
        """Strict load of the official ``EnhancedCodec`` state dict (``codec.pth["model"]``): the
        encoder-side entries are verified by name and shape then dropped; every other entry must
        match this module exactly. ValueError naming ``label`` and the keys otherwise."""
        expected = {**self.encoder_shapes(), **{k: tuple(v.shape) for k, v in self.state_dict().items()}}
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        wrong = sorted(f"{k}: file {list(sd[k].shape)} vs model {list(expected[k])}"
                       for k in set(sd) & set(expected) if tuple(sd[k].shape) != expected[k])
        if missing or unexpected or wrong:
            parts = [f"{label} does not match EnhancedCodec({self.cfg}):"]
            for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
                if keys:
                    more = f", ... ({len(keys)} in all)" if len(keys) > 10 else ""
                    parts.append(f"  {title}: {', '.join(keys[:10])}{more}")
            raise ValueError("\n".join(parts))
        own = set(self.state_dict())
        self.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
