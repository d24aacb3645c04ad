"""The conditioning of a segment: its voice's, its emotion's, each computed once and cached.

``Conditioner`` turns a request's voice and emotion into the ``SegmentCondition`` every pass of the
segment reads. What a clip contributes (speaker latents, reference mel, style, S2M prompt, emotion
vector) is the model family's to compute; caching it is shared: per voice and per emotion clip in a
``ConditioningCache`` keyed by the clip's content hash and the model fingerprint (memory LRU,
optionally files on disk), and the Qwen emotion model's answers by text.

Emotion precedence is the official one: text > vector > reference clip > the speaker clip itself
(loaded as an emotion clip, alpha 1). Text and vector weights are scaled by alpha
(``scale_by_alpha``), a reference clip's vector is merged with the speaker's by alpha.
"""

from __future__ import annotations

from pathlib import Path

import torch

from realtime_tts.model.emotion import scale_by_alpha

from . import cache
from .base import Emotion, Voice
from .family import ModelFamily, SegmentCondition

MAX_EMOTION_TEXTS = 1024  # Qwen answers kept (a few floats each)


class Conditioner:
    """Conditioning of every segment, cached (see the module doc)."""

    def __init__(self, family: ModelFamily, fingerprint: str, *, capacity: int = 32,
                 cache_dir: str | Path | None = None) -> None:
        disk = {}
        if cache_dir is not None:
            kinds = family.cache_kinds
            disk = dict(disk_dir=Path(cache_dir), dump=cache.dumper(kinds), load=cache.loader(family.device, kinds))
        self.family = family
        self.fingerprint = fingerprint  # entries are only valid for these weights
        self.voices = cache.ConditioningCache(capacity, **disk)
        self.emotions = cache.ConditioningCache(capacity, **disk)
        self.shared: dict[str, cache.SharedConditioning] = {}  # by kind, once share() is called
        self._emotion_text: dict[str, list[float]] = {}  # Qwen answers, by text hash

    def share(self, views: dict[str, cache.SharedBlobs]) -> None:
        """Read and write the "voice" and "emotion" conditioning through these shared views too
        (one per kind, for this model build)."""
        kinds = self.family.cache_kinds
        encode, decode = cache.encoder(kinds), cache.decoder(self.family.device, kinds)
        for shared in self.shared.values():  # shared again: the previous views' uploads finish first
            shared.close()
        self.shared = {kind: cache.SharedConditioning(view, encode, decode, kind) for kind, view in views.items()}

    def _cached(self, kind: str, entries: cache.ConditioningCache, voice: Voice, compute):
        key = cache.cache_key(kind, voice.content_hash, self.fingerprint)
        shared = self.shared.get(kind)
        if shared is not None:
            return entries.get_or_compute(key, lambda: shared.fetch_or_compute(voice.content_hash, compute))
        return entries.get_or_compute(key, compute)

    def voice(self, voice: Voice):
        """The family's conditioning of a speaker clip."""
        return self._cached("voice", self.voices, voice, lambda: self.family.voice_conditioning(voice.audio_path))

    def emotion_clip(self, voice: Voice):
        """The family's conditioning of a clip used as an emotion reference."""
        return self._cached("emotion", self.emotions, voice,
                            lambda: self.family.emotion_conditioning(voice.audio_path))

    def _text_weights(self, text: str) -> list[float]:
        key = cache.text_hash(text)
        if key not in self._emotion_text:
            weights = self.family.emotion_weights(text)
            if len(self._emotion_text) >= MAX_EMOTION_TEXTS:
                self._emotion_text.pop(next(iter(self._emotion_text)))
            self._emotion_text[key] = weights
        return self._emotion_text[key]

    def emotion_vector(self, voice: Voice, vc, emotion: Emotion | None) -> torch.Tensor:
        """The segment's [1, C] emotion vector (official precedence text > vector > clip)."""
        weights = None
        alpha = 1.0
        ref = voice  # without a reference clip the speaker clip is the reference, alpha 1
        if emotion is not None:
            if emotion.text:
                weights = scale_by_alpha(self._text_weights(emotion.text), emotion.alpha)
            elif emotion.vector is not None:
                weights = scale_by_alpha(emotion.vector, emotion.alpha)
            elif emotion.reference is not None:
                ref, alpha = emotion.reference, float(emotion.alpha)
        return self.family.merge_emotion(vc, self.emotion_clip(ref).emovec, alpha, weights)

    def segment(self, voice: Voice, emotion: Emotion | None, language: str | None = None) -> SegmentCondition:
        vc = self.voice(voice)
        return self.family.segment_condition(vc, self.emotion_vector(voice, vc, emotion), language)

    def describe(self) -> dict:
        v = self.voices
        info = {"entries": len(v), "hits": v.hits, "misses": v.misses, "disk": str(v.disk_dir) if v.disk_dir else None}
        if self.shared:
            info["shared"] = {kind: shared.describe() for kind, shared in self.shared.items()}
        return info

    def clear(self) -> None:
        self.voices.clear()
        self.emotions.clear()
        self._emotion_text.clear()

    def close(self) -> None:
        self.clear()
        for shared in self.shared.values():
            shared.close()
