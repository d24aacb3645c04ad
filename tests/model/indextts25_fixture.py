"""The tiny official-layout IndexTTS-2.5 checkpoint and the official outputs computed on it
(tools/golden/indextts25.py), shared by the IndexTTS-2.5 model tests.

The checkpoint is not stored: ``tools/golden/tiny25.py`` draws it from its seed (digests checked),
all of it or only the weight files a test needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "indextts25"
sys.path.insert(0, str(ROOT / "tools" / "golden"))
import tiny25  # noqa: E402

SMALL_FILES = ("gpt.pth", "codec.pth", "s2mel.pth", "hf_cache/bigvgan/bigvgan_generator.pt", "feat1.pt", "feat2.pt")


def materialise(out: Path, only: tuple[str, ...] | None = None) -> Path:
    tiny25.materialise(out, FIX / "tiny", only=only)
    return out


def meta() -> dict:
    return json.loads((FIX / "golden.json").read_text(encoding="utf-8"))


def gold() -> dict[str, torch.Tensor]:
    return load_file(str(FIX / "golden.safetensors"))


def randn(spec: list) -> torch.Tensor:
    """A random input recorded as [seed, shape] (tools/golden/indextts25.py ``randn``)."""
    seed, shape = spec
    return torch.randn(list(shape), generator=torch.Generator().manual_seed(seed))


def close(a: torch.Tensor, b: torch.Tensor, atol: float) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    err = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    assert err <= atol, f"max abs error {err} > {atol}"
    return err
