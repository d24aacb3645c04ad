"""Length regulator: semantic embeddings at 50 Hz -> DiT content condition at mel rate."""

from __future__ import annotations

import torch
from torch import nn

from .config import S2MelConfig


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, max_len] bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def nearest_indices(in_lens: torch.Tensor, out_lens: torch.Tensor, max_out: int) -> torch.Tensor:
    """Source frame of every output frame for per-item nearest-neighbour resizing: [B, max_out].

    Same arithmetic as F.interpolate(mode="nearest", size=out): the scale in/out and the
    product are float32, then floored and clamped to the last input frame.
    """
    scale = in_lens.to(torch.float32) / out_lens.to(torch.float32)  # [B]
    dst = torch.arange(max_out, device=in_lens.device, dtype=torch.float32)
    idx = torch.floor(dst[None, :] * scale[:, None]).long()
    return torch.minimum(idx, (in_lens - 1)[:, None]).clamp(min=0)


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, mask: torch.Tensor | None) -> torch.Tensor:
    """GroupNorm with one group whose statistics ignore padded frames.

    x: [B, C, T], mask: [B, 1, T] float or None (no padding).
    """
    if mask is None:
        return norm(x)
    count = mask.sum(dim=(1, 2), keepdim=True) * x.size(1)  # [B, 1, 1]
    mean = (x * mask).sum(dim=(1, 2), keepdim=True) / count
    var = (((x - mean) * mask) ** 2).sum(dim=(1, 2), keepdim=True) / count
    x = (x - mean) * torch.rsqrt(var + norm.eps)
    return x * norm.weight[None, :, None] + norm.bias[None, :, None]


class LengthRegulator(nn.Module):
    """Official ``InterpolateRegulator`` on continuous input (the only path IndexTTS2 uses).

    Linear projection, nearest-neighbour stretch to the target length, then
    ``regulator_convs`` x [Conv1d k3, GroupNorm(1), Mish] and a 1x1 Conv1d. In a batch every
    item is stretched and normalised over its own length only, so batching does not change
    any item's result (the official code assumes batch 1).
    """

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        c = cfg.content_dim
        layers: list[nn.Module] = []
        for _ in range(cfg.regulator_convs):
            layers += [nn.Conv1d(c, c, 3, 1, 1), nn.GroupNorm(1, c), nn.Mish()]
        layers.append(nn.Conv1d(c, c, 1))
        self.model = nn.Sequential(*layers)  # official key names model.{0,1,3,4,...}
        self.content_in_proj = nn.Linear(cfg.semantic_dim, c)
        # Stored in the checkpoint but only used by the discrete-token / masking paths
        # that IndexTTS2 never takes; kept so the checkpoint loads strictly.
        self.embedding = nn.Embedding(cfg.regulator_codebook_size, c)
        self.mask_token = nn.Parameter(torch.zeros(1, c))

    def forward(
        self,
        x: torch.Tensor,  # [B, L, semantic_dim]
        out_lens: torch.Tensor,  # [B] target mel frames
        in_lens: torch.Tensor | None = None,  # [B] valid input frames (default: all L)
    ) -> torch.Tensor:  # [B, max(out_lens), content_dim], zero beyond each length
        B, L, _ = x.shape
        if in_lens is None:
            in_lens = torch.full((B,), L, dtype=torch.long, device=x.device)
        if out_lens.shape != (B,) or in_lens.shape != (B,):
            raise ValueError(f"lengths must have shape [{B}], got {tuple(out_lens.shape)} / {tuple(in_lens.shape)}")
        if int(out_lens.min()) < 1 or int(in_lens.min()) < 1 or int(in_lens.max()) > L:
            raise ValueError(f"invalid lengths: in {in_lens.tolist()} (max {L}), out {out_lens.tolist()}")
        T = int(out_lens.max())
        h = self.content_in_proj(x)  # [B, L, C]
        idx = nearest_indices(in_lens, out_lens, T)  # [B, T]
        h = torch.gather(h, 1, idx[:, :, None].expand(B, T, h.size(-1))).transpose(1, 2)  # [B, C, T]
        valid = length_mask(out_lens, T)
        mask = None if bool(valid.all()) else valid[:, None, :].to(h.dtype)  # [B, 1, T]
        for layer in self.model:
            if isinstance(layer, nn.Conv1d) and mask is not None:
                h = h * mask  # the conv must see zeros past each item's end, as unbatched
            if isinstance(layer, nn.GroupNorm):
                h = masked_group_norm(h, layer, mask)
            else:
                h = layer(h)
        h = h.transpose(1, 2)  # [B, T, C]
        return h * valid[:, :, None].to(h.dtype)
