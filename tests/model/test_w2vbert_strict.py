"""w2v-BERT weights load strictly in the layers we run: transformers alone only warns about a
missing or unexpected key (and re-initialises it at random), so a damaged checkpoint would still
produce audio. Each problem must be an error naming the file and the key; the layers after the tap
(dropped at load time) may hold anything."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from realtime_tts.model.w2vbert import SemanticEncoder

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
TINY = FIX / "w2vbert_tiny"  # 18 layers; the tap at 17 keeps layers 0..16
KEPT = "encoder.layers.3.ffn1.output_dense.bias"
DROPPED = "encoder.layers.17.ffn1.output_dense.bias"


def damaged(tmp_path: Path, edit) -> Path:
    d = tmp_path / "w2v"
    shutil.copytree(TINY, d)
    sd = load_file(str(d / "model.safetensors"))
    edit(sd)
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def load(d: Path) -> SemanticEncoder:
    return SemanticEncoder.from_pretrained(d, FIX / "w2v_stats.pt", layer=17)


def test_the_fixture_loads_cleanly():
    assert len(load(TINY).model.encoder.layers) == 17


@pytest.mark.parametrize("key", [KEPT, "feature_projection.projection.weight", "masked_spec_embed"])
def test_missing_key_in_a_kept_part_is_an_error(tmp_path, key):
    d = damaged(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(ValueError, match=rf"model\.safetensors: missing key '{key}'"):
        load(d)


def test_unexpected_key_is_an_error(tmp_path):
    d = damaged(tmp_path, lambda sd: sd.__setitem__("encoder.layers.2.extra.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"w2v/model\.safetensors: unexpected key 'encoder\.layers\.2\.extra\.weight'"):
        load(d)


def test_mis_shaped_key_is_an_error(tmp_path):
    def edit(sd):
        sd[KEPT] = torch.zeros(sd[KEPT].numel() + 1)

    d = damaged(tmp_path, edit)
    with pytest.raises(ValueError, match=rf"model\.safetensors: key '{KEPT}' has shape \(17,\), the model expects \(16,\)"):
        load(d)


def test_every_problem_is_named(tmp_path):
    def edit(sd):
        sd.pop(KEPT)
        sd["encoder.layers.0.extra"] = torch.zeros(1)

    d = damaged(tmp_path, edit)
    with pytest.raises(ValueError, match="missing key .*; unexpected key"):
        load(d)


def test_dropped_layers_may_hold_anything(tmp_path):
    def edit(sd):
        sd.pop(DROPPED)
        sd["encoder.layers.17.extra"] = torch.zeros(1)
        sd["encoder.layers.17.ffn1.output_dense.weight"] = torch.zeros(3, 3)

    enc = load(damaged(tmp_path, edit))
    assert len(enc.model.encoder.layers) == 17
