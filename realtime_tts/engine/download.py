"""``realtime-tts download``: fetch an IndexTTS checkpoint and the models it depends on.

``--model indextts-2`` (the default) or ``--model indextts-2.5``: the model's repo goes into
``<dir>`` as plain files; the external models (w2v-BERT 2.0, CAMPPlus, BigVGAN, and for
IndexTTS-2 the MaskGCT semantic codec) go into the Hugging Face cache at ``<dir>/hf_cache``, the
layout ``checkpoints.resolve`` and ``model.indextts25.resolve`` read offline.
huggingface_hub shows the progress bars, resumes interrupted files and honours
``HF_ENDPOINT`` (e.g. ``HF_ENDPOINT=https://hf-mirror.com``) and ``HF_TOKEN``.
This is the only place in the project that talks to the network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, snapshot_download

from realtime_tts.model.indextts25 import FAMILY_V2, FAMILY_V25, detect
from realtime_tts.model.indextts25 import missing_files as missing_files_25
from realtime_tts.model.indextts25.layout import EXTERNAL_FILES
from realtime_tts.model.s2mel import CheckpointMismatch
from realtime_tts.model.indextts25.layout import QWEN_DEFAULT as QWEN_DEFAULT_25

from .checkpoints import (
    BIGVGAN_REPO,
    DEFAULT_DIR,
    HF_CACHE_DIR,
    INDEX_REPO,
    QWEN_DEFAULT,
    CheckpointError,
    external_files,
    load_config,
    missing_files,
)


MODELS = (FAMILY_V2, FAMILY_V25)  # --model choices; the first is the default
INDEX_REPO_25 = "IndexTeam/IndexTTS-2.5"
TITLE = {FAMILY_V2: "IndexTTS-2", FAMILY_V25: "IndexTTS-2.5"}


def _say(message: str) -> None:
    print(message, flush=True)


def download(directory: str | Path, *, model: str = FAMILY_V2, include_qwen: bool = True,
             endpoint: str | None = None) -> list[str]:
    """Download ``model`` into ``directory``; returns what is still missing ([] on success).

    ``endpoint`` overrides ``HF_ENDPOINT`` for this call. Files already present are kept
    (huggingface_hub checks them against the remote and resumes partial downloads).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    root = Path(directory)
    _refuse_other_model(root, model)
    root.mkdir(parents=True, exist_ok=True)
    _say(f"Downloading from {endpoint or constants.ENDPOINT} (set HF_ENDPOINT to use a mirror)")
    repo, qwen = (INDEX_REPO, QWEN_DEFAULT) if model == FAMILY_V2 else (INDEX_REPO_25, QWEN_DEFAULT_25)
    _say(f"[1/2] {repo} -> {root}")
    snapshot_download(repo_id=repo, local_dir=root, ignore_patterns=None if include_qwen else [f"{qwen}/*"],
                      endpoint=endpoint)
    cache = root / HF_CACHE_DIR
    _say(f"[2/2] external models -> {cache}")
    for repo_id, filename in _externals(root, model):
        _say(f"  {repo_id} {filename}")
        hf_hub_download(repo_id, filename, cache_dir=cache, endpoint=endpoint)
    if model == FAMILY_V25:
        return missing_files_25(root, include_qwen=include_qwen)
    return missing_files(root, include_qwen=include_qwen)


def _refuse_other_model(root: Path, model: str) -> None:
    """CheckpointError when ``root`` already holds the other model (one directory, one model)."""
    try:
        found = detect(root) if root.is_dir() else None
    except CheckpointMismatch:  # empty, partial or unknown: downloading completes it
        return
    if found is not None and found != model:
        raise CheckpointError(f"{root} already holds an {TITLE[found]} checkpoint; download {TITLE[model]} "
                              f"into another directory (--dir)")


def _externals(root: Path, model: str) -> list[tuple[str, str]]:
    """(repo, file) of every external model file: IndexTTS-2 reads its BigVGAN repo from the
    downloaded config.yaml; IndexTTS-2.5 always uses the same ones (and not the MaskGCT codec)."""
    if model == FAMILY_V25:
        return list(EXTERNAL_FILES.values())
    try:
        bigvgan = str(load_config(root)["vocoder"]["name"]).strip()
    except CheckpointError:
        bigvgan = BIGVGAN_REPO  # verification reports the config problem
    return [(item.repo_id, item.filename) for item in external_files(bigvgan)]


def add_download_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``download`` on the CLI's subparsers; the parser's ``func`` is ``run_download``."""
    parser = subparsers.add_parser(
        "download",
        help="download an IndexTTS checkpoint (IndexTTS-2 or IndexTTS-2.5) and its external models",
        description="Download IndexTeam/IndexTTS-2 (--model indextts-2, the default) or IndexTeam/IndexTTS-2.5 "
                    "(--model indextts-2.5) into DIR, and the external models into DIR/hf_cache: w2v-BERT 2.0, "
                    "CAMPPlus and BigVGAN (IndexTTS-2 also the MaskGCT semantic codec). Resumable; honours "
                    "HF_ENDPOINT. One directory holds one model: use another --dir for the other.",
    )
    parser.add_argument("--model", choices=MODELS, default=MODELS[0],
                        help="indextts-2 (zh/en, the default) or indextts-2.5 (zh, en, ja, es, ar; faster); "
                             "docs/models.md compares them")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"checkpoint directory (default: {DEFAULT_DIR})")
    parser.add_argument("--no-qwen", action="store_true",
                        help="skip the Qwen emotion model (~1.2 GB; only emotion-from-text needs it)")
    parser.add_argument("--endpoint", default=None,
                        help="Hugging Face endpoint or mirror URL (default: $HF_ENDPOINT or huggingface.co)")
    parser.set_defaults(func=run_download)
    return parser


def run_download(args: argparse.Namespace) -> int:
    """CLI entry: 0 when the directory is complete afterwards, 1 otherwise."""
    include_qwen = not args.no_qwen
    try:
        missing = download(args.dir, model=getattr(args, "model", MODELS[0]), include_qwen=include_qwen,
                           endpoint=getattr(args, "endpoint", None))
    except CheckpointError as e:
        _say(f"Download refused: {e}")
        return 1
    except KeyboardInterrupt:
        _say("Interrupted; run the same command again to resume.")
        return 1
    except Exception as e:  # network, auth or disk errors: report them, never a traceback
        _say(f"Download failed: {type(e).__name__}: {e}")
        _say("Run the same command again to resume; behind a firewall try HF_ENDPOINT=https://hf-mirror.com")
        return 1
    if missing:
        _say(f"Download finished but {args.dir} is still incomplete; missing:")
        for item in missing:
            _say(f"  - {item}")
        return 1
    _say(f"Done: {args.dir} is complete" + ("" if include_qwen else " (without the Qwen emotion model)"))
    return 0
