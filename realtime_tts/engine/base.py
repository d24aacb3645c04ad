"""The one interface between the server and any speech engine.

The server never talks to a model directly: it hands a text segment and its
options to the executor (``realtime_tts.engine.executor``), whose single worker
calls ``Engine.synthesize``, ``synthesize_batch`` or drives a ``StepBatch``
(continuous batching). Everything here is plain data, so executors change without
touching callers.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from realtime_tts.model.emotion_names import EMOTIONS  # the order of every 8-weight vector

SPEED_MIN = 0.5
SPEED_MAX = 2.0


class EngineError(RuntimeError):
    """A segment could not be synthesized (bad input for this engine, model failure)."""


class Cancelled(Exception):
    """Raised inside the engine when the job's cancel token fires between steps."""


class CancelToken:
    """Thread-safe cancel flag checked by engines between steps (GPT tokens, CFM steps...)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclass(frozen=True)
class Voice:
    """A reference voice: a clip on disk identified by the hash of its content.

    ``content_hash`` keys every per-voice cache (never the path: a file changed
    in place must not return stale conditioning).
    """

    id: str
    audio_path: Path
    content_hash: str
    name: str = ""


@dataclass(frozen=True)
class Emotion:
    """Emotion request in its internal form; at most one source is the driver.

    Precedence follows IndexTTS2: ``text`` > ``vector`` > ``reference`` > the
    speaker clip itself. ``alpha`` weights the emotion against the speaker's own.
    """

    vector: tuple[float, ...] | None = None  # 8 weights in EMOTIONS order
    text: str | None = None  # free-text description (Qwen emotion model)
    reference: Voice | None = None  # emotion reference clip
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.vector is not None and len(self.vector) != len(EMOTIONS):
            raise ValueError(f"emotion vector needs {len(EMOTIONS)} weights, got {len(self.vector)}")


@dataclass(frozen=True)
class SynthesisOptions:
    voice: Voice | None = None  # None: the engine's default voice
    emotion: Emotion | None = None
    speed: float = 1.0  # 0.5-2.0; engines scale duration by 1/speed
    language: str | None = None  # None: the engine detects it (IndexTTS-2: zh/en by content; 2.5: by script)

    def __post_init__(self) -> None:
        if not (SPEED_MIN <= self.speed <= SPEED_MAX):
            raise ValueError(f"speed must be within {SPEED_MIN}-{SPEED_MAX}, got {self.speed}")


@dataclass(frozen=True)
class Capabilities:
    """What an engine does with each option. The one place the server learns it from: /health,
    /v1/models and ``describe()`` report it, and the endpoints warn when a request asks for more
    (an option the engine would otherwise silently ignore)."""

    voice_cloning: bool = False  # a reference voice (``options.voice``) shapes the timbre
    emotion: tuple[str, ...] = ()  # the ``Emotion`` drivers it uses: "vector", "text", "reference"
    languages: tuple[str, ...] | None = None  # ``options.language`` primary subtags it speaks; None: any
    speed: tuple[float, float] | None = (SPEED_MIN, SPEED_MAX)  # the speed range it follows; None: ignored

    def as_dict(self) -> dict:
        return {"voice_cloning": self.voice_cloning, "emotion": list(self.emotion),
                "languages": None if self.languages is None else list(self.languages),
                "speed": None if self.speed is None else list(self.speed)}


@dataclass
class SegmentAudio:
    """One synthesized segment: mono float32 PCM in [-1, 1] at ``sample_rate``."""

    pcm: np.ndarray
    sample_rate: int
    stages: dict[str, float] = field(default_factory=dict)  # stage name -> seconds

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


class StepBatch(Protocol):
    """Continuous batching, engine side: segments join at any step and leave when done.

    Driven by one thread: ``add`` while ``free > 0``, ``step`` while ``len() > 0``."""

    free: int  # how many more segments can join now

    def __len__(self) -> int: ...

    def add(self, tag: object, text: str, options: SynthesisOptions, cancel: CancelToken, *,
            urgent: bool = False) -> None:
        """Start a segment (it joins at the next step); raises if it cannot start."""

    def step(self) -> list[tuple[object, SegmentAudio | BaseException]]:
        """Advance every segment; returns those that finished, as ``(tag, audio or error)``."""

    def cancel_all(self) -> list[tuple[object, SegmentAudio | BaseException]]:
        """Give up on every segment; returns them."""


class Engine(ABC):
    """A speech engine. Called only from the executor's worker thread."""

    name: str = "engine"
    sample_rate: int = 22050
    # True when a request without a reference voice cannot be spoken (a cloning engine with no
    # default voice): the server then refuses it up front with a 400 instead of failing later.
    needs_voice: bool = False
    # Language codes (ISO 639, primary subtag) accepted as ``SynthesisOptions.language``, which the
    # server checks at the edge (400 naming these); None: any hint is taken.
    languages: tuple[str, ...] | None = None
    # What the engine does with a reference voice and an emotion (``capabilities()``); an engine
    # that declares nothing uses neither, and the server says so to every client that sends them.
    clones_voices: bool = False
    emotion_sources: tuple[str, ...] = ()

    @abstractmethod
    def synthesize(self, text: str, options: SynthesisOptions, cancel: CancelToken) -> SegmentAudio:
        """Synthesize one text segment. Checks ``cancel`` between steps."""

    def synthesize_batch(
        self, items: list[tuple[str, SynthesisOptions, CancelToken]]
    ) -> list[SegmentAudio | BaseException]:
        """Synthesize several segments; slot i holds item i's audio or the exception it raised.

        One item's failure or cancellation never affects another. This default runs the items
        one after another; engines that can share model passes (one GPU batch) override it.
        """
        results: list[SegmentAudio | BaseException] = []
        for text, options, cancel in items:
            try:
                cancel.raise_if_cancelled()
                results.append(self.synthesize(text, options, cancel))
            except Exception as e:
                results.append(e)
        return results

    def open_batch(self, capacity: int) -> "StepBatch | None":
        """A continuous batch for the batching executor, or None: this engine batches per call
        (``synthesize_batch``) only."""
        return None

    def warmup(self) -> None:
        """Run once before the server reports ready (compile kernels, fill caches)."""

    def capabilities(self) -> Capabilities:
        """What this engine does with each option (see ``Capabilities``)."""
        return Capabilities(voice_cloning=self.clones_voices, emotion=tuple(self.emotion_sources),
                            languages=self.languages)

    def describe(self) -> dict:
        """Facts for /health and the start-up banner: the capability fields included (engines add
        their own facts to this dict). ``clones_voices`` is the older name of ``voice_cloning``."""
        caps = self.capabilities()
        return {"name": self.name, "sample_rate": self.sample_rate, **caps.as_dict(),
                "clones_voices": caps.voice_cloning}

    def close(self) -> None:
        """Release resources (models, threads)."""
