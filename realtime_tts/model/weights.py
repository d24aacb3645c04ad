"""Reading a checkpoint file the way every loader here does."""

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
