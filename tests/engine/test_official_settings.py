"""Settings of the official pipeline that our defaults must equal, as the official ``IndexTTS2.infer``
itself showed them (tools/golden/pipeline.py records them in tests/fixtures/pipeline/golden.json):
the keyword arguments it passes to ``inference_speech``, its silence chunk between segments, the
w2v-BERT hidden state that ``get_emb`` taps, its segment split of a long text at the default limit
and the mel frame count per number of codes (up to 1500 codes). The end-to-end waveform golden
(test_indextts2_golden.py) pins these only indirectly: its three short cases do not depend on the
repetition penalty's value, the segment limit or the frame rule's third decimal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.audio.stream import SpeechEncoder
from realtime_tts.config import Settings
from realtime_tts.engine.indextts2 import SEGMENT_GAP_S, IndexTTS2Engine
from realtime_tts.model.gpt import SamplingParams
from realtime_tts.model.s2mel import S2MelConfig
from realtime_tts.model.s2mel.model import PromptCondition, target_lengths
from realtime_tts.model.w2vbert import IDX_LAYER

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
META = json.loads((FIX / "golden.json").read_text(encoding="utf-8"))
FIELDS = ("mode", "num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "length_penalty",
          "max_mel_tokens")


@pytest.fixture(scope="module")
def engine() -> IndexTTS2Engine:
    torch.manual_seed(0)
    return IndexTTS2Engine.from_checkpoints(FIX / "checkpoints", device="cpu", dtype="fp32", cache_dir=None)


def official(kwargs: dict) -> dict:
    """Our SamplingParams fields for the keyword arguments official infer passed to inference_speech."""
    assert kwargs["do_sample"] is True and kwargs["num_return_sequences"] == 1
    return {"mode": "beam_sample" if kwargs["num_beams"] > 1 else "sample", "num_beams": kwargs["num_beams"],
            "top_k": kwargs["top_k"], "top_p": kwargs["top_p"], "temperature": kwargs["temperature"],
            "repetition_penalty": kwargs["repetition_penalty"], "length_penalty": kwargs["length_penalty"],
            "max_mel_tokens": kwargs["max_generate_length"]}


def ours(params: SamplingParams) -> dict:
    return {f: getattr(params, f) for f in FIELDS}


def test_sampling_defaults_are_what_official_infer_passes():
    assert ours(SamplingParams()) == official(META["default_gen_kwargs"])


def test_engine_samples_with_the_official_defaults(engine):
    want = official(META["default_gen_kwargs"])
    want["max_mel_tokens"] = min(want["max_mel_tokens"], engine.models.gpt.cfg.max_mel_tokens)  # tiny GPT: 120
    assert ours(engine.sampling) == want


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: c["name"])
def test_golden_cases_ran_with_the_parameters_our_golden_test_uses(case):
    # test_indextts2_golden.py runs every case with SamplingParams(max_mel_tokens=...)
    assert ours(SamplingParams(max_mel_tokens=META["max_mel_tokens"])) == official(case["gen_kwargs"])


def test_silence_between_segments_is_the_official_chunk(engine):
    silence = load_file(str(FIX / "golden.safetensors"))["silence"]
    assert silence.dim() == 2 and silence.size(0) == 1 and not silence.any()
    n = silence.size(1)  # 4410: 200 ms at 22.05 kHz
    rate = META["sample_rate"]
    assert engine.sample_rate == rate
    # between the pieces of one long segment (the engine) ...
    assert int(rate * SEGMENT_GAP_S) == n
    # ... and between segments (the server's default, as the stream encoder emits it)
    enc = SpeechEncoder(rate, rate, encoding="pcm_s16le", frame_ms=20, silence_ms=Settings().silence_ms)
    speech = np.full(441 * 3, 0.5, np.float32)
    out = np.frombuffer(b"".join(enc.segment(speech) + enc.finish()), "<i2")
    assert out[: speech.size].all() and not out[speech.size :].any()
    assert out.size == speech.size + n


def test_w2v_bert_tap_is_the_official_layer(engine):
    assert IDX_LAYER == META["w2v_layer"]
    assert engine.models.w2v.layer == META["w2v_layer"]


def test_long_text_splits_like_official_infer(engine):
    long = META["long_text"]
    assert max(len(s) for s in long["segments"]) == long["max_text_tokens_per_segment"]  # the limit binds
    tok = engine.models.tokenizer
    assert tok.segment_ids(long["text"]) == long["segments"]
    # the engine's own default limit; the tiny GPT holds only 60 text tokens, so the engine is
    # rebuilt on the same models with room for the official limit
    gpt = engine.models.gpt
    real = gpt.cfg
    gpt.cfg = replace(real, max_text_tokens=4 * long["max_text_tokens_per_segment"])
    try:
        wide = IndexTTS2Engine(engine.models, device="cpu")
        assert wide.text_ids(long["text"]) == long["segments"]
    finally:
        gpt.cfg = real


def test_mel_frames_per_code_count_are_official(engine):
    counts = torch.tensor([n for n, _ in META["code_frames"]])
    want = [frames for _, frames in META["code_frames"]]
    assert dict(META["code_frames"])[200] == 344  # where 1.725 frames per code would give 345
    assert S2MelConfig().frames_per_code == engine.models.s2mel.cfg.frames_per_code
    assert target_lengths(counts, S2MelConfig().frames_per_code).tolist() == want


def test_s2mel_generates_the_official_frame_count_for_200_codes(engine):
    s2mel = engine.models.s2mel
    vc = engine.compute_voice(FIX / "speaker_24k.wav")
    prompt = PromptCondition(cond=vc.prompt, mel=vc.ref_mel, style=vc.style,
                             lengths=torch.tensor([vc.ref_mel.size(-1)]))
    s_infer = torch.zeros(1, 200, s2mel.cfg.semantic_dim)
    mel, lens = s2mel.generate(s_infer, torch.tensor([200]), prompt, steps=1)
    assert lens.tolist() == [344] == [dict(META["code_frames"])[200]]
    assert mel.size(-1) == 344
