"""Which engine a server or ``say`` runs on: ``--engine auto|indextts2|espeak``.

``auto`` takes IndexTTS2 when the checkpoint directory holds every weight file it needs
and the embedded eSpeak NG engine otherwise; either way it says which and why, so nobody
wonders why the server sounds robotic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import Engine
from .checkpoints import CheckpointError, download_command, has_weights, missing_files

ENGINES = ("auto", "indextts2", "espeak")


@dataclass
class EngineChoice:
    name: str  # "indextts2" or "espeak"
    reason: str


def choose_engine(requested: str, checkpoints: Path | str) -> EngineChoice:
    """Decide without loading anything; CheckpointError when IndexTTS2 is forced but absent."""
    if requested not in ENGINES:
        raise ValueError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}")
    if requested == "espeak":
        return EngineChoice("espeak", "requested with --engine espeak")
    if has_weights(checkpoints):
        return EngineChoice("indextts2", f"IndexTTS-2 weights found in {checkpoints}")
    if requested == "indextts2":
        lines = "\n".join(f"  - {m}" for m in missing_files(checkpoints, include_qwen=False))
        raise CheckpointError(f"--engine indextts2 needs the IndexTTS-2 checkpoint in {checkpoints}; missing:\n"
                              f"{lines}\nGet it with: {download_command(checkpoints)}")
    return EngineChoice("espeak", f"no IndexTTS-2 weights in {checkpoints} (embedded eSpeak NG engine instead; "
                                  f"for IndexTTS2 quality run: {download_command(checkpoints)})")


def load_engine(choice: EngineChoice, *, checkpoints: Path | str, device: str = "auto", dtype: str = "auto",
                compile: bool = False, cache_dir: Path | str | None = None) -> Engine:
    """Build the chosen engine; ``cache_dir`` keeps IndexTTS2's per-voice conditioning across restarts."""
    if choice.name == "espeak":
        from .espeak import EspeakEngine

        return EspeakEngine()
    from .indextts2 import IndexTTS2Engine

    return IndexTTS2Engine.from_checkpoints(checkpoints, device=device, dtype=dtype, cache_dir=cache_dir,
                                            compile=compile)
