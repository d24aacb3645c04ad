"""Which engine a server or ``say`` runs on: ``--engine auto|indextts2|indextts2.5|espeak``.

``auto`` reads the checkpoint directory: IndexTTS-2.5 when it holds an IndexTTS-2.5 checkpoint
(``config.yaml`` version, its files, its GPT's parameter names: ``model.indextts25.detect``),
IndexTTS-2 when it holds every IndexTTS-2 weight file, and the embedded eSpeak NG engine
otherwise; either way it says which and why, so nobody wonders why the server sounds robotic.
A named engine whose checkpoint is absent or incomplete is an error that lists the missing
files and the exact download command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from realtime_tts.model.indextts25 import FAMILY_V2, FAMILY_V25, detect
from realtime_tts.model.indextts25 import missing_files as missing_files_25
from realtime_tts.model.s2mel import CheckpointMismatch

from .base import Engine
from .checkpoints import CheckpointError, download_command, missing_files

ENGINES = ("auto", "indextts2", "indextts2.5", "espeak")
PIPELINE_ENGINES = ("indextts2", "indextts2.5")  # the staged pipeline: continuous batching pays off
MODEL_OF = {"indextts2": FAMILY_V2, "indextts2.5": FAMILY_V25}  # engine -> ``download --model``
TITLE = {"indextts2": "IndexTTS-2", "indextts2.5": "IndexTTS-2.5"}


@dataclass
class EngineChoice:
    name: str  # "indextts2", "indextts2.5" or "espeak"
    reason: str


def family_of(checkpoints: Path | str) -> str | None:
    """The engine a checkpoint directory is for ("indextts2" / "indextts2.5"), None if unknown."""
    try:
        family = detect(checkpoints)
    except CheckpointMismatch:
        return None
    return {FAMILY_V2: "indextts2", FAMILY_V25: "indextts2.5"}[family]


def missing_for(engine: str, checkpoints: Path | str) -> list[str]:
    if engine == "indextts2.5":
        return missing_files_25(checkpoints)
    return missing_files(checkpoints, include_qwen=False)


def choose_engine(requested: str, checkpoints: Path | str) -> EngineChoice:
    """Decide without loading anything; CheckpointError when a named model is absent."""
    if requested not in ENGINES:
        raise ValueError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}")
    if requested == "espeak":
        return EngineChoice("espeak", "requested with --engine espeak")
    found = family_of(checkpoints)
    wanted = requested if requested != "auto" else (found or "indextts2")
    if requested != "auto" and found is not None and found != requested:
        raise CheckpointError(f"--engine {requested}: {checkpoints} holds an {TITLE[found]} checkpoint; use "
                              f"--engine {found} (or auto), or get {TITLE[requested]} with: "
                              f"{download_command(checkpoints, MODEL_OF[requested])}")
    missing = missing_for(wanted, checkpoints)
    command = download_command(checkpoints, MODEL_OF[wanted])
    if not missing:
        return EngineChoice(wanted, f"{TITLE[wanted]} weights found in {checkpoints}")
    if requested != "auto":
        lines = "\n".join(f"  - {m}" for m in missing)
        raise CheckpointError(f"--engine {requested} needs the {TITLE[wanted]} checkpoint in {checkpoints}; "
                              f"missing:\n{lines}\nGet it with: {command}")
    if found is not None:
        return EngineChoice("espeak", f"the {TITLE[wanted]} checkpoint in {checkpoints} is incomplete ("
                                      f"{len(missing)} missing, first: {missing[0]}; embedded eSpeak NG engine "
                                      f"instead; complete it with: {command})")
    return EngineChoice("espeak", f"no IndexTTS-2 weights in {checkpoints} (embedded eSpeak NG engine instead; "
                                  f"for IndexTTS2 quality run: {command}, or for IndexTTS-2.5: "
                                  f"{download_command(checkpoints, FAMILY_V25)})")


def languages_of(choice: EngineChoice) -> tuple[str, ...] | None:
    """The languages the chosen engine will speak, known before it loads (to refuse early)."""
    if choice.name == "espeak":
        from .espeak import EspeakEngine as engine_class
    elif choice.name == "indextts2.5":
        from .indextts25 import IndexTTS25Family as engine_class
    else:
        from .indextts2 import IndexTTS2Family as engine_class
    return engine_class.languages


def load_engine(choice: EngineChoice, *, checkpoints: Path | str, device: str = "auto", dtype: str = "auto",
                compile: bool = False, cache_dir: Path | str | None = None) -> Engine:
    """Build the chosen engine; ``cache_dir`` keeps the per-voice conditioning across restarts."""
    if choice.name == "espeak":
        from .espeak import EspeakEngine

        return EspeakEngine()
    if choice.name == "indextts2.5":
        from .indextts25 import IndexTTS25Engine as engine_class
    else:
        from .indextts2 import IndexTTS2Engine as engine_class

    return engine_class.from_checkpoints(checkpoints, device=device, dtype=dtype, cache_dir=cache_dir,
                                         compile=compile)
