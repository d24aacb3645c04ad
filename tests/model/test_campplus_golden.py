"""CAMPPlus speaker verifier against the official module (tiny constructor options)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.model.campplus import CAMPPlus

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    cfg = json.loads((FIX / "configs.json").read_text())["campplus"]
    model = CAMPPlus(**cfg)
    model.load_state_dict(load_file(FIX / "campplus_tiny.safetensors"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def gold():
    return load_file(FIX / "campplus_golden.safetensors")


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= TOL


def test_style_matches_official(tiny, gold):
    with torch.no_grad():
        close(tiny(gold["feat"].unsqueeze(0)), gold["style"])
        close(tiny(gold["batch"]), gold["batch_style"])  # 233 frames: partial CAM segment


def test_style_from_waveform_matches_official_pipeline(tiny, gold):
    wav16 = load_file(FIX / "features_golden.safetensors")["wav16"]
    close(tiny.style(wav16), gold["style"])  # fbank -> per-bin mean removal -> CAMPPlus


def test_batch_equals_one_by_one(tiny, gold):
    with torch.no_grad():
        for i in range(gold["batch"].shape[0]):
            close(tiny(gold["batch"][i:i + 1]), gold["batch_style"][i:i + 1])


def test_full_size_layout_matches_official_checkpoint():
    official = json.loads((FIX / "full_shapes.json").read_text())["campplus"]
    with torch.device("meta"):
        model = CAMPPlus()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official
    assert len(official) == 937


def test_rejects_bad_shapes(tiny):
    with pytest.raises(ValueError, match="features"):
        tiny(torch.zeros(1, 50, 40))
    with pytest.raises(ValueError, match="at least 3"):
        tiny(torch.zeros(1, 2, 80))


def test_from_file_is_strict(tmp_path):
    sd = CAMPPlus().state_dict()  # full size, as campplus_cn_common.bin
    torch.save(sd, tmp_path / "ok.bin")
    loaded = CAMPPlus.from_file(str(tmp_path / "ok.bin"))
    assert not loaded.training and torch.equal(loaded.state_dict()["head.conv1.weight"], sd["head.conv1.weight"])
    sd.pop("xvector.dense.linear.weight")
    torch.save(sd, tmp_path / "campplus.bin")
    with pytest.raises(RuntimeError, match="Missing key"):
        CAMPPlus.from_file(str(tmp_path / "campplus.bin"))


def test_full_size_style_from_waveform():
    torch.manual_seed(0)
    model = CAMPPlus().eval()
    wav16 = load_file(FIX / "features_golden.safetensors")["wav16"]
    style = model.style(wav16)
    assert style.shape == (1, 192) and torch.isfinite(style).all()


def test_frame_level_map_and_cam_layer_match_official(tiny, gold):
    with torch.no_grad():
        frames = tiny.xvector[:-2](tiny.head(gold["batch"].transpose(1, 2)))  # before stats pooling
        close(frames, gold["frames"])
        close(tiny.xvector.block1.tdnnd1.cam_layer(gold["cam_in"]), gold["cam_out"])  # 3 segments
