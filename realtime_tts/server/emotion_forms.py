"""Emotion labels and the xiaozhi label map: the request side of emotion control.

Requests name emotions in many ways (a label, xiaozhi's ``llm.emotion`` names, 8 weights); these
helpers turn them into the 8 weights in ``EMOTIONS`` order that ``Emotion.vector`` carries.
``server/params.py`` parses the HTTP fields with them, ``server/xiaozhi.py`` the device labels.
The maths (the official damping of user vectors, ``normalize_emotion_vector``, and the turning of
weights into GPT conditioning) stays in ``realtime_tts.model.emotion``.
"""

from __future__ import annotations

import math
from typing import Any

from ..engine.base import Emotion
from ..model.emotion import normalize_emotion_vector
from ..model.emotion_names import CHINESE_KEYS, EMOTIONS

_CN_TO_EN = dict(zip(CHINESE_KEYS, EMOTIONS))


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return x


def emotion_index(name: str) -> int:
    """Position of an emotion given by English name (any case) or Chinese key."""
    key = str(name).strip()
    key = _CN_TO_EN.get(key, key).lower()
    if key not in EMOTIONS:
        raise ValueError(f"unknown emotion {name!r}; use one of {', '.join(EMOTIONS)} (or {' '.join(CHINESE_KEYS)})")
    return EMOTIONS.index(key)


def label_to_vector(label: str, strength: float = 1.0) -> tuple[float, ...]:
    """One-hot vector [8] with ``strength`` (0-1) at the named emotion."""
    s = _number(strength, "strength")
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"strength must be within 0-1, got {s}")
    vec = [0.0] * len(EMOTIONS)
    vec[emotion_index(label)] = s
    return tuple(vec)


def _weights(**named: float) -> tuple[float, ...]:
    return tuple(named.get(name, 0.0) for name in EMOTIONS)


_HAPPY = _weights(happy=0.8)
# xiaozhi ``llm.emotion`` labels -> raw weights (before ``normalize_emotion_vector``).
# None means "no override": the speaker clip's own emotion is used. Starting values, not yet tuned
# by ear (no real checkpoint was available when they were chosen).
XIAOZHI_EMOTION_MAP: dict[str, tuple[float, ...] | None] = {
    **{label: _HAPPY for label in (
        "happy", "laughing", "funny", "loving", "kissy", "winking", "cool", "confident", "delicious", "silly")},
    "angry": _weights(angry=0.8),
    "sad": _weights(sad=0.8),
    "crying": _weights(sad=1.0),
    "shocked": _weights(afraid=0.4, surprised=0.5),
    "surprised": _weights(surprised=0.8),
    "embarrassed": _weights(afraid=0.3),
    **{label: None for label in ("sleepy", "relaxed", "neutral", "thinking", "confused")},
}


def xiaozhi_label_to_vector(label: str | None) -> tuple[float, ...] | None:
    """Raw weights [8] for a xiaozhi emotion label, or None for neutral/unknown labels."""
    if not label:
        return None
    return XIAOZHI_EMOTION_MAP.get(str(label).strip().lower())


def xiaozhi_emotion(label: str | None) -> Emotion | None:
    """Emotion for a xiaozhi label, normalised like any user vector; None = no override."""
    raw = xiaozhi_label_to_vector(label)
    return None if raw is None else Emotion(vector=tuple(normalize_emotion_vector(raw)))
