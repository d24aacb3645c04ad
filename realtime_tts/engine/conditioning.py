"""Per-voice and per-emotion conditioning of the IndexTTS2 engine, and how it is cached.

Everything the pipeline derives from a reference clip is computed once and kept in a
``ConditioningCache`` (LRU in memory, one file per entry on disk so a restart does not
recompute it). Keys are sha256 digests of (kind, clip content hash, model fingerprint): a clip
changed in place gets a new content hash, and a different checkpoint or dtype gets a new
fingerprint, so a stale entry is never returned.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, fields
from pathlib import Path

import torch

FORMAT = 1  # bump when the stored fields change


@dataclass
class VoiceConditioning:
    """What one speaker clip contributes to every segment spoken with it."""

    feats: torch.Tensor  # [1, T, W] normalised w2v-BERT layer-17 features of the 16 kHz clip
    codes: torch.Tensor  # [1, T] semantic codec codes of the clip
    ref_mel: torch.Tensor  # [1, n_mels, Tp] log mel of the 22.05 kHz clip
    style: torch.Tensor  # [1, style_dim] CAMPPlus style
    prompt: torch.Tensor  # [1, Tp, content_dim] S2M prompt condition (regulated codec embedding)
    spk_latents: torch.Tensor  # [1, 32, C] GPT speaker latents (perceiver output)
    spk_emovec: torch.Tensor  # [1, C] GPT emotion vector of the speaker features (merge base)


@dataclass
class EmotionConditioning:
    """The GPT emotion vector of one clip loaded as an emotion reference (16 kHz directly)."""

    emovec: torch.Tensor  # [1, C]


def cache_key(kind: str, content: str, fingerprint: str) -> str:
    """Hex key for ``ConditioningCache`` (which accepts content-hash-like keys only)."""
    return hashlib.sha256(f"{kind}\0{content}\0{fingerprint}\0{FORMAT}".encode()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(files: list[Path], extra: str) -> str:
    """Identity of a loaded model: every weight file's name, size and mtime, plus ``extra``
    (device dtype). Cheap: no file is read."""
    h = hashlib.sha256(extra.encode())
    for path in files:
        st = Path(path).stat()
        h.update(f"{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dump(value: VoiceConditioning | EmotionConditioning, path: Path) -> None:
    """Write a conditioning entry as plain CPU tensors (torch.save, loadable with weights_only)."""
    data = {f.name: getattr(value, f.name).detach().cpu() for f in fields(value)}
    data["__kind__"] = torch.tensor(0 if isinstance(value, VoiceConditioning) else 1)
    data["__format__"] = torch.tensor(FORMAT)
    # through memory: torch.save derives the archive's record name from the file name, and the
    # cache's temporary names (".tmp-XXXX") make it empty
    buf = io.BytesIO()
    torch.save(data, buf)
    Path(path).write_bytes(buf.getvalue())


def loader(device: torch.device):
    """``load(path)`` for ``ConditioningCache``: reads what ``dump`` wrote onto ``device``."""

    def load(path: Path) -> VoiceConditioning | EmotionConditioning:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if int(data.pop("__format__", -1)) != FORMAT:
            raise ValueError(f"{path}: conditioning written by another format version")
        cls = VoiceConditioning if int(data.pop("__kind__")) == 0 else EmotionConditioning
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"{path}: fields {sorted(data)} do not match {cls.__name__}")
        return cls(**{k: v.to(device) for k, v in data.items()})

    return load
