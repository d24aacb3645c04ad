"""w2v-BERT semantic features: our loader/extractor (transformers 5.x) vs the official get_emb
(transformers 4.52.1) on a tiny random Wav2Vec2BertModel saved by the golden generator."""

from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from realtime_tts.model.w2vbert import SemanticEncoder, load_w2v_stats

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
TINY = FIX / "w2vbert_tiny"
TOL = 1e-4


@pytest.fixture(scope="module")
def enc():
    return SemanticEncoder.from_pretrained(TINY, FIX / "w2v_stats.pt", layer=17)


@pytest.fixture(scope="module")
def gold():
    return load_file(FIX / "w2vbert_golden.safetensors")


@pytest.fixture(scope="module")
def wav16():
    return load_file(FIX / "features_golden.safetensors")["wav16"]


def close(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= TOL


def test_feature_extractor_matches_official(enc, gold, wav16):
    feats, mask = enc.features(wav16)
    close(feats, gold["input_features"])
    assert torch.equal(mask, gold["attention_mask"])
    assert feats.shape[-1] == 160


def test_semantic_features_match_official_get_emb(enc, gold, wav16):
    close(enc(gold["input_features"], gold["attention_mask"]), gold["feat"])
    close(enc.encode(wav16), gold["feat"])  # extractor + model + stats end to end


def test_layers_after_the_tap_are_dropped(enc):
    # the fixture model has 18 layers; hidden_states[17] never needs the 18th
    assert len(enc.model.encoder.layers) == 17


def test_tap_equals_full_model_hidden_state(tmp_path, wav16):
    # a fresh tiny model saved by THIS transformers version: layer k of the truncated model equals
    # hidden_states[k] of the untouched one
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2BertConfig(hidden_size=8, num_hidden_layers=4, num_attention_heads=2,
                                          intermediate_size=16, output_hidden_size=8,
                                          conv_depthwise_kernel_size=3, left_max_position_embeddings=4,
                                          right_max_position_embeddings=1)
    full = transformers.Wav2Vec2BertModel(cfg).eval()
    full.save_pretrained(tmp_path / "w2v")
    transformers.SeamlessM4TFeatureExtractor().save_pretrained(tmp_path / "w2v")
    torch.save({"mean": torch.zeros(8), "var": torch.ones(8) * 4}, tmp_path / "stats.pt")
    enc = SemanticEncoder.from_pretrained(tmp_path / "w2v", tmp_path / "stats.pt", layer=2)
    feats, mask = enc.features(wav16)
    with torch.no_grad():
        ref = full(input_features=feats, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    close(enc(feats, mask), ref / 2)


def test_bad_inputs(tmp_path, enc):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SemanticEncoder.from_pretrained(tmp_path, FIX / "w2v_stats.pt")
    torch.save({"mean": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'mean' and 'var'"):
        load_w2v_stats(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="400 samples"):
        enc.features(torch.zeros(1, 399))
