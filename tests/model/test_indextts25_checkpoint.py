"""IndexTTS-2.5 checkpoints: full-size layout against the official manifest, family detection,
directory resolution, and strict loading whose errors name the file and the key."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from realtime_tts.model.enhanced_codec import EnhancedCodec
from realtime_tts.model.gpt import GPT25Config, UnifiedVoice25
from realtime_tts.model.indextts25 import (FAMILY_V2, FAMILY_V25, GPT_LAYER_KEYS, codec_config, detect, gpt_config,
                                           load_codec, load_config, load_gpt, load_s2mel, missing_files, read_config,
                                           resolve, s2mel_config)
from realtime_tts.model.s2mel import CheckpointMismatch, S2Mel, S2MelConfig

sys.path.insert(0, str(Path(__file__).parent))
from indextts25_fixture import FIX, ROOT, SMALL_FILES, materialise  # noqa: E402

V2_DIR = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints"


def manifest(prefix: str, fold: bool = True) -> dict[str, tuple[int, ...]]:
    """Official full-size names/shapes of one file (``fold``: weight-norm pairs as their folded
    ``weight``, the form our S2M and BigVGAN modules hold)."""
    out = {}
    for line in (FIX / "manifest_full.txt").read_text().splitlines():
        if not line.startswith(prefix + " "):
            continue
        _, key, dims = line.split()[:3]
        if fold and key.endswith(".weight_g"):
            continue
        key = key[: -len("_v")] if fold and key.endswith(".weight_v") else key
        out[key] = tuple(int(d) for d in dims.strip("[]").split(",") if d)
    return out


# ---- full-size layout ------------------------------------------------------------------------


def test_full_size_gpt_is_the_official_layout():
    with torch.device("meta"):
        model = UnifiedVoice25(GPT25Config.full())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == 456
    assert ours == manifest("gpt.pth")
    assert sum(p.numel() for p in model.parameters()) == 812_289_460  # README "0.8B"


def test_full_size_codec_is_the_official_layout():
    with torch.device("meta"):
        codec = EnhancedCodec()
    ours = {**codec.encoder_shapes(), **{k: tuple(v.shape) for k, v in codec.state_dict().items()}}
    assert len(ours) == 243
    assert ours == manifest("codec.pth:model", fold=False)


def test_full_size_s2mel_is_the_official_layout():
    with torch.device("meta"):
        s2mel = S2Mel(S2MelConfig(gpt_layer_dims=None))
    assert not hasattr(s2mel, "gpt_layer")
    for name in ("cfm", "length_regulator"):
        ours = {k: tuple(v.shape) for k, v in getattr(s2mel, name).state_dict().items()}
        assert ours == manifest(f"s2mel.pth:net.{name}"), name


def test_full_size_config_from_a_config_yaml(tmp_path):
    """The released values (config_v2_5.yaml as the reference doc lists them) build the full model."""
    cfg = read_config(FIX / "tiny" / "static")
    cfg["gpt"].update(model_dim=1280, layers=24, heads=20, number_text_tokens=60509,
                      emo_condition_module=dict(output_size=512, linear_units=1024, attention_heads=4, num_blocks=4,
                                                input_layer="conv2d2", perceiver_mult=2))
    assert gpt_config(cfg) == GPT25Config.full()


# ---- detection and layout --------------------------------------------------------------------


@pytest.fixture()
def small(tmp_path):
    """The tiny 2.5 directory without the big external weights (placeholders for presence checks)."""
    d = materialise(tmp_path / "ck", only=SMALL_FILES + ("wav2vec2bert_stats.pt",))
    for f in ("hf_cache/w2v-bert-2.0/model.safetensors", "hf_cache/campplus_cn_common.bin"):
        (d / f).write_bytes(b"")
    return d


def test_detect(small, tmp_path):
    assert detect(small) == FAMILY_V25
    assert detect(V2_DIR) == FAMILY_V2
    # without config.yaml the files decide; without those, the GPT's parameter names
    (small / "config.yaml").unlink()
    assert detect(small) == FAMILY_V25
    (small / "codec.pth").unlink()
    assert detect(small) == FAMILY_V25  # spk_emb_proj + lang_embedding in gpt.pth
    v2 = tmp_path / "v2"
    v2.mkdir()
    shutil.copy(V2_DIR / "gpt.pth", v2 / "gpt.pth")
    assert detect(v2) == FAMILY_V2


def test_detect_refuses_contradictions_and_nothing(small, tmp_path):
    (small / "bpe.model").write_bytes(b"")  # a 2.5 config with a 2.0-only file: which is it?
    shutil.copy(V2_DIR / "gpt.pth", small / "gpt.pth")
    with pytest.raises(CheckpointMismatch, match="contradicting evidence.*config.yaml version 2.5"):
        detect(small)
    with pytest.raises(CheckpointMismatch, match="no evidence"):
        detect(tmp_path)


def test_resolve_names_every_missing_file(small):
    paths = resolve(small)
    assert paths.codec == small / "codec.pth" and paths.tiktoken.name.endswith(".tiktoken")
    assert paths.w2v_bert_dir == small / "hf_cache" / "w2v-bert-2.0" and paths.qwen_dir is None
    (small / "codec.pth").unlink()
    (small / "hf_cache" / "bigvgan" / "config.json").unlink()
    assert missing_files(small) == ["codec.pth (semantic codec)", "hf_cache/bigvgan/config.json"]
    with pytest.raises(CheckpointMismatch, match=r"(?s)incomplete.*codec\.pth.*bigvgan/config\.json"):
        resolve(small)


def test_resolve_accepts_the_hugging_face_cache_layout(small):
    """The external models are IndexTTS-2's: a cache in HF layout (as realtime-tts download writes it)."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = small / "hf_cache" / "models--funasr--campplus"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    shutil.move(small / "hf_cache" / "campplus_cn_common.bin", repo / "snapshots" / rev / "campplus_cn_common.bin")
    assert resolve(small).campplus == repo / "snapshots" / rev / "campplus_cn_common.bin"


