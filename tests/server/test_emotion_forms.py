"""Emotion request forms (server/emotion_forms.py, server/params.py): emotion labels, the xiaozhi
label map, and the field spellings ``parse_emotion`` maps onto one ``Emotion``."""

from __future__ import annotations

import math

import pytest

from realtime_tts.engine.base import EMOTIONS, Emotion
from realtime_tts.model.emotion import normalize_emotion_vector
from realtime_tts.server.emotion_forms import (
    XIAOZHI_EMOTION_MAP,
    label_to_vector,
    xiaozhi_emotion,
    xiaozhi_label_to_vector,
)
from realtime_tts.server.http_errors import ApiError
from realtime_tts.server.params import parse_emotion


def onehot(name: str, value: float) -> list[float]:
    v = [0.0] * 8
    v[EMOTIONS.index(name)] = value
    return v


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
# (what parse_emotion_request, removed as dead code, was tested for, now on the parser the server uses)


def test_parse_none_and_same_as_voice():
    assert parse_emotion(None, {}) is None
    assert parse_emotion(None, {"emotion": None}) is None
    assert parse_emotion(None, {"emotion": {"mode": "same_as_voice"}}) is None
    assert parse_emotion(None, {"emo_control_method": 0, "emo_vector": [1] * 8}) is None


SAD = Emotion(vector=tuple(normalize_emotion_vector(onehot("sad", 0.6))), alpha=1.0)


@pytest.mark.parametrize("fields", [
    {"emotion": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emotion": (0, 0, 0.6, 0, 0, 0, 0, 0)},
    {"emotion": {"vector": [0, 0, 0.6, 0, 0, 0, 0, 0]}},
    {"emotion": {"mode": "vector", "values": [0, 0, 0.6, 0, 0, 0, 0, 0]}},
    {"emotion": {"vector": {"sad": 0.6}}},
    {"emotion": {"label": "sad", "strength": 0.6}},
    {"emo_vector": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emo_vec": [0, 0, 0.6, 0, 0, 0, 0, 0]},
    {"emotion_vector": "0,0,0.6,0,0,0,0,0"},
    {"emo_control_method": 2, "emo_vector": [0, 0, 0.6, 0, 0, 0, 0, 0]},
])
def test_parse_vector_forms(fields):
    assert parse_emotion(None, fields) == SAD


def test_parse_vector_is_clamped_and_normalized():
    e = parse_emotion(None, {"emotion": {"vector": [2, 0, 0, 0, 0, 0, 0, -1], "alpha": 0.5}})
    assert e.vector == tuple(normalize_emotion_vector([1, 0, 0, 0, 0, 0, 0, 0]))
    assert e.alpha == 0.5
    assert parse_emotion(None, {"emotion": "happy"}).vector == tuple(normalize_emotion_vector(onehot("happy", 1.0)))
    assert parse_emotion(None, {"emotion": [0.0] * 8}).vector == (0.0,) * 8  # all-zero stays zero
    assert parse_emotion(None, {"emotion": "sleepy"}) is None  # a neutral xiaozhi label: the voice's own


@pytest.mark.parametrize("fields", [
    {"emotion": {"text": "angry words", "alpha": 0.6}},
    {"emotion": {"text": "angry words", "weight": 0.6}},
    {"emo_text": "angry words", "emo_alpha": 0.6},
    {"emotion_text": "angry words", "emo_weight": 0.6},
    {"emo_text": "angry words", "emotion_alpha": 0.6},
    {"emotion": {"mode": "text", "text": "angry words", "weight": 0.6}},
    {"emotion": "angry words", "emo_alpha": 0.6},  # not a label: a description
    {"instructions": "angry words", "emo_alpha": 0.6},
    {"emo_control_method": 3, "text": "angry words", "emo_alpha": 0.6},
])
def test_parse_text_forms_and_alpha_aliases(fields):
    assert parse_emotion(None, fields) == Emotion(text="angry words", alpha=0.6)


def test_parse_use_emo_text():
    assert parse_emotion(None, {"use_emo_text": True, "input": "hi there"}) == Emotion(text="hi there")
    assert parse_emotion(None, {"use_emo_text": True, "emo_text": "x", "input": "y"}) == Emotion(text="x")
    assert parse_emotion(None, {"use_emo_text": True}) is None  # nothing to read the emotion from
    assert parse_emotion(None, {"emo_text": "x", "emo_alpha": 3}).alpha == 1.0  # clamped to 0-1


@pytest.mark.parametrize("fields,param,message", [
    ({"emotion": {"vector": [0.1] * 7}}, "emotion.vector", "must be 8 numbers"),
    ({"emo_vector": [0.1] * 7 + ["x"]}, "emo_vector", "'emo_vector' must be a number, got 'x'"),
    ({"emo_vector": [0.1] * 7 + [math.nan]}, "emo_vector", "'emo_vector' must be finite"),
    ({"emo_vector": [0.1] * 7 + [True]}, "emo_vector", "'emo_vector' must be a number"),
    ({"emotion": {"vector": {"joy": 1}}}, "emotion.vector", r"unknown emotion\(s\) \['joy'\]"),
    ({"emotion": {"label": "joy"}}, "emotion.label", "unknown emotion label 'joy'"),
    ({"emotion": {"label": 3}}, "emotion.label", "'emotion.label' must be a string"),
    ({"emotion": {"text": 5}}, "emotion.text", "'emotion.text' must be a string"),
    ({"emo_text": 5}, "emo_text", "'emo_text' must be a string"),
    ({"emo_text": "x", "emo_alpha": "big"}, "emo_alpha", "'emo_alpha' must be a number"),
    ({"emotion": {"mode": "vibes"}}, "emotion.mode", "'emotion.mode' 'vibes' is not one of"),
    ({"emotion": 3.5}, "emotion", "'emotion' must be an object"),
    ({"emo_control_method": 7}, "emo_control_method", "must be 0 \\(speaker\\)"),
    ({"emo_control_method": 1}, "emo_ref_path", "emo_control_method 1 needs 'emo_ref_path'"),
])
def test_parse_errors_name_the_field(fields, param, message):
    with pytest.raises(ApiError, match=message) as err:
        parse_emotion(None, fields)
    assert err.value.status == 400 and err.value.param == param
