"""The model side of the staged pipeline: executes the scheduler's plans, decides nothing.

``ModelRunner.decode(plan)`` frees the decode blocks of ended segments, prefills admitted pieces
(one batched prefill) and runs one GPT decode step of every piece in the ``DecodePool``; each piece
whose codes are complete draws its CFM noise at once from its segment's generator.
``ModelRunner.render(plan)`` turns the codes of the pieces a plan starts into S2M input (the model
family's render step, one pass per batch), starts one masked S2M solve per group, advances every
solve one CFM step (or to its end), and runs a finished solve through one masked vocoder pass.
Each reports what happened (``DecodeOutput``, ``RenderOutput``); ``Scheduler.update_*`` applies it.

Randomness: a segment draws only from its own generator, in the order of a run alone (piece 1's
GPT sampling, piece 1's CFM noise, piece 2's GPT sampling, ...), so its codes do not depend on what
else is in flight, and its audio equals a run alone to float rounding of the batched passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator

import numpy as np
import torch

from realtime_tts.model.gpt import SamplingParams
from realtime_tts.model.gpt import remove_long_silence as shrink_silence
from realtime_tts.model.gpt.decode import DecodePool, DecodeRequest
from realtime_tts.model.s2mel import PromptCondition
from realtime_tts.model.s2mel.cfm import run_to_end

from .base import Cancelled, EngineError
from .family import ModelFamily
from .state import DecodeOutput, DecodePlan, Piece, PieceCodes, RenderGroup, RenderOutput, RenderPlan, Segment, Timing

log = logging.getLogger(__name__)


class ModelRunner:
    """One family's models driven for up to ``capacity`` decoding pieces; see the module doc.

    Owns the GPT ``DecodePool`` (KV cache and row blocks, which outlive requests) and the S2M solves
    under way (one paused generator per render group)."""

    def __init__(self, family: ModelFamily, sampling: SamplingParams, capacity: int, *, cfm_steps: int,
                 cfg_rate: float, silence_code: int | None = None) -> None:
        self.family, self.sampling, self.capacity = family, sampling, capacity
        self.cfm_steps, self.cfg_rate = cfm_steps, cfg_rate
        self.silence_code = silence_code  # shrink long runs of this code (None: off, as official)
        gcfg = family.gpt.cfg
        exact = sampling.override is not None and sampling.override.exact
        self.forbid = (gcfg.stop_mel_token, gcfg.start_mel_token) if exact else ()
        self.pool = self._new_pool()
        self._requests: dict[Piece, DecodeRequest] = {}
        self._solves: dict[int, Generator[None, None, tuple[torch.Tensor, torch.Tensor]]] = {}

    def _new_pool(self) -> DecodePool:
        gpt = self.family.gpt
        # rows start short and grow with the longest request admitted (DecodePool.admit); forced
        # code counts (benchmarks) may go up to the model's limit
        return DecodePool(gpt, self.sampling, self.capacity, max_len=256, max_codes=gpt.cfg.max_mel_tokens)

    def _time(self, timings: list[Timing], stage: str, t0: float, segments: list[Segment]) -> None:
        if self.family.device.type == "cuda":
            torch.cuda.synchronize(self.family.device)
        timings.append(Timing(stage, time.perf_counter() - t0, segments))

    # ---- decode phase ---------------------------------------------------------------

    def decode(self, plan: DecodePlan) -> DecodeOutput:
        out = DecodeOutput()
        for piece in plan.drop:
            request = self._requests.pop(piece, None)
            if request is not None:
                self.pool.drop(request)
        for group in plan.close:
            steps = self._solves.pop(group.id, None)
            if steps is not None:
                steps.close()
        if plan.admit:
            self._admit(plan.admit, out)
        if plan.decode and len(self.pool):
            self._step(out)
        return out

    def _admit(self, pieces: list[Piece], out: DecodeOutput) -> None:
        segs = [p.segment for p in pieces]
        conds = [s.cond for s in segs]
        t = time.perf_counter()
        try:
            requests = self.pool.admit(torch.cat([c.gpt for c in conds]),
                                       self.family.gpt_texts(conds, [p.ids for p in pieces]),
                                       [p.budget for p in pieces], [s.generator for s in segs], tags=pieces,
                                       forbid=[self.forbid] * len(pieces))
        except Exception as exc:  # nothing was admitted
            out.admit_error = exc
            return
        self._requests.update(zip(pieces, requests))
        self._time(out.timings, "gpt_prefill", t, segs)

    def _step(self, out: DecodeOutput) -> None:
        segs = [r.tag.segment for r in self.pool.requests.values()]
        t = time.perf_counter()
        try:
            done = self.pool.step()
        except Exception as exc:  # the pool's state is unknown now: start afresh
            out.decode_error = exc
            self.pool = self._new_pool()
            self._requests.clear()
            return
        self._time(out.timings, "gpt", t, segs)
        for request in done:
            piece = request.tag
            del self._requests[piece]
            out.done.append(self._complete(piece, request))

    def _complete(self, piece: Piece, request: DecodeRequest) -> PieceCodes:
        """A piece's checked codes, its mel frame count and the CFM noise a run alone draws next."""
        seg = piece.segment
        try:
            codes = self._checked(request.codes, request.stopped, piece.ids.numel())
        except EngineError as exc:
            return PieceCodes(piece, error=exc)
        frames = self.family.mel_frames(codes.numel(), seg.speed)
        g = seg.generator
        total = seg.cond.prompt_frames + frames
        noise = torch.randn(1, self.family.s2mel.cfg.n_mels, total, generator=g, device=g.device)
        return PieceCodes(piece, codes, frames, noise.to(self.family.device))

    def _checked(self, codes: torch.Tensor, stopped: bool, text_tokens: int) -> torch.Tensor:
        """Codes made ready for the render step (on the device, long silences shrunk when
        configured); EngineError for codes it cannot take."""
        codes = codes.to(self.family.device)
        book = self.family.codebook_size
        if codes.numel() and int(codes.max()) >= book:
            # the official code would index out of range here (possible only for the start code)
            raise EngineError(f"the GPT emitted code {int(codes.max())}, outside the {book}-entry codebook")
        if not stopped and not self.forbid:
            log.warning("generation stopped at the code budget (%d codes) without a stop token; text tokens: %d",
                        codes.numel(), text_tokens)
        if self.silence_code is not None:
            codes = shrink_silence(codes, self.silence_code)
        if codes.numel() == 0:
            raise EngineError("the GPT produced no speech codes for this text")
        return codes

    # ---- render phase ---------------------------------------------------------------

    def render(self, plan: RenderPlan) -> RenderOutput:
        out = RenderOutput()
        for groups in plan.start:
            self._start(groups, out)
        for group in plan.advance:
            if group.id in self._solves:
                self._advance(group, out)
        return out

    def _start(self, groups: list[RenderGroup], out: RenderOutput) -> None:
        """One features pass for every piece of ``groups``, then one S2M solve per group."""
        pieces = [p for g in groups for p in g.pieces]
        segs = [p.segment for p in pieces]
        t = time.perf_counter()
        try:
            feats, lens = self.family.s2m_features([s.cond for s in segs], [p.ids for p in pieces],
                                                   [p.codes for p in pieces])  # [R, L, W], [R]
        except Exception as exc:
            out.failed += [(g, exc) for g in groups]
            return
        self._time(out.timings, self.family.features_stage, t, segs)
        at = 0
        for g in groups:
            rows = slice(at, at + len(g.pieces))
            at = rows.stop
            try:
                self._solves[g.id] = self._solve(g.pieces, feats[rows], lens[rows])
            except Exception as exc:
                out.failed.append((g, exc))
                continue
            out.started.append(g)

    def _solve(self, pieces: list[Piece], feats: torch.Tensor, lens: torch.Tensor):
        conds = [p.segment.cond for p in pieces]
        dev = self.family.device
        prompt = PromptCondition(cond=pad_cat([c.prompt for c in conds], dim=1),
                                 mel=pad_cat([c.ref_mel for c in conds], dim=2),
                                 style=torch.cat([c.style for c in conds]),
                                 lengths=torch.tensor([c.prompt_frames for c in conds], device=dev))
        return self.family.s2mel.generate_steps(
            feats, lens, prompt, target_lens=torch.tensor([p.frames for p in pieces], device=dev),
            steps=self.cfm_steps, cfg_rate=self.cfg_rate, noise=pad_cat([p.noise for p in pieces], dim=2),
            cancel=AllCancelled([p.segment for p in pieces]))

    def _advance(self, group: RenderGroup, out: RenderOutput) -> None:
        """One CFM step of a solve, or all of them (``to_end``); a finished solve is vocoded."""
        steps = self._solves[group.id]
        segs = [p.segment for p in group.pieces]
        t = time.perf_counter()
        try:
            if group.to_end:
                result = run_to_end(steps)
            else:
                next(steps)
                self._time(out.timings, "s2mel", t, segs)
                return
        except StopIteration as done:
            result = done.value
        except Cancelled:  # no segment of this solve is wanted any more
            del self._solves[group.id]
            out.cancelled.append(group)
            return
        except Exception as exc:
            del self._solves[group.id]
            out.failed.append((group, exc))
            return
        del self._solves[group.id]
        self._time(out.timings, "s2mel", t, segs)
        try:
            out.finished.append((group, self._vocode(group.pieces, *result, out)))
        except Exception as exc:
            out.failed.append((group, exc))

    def _vocode(self, pieces: list[Piece], mel: torch.Tensor, gen_lens: torch.Tensor,
                out: RenderOutput) -> list[np.ndarray | None]:
        """The vocoder over the mels of a finished solve (masked batch): a wav per wanted piece."""
        keep = [j for j, p in enumerate(pieces) if p.segment.wanted]
        wavs: list[np.ndarray | None] = [None] * len(pieces)
        if not keep:
            return wavs
        t = time.perf_counter()
        lens = gen_lens[keep].to(self.family.device)
        mels = [mel[j : j + 1, :, : int(gen_lens[j])].float() for j in keep]
        wav = self.family.vocoder(pad_cat(mels, dim=2), lens)[:, 0]  # [R, N]
        hop = wav.size(-1) // int(lens.max())
        self._time(out.timings, "vocoder", t, [pieces[j].segment for j in keep])
        for row, j in enumerate(keep):
            wavs[j] = wav[row, : int(lens[row]) * hop].float().cpu().numpy()
        return wavs


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
