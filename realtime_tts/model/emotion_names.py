"""The eight IndexTTS2 emotions: the order of every emotion weight vector, and the Chinese keys the
Qwen emotion classifier answers with (same order). Torch-free, so light importers can use it."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
CHINESE_KEYS: tuple[str, ...] = ("高兴", "愤怒", "悲伤", "恐惧", "反感", "低落", "惊讶", "自然")
