"""Every scheduling decision of the engine, in one place; no tensor work happens here.

``JobQueue``: which waiting job the executor's worker takes next. Realtime jobs (device turns,
agent streams, streamed HTTP, the page) before bulk ones (whole-file renders of long texts); within
a class, the job of an owner who had nothing queued or running first (a listener waits for it:
"urgent"), then owners round-robin, FIFO within an owner, so one client's long text cannot starve
another client's first sentence.

``Scheduler``: what each step of the staged pipeline does, like vLLM v1's engine core (``schedule``
-> ``execute_model`` -> ``update_from_output``). A step has two phases, each planned here,
executed by the ``ModelRunner`` and reported back::

    plan = scheduler.schedule_decode()     # drop what ended, admit waiting pieces, one decode step
    scheduler.update_decode(plan, runner.decode(plan))
    plan = scheduler.schedule_render()     # start renders of complete pieces, advance solves
    scheduler.update_render(plan, runner.render(plan))
    finished = scheduler.end_step()

The render phase is planned after the decode phase's outputs are in, so a piece whose codes
complete can start rendering in the same step. Policy:

* admission: waiting pieces in the order they started waiting, while the pool has free blocks;
  a segment's next piece waits from the step its previous piece's codes complete;
* rendering: a solve costs a pass per CFM step, so complete pieces wait for company, but never
  long: they start when nothing is left to decode, when one of them is urgent, or when the oldest
  has waited ``render_wait`` steps; pieces of similar length share a solve (``length_buckets``);
* urgency: a bulk solve advances one CFM step per engine step, so it never holds up everyone
  else's decode; a solve with an urgent piece runs all its steps at once (its listener's wait
  matters more than one pause of the others' decode);
* failures stay local: a segment that fails leaves alone; a shared render that fails is retried
  piece by piece (one bad piece, or a batch too big for the device, fails only itself).
"""

from __future__ import annotations

import collections
import itertools
import logging

from .base import Cancelled
from .buckets import length_buckets
from .state import (DecodeOutput, DecodePlan, Piece, RenderGroup, RenderOutput, RenderPlan, Segment, Status,
                    Timing)

log = logging.getLogger(__name__)

# which of its pieces' statuses a live segment takes: the least advanced (decoding before waiting:
# its next piece waits only after the one before it decoded)
_STATUS_ORDER = (Status.DECODING, Status.WAITING, Status.PENDING, Status.READY, Status.RENDERING)

REALTIME = 0  # priority classes: lower runs first
BULK = 1
PRIORITIES = (REALTIME, BULK)


