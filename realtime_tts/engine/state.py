"""The state of every segment in the staged pipeline, and the messages between scheduler and runner.

A segment (one text the executor hands over) is split by the text front end into pieces of at most
120 text tokens; each piece goes through the stages one after another::

    PENDING -> WAITING -> DECODING -> READY -> RENDERING -> DONE
    (its previous   (a decode   (in the GPT   (codes       (S2M solve,     (audio)
     piece decodes)  block)      decode pool)  complete)    vocoder)

A segment's own status follows its least advanced piece (WAITING, DECODING, READY, RENDERING, DONE)
and ends in DONE, FAILED or CANCELLED. Only the scheduler changes a status (``Scheduler.update_*``),
from the outputs the runner reports; the runner only reads the state of what a plan names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .base import CancelToken

if TYPE_CHECKING:
    import torch

    from .family import SegmentCondition


class Status(enum.IntEnum):
    """Lifecycle of a piece and of a segment; the order is the order of the stages."""

    PENDING = 0  # a piece whose previous piece has not finished decoding
    WAITING = 1  # waits for a block of the decode pool
    DECODING = 2  # in the GPT decode pool
    READY = 3  # codes complete, waits for a render
    RENDERING = 4  # in an S2M solve (then the vocoder)
    DONE = 5  # audio made
    FAILED = 6  # a segment only
    CANCELLED = 7  # a segment only

    @property
    def ended(self) -> bool:
        return self >= Status.DONE


@dataclass(eq=False)
class Piece:
    """One piece of a segment (at most 120 text tokens): one decode request, one S2M item."""

    segment: "Segment"
    ids: "torch.Tensor"  # [n] text token ids
    budget: int  # most codes it may get (its exact count under a CodeOverride)
    status: Status = Status.PENDING
    ticket: int = 0  # queue order: when it started waiting for a block, then for a render
    ready_step: int = 0  # the step its codes completed
    solo: bool = False  # render it alone (a shared render of it failed)
    codes: "torch.Tensor | None" = None  # [L], from READY on
    noise: "torch.Tensor | None" = None  # [1, n_mels, prompt + generated frames] CFM noise, from READY on
    frames: int = 0  # mel frames to generate, from READY on
    wav: np.ndarray | None = None  # from DONE on


@dataclass(eq=False)
class Segment:
    """One text segment in flight: what goes in (conditioning, generator), what comes out."""

    tag: object  # the caller's handle
    speed: float
    cancel: CancelToken
    cond: "SegmentCondition"
    generator: "torch.Generator"  # every random draw of this segment
    urgent: bool  # a listener waits for its first audio: render as soon as its codes are complete
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    pieces: list[Piece] = field(default_factory=list)
    status: Status = Status.WAITING
    error: BaseException | None = None

    @property
    def wanted(self) -> bool:
        return not self.status.ended and not self.cancel.cancelled


@dataclass(eq=False)
class RenderGroup:
    """Pieces that share one S2M solve and one vocoder pass."""

    id: int
    pieces: list[Piece]
    to_end: bool  # every CFM step in one engine step (urgent, or a retry alone), else one per step
    alone: bool = False  # its one piece rendered by itself (features pass included): a failure is its own


@dataclass
class DecodePlan:
    """The decode phase of a step: free what is no longer wanted, prefill newcomers, one decode step."""

    drop: list[Piece]  # leave the decode pool now (their segment ended)
    close: list[RenderGroup]  # solves under way that nobody wants any more
    admit: list[Piece]  # prefill into free blocks, in this order
    decode: bool  # run one decode step for every piece in the pool


@dataclass
class RenderPlan:
    """The render phase of a step: start solves, advance the ones under way."""

    start: list[list[RenderGroup]]  # groups to start; the groups of one inner list share one features pass
    advance: list[RenderGroup]  # one CFM step each, or every step when ``to_end`` (started ones included)


@dataclass
class Timing:
    stage: str
    seconds: float
    segments: list[Segment]


@dataclass
class PieceCodes:
    """A piece whose decode finished: its codes, frame count and CFM noise, or why it failed."""

    piece: Piece
    codes: "torch.Tensor | None" = None
    frames: int = 0
    noise: "torch.Tensor | None" = None
    error: BaseException | None = None


@dataclass
class DecodeOutput:
    admit_error: BaseException | None = None  # the prefill failed: nothing was admitted
    decode_error: BaseException | None = None  # the decode step failed: the pool was rebuilt empty
    done: list[PieceCodes] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)


@dataclass
class RenderOutput:
    started: list[RenderGroup] = field(default_factory=list)
    finished: list[tuple[RenderGroup, list[np.ndarray | None]]] = field(default_factory=list)  # wav per piece
    failed: list[tuple[RenderGroup, BaseException]] = field(default_factory=list)
    cancelled: list[RenderGroup] = field(default_factory=list)  # its hook found nobody wanting it
    timings: list[Timing] = field(default_factory=list)

