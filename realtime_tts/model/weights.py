"""Checkpoint weights: a file read the way every loader here does, and modules made ready for
inference."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def torch_load(path: str | Path) -> Any:
    """``torch.load`` on the CPU, tensors only; a training checkpoint that pickles other objects
    (optimizer state, arguments) falls back to the full unpickler: it is a local file the operator
    placed, not input from a client."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e):
            raise
    log.warning("%s: not loadable with weights_only=True; loading it as a full pickle", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def for_inference(device: torch.device, *modules: torch.nn.Module) -> None:
    """Move each module to ``device`` in eval mode, its parameters frozen."""
    for m in modules:
        m.to(device).eval()
        for p in m.parameters():
            p.requires_grad_(False)
