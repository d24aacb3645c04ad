"""The official IndexTTS-2 checkpoint directory: what must be there, where it is, how to load it.

Layout (``realtime-tts download`` produces it; it is the HF repo ``IndexTeam/IndexTTS-2``
plus the external models in a Hugging Face cache under ``hf_cache/``)::

    <dir>/config.yaml  gpt.pth  s2mel.pth  bpe.model  wav2vec2bert_stats.pt  feat1.pt  feat2.pt
    <dir>/qwen0.6bemo4-merge/          optional: only emotion-from-text needs it
    <dir>/hf_cache/models--facebook--w2v-bert-2.0/...                 config, weights, preprocessor
    <dir>/hf_cache/models--amphion--MaskGCT/... semantic_codec/model.safetensors
    <dir>/hf_cache/models--funasr--campplus/... campplus_cn_common.bin
    <dir>/hf_cache/models--nvidia--bigvgan_v2_22khz_80band_256x/... config.json, bigvgan_generator.pt

The external files are looked up with ``huggingface_hub`` in offline mode only
(``local_files_only=True``): serving never touches the network. The flat layout of newer
official code (``hf_cache/w2v-bert-2.0/``, ``hf_cache/semantic_codec_model.safetensors``,
``hf_cache/campplus_cn_common.bin``, ``hf_cache/bigvgan/``) is accepted as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from realtime_tts.model.weights import torch_load

log = logging.getLogger(__name__)

INDEX_REPO = "IndexTeam/IndexTTS-2"
HF_CACHE_DIR = "hf_cache"
DEFAULT_DIR = "checkpoints"
W2V_BERT_REPO = "facebook/w2v-bert-2.0"
CODEC_REPO = "amphion/MaskGCT"
CAMPPLUS_REPO = "funasr/campplus"
BIGVGAN_REPO = "nvidia/bigvgan_v2_22khz_80band_256x"

# config.yaml key -> (default file name, what it is)
LOCAL_FILES: dict[str, tuple[str, str]] = {
    "gpt_checkpoint": ("gpt.pth", "GPT weights"),
    "s2mel_checkpoint": ("s2mel.pth", "semantic-to-mel weights"),
    "dataset.bpe_model": ("bpe.model", "text tokenizer"),
    "w2v_stat": ("wav2vec2bert_stats.pt", "w2v-BERT feature statistics"),
    "spk_matrix": ("feat1.pt", "emotion matrix, speaker side"),
    "emo_matrix": ("feat2.pt", "emotion matrix, emotion side"),
}
QWEN_DEFAULT = "qwen0.6bemo4-merge"

EMO_NUM = (3, 17, 2, 8, 4, 5, 10, 24)

# Keys the engine reads from config.yaml (dotted paths).
REQUIRED_CONFIG_KEYS = (
    "dataset.bpe_model",
    *(f"gpt.{k}" for k in (
        "model_dim", "layers", "heads", "max_mel_tokens", "max_text_tokens", "number_text_tokens",
        "number_mel_codes", "start_mel_token", "stop_mel_token", "start_text_token", "stop_text_token",
        "condition_module", "emo_condition_module")),
    *(f"semantic_codec.{k}" for k in (
        "codebook_size", "hidden_size", "codebook_dim", "vocos_dim", "vocos_intermediate_dim", "vocos_num_layers")),
    "s2mel.preprocess_params", "s2mel.length_regulator", "s2mel.DiT", "s2mel.wavenet", "s2mel.style_encoder",
    "gpt_checkpoint", "w2v_stat", "s2mel_checkpoint", "emo_matrix", "spk_matrix", "emo_num", "qwen_emo_path",
    "vocoder.name",
)


class CheckpointError(RuntimeError):
    """The checkpoint directory is incomplete, or a file in it does not fit the model."""


def download_command(directory: str | Path, model: str = "indextts-2") -> str:
    """The exact command that completes ``directory`` with ``model`` ("indextts-2", the download
    default, or "indextts-2.5")."""
    flag = "" if model == "indextts-2" else f"--model {model} "
    return f"realtime-tts download {flag}--dir {directory}"


@dataclass(frozen=True)
class ExternalFile:
    repo_id: str
    filename: str
    flat_path: str  # path under hf_cache/ in the flat layout

    @property
    def label(self) -> str:
        return f"{HF_CACHE_DIR}/ {self.repo_id} {self.filename}"


def external_files(bigvgan_repo: str = BIGVGAN_REPO) -> tuple[ExternalFile, ...]:
    """Every file of the external models the engine reads, in download order."""
    return (
        ExternalFile(W2V_BERT_REPO, "config.json", "w2v-bert-2.0/config.json"),
        ExternalFile(W2V_BERT_REPO, "preprocessor_config.json", "w2v-bert-2.0/preprocessor_config.json"),
        ExternalFile(W2V_BERT_REPO, "model.safetensors", "w2v-bert-2.0/model.safetensors"),
        ExternalFile(CODEC_REPO, "semantic_codec/model.safetensors", "semantic_codec_model.safetensors"),
        ExternalFile(CAMPPLUS_REPO, "campplus_cn_common.bin", "campplus_cn_common.bin"),
        ExternalFile(bigvgan_repo, "config.json", "bigvgan/config.json"),
        ExternalFile(bigvgan_repo, "bigvgan_generator.pt", "bigvgan/bigvgan_generator.pt"),
    )


@dataclass(frozen=True)
class CheckpointPaths:
    """Every resolved file of a complete checkpoint directory."""

    root: Path
    config_path: Path
    config: dict
    gpt: Path
    s2mel: Path
    bpe_model: Path
    w2v_stats: Path
    spk_matrix: Path  # feat1.pt [73, 192]
    emo_matrix: Path  # feat2.pt [73, 1280]
    w2v_bert_dir: Path  # config.json, preprocessor_config.json, model.safetensors
    semantic_codec: Path
    campplus: Path
    bigvgan_config: Path
    bigvgan_generator: Path
    qwen_dir: Path | None  # None: emotion from text is unavailable


# ----------------------------------------------------------------------------- config


def _get(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def load_config(directory: str | Path) -> dict:
    """Read and check ``config.yaml`` (a directory or the file itself) -> plain dict."""
    path = Path(directory)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path}: config file not found; get the checkpoint with "
                              f"`{download_command(path.parent)}`")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    version = cfg.get("version")
    try:
        version_ok = float(version) == 2.0
    except (TypeError, ValueError):
        version_ok = False
    if not version_ok:
        raise CheckpointError(f"{path}: key 'version' is {version!r}, expected 2.0 (an IndexTTS-2 checkpoint; "
                              "IndexTTS 1.x and 2.5 checkpoints are different models)")
    missing = []
    for key in REQUIRED_CONFIG_KEYS:
        try:
            _get(cfg, key)
        except KeyError:
            missing.append(key)
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)}")
    emo_num = cfg["emo_num"]
    if (not isinstance(emo_num, list) or len(emo_num) != len(EMO_NUM)
            or not all(isinstance(n, int) and n > 0 for n in emo_num)):
        raise CheckpointError(f"{path}: key 'emo_num' must be a list of 8 positive integers, got {emo_num!r}")
    return cfg


def _local_names(directory: Path) -> tuple[dict[str, str], str, str]:
    """File names declared by config.yaml (defaults when it is absent or unreadable)."""
    names = {key: default for key, (default, _) in LOCAL_FILES.items()}
    qwen, bigvgan = QWEN_DEFAULT, BIGVGAN_REPO
    try:
        cfg = load_config(directory)
    except CheckpointError:
        return names, qwen, bigvgan
    for key in LOCAL_FILES:
        names[key] = str(_get(cfg, key)).strip()
    return names, str(cfg["qwen_emo_path"]).strip().rstrip("/"), str(_get(cfg, "vocoder.name")).strip()


# ----------------------------------------------------------------------------- lookup


def find_external(directory: str | Path, item: ExternalFile) -> Path | None:
    """Offline lookup of one external file under ``<dir>/hf_cache`` (None when absent)."""
    cache = Path(directory) / HF_CACHE_DIR
    flat = cache / item.flat_path
    if flat.is_file():
        return flat
    if not cache.is_dir():
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        found = Path(hf_hub_download(item.repo_id, item.filename, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return found if found.is_file() else None


def _qwen_complete(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))
    has_tokenizer = (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()
    return has_weights and has_tokenizer


def missing_files(directory: str | Path, *, include_qwen: bool = True) -> list[str]:
    """Every item of the layout that is absent, human readable; [] when complete."""
    root = Path(directory)
    if not root.is_dir():
        return [f"{root}/ (directory does not exist)"]
    missing = []
    if not (root / "config.yaml").is_file():
        missing.append("config.yaml (model configuration)")
    names, qwen, bigvgan = _local_names(root)
    for key, (_, what) in LOCAL_FILES.items():
        if not (root / names[key]).is_file():
            missing.append(f"{names[key]} ({what})")
    for item in external_files(bigvgan):
        if find_external(root, item) is None:
            missing.append(item.label)
    if include_qwen and not _qwen_complete(root / qwen):
        missing.append(f"{qwen}/ (Qwen emotion model; optional, needed only for emotion text)")
    return missing


def has_weights(directory: str | Path) -> bool:
    """True when every file needed to synthesize is present (the Qwen model is not required)."""
    return not missing_files(directory, include_qwen=False)


def resolve(directory: str | Path, *, require_qwen: bool = False) -> CheckpointPaths:
    """All paths of a complete directory; CheckpointError naming each missing file otherwise."""
    root = Path(directory)
    missing = missing_files(root, include_qwen=require_qwen)
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise CheckpointError(f"IndexTTS-2 checkpoint at {root} is incomplete; missing:\n{lines}\n"
                              f"Get it with: {download_command(directory)}")
    cfg = load_config(root)
    names, qwen, bigvgan = _local_names(root)
    ext = {(e.repo_id, e.filename): find_external(root, e) for e in external_files(bigvgan)}
    qwen_dir = root / qwen
    return CheckpointPaths(
        root=root,
        config_path=root / "config.yaml",
        config=cfg,
        gpt=root / names["gpt_checkpoint"],
        s2mel=root / names["s2mel_checkpoint"],
        bpe_model=root / names["dataset.bpe_model"],
        w2v_stats=root / names["w2v_stat"],
        spk_matrix=root / names["spk_matrix"],
        emo_matrix=root / names["emo_matrix"],
        w2v_bert_dir=ext[(W2V_BERT_REPO, "config.json")].parent,
        semantic_codec=ext[(CODEC_REPO, "semantic_codec/model.safetensors")],
        campplus=ext[(CAMPPLUS_REPO, "campplus_cn_common.bin")],
        bigvgan_config=ext[(bigvgan, "config.json")],
        bigvgan_generator=ext[(bigvgan, "bigvgan_generator.pt")],
        qwen_dir=qwen_dir if _qwen_complete(qwen_dir) else None,
    )


# ----------------------------------------------------------------------------- state dicts

_WRAPPER_KEYS = ("model", "net", "generator")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _flatten(obj: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> one flat state dict (s2mel stores one dict per sub-model)."""
    flat = {}
    for key, value in obj.items():
        key = str(key)
        # DataParallel training prefixes "module." (per sub-model in s2mel.pth)
        name = prefix + (key[len("module."):] if key.startswith("module.") else key)
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
    return flat


