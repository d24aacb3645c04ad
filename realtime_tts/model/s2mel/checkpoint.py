"""Strict loading of official checkpoints that were saved in weight-norm form.

The official S2M and BigVGAN modules wrap many layers in ``torch.nn.utils.weight_norm``,
so their state dicts store each such weight as a pair ``<name>.weight_g`` (magnitude)
and ``<name>.weight_v`` (direction). Our modules hold the plain ``<name>.weight``; the
pair is folded once at load time, so inference never recomputes the norm.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class CheckpointMismatch(ValueError):
    """A state dict does not cover a module exactly (names or shapes)."""


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a copy of ``state`` with every (weight_g, weight_v) pair folded into weight.

    weight = g * v / ||v||, the norm taken over all dims but 0 (weight_norm's dim=0),
    computed in float32 whatever the stored dtype, then cast back.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            prefix = key[: -len("weight_g")]
            if prefix + "weight_v" not in state:
                raise CheckpointMismatch(f"{key} has no matching {prefix}weight_v")
            continue
        if key.endswith(".weight_v"):
            prefix = key[: -len("weight_v")]
            g = state.get(prefix + "weight_g")
            if g is None:
                raise CheckpointMismatch(f"{key} has no matching {prefix}weight_g")
            v = value.float()
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
            out[prefix + "weight"] = (g.float() * v / norm).to(value.dtype)
            continue
        out[key] = value
    return out


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop a DistributedDataParallel ``module.`` prefix, as the official loader does."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` requiring the exact same names and shapes.

    The official S2M loader silently skips missing or mis-shaped entries (a wrong
    checkpoint then runs with random weights); here any difference is an error that
    lists the offending keys.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        lines = [f"{what}: checkpoint does not match the model"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                lines.append(f"  {title}: {shown}")
        raise CheckpointMismatch("\n".join(lines))
    module.load_state_dict(state, strict=True)
