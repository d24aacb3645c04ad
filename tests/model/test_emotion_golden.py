"""Emotion maths, Qwen answer parsing and Qwen plumbing against the official code (1eafa93).

Fixtures come from tools/golden/emotion.py (oracle venv).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.model.emotion import (
    EmotionMatrix,
    QwenEmotion,
    normalize_emotion_vector,
    parse_qwen_output,
    scale_by_alpha,
    strip_thinking,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "emotion"
MATHS = json.loads((FIX / "maths.json").read_text(encoding="utf-8"))
TENSORS = load_file(str(FIX / "matrix.safetensors"))
PARSE = json.loads((FIX / "parse_cases.json").read_text(encoding="utf-8"))
TINY = json.loads((FIX / "tiny_qwen_golden.json").read_text(encoding="utf-8"))
CASES = MATHS["cases"]


@pytest.fixture(scope="module")
def matrix() -> EmotionMatrix:
    return EmotionMatrix(TENSORS["feat1"], TENSORS["feat2"], MATHS["emo_num"])


@pytest.mark.parametrize("name", list(CASES))
def test_normalize_matches_official(name):
    case = CASES[name]
    assert normalize_emotion_vector(case["weights"]) == pytest.approx(case["normalized"], abs=1e-12)
    assert normalize_emotion_vector(case["weights"], apply_bias=False) == pytest.approx(
        case["normalized_no_bias"], abs=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_alpha_scaling_matches_official(name):
    case = CASES[name]
    assert len(case["alpha"]) == 5
    for alpha, expected in case["alpha"].items():
        assert scale_by_alpha(case["weights"], float(alpha)) == expected, alpha


def test_row_selection_matches_official(matrix):
    assert matrix.select(TENSORS["style"]) == MATHS["indices"]
    assert matrix.select(TENSORS["style"][0]) == MATHS["indices"]  # [192] and [1, 192] alike


@pytest.mark.parametrize("seed", list(MATHS["random_indices"]))
def test_random_selection_matches_official_sequence(matrix, seed):
    assert matrix.select(TENSORS["style"], rng=random.Random(int(seed))) == MATHS["random_indices"][seed]


@pytest.mark.parametrize("name", list(CASES))
def test_mix_and_final_vector_match_official(matrix, name):
    weights = CASES[name]["weights"]
    mix = matrix.mix(weights, TENSORS["style"])
    assert mix.shape == (1280,)
    torch.testing.assert_close(mix, TENSORS[f"{name}.mix"][0], atol=1e-5, rtol=1e-5)
    final = matrix.final_emotion_vector(weights, TENSORS["style"], TENSORS["emovec"])
    assert final.shape == (1, 1280)
    torch.testing.assert_close(final, TENSORS[f"{name}.final"], atol=1e-5, rtol=1e-5)


def test_zero_weights_keep_the_speakers_own_emotion(matrix):
    final = matrix.final_emotion_vector([0.0] * 8, TENSORS["style"], TENSORS["emovec"])
    torch.testing.assert_close(final, TENSORS["emovec"])


# ----------------------------------------------------------------------------- parsing

# Answers the official 1eafa93 parser crashes on or reads as "no emotion"; we deliberately
# differ (see parse_qwen_output). input text -> (official outcome, our result as non-zero weights)
DEVIATIONS = {
    "label only": ({"calm": 1.0}, {"sad": 1.0}),
    "bare label json": ("AttributeError", {"sad": 1.0}),
    "bare label": ({"calm": 1.0}, {"sad": 1.0}),
    "english keys": ({"calm": 1.0}, {"happy": 0.5, "angry": 0.2}),
    "non-numeric score": ("TypeError", {"calm": 1.0}),
    "json list": ("AttributeError", {"calm": 1.0}),
    "bad number": ("ValueError", {"calm": 1.0}),
}


def _answer(pieces: list[str]) -> str:
    """Decode like the golden script's piece tokenizer: one id per piece, </think> = 151668."""
    ids = [151668 if p == "</think>" else 1000 + i for i, p in enumerate(pieces)]
    return "".join(pieces[i - 1000] for i in strip_thinking(ids))


def _nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v}


@pytest.mark.parametrize("case", PARSE, ids=[c["input"] for c in PARSE])
def test_parse_matches_official(case):
    ours = parse_qwen_output(_answer(case["pieces"]), case["input"])
    assert list(ours) == ["happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm"]
    official = case["official"]
    if case["input"] in DEVIATIONS:
        recorded, expected = DEVIATIONS[case["input"]]
        if isinstance(recorded, str):
            assert official == {"error": recorded}
        else:
            assert _nonzero(official["result"]) == recorded
        assert _nonzero(ours) == expected
    else:
        assert ours == pytest.approx(official["result"], abs=1e-12)


def test_parse_fixture_covers_the_interesting_paths():
    by_input = {c["input"]: c["official"].get("result") for c in PARSE}
    assert by_input["with thinking"]["angry"] == 0.9  # text before </think> ignored
    assert by_input["I feel so gloomy today"]["melancholic"] == 0.8  # swap
    assert by_input["滚出去"]["angry"] == 1.2 and by_input["滚出去"]["afraid"] == 0.0  # clamp
    assert by_input["truncated json"] == {**dict.fromkeys(by_input["嗯"], 0.0), "happy": 0.6, "sad": 0.3}


# ----------------------------------------------------------------------------- tiny Qwen3


@pytest.fixture(scope="module")
def tiny_qwen() -> tuple[QwenEmotion, list[str]]:
    q = QwenEmotion(FIX / "tiny_qwen", device="cpu")
    assert not q.loaded  # lazy: nothing read before the first request
    q.load()
    prompts: list[str] = []
    template = q.tokenizer.apply_chat_template

    def capture(*args, **kwargs):
        prompts.append(template(*args, **kwargs))
        return prompts[-1]

    q.tokenizer.apply_chat_template = capture
    return q, prompts


@pytest.mark.parametrize("record", TINY, ids=[r["input"] for r in TINY])
def test_tiny_qwen_matches_official(tiny_qwen, record):
    q, prompts = tiny_qwen
    assert q.model.dtype == torch.float32  # fp32 on CPU
    assert q.analyze(record["input"]) == pytest.approx(record["official"], abs=1e-12)
    assert prompts[-1] == record["prompt"]  # system prompt, template flags, no thinking


def test_tiny_qwen_golden_is_not_trivial():
    results = {r["input"]: r["official"] for r in TINY}
    assert results["今天真开心"]["sad"] == 0.9 and results["今天真开心"]["calm"] == 0.0
    assert results["I feel gloomy and depressed"]["melancholic"] == 0.9
