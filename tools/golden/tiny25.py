"""Materialise the tiny official-layout IndexTTS-2.5 checkpoint directory from its seed.

    python tools/golden/tiny25.py OUT_DIR [--spec tests/fixtures/indextts25/tiny]

The directory has the official 2.5 layout and the official module shapes at a small config, but
some widths are hard-coded upstream and cannot shrink: the w2v-BERT must be 1024 wide with at
least 17 layers (its layer-17 output feeds the GPT's emotion conformer, whose input width is fixed
at 1024, and the S2M prompt), CAMPPlus is built at its full default size, and the codec's
down/up convolutions are 1024 x 1024. That is ~143 M parameters (306 MB as files), far too many
to store, so the repository keeps only the recipe (``tests/fixtures/indextts25/tiny``):

  manifest.json   for each weight file: its nesting, and per tensor the key, shape, dtype and an
                  init rule ("normal 0 0.02", "uniform 0.5 1.5", "arange", "zeros", ...); written
                  by tools/golden/indextts25.py from the OFFICIAL constructors at the pinned commit
  digests.json    sha256 of every weight file's tensors (names, shapes, bytes in manifest order)
  static/         config.yaml, the byte-level .tiktoken, w2v-BERT config + preprocessor config,
                  BigVGAN config.json: copied as they are

Each tensor is drawn from its own ``torch.Generator`` seeded from (seed, file, key), so the result
does not depend on the order of drawing and is the same in any venv with the same torch CPU
generator; the digests prove it (``materialise`` checks them and raises on any difference). Plain
torch + PyYAML + safetensors: no project code, so the oracle venv runs the same file.

The w2v-BERT weights are stored in fp16 (values drawn fp16-exact); every loader computes in fp32.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "fixtures" / "indextts25" / "tiny"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


def draw(seed: int, file: str, key: str, shape: list[int], dtype: str, rule: str) -> torch.Tensor:
    """One tensor from its init rule: ``normal MEAN STD``, ``uniform LO HI``, ``arange``, ``zeros``,
    optionally followed by ``| at INDEX VALUE`` (add VALUE at flat INDEX)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{file}\0{key}".encode()))
    base, _, extra = rule.partition("|")
    kind, *args = base.split()
    nums = [float(a) for a in args]
    if kind == "normal":
        t = torch.randn(shape, generator=g) * nums[1] + nums[0]
    elif kind == "uniform":
        t = torch.rand(shape, generator=g) * (nums[1] - nums[0]) + nums[0]
    elif kind == "arange":
        t = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int64).view(shape)
    elif kind == "zeros":
        t = torch.zeros(shape)
    else:
        raise ValueError(f"{file} {key}: unknown init rule {rule!r}")
    if extra:
        op, index, value = extra.split()
        if op != "at":
            raise ValueError(f"{file} {key}: unknown init rule {rule!r}")
        t.view(-1)[int(index)] += float(value)
    return t.to(DTYPES[dtype])


def nest(flat: dict[str, torch.Tensor]) -> object:
    """{"net/cfm/x.y": t} -> {"net": {"cfm": {"x.y": t}}}; a single "" key is the bare tensor."""
    if list(flat) == [""]:
        return flat[""]
    out: dict = {}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, t in tensors.items():
        h.update(f"{key}\0{list(t.shape)}\0{t.dtype}\0".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
    else:
        torch.save(nest(tensors), path)


def materialise(out: str | Path, spec: str | Path = SPEC, check: bool = True,
                only: tuple[str, ...] | None = None) -> dict[str, str]:
    """Write the directory into ``out`` (created); returns {file: digest}. With ``check``, a digest
    that differs from ``digests.json`` raises ValueError (the fixture would not be the one the
    official outputs were computed on). ``only``: just these weight files (and the static ones)."""
    out, spec = Path(out), Path(spec)
    manifest = json.loads((spec / "manifest.json").read_text(encoding="utf-8"))
    shutil.copytree(spec / "static", out, dirs_exist_ok=True)
    seed, found = manifest["seed"], {}
    for file, entries in manifest["files"].items():
        if only is not None and file not in only:
            continue
        tensors = {key: draw(seed, file, key, shape, dtype, rule) for key, shape, dtype, rule in entries}
        found[file] = digest(tensors)
        write(out / file, tensors)
        del tensors
    if check:
        want = json.loads((spec / "digests.json").read_text(encoding="utf-8"))
        bad = sorted(f for f in (set(want) if only is None else set(only)) | set(found) if want.get(f) != found.get(f))
        if bad:
            raise ValueError(f"tiny IndexTTS-2.5 checkpoint differs from its recorded digests: {bad}")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--spec", type=Path, default=SPEC)
    args = ap.parse_args()
    materialise(args.out, args.spec)
    print(f"tiny IndexTTS-2.5 checkpoint written to {args.out}")


if __name__ == "__main__":
    main()
