"""IndexTTS2 engine end to end against the official ``IndexTTS2.infer`` (tools/golden/pipeline.py).

The fixture is a tiny checkpoint directory in the official layout (config.yaml, gpt.pth,
s2mel.pth, bpe.model, stats, feat1/feat2, hf_cache/ in Hugging Face cache layout). It is loaded
through the engine's real loading code; with the same seed our waveform must equal the official
one to 1e-3 (fp32, CPU; the issue's bound). The test holds it to the project's golden tolerance
1e-4: the measured error is ~1e-6, and 1e-3 alone would not catch e.g. CFG rate 0.6 for 0.7 on
this tiny model (1.4e-3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.engine.base import CancelToken, Emotion, SynthesisOptions, Voice
from realtime_tts.engine.indextts2 import IndexTTS2Engine
from realtime_tts.model.gpt import SamplingParams

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
META = json.loads((FIX / "golden.json").read_text(encoding="utf-8"))
CASES = {c["name"]: c for c in META["cases"]}
SPEAKER = Voice("speaker", FIX / "speaker_24k.wav", "a1" * 32)
ATOL = 1e-4
EMOTION_CLIP = Voice("emotion", FIX / "emotion_16k.wav", "b2" * 32)


@pytest.fixture(scope="module")
def gold() -> dict[str, torch.Tensor]:
    return load_file(str(FIX / "golden.safetensors"))


def make_engine(**kw) -> IndexTTS2Engine:
    torch.manual_seed(0)
    return IndexTTS2Engine.from_checkpoints(FIX / "checkpoints", device="cpu", dtype="fp32", cache_dir=None,
                                            sampling=SamplingParams(max_mel_tokens=META["max_mel_tokens"]), **kw)


@pytest.fixture(scope="module")
def engine() -> IndexTTS2Engine:
    return make_engine()


def options(case: dict) -> SynthesisOptions:
    kw = case["kwargs"]
    emotion = None
    if "emo_vector" in kw:
        emotion = Emotion(vector=tuple(kw["emo_vector"]), alpha=kw["emo_alpha"])
    elif "emo_audio_prompt" in kw:
        emotion = Emotion(reference=EMOTION_CLIP, alpha=kw["emo_alpha"])
    return SynthesisOptions(voice=SPEAKER, emotion=emotion)


def test_speaker_conditioning_matches_official(engine, gold):
    vc = engine.family.voice_conditioning(SPEAKER.audio_path)
    # w2v-BERT features: transformers 4.52 (official) vs ours differ by ~1e-5
    for ours, name in ((vc.feats, "spk_cond_emb"), (vc.style, "style"), (vc.prompt, "prompt_condition"),
                       (vc.ref_mel, "ref_mel")):
        ref = gold[f"speaker.{name}"]
        assert ours[0].shape == ref.shape, name
        assert (ours[0] - ref).abs().max().item() < 1e-4, name


@pytest.mark.parametrize("name", list(CASES))
def test_waveform_matches_official(engine, gold, name):
    case = CASES[name]
    opts = options(case)
    # conditioning first (it consumes no randomness here), then replay the official w2v-BERT draws
    engine.conditioner.voice(SPEAKER)
    engine.conditioner.emotion_clip(SPEAKER)
    engine.conditioner.emotion_clip(EMOTION_CLIP)
    g = torch.Generator().manual_seed(case["seed"])
    torch.rand(case["w2v_calls"] * case["w2v_layers"], generator=g)
    assert engine.text_ids(case["text"]) == [case["tokens"]]
    out = engine.synthesize(case["text"], opts, CancelToken(), generator=g)
    ref = gold[f"{name}.wav"].numpy()
    assert out.sample_rate == 22050
    assert out.pcm.shape == ref.shape, (out.pcm.shape, ref.shape)
    err = abs(out.pcm - ref).max()
    assert err <= ATOL, f"max abs error {err}"
    assert set(out.stages) == {"conditioning", "gpt_prefill", "gpt", "gpt_latent", "s2mel", "vocoder"}


def test_public_synthesize_with_engine_seed(gold):
    """``synthesize`` on a seeded engine reproduces the official run (vector-emotion case, whose
    official conditioning was cached, so no w2v-BERT draws precede the GPT)."""
    case = CASES["vector"]
    assert case["w2v_calls"] == 0
    eng = make_engine(seed=case["seed"])
    out = eng.synthesize(case["text"], options(case), CancelToken())
    ref = gold["vector.wav"].numpy()
    assert out.pcm.shape == ref.shape
    assert abs(out.pcm - ref).max() <= ATOL
    eng.close()


def test_compiled_engine_matches_official(gold):
    """``compile=True`` (torch.compile of the decode step and the S2M estimator): after the warm-up
    that compiles them, the engine still reproduces the official waveform."""
    case = CASES["vector"]
    eng = make_engine(seed=case["seed"], compile=True)
    assert eng.describe()["compiled"]
    eng.warmup()  # compiles; leaves the seeded generator alone
    out = eng.synthesize(case["text"], options(case), CancelToken())
    ref = gold["vector.wav"].numpy()
    assert out.pcm.shape == ref.shape
    assert abs(out.pcm - ref).max() <= ATOL
    eng.close()