def read_state_dict(path: str | Path, *, subkey: str | Sequence[str] | None = None,
                    file_label: str | None = None) -> dict[str, torch.Tensor]:
    """Load a checkpoint file and reduce it to a flat {name: tensor} dict.

    ``subkey`` selects a nested entry ("net" or ("net", "cfm")); without it a single wrapper
    "model" / "net" / "generator" around the weights is removed. Nested dicts are joined
    with "." and a leading "module." is stripped at every level.
    """
    path = Path(path)
    label = file_label or path.name
    if not path.is_file():
        raise CheckpointError(f"{label}: file not found at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch_load(path)
        except Exception as e:  # torch raises many types for a damaged or foreign file
            raise CheckpointError(f"{label}: cannot read {path} ({type(e).__name__}: {e})") from e
    if subkey is not None:
        for key in [subkey] if isinstance(subkey, str) else subkey:
            if not isinstance(obj, Mapping) or key not in obj:
                have = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
                raise CheckpointError(f"{label}: no entry {key!r} in {path} (top-level entries: {have})")
            obj = obj[key]
    elif isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{label}: {path} holds a {type(obj).__name__}, not a state dict")
    return _flatten(obj)


def _first(items: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_state_dict_strict(module: torch.nn.Module, path: str | Path, *, subkey: str | Sequence[str] | None = None,
                           file_label: str | None = None) -> None:
    """Load ``path`` into ``module`` requiring the exact same names and shapes.

    On any mismatch raises CheckpointError listing missing keys, unexpected keys and shape
    mismatches (first 10 of each), so a wrong file never leaves random weights behind.
    """
    label = file_label or Path(path).name
    state = read_state_dict(path, subkey=subkey, file_label=label)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({path}) does not match {type(module).__name__}:"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_first(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_first(unexpected)}")
        if shapes:
            parts.append(f"  shape mismatches ({len(shapes)}): {_first(shapes)}")
        raise CheckpointError("\n".join(parts))
    module.load_state_dict(state, strict=True)