class JobQueue:
    """The executor's waiting jobs, in the order they run (see the module doc); bounded by ``limit``.

    Not thread-safe: the executor calls it with its lock held. Jobs need ``owner``, ``priority``,
    ``urgent`` and ``cancelled``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # one round-robin of per-owner queues per priority class
        self._queues: dict[int, collections.OrderedDict[str, collections.deque]] = {
            p: collections.OrderedDict() for p in PRIORITIES}
        self._depth = 0

    def __len__(self) -> int:
        return self._depth

    def has_owner(self, owner: str) -> bool:
        return any(owner in queues for queues in self._queues.values())

    def push(self, job, running_owners: set[str]) -> bool:
        """Queue ``job``; False when the queue is full even without its cancelled jobs. The job is
        urgent when its owner has nothing queued or running."""
        if self._depth >= self.limit:
            self._drop_cancelled()
        if self._depth >= self.limit:
            return False
        job.urgent = not self.has_owner(job.owner) and job.owner not in running_owners
        self._queues[job.priority].setdefault(job.owner, collections.deque()).append(job)
        self._depth += 1
        return True

    def pop(self):
        """The oldest job of the next owner: realtime before bulk, and within a class owners whose
        next job is urgent first; None when nothing (not cancelled) waits."""
        for priority in PRIORITIES:
            queues = self._queues[priority]
            while queues:
                owner = next((o for o, q in queues.items() if q[0].urgent), None)
                if owner is None:
                    owner = next(iter(queues))
                queue = queues[owner]
                job = queue.popleft()
                self._depth -= 1
                if queue:
                    queues.move_to_end(owner)  # this owner goes to the back of the line
                else:
                    del queues[owner]
                if not job.cancelled:
                    return job
        return None

    def take(self, room: int) -> list:
        """Up to ``room`` jobs in ``pop`` order."""
        jobs = []
        while len(jobs) < room and (job := self.pop()) is not None:
            jobs.append(job)
        return jobs

    def remove_owner(self, owner: str) -> list:
        jobs = [job for queues in self._queues.values() for job in queues.pop(owner, ())]
        self._depth -= len(jobs)
        return jobs

    def drain(self) -> list:
        jobs = [job for queues in self._queues.values() for q in queues.values() for job in q]
        for queues in self._queues.values():
            queues.clear()
        self._depth = 0
        return jobs

    def _drop_cancelled(self) -> None:
        """Forget cancelled jobs still waiting in line, so they never count as load."""
        for queues in self._queues.values():
            for owner in list(queues):
                queue = queues[owner]
                kept = collections.deque(job for job in queue if not job.cancelled)
                self._depth -= len(queue) - len(kept)
                if kept:
                    queues[owner] = kept  # same key: its round-robin position is kept
                else:
                    del queues[owner]


class Scheduler:
    """Up to ``capacity`` segments decoding at once; plans every step (see the module doc)."""

    def __init__(self, capacity: int, *, render_wait: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if render_wait < 0:
            raise ValueError(f"render_wait must be >= 0, got {render_wait}")
        self.capacity = capacity
        self.render_wait = render_wait
        self.segments: list[Segment] = []  # in flight, in arrival order
        self.steps = 0
        self._rendering: list[RenderGroup] = []  # solves under way
        self._tickets = itertools.count()
        self._group_ids = itertools.count()

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def free(self) -> int:
        """How many more segments can start decoding now (one pool block each)."""
        busy = sum(1 for s in self.segments
                   if any(p.status is Status.DECODING or (p.status is Status.WAITING and not s.status.ended)
                          for p in s.pieces))
        return self.capacity - busy

    def add(self, segment: Segment) -> None:
        segment.status = Status.WAITING
        self._wait(segment.pieces[0])
        self.segments.append(segment)

    def _wait(self, piece: Piece) -> None:
        piece.status, piece.ticket = Status.WAITING, next(self._tickets)

    def _live(self, status: Status) -> list[Piece]:
        """Pieces in ``status`` of the segments not ended, in arrival order."""
        return [p for s in self.segments if not s.status.ended for p in s.pieces if p.status is status]

    # ---- decode phase ---------------------------------------------------------------

    def schedule_decode(self) -> DecodePlan:
        drop, waiting, decoding = [], [], 0
        for seg in self.segments:
            if not seg.status.ended and seg.cancel.cancelled:
                seg.status = Status.CANCELLED
            ended = seg.status.ended
            for p in seg.pieces:
                if p.status is Status.DECODING:
                    if ended:
                        drop.append(p)  # its segment ended: free the block
                    else:
                        decoding += 1
                elif p.status is Status.WAITING and not ended:
                    waiting.append(p)
        close = [g for g in self._rendering if not any(p.segment.wanted for p in g.pieces)]
        waiting.sort(key=lambda p: p.ticket)
        admit = waiting[: self.capacity - decoding]
        return DecodePlan(drop=drop, close=close, admit=admit, decode=bool(decoding or admit))

    def update_decode(self, plan: DecodePlan, out: DecodeOutput) -> None:
        for p in plan.drop:
            p.status = p.segment.status  # out of the pool: it ends with its segment
        for g in plan.close:
            self._rendering.remove(g)
        if plan.admit:
            if out.admit_error is not None:
                self._fail({id(p.segment): p.segment for p in plan.admit}.values(), out.admit_error,
                           "starting the decode of")
            else:
                for p in plan.admit:
                    p.status = Status.DECODING
        if out.decode_error is not None:  # the pool was rebuilt empty
            lost = [p for s in self.segments for p in s.pieces if p.status is Status.DECODING]
            self._fail({id(p.segment): p.segment for p in lost}.values(), out.decode_error, "decoding")
            for p in lost:
                p.status = Status.FAILED
        for done in out.done:
            p, seg = done.piece, done.piece.segment
            if done.error is not None:
                p.status = Status.FAILED
                self._fail([seg], done.error)
                continue
            p.codes, p.frames, p.noise = done.codes, done.frames, done.noise
            p.status, p.ready_step, p.ticket = Status.READY, self.steps, next(self._tickets)
            k = seg.pieces.index(p)
            if k + 1 < len(seg.pieces):
                self._wait(seg.pieces[k + 1])
        self._account(out.timings)
        if plan.drop or plan.admit or out.done or out.decode_error is not None:
            self._refresh_all()

    # ---- render phase ---------------------------------------------------------------

    def schedule_render(self) -> RenderPlan:
        ready = self._live(Status.READY)
        if not ready and not self._rendering:
            return RenderPlan(start=[], advance=[])
        ready.sort(key=lambda p: p.ticket)
        start = [[self._group([p], to_end=True, alone=True)] for p in ready if p.solo]
        shared = [p for p in ready if not p.solo]
        if shared and self._render_due(shared):
            frames = [p.segment.cond.prompt_frames + p.frames for p in shared]  # prompt + generated
            groups = [[shared[i] for i in bucket] for bucket in length_buckets(frames)]
            start.append([self._group(g, to_end=any(p.segment.urgent for p in g), alone=len(shared) == 1)
                          for g in groups])
        advance = self._rendering + [g for batch in start for g in batch]
        return RenderPlan(start=start, advance=advance)

    def _group(self, pieces: list[Piece], to_end: bool, alone: bool) -> RenderGroup:
        return RenderGroup(next(self._group_ids), pieces, to_end, alone)

    def _render_due(self, ready: list[Piece]) -> bool:
        if not self._live(Status.DECODING) and not self._live(Status.WAITING):
            return True
        return any(p.segment.urgent for p in ready) or self.steps - ready[0].ready_step >= self.render_wait

    def update_render(self, plan: RenderPlan, out: RenderOutput) -> None:
        for g in out.started:
            for p in g.pieces:
                p.status = Status.RENDERING
            self._rendering.append(g)
        for g, wavs in out.finished:
            self._rendering.remove(g)
            for p, wav in zip(g.pieces, wavs):
                if wav is not None:
                    p.wav, p.status = wav, Status.DONE
        for g, exc in out.failed:
            if g in self._rendering:
                self._rendering.remove(g)
            self._retry_alone(g, exc)
        for g in out.cancelled:
            self._rendering.remove(g)
        self._account(out.timings)
        if out.started or out.finished or out.failed or out.cancelled:
            self._refresh_all()

    def _retry_alone(self, group: RenderGroup, exc: BaseException) -> None:
        """A render failed: a piece that failed by itself fails its segment; pieces that failed in
        company are rendered again, each alone."""
        if group.alone:
            self._fail([group.pieces[0].segment], exc, "rendering")
            return
        log.warning("a shared render of %d piece(s) failed (%s: %s); retrying each alone",
                    len(group.pieces), type(exc).__name__, exc)
        for p in group.pieces:
            p.status, p.solo = Status.READY, True

    # ---- the end of a step ----------------------------------------------------------

    def end_step(self) -> list[Segment]:
        """Advance the step count; hand back the segments that ended (and hold no decode block)."""
        self.steps += 1
        finished, kept = [], []
        for seg in self.segments:
            if seg.status not in (Status.FAILED, Status.CANCELLED) and seg.cancel.cancelled:
                seg.status = Status.CANCELLED
            holds_block = any(p.status is Status.DECODING for p in seg.pieces)
            (finished if seg.status.ended and not holds_block else kept).append(seg)
        self.segments = kept
        return finished

    def _refresh_all(self) -> None:
        """A live segment's status: that of its least advanced piece (its next piece still pending
        counts as waiting)."""
        for seg in self.segments:
            if seg.status.ended:
                continue
            statuses = {p.status for p in seg.pieces}
            seg.status = next((Status.WAITING if s is Status.PENDING else s for s in _STATUS_ORDER if s in statuses),
                              Status.DONE)

    def _fail(self, segments, exc: BaseException, doing: str | None = None) -> None:
        segments = [s for s in segments if not s.status.ended]
        if doing and segments and not isinstance(exc, Cancelled):
            log.error("%s %d segment(s) failed: %s: %s", doing, len(segments), type(exc).__name__, exc)
        for seg in segments:
            seg.status, seg.error = Status.FAILED, exc

    @staticmethod
    def _account(timings: list[Timing]) -> None:
        for t in timings:
            for seg in {id(s): s for s in t.segments}.values():
                seg.stages[t.stage] = seg.stages.get(t.stage, 0.0) + t.seconds
