"""UnifiedVoice v2 against outputs of the official implementation (tools/golden/gpt.py).

The fixture holds the official state dict at a tiny config; it must load with strict=True and
every output must match the official one (1e-4, fp32 CPU; generated codes exactly).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.model.gpt import GPTConfig, SamplingParams, UnifiedVoice, generate

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"
ATOL = 1e-4


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIX / "gpt_golden.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gold() -> dict[str, torch.Tensor]:
    return load_file(str(FIX / "gpt_golden.safetensors"))


@pytest.fixture(scope="module")
def model() -> UnifiedVoice:
    torch.manual_seed(0)
    m = UnifiedVoice(GPTConfig.tiny())
    sd = {k: v.float() for k, v in load_file(str(FIX / "tiny_gpt.safetensors")).items()}
    m.load_state_dict(sd, strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def cond(model, gold) -> torch.Tensor:
    with torch.inference_mode():
        return model.conditioning(model.speaker_latents(gold["spk_feats"]), gold["emovec"])


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= ATOL, f"max abs error {err}"


def test_tiny_config_matches_generator(meta):
    cfg, off = GPTConfig.tiny(), meta["config"]
    for k in ("layers", "model_dim", "heads", "max_text_tokens", "max_mel_tokens", "number_text_tokens",
              "number_mel_codes", "start_mel_token", "stop_mel_token"):
        assert getattr(cfg, k) == off[k], k
    for ours, theirs in ((cfg.condition_module, off["condition_module"]),
                         (cfg.emo_condition_module, off["emo_condition_module"])):
        for k in ("output_size", "linear_units", "attention_heads", "num_blocks", "perceiver_mult"):
            assert getattr(ours, k) == theirs[k], k


def test_state_dict_layout_is_official(model):
    official = load_file(str(FIX / "tiny_gpt.safetensors"))
    ours = model.state_dict()
    assert set(ours) == set(official)
    assert all(ours[k].shape == official[k].shape for k in ours)
    # the stored sinusoid tables are loaded from the file, not recomputed
    assert torch.equal(ours["conditioning_encoder.embed.pos_enc.pe"], official["conditioning_encoder.embed.pos_enc.pe"].float())


def test_full_size_layout_is_official():
    """GPTConfig.full() builds exactly the official full-size state dict (665 keys, names, shapes)."""
    full = json.loads((FIX / "full_shapes.json").read_text(encoding="utf-8"))
    cfg, off = GPTConfig.full(), full["config"]
    for k in ("layers", "model_dim", "heads", "max_text_tokens", "max_mel_tokens", "number_text_tokens",
              "number_mel_codes", "start_mel_token", "stop_mel_token", "start_text_token", "stop_text_token"):
        assert getattr(cfg, k) == off[k], k
    with torch.device("meta"):
        model = UnifiedVoice(cfg)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == 665
    assert ours == full["shapes"]
    assert sum(p.numel() for p in model.parameters()) == 865_980_639


def test_conditioning_and_emotion(model, gold, meta):
    with torch.inference_mode():
        close(model.speaker_latents(gold["spk_feats"]), gold["spk_latents"])
        masked = model.speaker_latents(gold["spk_feats_masked"], torch.tensor([meta["masked_length"]]))
        close(masked, gold["spk_latents_masked"])
        close(model.emotion_vector(gold["emo_feats"]), gold["emo_vec_emo"])
        close(model.emotion_vector(gold["spk_feats"]), gold["emo_vec_spk"])
        merged = model.merge_emovec(gold["spk_feats"], gold["emo_feats"], alpha=meta["alpha"])
        close(merged, gold["emovec"])


@pytest.mark.parametrize("name", ["zh", "en", "mixed"])
def test_prefill_and_step_logits(model, gold, meta, cond, name):
    ids = torch.tensor(meta["text_ids"][name])
    codes = meta["runs"][name]["greedy"]
    with torch.inference_mode():
        emb, lengths = model.prompt(cond, [ids])
        cache = model.gpt.new_cache(1, emb.size(1) + 8)
        logits = model.prefill(emb, lengths, cache)
        close(logits[0], gold[f"{name}.prefill_logits"])
        steps = [logits[0]]
        for k in range(5):  # official generation feeds code k at mel position k+2
            steps.append(model.decode_step(torch.tensor([codes[k]]), torch.tensor([k + 2]),
                                           lengths + k, cache)[0])
        close(torch.stack(steps), gold[f"{name}.greedy_step_logits"])


def expected(model, codes, stopped):
    stop = model.cfg.stop_mel_token
    return codes.tolist() + ([stop] if stopped else [])


@pytest.mark.parametrize("name", ["zh", "en", "mixed"])
def test_decoded_codes_match_official(model, meta, cond, name):
    ids = torch.tensor(meta["text_ids"][name])
    run = meta["runs"][name]
    base = dict(max_mel_tokens=meta["max_new"], runaway_guard=False)
    out = generate(model, cond, [ids], SamplingParams(mode="greedy", **base))
    assert expected(model, out.codes[0], out.stopped[0]) == run["greedy"]
    for seed in (7, 8, 9):
        for mode, key in (("beam_sample", "beam"), ("sample", "sample")):
            g = torch.Generator().manual_seed(seed)
            out = generate(model, cond, [ids], SamplingParams(mode=mode, **base), generator=g)
            assert expected(model, out.codes[0], out.stopped[0]) == run[f"{key}_{seed}"], (mode, seed)
    g = torch.Generator().manual_seed(7)
    out = generate(model, cond, [ids], SamplingParams(max_mel_tokens=meta["short"], runaway_guard=False),
                   generator=g)
    assert not out.stopped[0]
    assert out.codes[0].tolist() == run["beam_short_7"]


@pytest.mark.parametrize("name", ["zh", "en", "mixed"])
def test_latent_pass(model, gold, meta, name):
    ids = torch.tensor(meta["text_ids"][name])
    codes = torch.tensor(meta["runs"][name]["latent_codes"])
    with torch.inference_mode():
        lat = model.latents(gold["spk_latents"], gold["emovec"], [ids], [codes])
    close(lat, gold[f"{name}.latents"])
