"""Emotion request forms, label mappings, maths edge cases and QwenEmotion laziness."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from realtime_tts.engine.base import EMOTIONS, Emotion, Voice
from realtime_tts.model.emotion import (
    EMO_NUM,
    XIAOZHI_EMOTION_MAP,
    EmotionMatrix,
    QwenEmotion,
    label_to_vector,
    normalize_emotion_vector,
    parse_emotion_request,
    parse_qwen_output,
    scale_by_alpha,
    strip_thinking,
    xiaozhi_emotion,
    xiaozhi_label_to_vector,
)

VOICE = Voice(id="v1", audio_path="/tmp/v1.wav", content_hash="abc")


def resolver(ref):
    if ref in ("v1", {"id": "v1"}):
        return VOICE
    raise ValueError(f"unknown voice {ref!r}")


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


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("label,name", [("sad", "sad"), ("SAD", "sad"), (" Happy ", "happy"), ("高兴", "happy"),
                                        ("愤怒", "angry"), ("悲伤", "sad"), ("恐惧", "afraid"), ("反感", "disgusted"),
                                        ("低落", "melancholic"), ("惊讶", "surprised"), ("自然", "calm")])
def test_label_to_vector(label, name):
    assert list(label_to_vector(label, 0.7)) == onehot(name, 0.7)


def test_label_errors():
    with pytest.raises(ValueError, match="unknown emotion 'joyful'.*happy, angry"):
        label_to_vector("joyful")
    with pytest.raises(ValueError, match="strength must be within 0-1"):
        label_to_vector("sad", 1.5)
    with pytest.raises(ValueError, match="strength must be a number"):
        label_to_vector("sad", "high")


@pytest.mark.parametrize("label", ["happy", "laughing", "funny", "loving", "kissy", "winking", "cool",
                                   "confident", "delicious", "silly"])
def test_xiaozhi_happy_family(label):
    v = xiaozhi_label_to_vector(label)
    assert v[0] > 0 and sum(v[1:]) == 0


def test_xiaozhi_other_labels():
    def nz(label):
        return {EMOTIONS[i] for i, x in enumerate(xiaozhi_label_to_vector(label)) if x}

    assert nz("angry") == {"angry"}
    assert nz("sad") == nz("crying") == {"sad"}
    assert nz("shocked") == {"afraid", "surprised"}
    assert nz("surprised") == {"surprised"}
    assert nz("embarrassed") == {"afraid"}
    assert xiaozhi_label_to_vector("embarrassed")[3] < 0.5  # light
    for label in ("sleepy", "relaxed", "neutral", "thinking", "confused", "Neutral", "", None, "unknown"):
        assert xiaozhi_label_to_vector(label) is None
        assert xiaozhi_emotion(label) is None
    assert all(v is None or len(v) == 8 for v in XIAOZHI_EMOTION_MAP.values())
    e = xiaozhi_emotion("shocked")
    assert e.vector == tuple(normalize_emotion_vector(xiaozhi_label_to_vector("shocked")))


# ----------------------------------------------------------------------------- request forms


def test_parse_none_and_same_as_voice():
    assert parse_emotion_request(None) is None
    assert parse_emotion_request({}) is None
    assert parse_emotion_request({"mode": "same_as_voice"}) is None


@pytest.mark.parametrize("req", [
    [0, 0, 0.6, 0, 0, 0, 0, 0],
    (0, 0, 0.6, 0, 0, 0, 0, 0),
    {"vector": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emo_vector": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emo_vec": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emotion_vector": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"mode": "vector", "values": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"vector": {"sad": 0.6}},
    {"vector": {"悲伤": 0.6}},
    {"label": "sad", "strength": 0.6},
    {"label": "悲伤", "strength": 0.6},
])
def test_parse_vector_forms(req):
    e = parse_emotion_request(req)
    assert e == Emotion(vector=tuple(normalize_emotion_vector(onehot("sad", 0.6))), alpha=1.0)


def test_parse_vector_is_clamped_and_normalized():
    e = parse_emotion_request({"vector": [2, 0, 0, 0, 0, 0, 0, -1], "alpha": 0.5})
    assert e.vector == tuple(normalize_emotion_vector([1, 0, 0, 0, 0, 0, 0, 0]))
    assert e.alpha == 0.5
    raw = parse_emotion_request({"vector": [1] * 8}, normalize=False)
    assert raw.vector == (1.0,) * 8
    assert parse_emotion_request("happy").vector == tuple(normalize_emotion_vector(onehot("happy", 1.0)))
    assert parse_emotion_request([0.0] * 8).vector == (0.0,) * 8  # all-zero stays zero


@pytest.mark.parametrize("key", ["alpha", "weight", "emo_alpha", "emo_weight", "emotion_alpha"])
def test_parse_alpha_aliases(key):
    assert parse_emotion_request({"text": "angry words", key: 0.6}) == Emotion(text="angry words", alpha=0.6)


@pytest.mark.parametrize("key", ["text", "emo_text", "emotion_text"])
def test_parse_text_forms(key):
    assert parse_emotion_request({key: "very sad"}) == Emotion(text="very sad")


def test_parse_use_emo_text():
    assert parse_emotion_request({"use_emo_text": True}, input_text="hi there") == Emotion(text="hi there")
    assert parse_emotion_request({"use_emo_text": True, "emo_text": "x"}, input_text="y") == Emotion(text="x")
    assert parse_emotion_request({"use_emo_text": False, "emo_text": "x"}) is None
    with pytest.raises(ValueError, match="use_emo_text"):
        parse_emotion_request({"use_emo_text": True})
    assert parse_emotion_request({"mode": "text", "text": "calm down", "weight": 0.6}) == Emotion(
        text="calm down", alpha=0.6)


@pytest.mark.parametrize("req", [
    {"reference": "v1", "alpha": 0.9},
    {"emo_audio_prompt": "v1", "emo_alpha": 0.9},
    {"emotion_voice": {"id": "v1"}, "emotion_alpha": 0.9},
    {"mode": "audio", "reference": "v1", "weight": 0.9},
])
def test_parse_reference_forms(req):
    assert parse_emotion_request(req, resolve_voice=resolver) == Emotion(reference=VOICE, alpha=0.9)


@pytest.mark.parametrize("req,field", [
    ({"vector": [0.1] * 7}, "vector needs 8 weights"),
    ({"emo_vector": [0.1] * 7 + ["x"]}, r"emo_vector\[7\] must be a number"),
    ({"vector": [0.1] * 7 + [math.nan]}, r"vector\[7\] must be finite"),
    ({"vector": [0.1] * 7 + [True]}, r"vector\[7\] must be a number"),
    ({"vector": "0.1,0.2"}, "vector must be a list"),
    ({"vector": {"joy": 1}}, "vector: unknown emotion 'joy'"),
    ({"label": "joy"}, "unknown emotion 'joy'"),
    ({"label": 3}, "label must be a string"),
    ({"label": "sad", "strength": 2}, "strength must be within 0-1"),
    ({"text": "   "}, "text must be a non-empty string"),
    ({"emo_text": 5}, "emo_text must be a non-empty string"),
    ({"text": "x", "alpha": 1.5}, "alpha must be within 0-1"),
    ({"text": "x", "emo_alpha": "big"}, "emo_alpha must be a number"),
    ({"text": "x", "vector": [0] * 8}, "only one emotion source.*vector.*text"),
    ({"emo_vector": [0] * 8, "emo_vec": [0] * 8}, "emo_vector, emo_vec are aliases"),
    ({"alpha": 0.5, "weight": 0.5, "text": "x"}, "alpha, weight are aliases"),
    ({"vector": [0] * 8, "strength": 0.5}, "strength only applies together with label"),
    ({"alpha": 0.5}, "needs one of vector, label, text or reference"),
    ({"mode": "vibes"}, "emotion.mode must be one of"),
    ({"mode": "text", "vector": [0] * 8}, "emotion.mode is 'text' but the request gives vector"),
    ({"vectr": [0] * 8}, "unknown emotion field.*vectr"),
    ({"reference": "v1"}, "reference: emotion reference voices are not supported"),
    (3.5, "emotion must be an object"),
])
def test_parse_errors_name_the_field(req, field):
    with pytest.raises(ValueError, match=field):
        parse_emotion_request(req)


def test_parse_resolver_errors_propagate():
    with pytest.raises(ValueError, match="unknown voice"):
        parse_emotion_request({"reference": "nobody"}, resolve_voice=resolver)


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
