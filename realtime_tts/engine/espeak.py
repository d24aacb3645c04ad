"""Embedded eSpeak NG engine: a tiny, model-free engine for tests, CI and CPU-only demos.

It speaks Mandarin and English through the libespeak-ng and voice data shipped by the
``espeakng-loader`` wheel, driven with ctypes in synchronous mode: ``espeak_Synth`` runs in
the calling thread and hands 16-bit samples to our callback, which also polls the job's
cancel token (returning 1 from the callback makes eSpeak stop at once).

Voices: a segment containing CJK ideographs is spoken with the Mandarin voice (``cmn``,
which reads Latin words inside Chinese text as English), anything else with American
English (``en-us``); ``options.language`` (``zh*``/``cmn`` or ``en*``) forces one.
eSpeak cannot clone a reference clip, so ``options.voice`` is ignored, except that a voice
whose ``id`` is ``espeak:<variant>`` picks one of eSpeak's voice variants (``espeak:f3``,
``espeak:m2``, ``espeak:klatt``...). Emotion is ignored.

libespeak-ng keeps global state and is not re-entrant: one library per process, every
call made under one process-wide lock, whatever the number of engine instances.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time

import numpy as np

from .base import Cancelled, CancelToken, Engine, EngineError, SegmentAudio, SynthesisOptions

SAMPLE_RATE = 22050  # eSpeak NG's native output rate (checked at initialization)
BASE_WPM = 175  # eSpeak's default speaking rate, words per minute, at speed 1.0
RATE_MIN, RATE_MAX = 80, 450  # espeakRATE_MINIMUM / espeakRATE_MAXIMUM

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_EE_OK = 0

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Library:
    """The process's one libespeak-ng, initialized once; use only while holding ``lock``."""

    lock = threading.Lock()
    _instance: _Library | None = None

    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = espeakng_loader.get_data_path()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, self.data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate != SAMPLE_RATE:
            raise EngineError(f"eSpeak NG failed to initialize with data at {self.data_path} (returned {rate})")
        self.lib = lib
        # One callback for the library's life; it writes into whatever job is current.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.chunks: list[np.ndarray] = []
        self.cancel: CancelToken | None = None
        self.aborted = False
        self.voice: str | None = None
        self.rate: int | None = None

    @classmethod
    def get(cls) -> _Library:
        # Caller holds ``lock``.
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            # string_at copies the samples without a ctypes array type per chunk length (numpy's
            # as_array would make one, and ctypes caches every such type for good)
            self.chunks.append(np.frombuffer(ctypes.string_at(wav, numsamples * 2), dtype=np.int16))
        if self.cancel is not None and self.cancel.cancelled:
            self.aborted = True
            return 1
        return 0

    def set_voice(self, name: str) -> None:
        if name != self.voice:
            err = self.lib.espeak_SetVoiceByName(name.encode())
            if err != _EE_OK:
                self.voice = None
                raise EngineError(f"eSpeak NG has no voice {name!r} (error {err})")
            self.voice = name
            self.rate = None  # a new voice resets the parameters

    def set_rate(self, wpm: int) -> None:
        if wpm != self.rate:
            if self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0) != _EE_OK:
                raise EngineError(f"eSpeak NG refused rate {wpm} wpm")
            self.rate = wpm

    def synth(self, text: str, cancel: CancelToken) -> np.ndarray:
        data = text.encode("utf-8") + b"\0"
        self.chunks, self.cancel, self.aborted = [], cancel, False
        try:
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if self.aborted:
                raise Cancelled()
            if err != _EE_OK:
                raise EngineError(f"eSpeak NG synthesis failed (error {err})")
            return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        finally:
            self.chunks, self.cancel = [], None


def voice_for(text: str, language: str | None = None) -> str:
    """eSpeak voice for a segment: Mandarin if forced or if the text has CJK ideographs."""
    if language:
        lang = language.strip().lower()
        if lang.startswith("zh") or lang in ("cmn", "mandarin", "chinese"):
            return "cmn"
        if lang.startswith("en") or lang == "english":
            return "en-us"
        if lang != "auto":
            raise EngineError(f"espeak engine speaks zh or en, not language {language!r}")
    return "cmn" if _CJK.search(text) else "en-us"


def rate_for(speed: float) -> int:
    """Words per minute for a speed factor (1.0 = eSpeak's default 175 wpm)."""
    return int(min(RATE_MAX, max(RATE_MIN, round(BASE_WPM * speed))))


class EspeakEngine(Engine):
    name = "espeak"
    sample_rate = SAMPLE_RATE
    languages = ("zh", "en")

    def __init__(self) -> None:
        with _Library.lock:
            lib = _Library.get()
        self._variants_dir = os.path.join(lib.data_path, "voices", "!v")

    def _variant(self, options: SynthesisOptions) -> str:
        voice = options.voice
        if voice is None or not voice.id.startswith("espeak:"):
            return ""
        variant = voice.id.split(":", 1)[1]
        if not re.fullmatch(r"[A-Za-z0-9_]+", variant) or not os.path.isfile(os.path.join(self._variants_dir, variant)):
            raise EngineError(f"unknown eSpeak voice variant {variant!r} (see espeak-ng-data/voices/!v)")
        return "+" + variant

    def synthesize(self, text: str, options: SynthesisOptions, cancel: CancelToken) -> SegmentAudio:
        if not isinstance(text, str) or not text.strip():
            raise EngineError("espeak engine got empty text: nothing to synthesize")
        cancel.raise_if_cancelled()
        voice = voice_for(text, options.language) + self._variant(options)
        start = time.perf_counter()
        with _Library.lock:
            lib = _Library.get()
            lib.set_voice(voice)
            lib.set_rate(rate_for(options.speed))
            samples = lib.synth(text.strip(), cancel)
        if samples.size == 0:
            raise EngineError(f"eSpeak NG produced no audio for {text[:40]!r}")
        pcm = samples.astype(np.float32) / 32768.0
        return SegmentAudio(pcm=pcm, sample_rate=SAMPLE_RATE, stages={"espeak": time.perf_counter() - start})

    def warmup(self) -> None:
        for text in ("ready", "好"):
            self.synthesize(text, SynthesisOptions(), CancelToken())

    def describe(self) -> dict:
        return {**super().describe(), "voices": ["cmn", "en-us"]}