def test_load_config_wants_version_2_5(small):
    cfg = yaml.safe_load((small / "config.yaml").read_text())
    assert load_config(small)["version"] == 2.5
    cfg["version"] = 2.0
    (small / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointMismatch, match="'version' is 2.0, expected 2.5"):
        load_config(small)


# ---- strict loading --------------------------------------------------------------------------


def test_gpt_errors_name_file_and_key(small):
    cfg = gpt_config(read_config(small))
    sd = torch.load(small / "gpt.pth", weights_only=True)
    torch.save({"model": sd}, small / "wrapped.pth")  # the official loader's optional wrapper
    assert load_gpt(small / "wrapped.pth", cfg).lang_embedding.weight.shape == (107, 32)
    bad = dict(sd)
    bad["speed_emb.weight"] = torch.zeros(2, 32)
    del bad["lang_embedding.weight"]
    bad["spk_emb_proj.weight"] = torch.zeros(32, 8)
    torch.save(bad, small / "bad.pth")
    with pytest.raises(CheckpointMismatch) as e:
        load_gpt(small / "bad.pth", cfg)
    msg = str(e.value)
    assert "bad.pth" in msg and "missing: lang_embedding.weight" in msg and "unexpected: speed_emb.weight" in msg
    assert "spk_emb_proj.weight: checkpoint (32, 8) vs model (32, 192)" in msg


def test_codec_checks_the_unused_encoder_side_too(small):
    cfg = codec_config(read_config(small))
    sd = torch.load(small / "codec.pth", weights_only=True)["model"]
    assert load_codec(small / "codec.pth", cfg).up.weight.shape == (1024, 1024, 3)
    for change in ("drop", "shape"):
        bad = dict(sd)
        if change == "drop":
            del bad["down.weight"]
        else:
            bad["encoder.1.bias"] = torch.zeros(3)
        torch.save({"model": bad}, small / "bad.pth")
        with pytest.raises(CheckpointMismatch, match="bad.pth") as e:
            load_codec(small / "bad.pth", cfg)
        assert ("missing keys: down.weight" if change == "drop" else "encoder.1.bias: file [3]") in str(e.value)


def test_s2mel_drops_exactly_the_released_gpt_layer(small, caplog):
    cfg = s2mel_config(read_config(small))
    ckpt = torch.load(small / "s2mel.pth", weights_only=True)
    assert sorted("gpt_layer." + k for k in ckpt["net"]["gpt_layer"]) == sorted(GPT_LAYER_KEYS)
    with caplog.at_level("INFO"):
        load_s2mel(small / "s2mel.pth", cfg)
    assert "ignoring net.gpt_layer (gpt_layer.0.weight" in caplog.text
    without = {"net": {k: v for k, v in ckpt["net"].items() if k != "gpt_layer"}}
    torch.save(without, small / "plain.pth")
    load_s2mel(small / "plain.pth", cfg)  # a file without it is fine too
    extra = {"net": {**ckpt["net"], "gpt_layer": {**ckpt["net"]["gpt_layer"], "3.weight": torch.zeros(1)}}}
    torch.save(extra, small / "bad.pth")
    with pytest.raises(CheckpointMismatch, match=r"bad\.pth.*net\.gpt_layer holds .*3\.weight"):
        load_s2mel(small / "bad.pth", cfg)
    wrong = {"net": {**ckpt["net"], "cfm": {k: v for k, v in ckpt["net"]["cfm"].items() if "x_embedder" not in k}}}
    torch.save(wrong, small / "bad.pth")
    with pytest.raises(CheckpointMismatch, match=r"(?s)bad\.pth.*net\.cfm.*missing: estimator\.x_embedder"):
        load_s2mel(small / "bad.pth", cfg)
