"""Compare a regenerated fixture tree with the committed one, file by file.

    python tools/golden/compare_fixtures.py NEW_DIR OLD_DIR

Files with the same bytes are "identical". Otherwise the contents are compared: tensors in
.safetensors / .pt / .pth files (nested dicts and lists walked, every tensor by key: dtype, shape
and the largest absolute difference), audio files by their decoded samples, JSON by value. Prints
one line per differing file and exits 1 when any content differs (bytes alone may differ: a
timestamp or a random stream serial in an audio header, a temporary path in a SentencePiece model).
Runs in the oracle venv (torch, safetensors, soundfile, sentencepiece).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

AUDIO = {".wav", ".flac", ".ogg", ".mp3"}


def _tensors(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    out: dict = {}

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}[{i}]", v)
        else:
            out[prefix] = obj

    walk("", torch.load(str(path), map_location="cpu", weights_only=False))
    return out


def compare_tensors(new: Path, old: Path) -> tuple[bool, str]:
    import torch

    a, b = _tensors(new), _tensors(old)
    if a.keys() != b.keys():
        return False, f"keys differ: {sorted(a.keys() ^ b.keys())[:5]}"
    worst, where, scale, notes = 0.0, "", 0.0, []
    for k in a:
        x, y = a[k], b[k]
        if not isinstance(x, torch.Tensor):
            if x != y:
                notes.append(f"{k}: {x!r} != {y!r}")
            continue
        if x.dtype != y.dtype or x.shape != y.shape:
            notes.append(f"{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
            continue
        if torch.equal(x, y):
            continue
        d = float((x.double() - y.double()).abs().max()) if x.is_floating_point() else float("inf")
        if d > worst:
            worst, where, scale = d, k, float(y.double().abs().max())
    if notes:
        return False, "; ".join(notes[:5])
    if worst == 0.0:
        return True, "same values (bytes differ)"
    return False, f"max |diff| {worst:.3g} at {where} (largest |value| there {scale:.3g})"


def compare_audio(new: Path, old: Path) -> tuple[bool, str]:
    import numpy as np
    import soundfile as sf

    x, sx = sf.read(str(new), dtype="float64", always_2d=True)
    y, sy = sf.read(str(old), dtype="float64", always_2d=True)
    if sx != sy or x.shape != y.shape:
        return False, f"{sx} Hz {x.shape} vs {sy} Hz {y.shape}"
    d = float(np.abs(x - y).max()) if x.size else 0.0
    return d == 0.0, "same samples (bytes differ)" if d == 0.0 else f"max |diff| {d:.3g}"


def compare_file(new: Path, old: Path) -> tuple[bool, str]:
    if new.read_bytes() == old.read_bytes():
        return True, "identical"
    suffix = new.suffix
    if suffix in {".safetensors", ".pt", ".pth", ".bin"}:
        return compare_tensors(new, old)
    if suffix in AUDIO:
        return compare_audio(new, old)
    if suffix == ".json":
        same = json.loads(new.read_text("utf-8")) == json.loads(old.read_text("utf-8"))
        return same, "same values (bytes differ)" if same else "values differ"
    if suffix == ".model":
        import sentencepiece as spm

        a, b = spm.SentencePieceProcessor(), spm.SentencePieceProcessor()
        a.load(str(new))
        b.load(str(old))
        pieces = [(a.id_to_piece(i), a.get_score(i)) for i in range(a.get_piece_size())]
        same = pieces == [(b.id_to_piece(i), b.get_score(i)) for i in range(b.get_piece_size())]
        return same, "same pieces and scores (bytes differ)" if same else "pieces differ"
    return False, "bytes differ"


def main() -> int:
    new_root, old_root = (Path(p) for p in sys.argv[1:3])
    bad = 0
    names = sorted({p.relative_to(new_root) for p in new_root.rglob("*") if p.is_file()}
                   | {p.relative_to(old_root) for p in old_root.rglob("*") if p.is_file()})
    counts = {"identical": 0}
    for rel in names:
        new, old = new_root / rel, old_root / rel
        if not new.exists() or not old.exists():
            print(f"ONLY IN {'old' if new.exists() is False else 'new'}: {rel}")
            bad += 1
            continue
        same, how = compare_file(new, old)
        if how == "identical":
            counts["identical"] += 1
            continue
        print(f"{'same' if same else 'DIFF'}  {rel}: {how}")
        bad += not same
    print(f"{len(names)} files: {counts['identical']} byte-identical, {bad} with different content")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
