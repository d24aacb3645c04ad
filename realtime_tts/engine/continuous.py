"""Continuous batching for IndexTTS2: segments join the running GPT decode at any step.

``ContinuousBatch`` is what the batching executor's worker drives, one ``step()`` at a time:

    add(segment)  -> tokenise, voice and emotion conditioning (cached); its first piece waits
    step()        -> 1. drop cancelled segments (their decode rows and solves are freed at once)
                     2. admit waiting pieces into free decode-pool blocks (one batched prefill)
                     3. one GPT decode step for every piece in the pool (``DecodePool``)
                     4. pieces whose codes are complete draw their CFM noise; a segment's next
                        piece then waits for a block
                     5. start rendering the complete pieces when it is time (below): one latent
                        pass, then one masked S2M solve per speed and length bucket
                     6. one CFM step of every solve under way; a finished solve goes through one
                        masked BigVGAN pass
                     7. return the segments whose every piece has audio, or that failed

Bulk renders are interleaved with decoding, one CFM step per decode step, so they never hold up
the decode of everyone else (a new turn's first sentence starts decoding while later sentences
render). A render with an urgent piece (a listener waits for its first audio) runs all its steps
at once: its listener's wait matters more than one pause of the others' decode. Each solve costs
a pass per step, so a solve waits for company, but never long: complete pieces start rendering
when nothing is left to decode, when one of them is urgent, or when the oldest has waited
``render_wait`` steps.

Randomness: a segment draws only from its own generator, in the order of a run alone (piece 1's
GPT sampling, piece 1's CFM noise, piece 2's GPT sampling, ...), so its codes equal ``run`` of it
alone with the same generator, whatever joined the pool before or after it, and its audio equals
to float rounding of the batched passes.

Failures stay local: a segment that cannot start fails alone (``add`` raises); a decode step that
raises fails the segments in the pool (the pool is rebuilt); a shared render that raises is
retried piece by piece.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from realtime_tts.model.gpt.decode import DecodePool, DecodeRequest
from realtime_tts.model.s2mel import PromptCondition, target_lengths
from realtime_tts.model.s2mel.cfm import run_to_end

from . import conditioning as cond
from .base import CancelToken, Cancelled, EngineError, SegmentAudio, SynthesisOptions
from .buckets import length_buckets

if TYPE_CHECKING:
    from .indextts2 import IndexTTS2Engine


def check_text(text) -> None:
    """EngineError unless ``text`` is a string with something to say."""
    if not isinstance(text, str) or not text.strip():
        raise EngineError("indextts2 engine got empty text: nothing to synthesize")

log = logging.getLogger(__name__)

Result = SegmentAudio | BaseException


@dataclass(eq=False)
class Segment:
    """One text segment in flight: its conditioning going in, its audio (or error) coming out."""

    tag: object
    speed: float
    cancel: CancelToken
    vc: cond.VoiceConditioning
    emovec: torch.Tensor  # [1, C]
    generator: torch.Generator  # every random draw of this segment
    stages: dict[str, float]
    max_codes: int | None  # a forced code count per piece (benchmarks), else the sampling budget
    suppress_stop: bool
    urgent: bool
    pieces: list["Piece"] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def wanted(self) -> bool:
        return self.error is None and not self.cancel.cancelled


@dataclass(eq=False)
class Render:
    """An S2M solve under way for pieces of one speed and length bucket."""

    pieces: list["Piece"]
    steps: Generator[None, None, tuple[torch.Tensor, torch.Tensor]]  # S2Mel.generate_steps


@dataclass(eq=False)
class Piece:
    """One piece of a segment (at most 120 text tokens): one pool request, S2M item, vocoder item."""

    segment: Segment
    ids: torch.Tensor  # [n] text token ids
    request: DecodeRequest | None = None  # while in the decode pool
    codes: torch.Tensor | None = None  # [L]
    noise: torch.Tensor | None = None  # [1, n_mels, prompt + generated frames]
    ready_step: int = 0  # the step its codes completed
    wav: np.ndarray | None = None


class ContinuousBatch:
    """Up to ``capacity`` segment pieces decoding together; see the module doc."""

    def __init__(self, engine: "IndexTTS2Engine", capacity: int, *, render_wait: int = 8,
                 max_codes: Callable[[str], int] | None = None, suppress_stop: bool = False) -> None:
        if render_wait < 0:
            raise ValueError(f"render_wait must be >= 0, got {render_wait}")
        self.engine = engine
        self.capacity = capacity
        self.render_wait = render_wait
        self.forced = max_codes  # benchmarks: a code count per segment text
        self.suppress_stop = suppress_stop
        self.segments: list[Segment] = []
        self.waiting: list[Piece] = []  # next pieces, in arrival order
        self.ready: list[Piece] = []  # codes complete, waiting to render
        self.rendering: list[Render] = []  # S2M solves under way, one CFM step per engine step
        self.steps = 0
        self.pool = self._new_pool()

    def _new_pool(self) -> DecodePool:
        e = self.engine
        # rows start short and grow with the longest request admitted (DecodePool.admit); forced
        # code counts (benchmarks) may go up to the model's limit
        return DecodePool(e.models.gpt, e.sampling, self.capacity, max_len=256,
                          max_codes=e.models.gpt.cfg.max_mel_tokens)

    def __len__(self) -> int:
        """Segments in flight."""
        return len(self.segments)

    @property
    def free(self) -> int:
        """How many more segments can start decoding now (one pool block each)."""
        decoding = {id(p.segment) for p in self.waiting} | {id(r.tag.segment) for r in self.pool.requests.values()}
        return self.capacity - len(decoding)

    # ---- joining --------------------------------------------------------------------

    def add(self, tag: object, text: str, options: SynthesisOptions, cancel: CancelToken, *,
            generator: torch.Generator | None = None, max_codes: int | None = None, urgent: bool = False) -> None:
        """Prepare a segment (text, conditioning); it decodes from the next ``step``.

        Raises (``EngineError``, ``Cancelled``, ...) when it cannot start; nothing is kept then."""
        e = self.engine
        if generator is None:
            generator = e.call_generator()  # every segment takes its seed, even one that fails
        t = time.perf_counter()
        check_text(text)
        voice = e.voice_for(options)
        if max_codes is None and self.forced is not None:
            max_codes = min(self.forced(text), e.models.gpt.cfg.max_mel_tokens)
        with e._lock, torch.inference_mode():
            pieces = e.text_ids(text)
            cancel.raise_if_cancelled()
            vc = e._voice(voice)
            emovec = e.emotion_vector(voice, vc, options.emotion)
        seg = Segment(tag, options.speed, cancel, vc, emovec, generator, {"conditioning": time.perf_counter() - t},
                      max_codes, self.suppress_stop, urgent)
        seg.pieces = [Piece(seg, torch.as_tensor(ids, dtype=torch.long, device=e.device)) for ids in pieces]
        self.segments.append(seg)
        self.waiting.append(seg.pieces[0])

    # ---- one step -------------------------------------------------------------------

    def step(self) -> list[tuple[object, Result]]:
        """Advance every segment by one decode step (and render when due); returns the segments
        that finished, as ``(tag, audio or exception)``."""
        e = self.engine
        with e._lock, torch.inference_mode():
            self._drop_unwanted()
            self._admit()
            if len(self.pool):
                self._decode()
            if self.ready and self._render_due():
                self._render_ready()
            self._advance_renders()
            self.steps += 1
        return self._collect()

    def _tick(self, stage: str, t0: float, segments) -> float:
        if self.engine.device.type == "cuda":
            torch.cuda.synchronize(self.engine.device)
        now = time.perf_counter()
        for seg in {id(s): s for s in segments}.values():
            seg.stages[stage] = seg.stages.get(stage, 0.0) + now - t0
        return now

    def _drop_unwanted(self) -> None:
        for r in list(self.pool.requests.values()):
            if not r.tag.segment.wanted:
                self.pool.drop(r)
                r.tag.request = None
        self.waiting = [p for p in self.waiting if p.segment.wanted]
        self.ready = [p for p in self.ready if p.segment.wanted]
        self.rendering = [r for r in self.rendering if any(p.segment.wanted for p in r.pieces)]

    def _admit(self) -> None:
        n = min(len(self.waiting), len(self.pool.free))
        if not n:
            return
        e, m = self.engine, self.engine.models
        batch, self.waiting = self.waiting[:n], self.waiting[n:]
        segs = [p.segment for p in batch]
        t = time.perf_counter()
        budgets = [s.max_codes if s.max_codes is not None else e.sampling.code_budget(p.ids.numel())
                   for p, s in zip(batch, segs)]
        forbid = [e.forbidden_codes(s.suppress_stop) for s in segs]
        try:
            gpt_cond = m.gpt.conditioning(torch.cat([s.vc.spk_latents for s in segs]),
                                          torch.cat([s.emovec for s in segs]))
            requests = self.pool.admit(gpt_cond, [p.ids for p in batch], budgets, [s.generator for s in segs],
                                       tags=batch, forbid=forbid)
        except Exception as exc:
            self._fail(segs, exc, "starting the decode of")
            return
        for p, r in zip(batch, requests):
            p.request = r
        self._tick("gpt_prefill", t, segs)

    def _decode(self) -> None:
        e, m = self.engine, self.engine.models
        segs = [r.tag.segment for r in self.pool.requests.values()]
        t = time.perf_counter()
        try:
            done = self.pool.step()
        except Exception as exc:  # the pool's state is unknown now: fail its segments, start afresh
            self._fail(segs, exc, "decoding")
            self.pool = self._new_pool()
            return
        self._tick("gpt", t, segs)
        frames_per_code = m.s2mel.cfg.frames_per_code
        for r in done:
            p: Piece = r.tag
            p.request = None
            seg = p.segment
            try:
                codes = e.checked_codes(r.codes, r.stopped, p.ids.numel(), seg.suppress_stop)
            except EngineError as exc:
                seg.error = exc
                continue
            p.codes, p.ready_step = codes, self.steps
            # the piece's CFM noise: the randn([1, n_mels, total]) a run alone draws next
            g = seg.generator
            total = seg.vc.ref_mel.size(-1) + int(target_lengths(torch.tensor([codes.numel()]), frames_per_code,
                                                                 seg.speed)[0])
            p.noise = torch.randn(1, m.s2mel.cfg.n_mels, total, generator=g, device=g.device).to(e.device)
            self.ready.append(p)
            k = seg.pieces.index(p)
            if k + 1 < len(seg.pieces):
                self.waiting.append(seg.pieces[k + 1])

    def _render_due(self) -> bool:
        if not len(self.pool) and not self.waiting:
            return True
        return any(p.segment.urgent for p in self.ready) or self.steps - self.ready[0].ready_step >= self.render_wait

    def _render_ready(self) -> None:
        """Start rendering every ready piece: one latent pass, then one S2M solve per speed and
        length bucket, each advanced one CFM step per engine step (``_advance_renders``)."""
        pieces, self.ready = self.ready, []
        try:
            self.rendering += self._start_renders(pieces)
        except Exception as exc:
            self._render_alone(pieces, exc)

    def _start_renders(self, pieces: list[Piece]) -> list["Render"]:
        e, m = self.engine, self.engine.models
        dev = e.device
        segs = [p.segment for p in pieces]
        t = time.perf_counter()
        latent = m.gpt.latents(torch.cat([s.vc.spk_latents for s in segs]), torch.cat([s.emovec for s in segs]),
                               [p.ids for p in pieces], [p.codes for p in pieces]).float()  # [R, L, C]
        code_lens = torch.tensor([p.codes.numel() for p in pieces], device=dev)
        codes = torch.zeros(len(pieces), latent.size(1), dtype=torch.long, device=dev)  # code 0 pads; masked later
        for j, p in enumerate(pieces):
            codes[j, : p.codes.numel()] = p.codes
        s_infer = m.s2mel.semantic(m.codec.vq2emb(codes).transpose(1, 2), latent)  # [R, L, W]
        self._tick("gpt_latent", t, segs)

        renders = []  # S2M takes one speed per call; similar lengths share a call (little padding)
        for speed in dict.fromkeys(s.speed for s in segs):
            same = [j for j, s in enumerate(segs) if s.speed == speed]
            frames = [pieces[j].noise.size(-1) for j in same]  # prompt + generated frames
            for bucket in length_buckets(frames):
                idx = [same[k] for k in bucket]
                group = [pieces[j] for j in idx]
                vcs = [p.segment.vc for p in group]
                prompt = PromptCondition(cond=pad_cat([v.prompt for v in vcs], dim=1),
                                         mel=pad_cat([v.ref_mel for v in vcs], dim=2),
                                         style=torch.cat([v.style for v in vcs]),
                                         lengths=torch.tensor([v.ref_mel.size(-1) for v in vcs], device=dev))
                steps = m.s2mel.generate_steps(s_infer[idx], code_lens[idx], prompt, speed=speed,
                                               steps=e.cfm_steps, cfg_rate=e.cfg_rate,
                                               noise=pad_cat([p.noise for p in group], dim=2),
                                               cancel=AllCancelled([p.segment for p in group]))
                renders.append(Render(group, steps))
        return renders

    def _advance_renders(self) -> None:
        """One CFM step of every bulk solve under way, every step of an urgent one (a listener
        waits for it); a finished solve goes through the vocoder."""
        still = []
        for r in self.rendering:
            segs = [p.segment for p in r.pieces]
            t = time.perf_counter()
            try:
                if any(s.urgent for s in segs):
                    result = run_to_end(r.steps)
                else:
                    next(r.steps)
                    self._tick("s2mel", t, segs)
                    still.append(r)
                    continue
            except StopIteration as done:
                result = done.value
            except Cancelled:
                continue  # no segment of this solve is wanted any more
            except Exception as exc:
                self._render_alone(r.pieces, exc)
                continue
            self._tick("s2mel", t, segs)
            try:
                self._vocode(r.pieces, *result)
            except Exception as exc:
                self._render_alone(r.pieces, exc)
        self.rendering = still

    def _vocode(self, pieces: list[Piece], mel: torch.Tensor, gen_lens: torch.Tensor) -> None:
        """BigVGAN over the mels of a finished solve (masked batch); fills ``wav``."""
        keep = [j for j, p in enumerate(pieces) if p.segment.wanted]
        if not keep:
            return
        t = time.perf_counter()
        lens = gen_lens[keep].to(self.engine.device)
        mels = [mel[j : j + 1, :, : int(gen_lens[j])].float() for j in keep]
        wav = self.engine.models.vocoder(pad_cat(mels, dim=2), lens)[:, 0]  # [R, N]
        hop = wav.size(-1) // int(lens.max())
        self._tick("vocoder", t, [pieces[j].segment for j in keep])
        for row, j in enumerate(keep):
            pieces[j].wav = wav[row, : int(lens[row]) * hop].float().cpu().numpy()

    def _render_alone(self, pieces: list[Piece], exc: BaseException) -> None:
        """A shared render failed: render each piece by itself, start to end (one bad piece, or a
        batch too big for the device, fails only itself)."""
        if len(pieces) == 1:
            self._fail([pieces[0].segment], exc, "rendering")
            return
        log.warning("rendering %d pieces together failed (%s: %s); retrying them one at a time",
                    len(pieces), type(exc).__name__, exc)
        for p in pieces:
            if not p.segment.wanted:
                continue
            try:
                (render,) = self._start_renders([p])
                self._vocode([p], *run_to_end(render.steps))
            except Cancelled:
                continue
            except Exception as exc1:
                self._fail([p.segment], exc1, "rendering")

    def _fail(self, segments: list[Segment], exc: BaseException, doing: str) -> None:
        if not isinstance(exc, Cancelled):
            log.error("%s %d segment(s) failed: %s: %s", doing, len(segments), type(exc).__name__, exc)
        for seg in segments:
            if seg.error is None:
                seg.error = exc
            for p in seg.pieces:
                if p.request is not None:
                    self.pool.drop(p.request)
                    p.request = None

    def _collect(self) -> list[tuple[object, Result]]:
        out, kept = [], []
        for seg in self.segments:
            if seg.error is not None:
                out.append((seg.tag, seg.error))
            elif seg.cancel.cancelled:
                out.append((seg.tag, Cancelled()))
            elif all(p.wav is not None for p in seg.pieces):
                out.append((seg.tag, SegmentAudio(pcm=self.engine._join([p.wav for p in seg.pieces]),
                                                  sample_rate=self.engine.sample_rate, stages=seg.stages)))
            else:
                kept.append(seg)
        self.segments = kept
        return out

    def cancel_all(self) -> list[tuple[object, Result]]:
        """Give up on every segment (shutdown); returns them as cancelled."""
        for seg in self.segments:
            seg.cancel.cancel()
        with self.engine._lock:
            self._drop_unwanted()
        return self._collect()


class AllCancelled:
    """The cancel hook of a shared pass: it stops only when no segment of the pass is wanted."""

    def __init__(self, segments: list[Segment]):
        self.segments = segments

    def raise_if_cancelled(self) -> None:
        if not any(s.wanted for s in self.segments):
            raise Cancelled()


def pad_cat(xs: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Concatenate along the batch axis, zero-padding ``dim`` to the longest."""
    n = max(x.size(dim) for x in xs)
    shape = [sum(x.size(0) for x in xs)] + [n if d == dim else xs[0].size(d) for d in range(1, xs[0].dim())]
    out = xs[0].new_zeros(shape)
    at = 0
    for x in xs:
        out[at : at + x.size(0)].narrow(dim, 0, x.size(dim)).copy_(x)
        at += x.size(0)
    return out
