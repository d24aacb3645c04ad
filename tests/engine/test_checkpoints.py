"""Checkpoint directory detection, config validation and strict state-dict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from realtime_tts.engine import checkpoints as ck
from realtime_tts.engine.checkpoints import CheckpointError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


CONFIG_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints" / "config.yaml"


def index_config(**overrides) -> dict:
    """The IndexTTS-2 config.yaml values (reference doc section b), with overrides."""
    cfg = yaml.safe_load(CONFIG_FIXTURE.read_text(encoding="utf-8"))
    cfg.update(overrides)
    return cfg


def put_hf(cache: Path, repo_id: str, filename: str, data: bytes = b"x") -> Path:
    """One file in Hugging Face cache layout (refs/main -> snapshots/<commit>/<filename>)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    target = repo / "snapshots" / COMMIT / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return target


def make_checkpoint(root: Path, *, qwen: bool = True, skip: tuple[str, ...] = (), cfg: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if "config.yaml" not in skip:
        (root / "config.yaml").write_text(yaml.safe_dump(cfg or index_config(), allow_unicode=True))
    for name in ("gpt.pth", "s2mel.pth", "bpe.model", "wav2vec2bert_stats.pt", "feat1.pt", "feat2.pt"):
        if name not in skip:
            (root / name).write_bytes(b"w")
    for item in ck.external_files():
        if f"{item.repo_id}/{item.filename}" not in skip:
            put_hf(root / "hf_cache", item.repo_id, item.filename)
    if qwen:
        q = root / "qwen0.6bemo4-merge"
        q.mkdir()
        for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
            (q / name).write_text("{}")
    return root


# ----------------------------------------------------------------------------- layout


def test_complete_directory_resolves(tmp_path):
    root = make_checkpoint(tmp_path / "ck")
    assert ck.missing_files(root) == []
    assert ck.has_weights(root)
    paths = ck.resolve(root)
    assert paths.gpt == root / "gpt.pth"
    assert paths.emo_matrix == root / "feat2.pt"
    assert paths.spk_matrix == root / "feat1.pt"
    assert paths.bpe_model == root / "bpe.model"
    assert paths.qwen_dir == root / "qwen0.6bemo4-merge"
    assert paths.config["emo_num"] == [3, 17, 2, 8, 4, 5, 10, 24]
    cache = root / "hf_cache"
    assert paths.semantic_codec.is_relative_to(cache / "models--amphion--MaskGCT")
    assert paths.semantic_codec.parts[-2:] == ("semantic_codec", "model.safetensors")
    assert paths.campplus.name == "campplus_cn_common.bin"
    assert (paths.w2v_bert_dir / "config.json").is_file()
    assert (paths.w2v_bert_dir / "model.safetensors").is_file()
    assert (paths.w2v_bert_dir / "preprocessor_config.json").is_file()
    assert paths.bigvgan_generator.name == "bigvgan_generator.pt"
    assert paths.bigvgan_config.parent == paths.bigvgan_generator.parent
    assert "models--nvidia--bigvgan_v2_22khz_80band_256x" in str(paths.bigvgan_generator)


@pytest.mark.parametrize("name", ["config.yaml", "gpt.pth", "s2mel.pth", "bpe.model", "wav2vec2bert_stats.pt",
                                  "feat1.pt", "feat2.pt"])
def test_each_missing_local_file_is_named(tmp_path, name):
    root = make_checkpoint(tmp_path / "ck", skip=(name,))
    missing = ck.missing_files(root)
    assert len(missing) == 1 and missing[0].startswith(name), missing
    assert not ck.has_weights(root)
    with pytest.raises(CheckpointError) as err:
        ck.resolve(root)
    assert name in str(err.value)
    assert f"realtime-tts download --dir {root}" in str(err.value)


@pytest.mark.parametrize("item", ck.external_files(), ids=lambda e: f"{e.repo_id}/{e.filename}")
def test_each_missing_external_file_is_named(tmp_path, item):
    root = make_checkpoint(tmp_path / "ck", skip=(f"{item.repo_id}/{item.filename}",))
    missing = ck.missing_files(root)
    assert missing == [item.label]
    assert item.repo_id in missing[0] and item.filename in missing[0]
    assert not ck.has_weights(root)


def test_partial_directory_lists_every_missing_item(tmp_path):
    root = tmp_path / "ck"
    root.mkdir()
    (root / "gpt.pth").write_bytes(b"w")
    missing = ck.missing_files(root)
    # 6 of the 7 local files, 7 external files, the optional Qwen dir
    assert len(missing) == 6 + 7 + 1
    joined = "\n".join(missing)
    for name in ("config.yaml", "s2mel.pth", "bpe.model", "feat1.pt", "feat2.pt", "wav2vec2bert_stats.pt",
                 "facebook/w2v-bert-2.0", "amphion/MaskGCT", "funasr/campplus", "bigvgan_generator.pt",
                 "qwen0.6bemo4-merge"):
        assert name in joined
    assert "gpt.pth" not in joined
    with pytest.raises(CheckpointError) as err:
        ck.resolve(root)
    assert "realtime-tts download --dir" in str(err.value)
    assert "qwen" not in str(err.value)  # optional unless asked for


def test_missing_directory(tmp_path):
    assert not ck.has_weights(tmp_path / "nope")
    assert "does not exist" in ck.missing_files(tmp_path / "nope")[0]


def test_qwen_is_optional_but_reported(tmp_path):
    root = make_checkpoint(tmp_path / "ck", qwen=False)
    assert ck.has_weights(root)
    missing = ck.missing_files(root)
    assert len(missing) == 1 and "qwen0.6bemo4-merge" in missing[0] and "emotion text" in missing[0]
    assert ck.missing_files(root, include_qwen=False) == []
    assert ck.resolve(root).qwen_dir is None
    with pytest.raises(CheckpointError, match="qwen0.6bemo4-merge"):
        ck.resolve(root, require_qwen=True)


def test_file_names_follow_config(tmp_path):
    cfg = index_config(gpt_checkpoint="gpt_v2.pth", vocoder={"type": "bigvgan", "name": "me/vocoder"})
    root = make_checkpoint(tmp_path / "ck", cfg=cfg)
    missing = ck.missing_files(root, include_qwen=False)
    assert missing[0].startswith("gpt_v2.pth")
    assert any("me/vocoder" in m and "bigvgan_generator.pt" in m for m in missing)
    (root / "gpt_v2.pth").write_bytes(b"w")
    put_hf(root / "hf_cache", "me/vocoder", "config.json")
    put_hf(root / "hf_cache", "me/vocoder", "bigvgan_generator.pt")
    assert ck.resolve(root).gpt == root / "gpt_v2.pth"


def test_flat_hf_cache_layout_is_accepted(tmp_path):
    root = make_checkpoint(tmp_path / "ck", skip=("funasr/campplus/campplus_cn_common.bin",))
    (root / "hf_cache" / "campplus_cn_common.bin").write_bytes(b"c")
    assert ck.resolve(root).campplus == root / "hf_cache" / "campplus_cn_common.bin"


# ----------------------------------------------------------------------------- config


def test_load_config_reads_official_values(tmp_path):
    root = make_checkpoint(tmp_path / "ck")
    cfg = ck.load_config(root)
    assert cfg["gpt"]["model_dim"] == 1280
    assert ck.load_config(root / "config.yaml") == cfg


@pytest.mark.parametrize("version", [1.0, "2.5", None, "two"])
def test_wrong_config_version(tmp_path, version):
    cfg = index_config(version=version)
    if version is None:
        del cfg["version"]
    root = make_checkpoint(tmp_path / "ck", cfg=cfg)
    with pytest.raises(CheckpointError) as err:
        ck.load_config(root)
    assert "config.yaml" in str(err.value) and "'version'" in str(err.value) and "2.0" in str(err.value)
    with pytest.raises(CheckpointError, match="version"):
        ck.resolve(root)


def test_config_missing_keys_are_named(tmp_path):
    cfg = index_config()
    del cfg["gpt"]["heads"]
    del cfg["emo_num"]
    root = make_checkpoint(tmp_path / "ck", cfg=cfg)
    with pytest.raises(CheckpointError) as err:
        ck.load_config(root)
    msg = str(err.value)
    assert "config.yaml" in msg and "'gpt.heads'" in msg and "'emo_num'" in msg


def test_config_bad_emo_num_and_bad_yaml(tmp_path):
    root = make_checkpoint(tmp_path / "ck", cfg=index_config(emo_num=[3, 17]))
    with pytest.raises(CheckpointError, match="emo_num"):
        ck.load_config(root)
    (root / "config.yaml").write_text("gpt: [unclosed")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        ck.load_config(root)
    (root / "config.yaml").write_text("- a list")
    with pytest.raises(CheckpointError, match="mapping"):
        ck.load_config(root)
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_config(tmp_path)


# ----------------------------------------------------------------------------- state dicts


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(3, width)
        self.norm = torch.nn.LayerNorm(width)
        self.register_buffer("pe", torch.zeros(1, 5, width))


def tiny_state(width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in Tiny(width).state_dict().items()}


@pytest.mark.parametrize("wrap", ["bare", "model", "net", "generator", "module_prefix", "model+extras"])
def test_strict_load_unwraps_official_formats(tmp_path, wrap):
    state = tiny_state()
    obj = {
        "bare": state,
        "model": {"model": state},
        "net": {"net": state, "epoch": 7},
        "generator": {"generator": state},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "model+extras": {"model": state, "optimizer": {"lr": 1e-4}, "step": 3},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    m = Tiny()
    ck.load_state_dict_strict(m, path, file_label="gpt.pth")
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_strict_load_subkey_and_nested_submodels(tmp_path):
    # s2mel.pth style: {"net": {"cfm": {...}, "length_regulator": {...}}, "optimizer": ...}
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfm = Tiny()
            self.length_regulator = torch.nn.Linear(2, 2)

    torch.manual_seed(1)
    ref = Pair()
    raw = {"net": {"cfm": {f"module.{k}": v for k, v in ref.cfm.state_dict().items()},
                   "length_regulator": ref.length_regulator.state_dict()},
           "optimizer": {"state": {}}}
    path = tmp_path / "s2mel.pth"
    torch.save(raw, path)
    m = Pair()
    ck.load_state_dict_strict(m, path, subkey="net", file_label="s2mel.pth")
    assert torch.equal(m.cfm.proj.weight, ref.cfm.proj.weight)
    lr = torch.nn.Linear(2, 2)
    ck.load_state_dict_strict(lr, path, subkey=("net", "length_regulator"))
    assert torch.equal(lr.weight, ref.length_regulator.weight)
    with pytest.raises(CheckpointError, match="no entry 'gen'"):
        ck.load_state_dict_strict(lr, path, subkey="gen", file_label="s2mel.pth")


def test_strict_load_reports_missing_unexpected_and_shapes(tmp_path):
    state = tiny_state(width=4)
    del state["norm.bias"]
    state["extra.weight"] = torch.zeros(2)
    state["proj.weight"] = torch.zeros(5, 3)
    path = tmp_path / "gpt.pth"
    torch.save(state, path)
    m = Tiny()
    before = m.proj.weight.clone()
    with pytest.raises(CheckpointError) as err:
        ck.load_state_dict_strict(m, path, file_label="gpt.pth")
    msg = str(err.value)
    assert "gpt.pth" in msg and "Tiny" in msg
    assert "missing keys (1): norm.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "proj.weight: file [5, 3] vs model [4, 3]" in msg
    assert torch.equal(m.proj.weight, before)  # nothing half-loaded


def test_strict_load_truncates_long_lists(tmp_path):
    path = tmp_path / "big.pth"
    torch.save({f"junk.{i}": torch.zeros(1) for i in range(25)} | tiny_state(), path)
    with pytest.raises(CheckpointError) as err:
        ck.load_state_dict_strict(Tiny(), path)
    msg = str(err.value)
    assert "unexpected keys (25)" in msg and "(15 more)" in msg and "big.pth" in msg


def test_strict_load_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_state_dict_strict(Tiny(), tmp_path / "absent.pth", file_label="gpt.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        ck.load_state_dict_strict(Tiny(), junk)
    tensor_only = tmp_path / "t.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="not a state dict"):
        ck.load_state_dict_strict(Tiny(), tensor_only)


def test_strict_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = tiny_state(seed=3)
    path = tmp_path / "model.safetensors"
    save_file(state, path)
    m = Tiny()
    ck.load_state_dict_strict(m, path)
    assert torch.equal(m.norm.weight, state["norm.weight"])
