"""`realtime-tts download` against a fake hub (no network): requests, layout, CLI wiring."""

from __future__ import annotations

import argparse
import fnmatch
import shutil
from pathlib import Path

import pytest
import yaml

from realtime_tts.engine import checkpoints as ck
from realtime_tts.engine import download as dl

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"

INDEX_FILES = ["config.yaml", "gpt.pth", "s2mel.pth", "bpe.model", "wav2vec2bert_stats.pt", "feat1.pt",
               "feat2.pt", "README.md", "qwen0.6bemo4-merge/config.json",
               "qwen0.6bemo4-merge/model.safetensors", "qwen0.6bemo4-merge/tokenizer.json"]
EXTERNAL = {
    "facebook/w2v-bert-2.0": ["config.json", "preprocessor_config.json", "model.safetensors", "README.md"],
    "amphion/MaskGCT": ["semantic_codec/model.safetensors", "t2s_model/model.safetensors"],
    "funasr/campplus": ["campplus_cn_common.bin"],
    "nvidia/bigvgan_v2_22khz_80band_256x": ["config.json", "bigvgan_generator.pt", "bigvgan_discriminator_optimizer.pt"],
}


CONFIG_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "config.yaml"


def config_text() -> str:
    return CONFIG_FIXTURE.read_text(encoding="utf-8")


