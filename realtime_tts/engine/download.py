"""``realtime-tts download``: fetch the IndexTTS-2 checkpoint and the models it depends on.

The IndexTTS-2 repo goes into ``<dir>`` as plain files; the external models go into the
Hugging Face cache at ``<dir>/hf_cache`` (the layout ``checkpoints.resolve`` reads offline).
huggingface_hub shows the progress bars, resumes interrupted files and honours
``HF_ENDPOINT`` (e.g. ``HF_ENDPOINT=https://hf-mirror.com``) and ``HF_TOKEN``.
This is the only place in the project that talks to the network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, snapshot_download

from realtime_tts.engine.checkpoints import (
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


def _say(message: str) -> None:
    print(message, flush=True)


def download(directory: str | Path, *, include_qwen: bool = True, endpoint: str | None = None) -> list[str]:
    """Download everything into ``directory``; returns what is still missing ([] on success).

    ``endpoint`` overrides ``HF_ENDPOINT`` for this call. Files already present are kept
    (huggingface_hub checks them against the remote and resumes partial downloads).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _say(f"Downloading from {endpoint or constants.ENDPOINT} (set HF_ENDPOINT to use a mirror)")

    _say(f"[1/2] {INDEX_REPO} -> {root}")
    snapshot_download(
        repo_id=INDEX_REPO,
        local_dir=root,
        ignore_patterns=None if include_qwen else [f"{QWEN_DEFAULT}/*"],
        endpoint=endpoint,
    )

    try:
        bigvgan = str(load_config(root)["vocoder"]["name"]).strip()
    except CheckpointError:
        bigvgan = BIGVGAN_REPO  # verification below reports the config problem
    cache = root / HF_CACHE_DIR
    _say(f"[2/2] external models -> {cache}")
    for item in external_files(bigvgan):
        _say(f"  {item.repo_id} {item.filename}")
        hf_hub_download(item.repo_id, item.filename, cache_dir=cache, endpoint=endpoint)

    return missing_files(root, include_qwen=include_qwen)


def add_download_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``download`` on the CLI's subparsers; the parser's ``func`` is ``run_download``."""
    parser = subparsers.add_parser(
        "download",
        help="download the IndexTTS-2 checkpoint and its external models",
        description="Download IndexTeam/IndexTTS-2 into DIR and w2v-BERT 2.0, the MaskGCT semantic "
                    "codec, CAMPPlus and BigVGAN into DIR/hf_cache. Resumable; honours HF_ENDPOINT.",
    )
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
        missing = download(args.dir, include_qwen=include_qwen, endpoint=getattr(args, "endpoint", None))
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
