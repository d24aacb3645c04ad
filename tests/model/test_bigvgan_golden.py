"""BigVGAN v2 generator vs the official module (tiny width, real 256x structure), plus batching."""

import json
from pathlib import Path

import pytest
import torch

from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig, kaiser_sinc
from realtime_tts.model.s2mel import CheckpointMismatch

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "s2mel"


@pytest.fixture(scope="module")
def ckpt():
    return torch.load(FIX / "bigvgan_tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(ckpt):
    m = BigVGAN(BigVGANConfig.from_dict(ckpt["config"]))
    m.load_official(ckpt["generator"])
    return m.eval()


def test_config_matches_tiny_and_full_defaults(ckpt):
    assert BigVGANConfig.from_dict(ckpt["config"]) == BigVGANConfig.tiny()
    official_json = {
        "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
        "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "activation": "snakebeta",
        "snake_logscale": True, "use_tanh_at_final": False, "use_bias_at_final": False, "num_mels": 80,
        "hop_size": 256, "sampling_rate": 22050, "learning_rate": 0.0001,
    }
    assert BigVGANConfig.from_dict(official_json) == BigVGANConfig()
    with pytest.raises(ValueError, match="resblock"):
        BigVGANConfig.from_dict({**official_json, "resblock": "2"})


def test_waveform_matches_official(model):
    g = torch.load(FIX / "bigvgan_golden.pt", weights_only=True)
    with torch.no_grad():
        wav = model(g["mel"])
    assert wav.shape == g["wav"].shape == (1, 1, 6 * 256)
    assert 0 < (g["wav"].abs() >= 1).float().mean() < 0.2  # the clamp is exercised, not everything clipped
    err = (wav - g["wav"]).abs().max().item()
    assert err < 1e-4, err


def test_filter_buffers_equal_recomputed(ckpt):
    """The stored Kaiser-sinc buffers are what we compute for a fresh (random-weight) model."""
    f = ckpt["generator"]["activation_post.upsample.filter"]
    assert torch.allclose(f, kaiser_sinc(0.25, 0.3, 12), atol=1e-7)


def test_strict_load_reports_missing_keys(ckpt):
    state = dict(ckpt["generator"])
    state.pop("resblocks.0.activations.1.act.beta")
    with pytest.raises(CheckpointMismatch, match=r"resblocks\.0\.activations\.1\.act\.beta"):
        BigVGAN(BigVGANConfig.tiny()).load_official(state)


def test_from_pretrained_folder(tmp_path, ckpt):
    (tmp_path / "config.json").write_text(json.dumps(ckpt["config"]))
    torch.save({"generator": ckpt["generator"]}, tmp_path / "bigvgan_generator.pt")
    m = BigVGAN.from_pretrained(tmp_path)
    assert m.cfg == BigVGANConfig.tiny()


def test_batch_of_different_lengths_equals_one_by_one(model):
    torch.manual_seed(0)
    lens = [9, 4, 6]
    mels = [torch.randn(1, 80, n) for n in lens]
    batch = torch.zeros(3, 80, max(lens))
    for i, m in enumerate(mels):
        batch[i, :, : lens[i]] = m[0]
    with torch.no_grad():
        out = model(batch, torch.tensor(lens))
        for i, m in enumerate(mels):
            single = model(m)
            n = lens[i] * 256
            assert torch.allclose(out[i, :, :n], single[0], atol=1e-5), (out[i, :, :n] - single[0]).abs().max()
            assert out[i, :, n:].abs().sum().item() == 0.0


def test_bad_input_shapes(model):
    with pytest.raises(ValueError, match="mel must be"):
        model(torch.zeros(1, 79, 5))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.zeros(2, 80, 5), torch.tensor([5, 6]))


def test_full_size_layout_matches_official_manifest():
    """Full-size names/shapes vs the official manifest (weight-norm pairs map to the folded weight)."""
    want = {}
    for line in (FIX / "manifest_full.txt").read_text().splitlines():
        if line.startswith("bigvgan_generator.pt:") and ".weight_g " not in line:
            _, key, dims = line.split()[:3]
            key = key[: -len("_v")] if key.endswith(".weight_v") else key
            want[key] = tuple(int(d) for d in dims.strip("[]").split(",") if d)
    with torch.device("meta"):
        model = BigVGAN(BigVGANConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(want) > 500
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}
