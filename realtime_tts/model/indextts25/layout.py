"""The official IndexTTS-2.5 checkpoint directory: which model a directory holds, where each file is.

Layout (HF ``IndexTeam/IndexTTS-2.5`` plus the external models under ``hf_cache/``)::

    <dir>/config.yaml  gpt.pth  codec.pth  s2mel.pth  multilingual_zh_ja_yue_char_del.tiktoken
    <dir>/wav2vec2bert_stats.pt  feat1.pt  feat2.pt
    <dir>/qwen0.6bemo4-merge/                      optional: only emotion from text needs it
    <dir>/hf_cache/w2v-bert-2.0/                   config.json, preprocessor_config.json, model.safetensors
    <dir>/hf_cache/campplus_cn_common.bin
    <dir>/hf_cache/bigvgan/                        config.json, bigvgan_generator.pt

This is the flat ``hf_cache`` layout the official 2.5 code reads. The external models are the ones
IndexTTS-2 uses, so the Hugging Face cache layout (``hf_cache/models--facebook--w2v-bert-2.0/...``,
what ``realtime-tts download`` writes for IndexTTS-2) is accepted as well, offline only. The
official code also fetches the MaskGCT semantic codec, which 2.5 never uses: it is not required.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..s2mel.checkpoint import CheckpointMismatch

FAMILY_V2 = "indextts-2"
FAMILY_V25 = "indextts-2.5"
TIKTOKEN = "multilingual_zh_ja_yue_char_del.tiktoken"
CODEC = "codec.pth"
HF_CACHE = "hf_cache"
QWEN_DEFAULT = "qwen0.6bemo4-merge"

# config.yaml key -> (default file name, what it is)
LOCAL_FILES: dict[str, tuple[str, str]] = {
    "gpt_checkpoint": ("gpt.pth", "GPT weights"),
    "s2mel_checkpoint": ("s2mel.pth", "semantic-to-mel weights"),
    "w2v_stat": ("wav2vec2bert_stats.pt", "w2v-BERT feature statistics"),
    "spk_matrix": ("feat1.pt", "emotion matrix, speaker side"),
    "emo_matrix": ("feat2.pt", "emotion matrix, emotion side"),
}
# flat path under hf_cache/ -> (HF repo, file in the repo)
EXTERNAL_FILES: dict[str, tuple[str, str]] = {
    "w2v-bert-2.0/config.json": ("facebook/w2v-bert-2.0", "config.json"),
    "w2v-bert-2.0/preprocessor_config.json": ("facebook/w2v-bert-2.0", "preprocessor_config.json"),
    "w2v-bert-2.0/model.safetensors": ("facebook/w2v-bert-2.0", "model.safetensors"),
    "campplus_cn_common.bin": ("funasr/campplus", "campplus_cn_common.bin"),
    "bigvgan/config.json": ("nvidia/bigvgan_v2_22khz_80band_256x", "config.json"),
    "bigvgan/bigvgan_generator.pt": ("nvidia/bigvgan_v2_22khz_80band_256x", "bigvgan_generator.pt"),
}
REQUIRED_SECTIONS = ("gpt", "semantic_codec", "s2mel")


@dataclass(frozen=True)
class Paths25:
    """Every resolved file of a complete IndexTTS-2.5 directory."""

    root: Path
    config_path: Path
    config: dict
    gpt: Path
    codec: Path
    s2mel: Path
    tiktoken: Path
    w2v_stats: Path
    spk_matrix: Path  # feat1.pt [73, 192]
    emo_matrix: Path  # feat2.pt [73, C]
    w2v_bert_dir: Path  # config.json, preprocessor_config.json, model.safetensors
    campplus: Path
    bigvgan_config: Path
    bigvgan_generator: Path
    qwen_dir: Path | None  # None: emotion from text is unavailable


def _version(cfg: Mapping[str, Any]) -> float | None:
    try:
        return float(cfg.get("version"))
    except (TypeError, ValueError):
        return None


def read_config(path: str | Path) -> dict:
    """config.yaml (a directory or the file) -> dict; CheckpointMismatch naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise CheckpointMismatch(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointMismatch(f"{path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointMismatch(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    return cfg


def load_config(path: str | Path) -> dict:
    """An IndexTTS-2.5 config.yaml: ``version: 2.5`` and the model sections present."""
    cfg = read_config(path)
    where = Path(path) / "config.yaml" if Path(path).is_dir() else Path(path)
    if _version(cfg) != 2.5:
        raise CheckpointMismatch(f"{where}: key 'version' is {cfg.get('version')!r}, expected 2.5 "
                                 "(an IndexTTS-2.5 checkpoint)")
    missing = [k for k in (*REQUIRED_SECTIONS, *LOCAL_FILES, "emo_num") if k not in cfg]
    if missing:
        raise CheckpointMismatch(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    return cfg


def gpt_keys(path: Path) -> set[str] | None:
    """Parameter names in a gpt.pth, read lazily (memory-mapped: no weight is loaded)."""
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file says nothing about the family
        return None
    if isinstance(sd, Mapping) and isinstance(sd.get("model"), Mapping):
        sd = sd["model"]
    return set(map(str, sd)) if isinstance(sd, Mapping) else None


def _gpt_family(keys: set[str]) -> str | None:
    if {"spk_emb_proj.weight", "lang_embedding.weight"} <= keys:
        return FAMILY_V25
    if {"conditioning_encoder.embed.conv.0.weight", "speed_emb.weight"} <= keys:
        return FAMILY_V2
    return None


def detect(directory: str | Path) -> str:
    """``"indextts-2"`` or ``"indextts-2.5"`` for an official checkpoint directory.

    Evidence, strongest first: config.yaml ``version`` (2.0 / 2.5); the files only one family
    ships (2.5: codec.pth + the .tiktoken; 2: bpe.model); the gpt.pth parameter names (2.5:
    spk_emb_proj + lang_embedding; 2: speaker conformer + speed_emb). Contradicting evidence
    or none at all is a CheckpointMismatch that lists what was found.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointMismatch(f"{root}: checkpoint directory does not exist")
    votes: dict[str, str] = {}  # evidence -> family
    if (root / "config.yaml").is_file():
        version = _version(read_config(root))
        if version in (2.0, 2.5):
            votes[f"config.yaml version {version}"] = FAMILY_V25 if version == 2.5 else FAMILY_V2
    if (root / CODEC).is_file() and (root / TIKTOKEN).is_file():
        votes[f"{CODEC} + {TIKTOKEN}"] = FAMILY_V25
    if (root / "bpe.model").is_file():
        votes["bpe.model"] = FAMILY_V2
    if len(set(votes.values())) != 1 and (root / "gpt.pth").is_file():
        family = _gpt_family(gpt_keys(root / "gpt.pth") or set())
        if family is not None:
            votes["gpt.pth parameter names"] = family
    found = "; ".join(f"{k} -> {v}" for k, v in votes.items()) or "none"
    families = set(votes.values())
    if len(families) != 1:
        what = "contradicting" if families else "no"
        raise CheckpointMismatch(f"{root}: {what} evidence of the model family (found: {found}); expected an "
                                 f"IndexTTS-2 or IndexTTS-2.5 checkpoint directory")
    return families.pop()


def find_external(root: Path, flat: str) -> Path | None:
    """One external file under ``<root>/hf_cache``: the flat layout, else the HF cache (offline)."""
    cache = root / HF_CACHE
    if (cache / flat).is_file():
        return cache / flat
    if not cache.is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = EXTERNAL_FILES[flat]
    found = try_to_load_from_cache(repo, filename, cache_dir=cache)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _qwen_complete(path: Path) -> bool:
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()
    return (path / "config.json").is_file() and has_weights and has_tokenizer


def _local_names(root: Path) -> dict[str, str]:
    names = {key: default for key, (default, _) in LOCAL_FILES.items()}
    try:
        cfg = read_config(root)
    except CheckpointMismatch:
        return names
    names.update({k: str(cfg[k]).strip() for k in LOCAL_FILES if isinstance(cfg.get(k), str)})
    return names


def _local_qwen(root: Path) -> str:
    try:
        cfg = read_config(root)
    except CheckpointMismatch:
        return QWEN_DEFAULT
    return str(cfg.get("qwen_emo_path") or QWEN_DEFAULT).strip().rstrip("/")


def missing_files(directory: str | Path, *, include_qwen: bool = False) -> list[str]:
    """Every required item that is absent, human readable; [] when complete (the Qwen emotion
    model is optional: listed only with ``include_qwen``)."""
    root = Path(directory)
    if not root.is_dir():
        return [f"{root}/ (directory does not exist)"]
    missing = [] if (root / "config.yaml").is_file() else ["config.yaml (model configuration)"]
    names = _local_names(root)
    missing += [f"{names[k]} ({what})" for k, (_, what) in LOCAL_FILES.items() if not (root / names[k]).is_file()]
    missing += [f"{name} ({what})" for name, what in ((CODEC, "semantic codec"), (TIKTOKEN, "text tokenizer"))
                if not (root / name).is_file()]
    missing += [f"{HF_CACHE}/{flat}" for flat in EXTERNAL_FILES if find_external(root, flat) is None]
    if include_qwen:
        cfg_qwen = _local_qwen(root)
        if not _qwen_complete(root / cfg_qwen):
            missing.append(f"{cfg_qwen}/ (Qwen emotion model; optional, needed only for emotion text)")
    return missing


def resolve(directory: str | Path) -> Paths25:
    """All paths of a complete IndexTTS-2.5 directory; CheckpointMismatch naming each missing file."""
    root = Path(directory)
    missing = missing_files(root)
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise CheckpointMismatch(f"IndexTTS-2.5 checkpoint at {root} is incomplete; missing:\n{lines}")
    cfg = load_config(root)
    names = _local_names(root)
    ext = {flat: find_external(root, flat) for flat in EXTERNAL_FILES}
    qwen = root / _local_qwen(root)
    return Paths25(
        root=root, config_path=root / "config.yaml", config=cfg,
        gpt=root / names["gpt_checkpoint"], codec=root / CODEC, s2mel=root / names["s2mel_checkpoint"],
        tiktoken=root / TIKTOKEN, w2v_stats=root / names["w2v_stat"],
        spk_matrix=root / names["spk_matrix"], emo_matrix=root / names["emo_matrix"],
        w2v_bert_dir=ext["w2v-bert-2.0/config.json"].parent, campplus=ext["campplus_cn_common.bin"],
        bigvgan_config=ext["bigvgan/config.json"], bigvgan_generator=ext["bigvgan/bigvgan_generator.pt"],
        qwen_dir=qwen if _qwen_complete(qwen) else None,
    )