class FakeHub:
    """Serves a local tree like the hub would: snapshot into a local dir, files into a cache."""

    def __init__(self, remote: Path, drop: tuple[str, ...] = ()):
        self.remote = remote
        self.calls: list[tuple] = []
        for name in INDEX_FILES:
            if f"{ck.INDEX_REPO}/{name}" in drop:
                continue
            p = remote / ck.INDEX_REPO / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(config_text() if name == "config.yaml" else f"{name} bytes")
        for repo, files in EXTERNAL.items():
            for name in files:
                if f"{repo}/{name}" in drop:
                    continue
                p = remote / repo / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(f"{repo}/{name} bytes")

    def snapshot_download(self, repo_id, *, local_dir, ignore_patterns=None, endpoint=None, **kw):
        self.calls.append(("snapshot", repo_id, Path(local_dir), ignore_patterns, endpoint, kw))
        src = self.remote / repo_id
        for f in src.rglob("*"):
            rel = f.relative_to(src).as_posix()
            if f.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in ignore_patterns or ()):
                target = Path(local_dir) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, target)
        return str(local_dir)

    def hf_hub_download(self, repo_id, filename, *, cache_dir, endpoint=None, **kw):
        self.calls.append(("file", repo_id, filename, Path(cache_dir), endpoint, kw))
        src = self.remote / repo_id / filename
        if not src.is_file():
            raise FileNotFoundError(f"404 {repo_id}/{filename}")
        repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        target = repo / "snapshots" / COMMIT / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(COMMIT)
        return str(target)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "remote")
    monkeypatch.setattr(dl, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(dl, "hf_hub_download", fake.hf_hub_download)
    return fake


def test_download_requests_and_resulting_layout(tmp_path, hub, capsys):
    target = tmp_path / "checkpoints"
    assert dl.download(target) == []
    snap = [c for c in hub.calls if c[0] == "snapshot"]
    files = [c for c in hub.calls if c[0] == "file"]
    assert [(c[1], c[2], c[3]) for c in snap] == [("IndexTeam/IndexTTS-2", target, None)]
    assert [(c[1], c[2]) for c in files] == [
        ("facebook/w2v-bert-2.0", "config.json"),
        ("facebook/w2v-bert-2.0", "preprocessor_config.json"),
        ("facebook/w2v-bert-2.0", "model.safetensors"),
        ("amphion/MaskGCT", "semantic_codec/model.safetensors"),
        ("funasr/campplus", "campplus_cn_common.bin"),
        ("nvidia/bigvgan_v2_22khz_80band_256x", "config.json"),
        ("nvidia/bigvgan_v2_22khz_80band_256x", "bigvgan_generator.pt"),
    ]
    assert all(c[3] == target / "hf_cache" for c in files)
    # the downloaded tree resolves offline with the real huggingface_hub lookup
    assert ck.has_weights(target)
    paths = ck.resolve(target, require_qwen=True)
    assert paths.semantic_codec.read_text() == "amphion/MaskGCT/semantic_codec/model.safetensors bytes"
    assert paths.qwen_dir == target / "qwen0.6bemo4-merge"
    assert "Downloading from https://" in capsys.readouterr().out


def test_download_without_qwen(tmp_path, hub):
    target = tmp_path / "ck"
    assert dl.download(target, include_qwen=False) == []
    assert hub.calls[0][3] == ["qwen0.6bemo4-merge/*"]
    assert not (target / "qwen0.6bemo4-merge").exists()
    assert ck.has_weights(target)
    assert ck.resolve(target).qwen_dir is None


def test_endpoint_is_passed_and_printed(tmp_path, hub, capsys):
    dl.download(tmp_path / "ck", endpoint="https://hf-mirror.example")
    assert {c[4] for c in hub.calls} == {"https://hf-mirror.example"}
    assert "Downloading from https://hf-mirror.example" in capsys.readouterr().out


def test_hf_endpoint_env_is_reported(tmp_path, hub, monkeypatch, capsys):
    # huggingface_hub reads HF_ENDPOINT at import into constants.ENDPOINT; we print that value
    monkeypatch.setattr(dl.constants, "ENDPOINT", "https://mirror.from.env")
    dl.download(tmp_path / "ck")
    assert {c[4] for c in hub.calls} == {None}  # the library applies its own endpoint
    assert "Downloading from https://mirror.from.env" in capsys.readouterr().out


def test_vocoder_repo_follows_downloaded_config(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "remote")
    cfg = yaml.safe_load((fake.remote / ck.INDEX_REPO / "config.yaml").read_text())
    cfg["vocoder"]["name"] = "someone/other-bigvgan"
    (fake.remote / ck.INDEX_REPO / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name in ("config.json", "bigvgan_generator.pt"):
        p = fake.remote / "someone/other-bigvgan" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("v")
    monkeypatch.setattr(dl, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(dl, "hf_hub_download", fake.hf_hub_download)
    assert dl.download(tmp_path / "ck") == []
    assert ("someone/other-bigvgan", "bigvgan_generator.pt") in [(c[1], c[2]) for c in fake.calls]


def test_incomplete_remote_is_reported(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "remote", drop=("IndexTeam/IndexTTS-2/feat2.pt",))
    monkeypatch.setattr(dl, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(dl, "hf_hub_download", fake.hf_hub_download)
    missing = dl.download(tmp_path / "ck")
    assert len(missing) == 1 and missing[0].startswith("feat2.pt")


def parse(argv):
    parser = argparse.ArgumentParser(prog="realtime-tts")
    dl.add_download_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_parser_defaults_and_flags():
    args = parse(["download"])
    assert (args.dir, args.no_qwen, args.endpoint, args.func) == ("checkpoints", False, None, dl.run_download)
    args = parse(["download", "--dir", "/models/ck", "--no-qwen", "--endpoint", "https://m"])
    assert (args.dir, args.no_qwen, args.endpoint) == ("/models/ck", True, "https://m")


def test_run_download_success(tmp_path, hub, capsys):
    rc = dl.run_download(parse(["download", "--dir", str(tmp_path / "ck"), "--no-qwen"]))
    assert rc == 0
    assert "complete" in capsys.readouterr().out


def test_run_download_reports_network_error(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(dl, "snapshot_download", offline)
    rc = dl.run_download(parse(["download", "--dir", str(tmp_path / "ck")]))
    out = capsys.readouterr().out
    assert rc == 1
    assert "connection refused" in out and "HF_ENDPOINT" in out and "resume" in out


def test_run_download_reports_missing(tmp_path, monkeypatch, capsys):
    fake = FakeHub(tmp_path / "remote", drop=("IndexTeam/IndexTTS-2/bpe.model",))
    monkeypatch.setattr(dl, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(dl, "hf_hub_download", fake.hf_hub_download)
    rc = dl.run_download(parse(["download", "--dir", str(tmp_path / "ck")]))
    assert rc == 1
    assert "bpe.model" in capsys.readouterr().out


# ----------------------------------------------------------------------------- IndexTTS-2.5

INDEX25_FILES = ["config.yaml", "gpt.pth", "codec.pth", "s2mel.pth", "multilingual_zh_ja_yue_char_del.tiktoken",
                 "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt", "qwen0.6bemo4-merge/config.json",
                 "qwen0.6bemo4-merge/model.safetensors", "qwen0.6bemo4-merge/tokenizer.json"]
CONFIG25 = Path(__file__).resolve().parents[1] / "fixtures" / "indextts25" / "tiny" / "static" / "config.yaml"


@pytest.fixture
def hub25(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "remote")
    for name in INDEX25_FILES:
        p = fake.remote / dl.INDEX_REPO_25 / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(CONFIG25.read_text(encoding="utf-8") if name == "config.yaml" else f"{name} bytes")
    monkeypatch.setattr(dl, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(dl, "hf_hub_download", fake.hf_hub_download)
    return fake


def test_download_indextts25_requests_and_layout(tmp_path, hub25, capsys):
    from realtime_tts.engine.select import choose_engine
    from realtime_tts.model.indextts25 import resolve

    target = tmp_path / "ck25"
    assert dl.download(target, model="indextts-2.5") == []
    snap = [c for c in hub25.calls if c[0] == "snapshot"]
    files = [(c[1], c[2]) for c in hub25.calls if c[0] == "file"]
    assert [(c[1], c[2], c[3]) for c in snap] == [("IndexTeam/IndexTTS-2.5", target, None)]
    assert files == [  # the external models of 2.5: no MaskGCT codec
        ("facebook/w2v-bert-2.0", "config.json"), ("facebook/w2v-bert-2.0", "preprocessor_config.json"),
        ("facebook/w2v-bert-2.0", "model.safetensors"), ("funasr/campplus", "campplus_cn_common.bin"),
        ("nvidia/bigvgan_v2_22khz_80band_256x", "config.json"),
        ("nvidia/bigvgan_v2_22khz_80band_256x", "bigvgan_generator.pt"),
    ]
    paths = resolve(target)  # found offline in the Hugging Face cache layout
    assert paths.campplus.read_text() == "funasr/campplus/campplus_cn_common.bin bytes"
    assert paths.qwen_dir == target / "qwen0.6bemo4-merge"
    assert choose_engine("auto", target).name == "indextts2.5"
    assert "IndexTeam/IndexTTS-2.5" in capsys.readouterr().out


def test_download_indextts25_cli_without_qwen_and_incomplete(tmp_path, hub25, capsys):
    args = parse(["download", "--model", "indextts-2.5", "--dir", str(tmp_path / "a"), "--no-qwen"])
    assert args.model == "indextts-2.5" and dl.run_download(args) == 0
    assert hub25.calls[0][3] == ["qwen0.6bemo4-merge/*"] and not (tmp_path / "a" / "qwen0.6bemo4-merge").exists()
    (hub25.remote / dl.INDEX_REPO_25 / "codec.pth").unlink()
    (hub25.remote / dl.INDEX_REPO_25 / "qwen0.6bemo4-merge" / "tokenizer.json").unlink()
    assert dl.run_download(parse(["download", "--model", "indextts-2.5", "--dir", str(tmp_path / "b")])) == 1
    out = capsys.readouterr().out
    assert "codec.pth (semantic codec)" in out and "qwen0.6bemo4-merge/ (Qwen emotion model" in out


def test_one_directory_holds_one_model(tmp_path, hub25, capsys):
    target = tmp_path / "ck"
    assert dl.download(target) == []  # IndexTTS-2 (the fake hub serves both repos)
    assert dl.run_download(parse(["download", "--model", "indextts-2.5", "--dir", str(target)])) == 1
    out = capsys.readouterr().out
    assert "already holds an IndexTTS-2 checkpoint" in out and "--dir" in out
    assert not (target / "codec.pth").exists()
    assert parse(["download"]).model == "indextts-2"  # the default stays IndexTTS-2
