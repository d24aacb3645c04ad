"""Semantic codec (MaskGCT RepCodec) against the official module on a tiny random config."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.model.codec import CodecConfig, SemanticCodec

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    cfg = CodecConfig(**json.loads((FIX / "configs.json").read_text())["codec"])
    return SemanticCodec.from_file(str(FIX / "codec_tiny.safetensors"), cfg)


@pytest.fixture(scope="module")
def gold():
    return load_file(FIX / "codec_golden.safetensors")


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= TOL


def test_quantize_matches_official(tiny, gold):
    codes, s_ref = tiny.quantize(gold["x"])
    assert codes.dtype == torch.int64
    assert torch.equal(codes, gold["codes"])
    close(s_ref, gold["s_ref"])
    codes1, s_ref1 = tiny.quantize(gold["x"][:1])
    assert torch.equal(codes1, gold["codes_b1"])
    close(s_ref1, gold["s_ref_b1"])
    assert len(codes.unique()) > 10  # the fixture exercises many codewords, not one
    codes, s_ref = tiny.quantize(gold["x_small"])  # near-zero input: LayerNorm eps dominates
    assert torch.equal(codes, gold["codes_small"])
    close(s_ref, gold["s_ref_small"])


def test_encoder_matches_official(tiny, gold):
    # VocosBackbone + Linear, before quantisation: [B, T, hidden] -> [B, T, hidden]
    with torch.no_grad():
        close(tiny.encoder(gold["x"].transpose(1, 2)), gold["enc"])


def test_quantize_batch_equals_one_by_one(tiny, gold):
    codes, s_ref = tiny.quantize(gold["x"])
    for i in range(gold["x"].shape[0]):
        c, s = tiny.quantize(gold["x"][i:i + 1])
        assert torch.equal(c, codes[i:i + 1])
        close(s, s_ref[i:i + 1])


def test_vq2emb_matches_official_and_batches(tiny, gold):
    emb = tiny.vq2emb(gold["vq"])
    close(emb, gold["vq_emb"])
    for i in range(gold["vq"].shape[0]):
        close(tiny.vq2emb(gold["vq"][i:i + 1]), gold["vq_emb"][i:i + 1])
    # vq2emb of quantize's codes reproduces S_ref (same codebook rows, same projection)
    codes, s_ref = tiny.quantize(gold["x"])
    close(tiny.vq2emb(codes).transpose(1, 2), s_ref)


def test_vq2emb_rejects_bad_codes(tiny):
    with pytest.raises(ValueError, match="codes must be in"):
        tiny.vq2emb(torch.tensor([[0, tiny.cfg.codebook_size]]))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        tiny.vq2emb(torch.tensor([1, 2]))


def test_full_size_layout_matches_official_checkpoint():
    official = json.loads((FIX / "full_shapes.json").read_text())["codec"]
    with torch.device("meta"):
        model = SemanticCodec()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ours.update({k: list(v) for k, v in model.decoder_shapes().items()})
    assert ours == official
    assert len(official) == 239


def test_load_checks_the_unused_decoder(tiny):
    sd = load_file(FIX / "codec_tiny.safetensors")
    model = SemanticCodec(tiny.cfg)
    bad = dict(sd)
    bad.pop("decoder.1.bias")
    with pytest.raises(RuntimeError, match="decoder entries do not match"):
        model.load_official_state_dict(bad)
    bad = dict(sd)
    bad["decoder.1.bias"] = torch.zeros(3)
    with pytest.raises(RuntimeError, match="wrong shape"):
        model.load_official_state_dict(bad)
    bad = dict(sd)
    bad.pop("quantizer.quantizers.0.codebook.weight")
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_official_state_dict(bad)


def test_full_size_codec_runs_on_real_shapes():
    torch.manual_seed(0)
    model = SemanticCodec().eval()  # official IndexTTS2 config: 8192 x 8 codebook, 1024 wide
    feat = torch.randn(2, 25, 1024)
    codes, s_ref = model.quantize(feat)
    assert codes.shape == (2, 25) and s_ref.shape == (2, 25, 1024)
    assert 0 <= codes.min() and codes.max() < 8192
    assert (model.vq2emb(codes).transpose(1, 2) - s_ref).abs().max() <= TOL
