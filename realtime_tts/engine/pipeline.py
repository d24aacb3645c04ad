"""The staged pipeline: the one path every synthesis takes, whatever calls it.

    text ──> text front end + conditioning (cached)          PipelineEngine.prepare
         ──> prefill ──> decode steps                          ┐ one PipelineBatch:
         ──> render: codes -> S2M features, S2M steps, vocoder ┘ Scheduler plans, ModelRunner executes

``synthesize`` (the serial executor, ``realtime-tts say``, the warm-up) is a batch of one;
``run_batch`` a batch of many run to the end; ``open_batch`` the continuous batch the batching
executor's worker steps, segments joining at any step. What is specific to a model lives in its
``ModelFamily``; see ``scheduler.py`` for the step loop and its policy.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from realtime_tts.model.gpt import CodeOverride, SamplingParams

from .base import CancelToken, Cancelled, Engine, EngineError, SegmentAudio, SynthesisOptions, Voice
from . import cache
from .conditioning import Conditioner
from .devices import expected_cpu_rtf, pick_device, pick_dtype
from .family import ModelFamily, SegmentCondition
from .runner import ModelRunner
from .scheduler import Scheduler
from .state import Piece, Segment, Status

log = logging.getLogger(__name__)

SEGMENT_GAP_S = 0.2  # official silence between the pieces of a segment
MAX_TEXT_TOKENS_PER_SEGMENT = 120  # official default of both families' text split
Result = SegmentAudio | BaseException


def check_text(text) -> None:
    """EngineError unless ``text`` is a string with something to say."""
    if not isinstance(text, str) or not text.strip():
        raise EngineError("empty text: nothing to synthesize")


def join_pieces(wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """The pieces of one segment, 200 ms of silence between them (as the official code)."""
    gap = np.zeros(int(sample_rate * SEGMENT_GAP_S), dtype=np.float32)
    return np.concatenate([w for i, wav in enumerate(wavs) for w in ((gap, wav) if i else (wav,))])


def synthetic_voice_wav(seconds: float = 1.5, sr: int = 22050) -> bytes:
    """A voiced synthetic clip as WAV bytes (warm-up and benchmarks; no file needed)."""
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(130 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2 * np.sin(np.pi * t / seconds)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class PipelineBatch:
    """Segments in the staged pipeline together (``StepBatch``): they join at any step and leave
    when done. Driven by one thread: ``add`` while ``free > 0``, ``step`` while ``len() > 0``."""

    def __init__(self, engine: "PipelineEngine", capacity: int, *, sampling: SamplingParams,
                 render_wait: int = 8) -> None:
        self.engine, self.sampling = engine, sampling
        self.scheduler = Scheduler(capacity, render_wait=render_wait)
        self.runner = ModelRunner(engine.family, sampling, capacity, cfm_steps=engine.cfm_steps,
                                  cfg_rate=engine.cfg_rate, silence_code=engine.silence_code)

    def __len__(self) -> int:
        """Segments in flight."""
        return len(self.scheduler)

    @property
    def free(self) -> int:
        return self.scheduler.free

    @property
    def steps(self) -> int:
        return self.scheduler.steps

    def add(self, tag: object, text: str | list[list[int]], options: SynthesisOptions, cancel: CancelToken, *,
            generator: torch.Generator | None = None, urgent: bool = False) -> None:
        """Prepare a segment (text front end, conditioning); it decodes from the next ``step``.

        Raises (``EngineError``, ``Cancelled``, ...) when it cannot start; nothing is kept then."""
        if generator is None:
            generator = self.engine.call_generator()  # every segment takes its seed, even one that fails
        self.scheduler.add(self.engine.prepare(tag, text, options, cancel, generator=generator, urgent=urgent,
                                               sampling=self.sampling))

    def add_segment(self, segment: Segment) -> None:
        self.scheduler.add(segment)

    def step(self) -> list[tuple[object, Result]]:
        """One step of every segment (see scheduler.py); returns those that ended, as
        ``(tag, audio or exception)``."""
        s, r = self.scheduler, self.runner
        with self.engine._lock, torch.inference_mode():
            plan = s.schedule_decode()
            s.update_decode(plan, r.decode(plan))
            plan = s.schedule_render()
            if plan.start or plan.advance:
                s.update_render(plan, r.render(plan))
            finished = s.end_step()
        return [(seg.tag, self._result(seg)) for seg in finished]

    def cancel_all(self) -> list[tuple[object, Result]]:
        """Give up on every segment (shutdown, a broken batch); returns them as cancelled."""
        s = self.scheduler
        for seg in s.segments:
            seg.cancel.cancel()
        with self.engine._lock, torch.inference_mode():
            plan = s.schedule_decode()
            s.update_decode(plan, self.runner.decode(plan))
            finished = s.end_step()
        return [(seg.tag, self._result(seg)) for seg in finished]

    def _result(self, seg: Segment) -> Result:
        if seg.status is Status.FAILED:
            return seg.error
        if seg.status is Status.CANCELLED:
            return Cancelled()
        rate = self.engine.sample_rate
        return SegmentAudio(pcm=join_pieces([p.wav for p in seg.pieces], rate), sample_rate=rate, stages=seg.stages)


class PipelineEngine(Engine):
    """An engine on the staged pipeline (see the module doc) for one ``ModelFamily``."""

    family_class: ClassVar[type[ModelFamily]]  # what ``from_checkpoints`` loads

    @classmethod
    def from_checkpoints(cls, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                         cache_dir: str | Path | None = "auto", **kwargs) -> "PipelineEngine":
        """Load an official checkpoint directory of ``family_class``.

        ``cache_dir="auto"`` keeps the conditioning cache in ``<path>/.cache/conditioning`` when
        that is writable (memory only otherwise); ``None`` disables the disk cache.
        """
        dev = pick_device(device)
        dt = pick_dtype(dev, dtype)
        t0 = time.perf_counter()
        family = cls.family_class.load(Path(path), dev, dt)
        if cache_dir == "auto":
            cache_dir = cache.auto_dir(Path(path))
        engine = cls(family, cache_dir=cache_dir, source=str(path),
                     fingerprint=cache.fingerprint(family.weight_files(), f"{dev.type}:{dt}"), **kwargs)
        log.info("%s loaded from %s on %s (%s) in %.1f s; languages %s", engine.name, path, dev,
                 str(dt).replace("torch.", ""), time.perf_counter() - t0, ", ".join(family.languages))
        for line in family.startup_notes():
            log.info("%s: %s", engine.name, line)
        return engine

    def __init__(self, family: ModelFamily, *, sampling: SamplingParams | None = None, cfm_steps: int = 25,
                 cfg_rate: float = 0.7, max_text_tokens_per_segment: int = MAX_TEXT_TOKENS_PER_SEGMENT,
                 cache_capacity: int = 32,
                 cache_dir: str | Path | None = None, fingerprint: str = "", seed: int | None = None,
                 remove_long_silence: bool = False, silence_code: int = 52, default_voice: Voice | None = None,
                 source: str = "", compile: bool = False) -> None:
        self.family = family
        self.name, self.sample_rate = family.name, family.sample_rate
        self.device, self.dtype = family.device, family.dtype
        gcfg = family.gpt.cfg
        self.sampling = sampling or family.default_sampling()
        if self.sampling.max_mel_tokens > gcfg.max_mel_tokens:
            raise EngineError(f"max_mel_tokens {self.sampling.max_mel_tokens} exceeds the model's "
                              f"{gcfg.max_mel_tokens}")
        self.cfm_steps, self.cfg_rate = cfm_steps, cfg_rate
        self.max_segment_tokens = min(max_text_tokens_per_segment, gcfg.max_text_tokens)
        self.silence_code = silence_code if remove_long_silence else None
        self.default_voice, self.source, self.compiled = default_voice, source, compile
        self._compile(compile)
        if cache_dir is not None and not fingerprint:
            raise ValueError("a disk conditioning cache needs the model fingerprint (see from_checkpoints)")
        # entries are only valid for these weights: without a fingerprint, for this instance only
        self.fingerprint = fingerprint or f"instance-{os.getpid()}-{id(self)}"
        self.conditioner = Conditioner(family, self.fingerprint, capacity=cache_capacity, cache_dir=cache_dir)
        self._seed = seed
        self._calls = itertools.count()  # synthesize calls (batch items) so far: call n uses seed + n
        self._lock = threading.Lock()  # the models serve one step at a time
        self._solo_lock = threading.Lock()  # one synthesize call at a time on the reused batch of one
        self._solo: PipelineBatch | None = None
        self.warmed_up = False
        if self.device.type == "cpu":
            log.warning("%s runs on CPU with %d threads: expect a real-time factor of about %.0f (seconds of "
                        "compute per second of speech); use a CUDA GPU for real time", self.name,
                        torch.get_num_threads(), expected_cpu_rtf())

    def _compile(self, compile: bool) -> None:
        if not compile:
            return
        if self.device.type == "cpu":
            log.warning("--compile on CPU makes the GPT slower (docs/benchmarks.md: 270 vs 159 ms per code) and "
                        "S2M no faster; it is meant for CUDA")
        # the two hot loops; warmup() pays for the compilation before the server is ready
        self.family.gpt.compile_decode_step()
        self.family.s2mel.cfm.compile_estimator()

    clones_voices = True

    @property
    def needs_voice(self) -> bool:
        return self.default_voice is None

    @property
    def languages(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.family.languages

    @property
    def emotion_sources(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.family.emotion_sources

    # ---- the text stage ---------------------------------------------------------------

    def text_ids(self, text: str, language: str | None = None) -> list[list[int]]:
        """Token ids of ``text`` split into pieces of at most the segment limit (official cut)."""
        return self.family.text_ids(text, self.max_segment_tokens, language)

    def voice_for(self, options: SynthesisOptions) -> Voice:
        """The reference voice of a request: its own, else the default; EngineError without one."""
        voice = options.voice or self.default_voice
        if voice is None:
            raise EngineError(f"{self.name} needs a reference voice: upload one or configure default_voice")
        return voice

    def call_generator(self) -> torch.Generator:
        """The generator of the next synthesize call or batch item.

        A seeded engine seeds call n with ``seed + n``: call 0 draws what the official code draws
        after ``torch.manual_seed(seed)``, and call n draws the same whether it runs alone
        (``synthesize``) or inside a batch. An unseeded engine seeds each call from torch's global RNG.
        """
        n = next(self._calls)
        seed = self._seed + n if self._seed is not None else int(torch.randint(0, 2**62, ()))
        return torch.Generator(device=self.device).manual_seed(seed)

    def prepare(self, tag: object, text: str | list[list[int]], options: SynthesisOptions, cancel: CancelToken, *,
                generator: torch.Generator, urgent: bool, sampling: SamplingParams) -> Segment:
        """The text stage: text (or pre-tokenised pieces) and conditioning -> a segment ready to decode."""
        t = time.perf_counter()
        if isinstance(text, str):
            check_text(text)
        voice = self.voice_for(options)
        with self._lock, torch.inference_mode():
            pieces = self.text_ids(text, options.language) if isinstance(text, str) else [list(p) for p in text]
            cancel.raise_if_cancelled()
            cond = self.conditioner.segment(voice, options.emotion, options.language)
        seg = self.make_segment(tag, text, pieces, cond, options.speed, cancel, generator, urgent, sampling)
        seg.stages["conditioning"] = time.perf_counter() - t
        return seg

    def make_segment(self, tag: object, text: str | list, pieces: list[list[int]], cond: SegmentCondition,
                     speed: float, cancel: CancelToken, generator: torch.Generator, urgent: bool,
                     sampling: SamplingParams) -> Segment:
        """A segment of token-id pieces with its conditioning, each piece with its code budget."""
        if not pieces:
            raise EngineError("nothing to say: the text has no pieces")
        seg = Segment(tag, speed, cancel, cond, generator, urgent)
        seg.pieces = [Piece(seg, torch.as_tensor(ids, dtype=torch.long, device=self.device),
                            self._code_budget(sampling, text, len(ids))) for ids in pieces]
        return seg

    def _code_budget(self, sampling: SamplingParams, text: str | list, text_tokens: int) -> int:
        override = sampling.override
        if override is None:
            return sampling.code_budget(text_tokens)
        if callable(override.codes):
            if not isinstance(text, str):
                raise ValueError("a per-text forced code count needs the text, not token ids")
            return min(override.codes(text), self.family.gpt.cfg.max_mel_tokens)
        return min(override.codes, self.family.gpt.cfg.max_mel_tokens)

    # ---- synthesis ------------------------------------------------------------------

    def open_batch(self, capacity: int, *, render_wait: int = 8, sampling: SamplingParams | None = None
                   ) -> PipelineBatch:
        """A continuous batch of up to ``capacity`` decoding segments (the batching executor's engine
        side); ``sampling`` replaces the engine's (forced code counts in benchmarks)."""
        return PipelineBatch(self, capacity, sampling=sampling or self.sampling, render_wait=render_wait)

    def synthesize(self, text: str | list[list[int]], options: SynthesisOptions, cancel: CancelToken, *,
                   generator: torch.Generator | None = None, sampling: SamplingParams | None = None
                   ) -> SegmentAudio:
        """One segment (a text, or pre-tokenised pieces): a batch of one; raises its error, or
        ``Cancelled``. ``generator`` drives its random draws (default: ``call_generator()``),
        ``sampling`` replaces the engine's (a benchmark's ``CodeOverride``)."""
        if generator is None:
            generator = self.call_generator()  # every call takes its seed, even one that fails
        sampling = sampling or self.sampling
        with self._solo_lock:
            if self._solo is None or self._solo.sampling != sampling:
                self._solo = self.open_batch(1, sampling=sampling)
            try:  # its caller waits for nothing else: it renders as soon as its codes are complete
                (result,) = self._drive(self._solo, [(text, options, cancel)], [generator], urgent=True)
            except BaseException:
                self._solo = None  # its state is unknown: the next call starts afresh
                raise
        if isinstance(result, BaseException):
            raise result
        return result

    def synthesize_batch(self, items: list[tuple[str, SynthesisOptions, CancelToken]]) -> list[Result]:
        return self.run_batch(items)

    def run_batch(self, items: Sequence[tuple[str, SynthesisOptions, CancelToken]], *,
                  generators: Sequence[torch.Generator] | None = None,
                  sampling: SamplingParams | None = None) -> list[Result]:
        """Several segments through one batch to the end; slot i is item i's audio or its error.

        Item i draws only from ``generators[i]`` (default: ``call_generator()`` per item, as
        ``synthesize`` takes one per call), so it equals ``synthesize`` of it alone with a generator
        seeded alike (codes exactly; audio to float rounding of the batched passes). A cancelled
        item leaves at the next step and gets ``Cancelled``; the others go on."""
        if generators is None:
            generators = [self.call_generator() for _ in items]
        if len(generators) != len(items) or not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError(f"run_batch needs one torch.Generator per item ({len(items)}), got {generators!r}")
        return self._drive(self.open_batch(max(1, len(items)), sampling=sampling), items, generators)

    @staticmethod
    def _drive(batch: PipelineBatch, items, generators, urgent: bool = False) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        for i, (text, options, cancel) in enumerate(items):
            try:
                batch.add(i, text, options, cancel, generator=generators[i], urgent=urgent)
            except Exception as e:
                results[i] = e
        while len(batch):
            for i, result in batch.step():
                results[i] = result
        return results  # type: ignore[return-value]

    # ---- lifecycle ------------------------------------------------------------------

    def warmup(self) -> None:
        """One short synthesis through the pipeline with a synthetic voice and 20 forced codes
        (kernels, allocator, caches, and with ``compile`` the one compilation of the decode step
        and the S2M estimator, which then serves every batch size and length); the engine's seeded
        generator and the conditioning cache are left untouched."""
        t0 = time.perf_counter()
        f = self.family
        with self._lock, torch.inference_mode():
            vc = f.voice_conditioning(io.BytesIO(synthetic_voice_wav()))
            emo = f.emotion_conditioning(io.BytesIO(synthetic_voice_wav())).emovec
            cond = f.segment_condition(vc, f.merge_emotion(vc, emo, 1.0, None))
        sampling = replace(self.sampling, override=CodeOverride(min(20, self.sampling.max_mel_tokens)))
        batch = self.open_batch(1, sampling=sampling)
        g = torch.Generator(device=self.device).manual_seed(0)
        batch.add_segment(self.make_segment("warm-up", "", [f.warmup_ids()], cond, 1.0, CancelToken(), g, True,
                                            sampling))
        while len(batch):
            for _, result in batch.step():
                if isinstance(result, BaseException):
                    raise result
        self.warmed_up = True
        log.info("%s warm-up done in %.1f s", self.name, time.perf_counter() - t0)

    def describe(self) -> dict:
        info = {
            **super().describe(),
            "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
            "checkpoint": self.source, "decoding": self.sampling.mode, "num_beams": self.sampling.num_beams,
            "cfm_steps": self.cfm_steps, "compiled": self.compiled, **self.family.describe(),
            "voice_cache": self.conditioner.describe(), "warmed_up": self.warmed_up,
        }
        if self.sampling.override is not None:  # a benchmark's engine says so
            codes = self.sampling.override.codes
            info["forced_codes"] = codes if isinstance(codes, int) else "per text"
        if self.device.type == "cpu":
            info["expected_rtf"] = round(expected_cpu_rtf(), 1)
        elif self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def share_conditioning(self, store) -> bool:
        """Also keep per-voice conditioning in a store every replica reads (the server's voice
        store: ``conditioning_view(family, version)`` giving ``get``/``put`` by clip hash), for this
        model build. False when the engine has no weight files to identify its build by."""
        files = self.family.weight_files()
        if not files:
            log.warning("%s: built in memory, so its conditioning is not shared through the voice store", self.name)
            return False
        build = cache.build_id(files, str(self.dtype).replace("torch.", ""))
        self.conditioner.share({kind: store.conditioning_view(self.name, f"{build}-{kind}")
                                for kind in ("voice", "emotion")})
        log.info("%s: per-voice conditioning shared through the voice store (build %s)", self.name, build)
        return True

    def close(self) -> None:
        self.conditioner.close()
        self._solo = None
        if self.device.type == "cuda":
            self.family = None  # type: ignore[assignment]
            torch.cuda.empty_cache()
