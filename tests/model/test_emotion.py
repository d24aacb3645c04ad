"""Emotion maths edge cases, Qwen answer parsing and QwenEmotion laziness (the request forms and
label maps are tested with the server, tests/server/test_emotion_forms.py)."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from realtime_tts.model.emotion import (EMO_NUM, EmotionMatrix, QwenEmotion, normalize_emotion_vector, parse_qwen_output,
                                        scale_by_alpha, strip_thinking)
from realtime_tts.model.emotion_names import EMOTIONS


def onehot(name: str, value: float) -> list[float]:
    v = [0.0] * 8
    v[EMOTIONS.index(name)] = value
    return v


# ----------------------------------------------------------------------------- maths


def test_normalize_known_values():
    assert normalize_emotion_vector([0.0] * 8) == [0.0] * 8
    assert normalize_emotion_vector(onehot("sad", 0.5)) == onehot("sad", 0.5)  # bias 1.0, under cap
    assert normalize_emotion_vector(onehot("calm", 1.0)) == onehot("calm", 0.5625)
    out = normalize_emotion_vector([1.0] * 8)
    assert sum(out) == pytest.approx(0.8)
    assert out[0] / out[6] == pytest.approx(0.9375 / 0.6875)  # proportions kept
    with pytest.raises(ValueError, match="8 weights"):
        normalize_emotion_vector([0.1] * 7)


@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1)), min_size=8, max_size=8))
def test_normalize_never_exceeds_cap_and_keeps_zero(weights):
    out = normalize_emotion_vector(weights)
    assert sum(out) <= 0.8 + 1e-9
    assert all((o == 0) == (w == 0) for o, w in zip(out, weights))


def test_scale_by_alpha():
    w = [0.5, 0.33333, 0, 0, 0, 0, 0, 0.9999]
    assert scale_by_alpha(w, 1.0) == w
    assert scale_by_alpha(w, 3.0) == w  # clamped to 1: untouched
    assert scale_by_alpha(w, 0.5) == [0.25, 0.1666, 0, 0, 0, 0, 0, 0.4999]  # truncated, not rounded
    assert scale_by_alpha(w, -1) == [0.0] * 8


def test_text_mode_sum_above_one_gives_base_a_negative_coefficient():
    spk = torch.randn(73, 192)
    emo = torch.zeros(73, 1280)
    m = EmotionMatrix(spk, emo)
    base = torch.ones(1, 1280)
    w = [1.2, 0, 0.9, 0, 0, 0, 0, 0]  # Qwen output, each <= 1.2, sum 2.1
    out = m.final_emotion_vector(w, spk[0], base)
    torch.testing.assert_close(out, torch.full((1, 1280), 1 - 2.1))


def test_selection_prefers_the_matching_row_and_random_is_seeded():
    torch.manual_seed(0)
    spk = torch.randn(73, 192)
    emo = torch.arange(73, dtype=torch.float32)[:, None].repeat(1, 1280)  # row i holds value i
    m = EmotionMatrix(spk, emo)
    starts = [sum(EMO_NUM[:g]) for g in range(8)]
    # a style equal to row 16 of the angry group picks that row there
    style = spk[starts[1] + 16]
    assert m.select(style)[1] == 16
    picks = m.select(style, rng=random.Random(5))
    assert picks == m.select(style, rng=random.Random(5))
    assert all(0 <= i < n for i, n in zip(picks, EMO_NUM))
    mixed = m.mix(onehot("angry", 1.0), indices=[0, 16, 0, 0, 0, 0, 0, 0])
    assert mixed[0].item() == starts[1] + 16
    with pytest.raises(ValueError, match="style vector or explicit row indices"):
        m.mix(onehot("angry", 1.0))


def test_matrix_shape_errors():
    with pytest.raises(ValueError, match=r"spk_matrix must be \[73, D\]"):
        EmotionMatrix(torch.zeros(70, 192), torch.zeros(73, 1280))
    with pytest.raises(ValueError, match=r"emo_matrix must be \[73, D\]"):
        EmotionMatrix(torch.zeros(73, 192), torch.zeros(72, 1280))
    with pytest.raises(ValueError, match="emo_num"):
        EmotionMatrix(torch.zeros(73, 192), torch.zeros(73, 1280), emo_num=[73])


def test_matrix_from_files(tmp_path):
    torch.save(torch.randn(73, 192), tmp_path / "feat1.pt")
    torch.save(torch.randn(73, 1280), tmp_path / "feat2.pt")
    m = EmotionMatrix.from_files(tmp_path / "feat1.pt", tmp_path / "feat2.pt")
    assert [g.shape[0] for g in m.emo_groups] == list(EMO_NUM)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: expected one tensor"):
        EmotionMatrix.from_files(tmp_path / "bad.pt", tmp_path / "feat2.pt")


# ----------------------------------------------------------------------------- Qwen output


def test_parse_qwen_output_rules():
    calm = parse_qwen_output("", "x")
    assert calm == {**dict.fromkeys(EMOTIONS, 0.0), "calm": 1.0}
    assert parse_qwen_output('{"emotion": "愤怒"}', "x")["angry"] == 1.0
    assert parse_qwen_output('{"label": "Surprised"}', "x")["surprised"] == 1.0
    out = parse_qwen_output('{"悲伤": 0.8, "低落": 0.1, "高兴": NaN}', "so DEPRESSED")
    assert (out["sad"], out["melancholic"], out["happy"]) == (0.1, 0.8, 0.0)
    assert parse_qwen_output('{"恐惧": 5}', "x")["afraid"] == 1.2
    assert parse_qwen_output("恐惧: 0.25, 悲伤: 1.2.3", "x")["afraid"] == 0.25


def test_strip_thinking():
    assert strip_thinking([1, 2, 3]) == [1, 2, 3]
    assert strip_thinking([1, 151668, 2, 151668, 3, 4]) == [3, 4]
    assert strip_thinking([1, 151668]) == []
    assert strip_thinking([5, 9, 6], think_end_id=9) == [6]


def test_qwen_is_lazy_and_reports_a_missing_model(tmp_path):
    q = QwenEmotion(tmp_path / "qwen0.6bemo4-merge")
    assert not q.loaded
    with pytest.raises(FileNotFoundError, match="realtime-tts download"):
        q.analyze("sad text")
    with pytest.raises(ValueError, match="non-empty"):
        QwenEmotion(tmp_path).analyze("  ")
