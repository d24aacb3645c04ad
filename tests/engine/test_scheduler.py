"""The scheduler alone (engine/scheduler.py): plans and status updates of the staged pipeline with no
model behind them (the runner's outputs are written by hand), and the executor's job order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from realtime_tts.engine.base import CancelToken
from realtime_tts.engine.scheduler import BULK, REALTIME, JobQueue, Scheduler
from realtime_tts.engine.state import DecodeOutput, Piece, PieceCodes, RenderOutput, Segment, Status


def segment(tag, pieces=1, *, urgent=False, prompt_frames=10) -> Segment:
    cond = SimpleNamespace(prompt_frames=prompt_frames)
    seg = Segment(tag, 1.0, CancelToken(), cond, generator=None, urgent=urgent)
    seg.pieces = [Piece(seg, ids=None, budget=10) for _ in range(pieces)]
    return seg


def decode(s: Scheduler, done=(), frames=20, **errors):
    """One decode phase: everything planned is admitted; ``done`` pieces complete with ``frames``."""
    plan = s.schedule_decode()
    out = DecodeOutput(**errors)
    out.done = [PieceCodes(p, codes=object(), frames=frames) for p in done]
    s.update_decode(plan, out)
    return plan


def render(s: Scheduler, finish=(), fail=None):
    """One render phase: every planned group starts; groups holding a piece of ``finish`` end."""
    plan = s.schedule_render()
    out = RenderOutput(started=[g for batch in plan.start for g in batch])
    for g in plan.advance:
        if fail is not None and g in out.started:
            out.failed.append((g, fail))
        elif any(p in finish for p in g.pieces):
            out.finished.append((g, ["wav"] * len(g.pieces)))
    s.update_render(plan, out)
    return plan


def test_a_segment_goes_through_every_status():
    s = Scheduler(2, render_wait=0)
    seg = segment("a", pieces=2)
    s.add(seg)
    first, second = seg.pieces
    assert (seg.status, first.status, second.status) == (Status.WAITING, Status.WAITING, Status.PENDING)
    assert decode(s).admit == [first] and first.status is Status.DECODING and seg.status is Status.DECODING
    decode(s, done=[first])  # piece 1's codes complete: piece 2 waits for a block
    assert (first.status, second.status, seg.status) == (Status.READY, Status.WAITING, Status.WAITING)
    render(s)  # render_wait 0: it starts at once, one CFM step
    assert first.status is Status.RENDERING
    assert decode(s).admit == [second] and seg.status is Status.DECODING
    decode(s, done=[second])
    render(s, finish=[first])
    assert (first.status, second.status) == (Status.DONE, Status.RENDERING) and seg.status is Status.RENDERING
    render(s, finish=[second])
    assert seg.status is Status.DONE and s.end_step() == [seg] and len(s) == 0


def test_admission_follows_the_queue_within_capacity():
    s = Scheduler(2)
    a, b, c = segment("a", pieces=2), segment("b"), segment("c")
    for seg in (a, b, c):
        s.add(seg)
    assert s.free == -1  # three waiting for two blocks
    assert decode(s).admit == [a.pieces[0], b.pieces[0]]
    decode(s, done=[a.pieces[0]])  # a's next piece queues behind c, which waited first
    assert decode(s).admit == [c.pieces[0]] and a.pieces[1].status is Status.WAITING
    assert s.free == 2 - 3


def test_complete_pieces_wait_for_company_but_not_long():
    s = Scheduler(3, render_wait=2)
    long, short = segment("long"), segment("short")
    s.add(long)
    s.add(short)
    decode(s)
    decode(s, done=[short.pieces[0]])  # step 1: short is complete, long still decodes
    starts = []
    for _ in range(4):
        starts.append(bool(render(s).start))
        s.end_step()
        decode(s)
    assert starts == [False, False, True, False]  # it waited render_wait steps, then started


def test_urgent_pieces_render_at_once_to_the_end_and_idle_ones_too():
    s = Scheduler(3, render_wait=100)
    busy, urgent = segment("busy"), segment("urgent", urgent=True)
    s.add(busy)
    s.add(urgent)
    decode(s)
    decode(s, done=[urgent.pieces[0]])
    (batch,) = render(s).start
    assert [g.to_end for g in batch] == [True] and batch[0].pieces == urgent.pieces
    decode(s, done=[busy.pieces[0]])
    (batch,) = render(s).start  # nothing left to decode: no reason to wait
    assert [g.to_end for g in batch] == [False]


def test_similar_lengths_share_a_solve():
    s = Scheduler(4, render_wait=0)
    segs = [segment(i, prompt_frames=10) for i in range(4)]
    for seg in segs:
        s.add(seg)
    decode(s)
    out = DecodeOutput(done=[PieceCodes(seg.pieces[0], codes=object(), frames=n)
                             for seg, n in zip(segs, (300, 20, 290, 25))])
    s.update_decode(s.schedule_decode(), out)
    (batch,) = render(s).start
    assert [[p.segment.tag for p in g.pieces] for g in batch] == [[0, 2], [3, 1]]


def test_a_cancelled_segment_leaves_the_pool_and_its_solves_close():
    s = Scheduler(2, render_wait=0)
    a, b = segment("a", pieces=2), segment("b")
    s.add(a)
    s.add(b)
    decode(s)
    decode(s, done=[a.pieces[0], b.pieces[0]])
    group = render(s).start[0][0]
    assert {p.segment.tag for p in group.pieces} == {"a", "b"}
    decode(s)  # a's second piece decodes
    a.cancel.cancel()
    plan = decode(s)
    assert plan.drop == [a.pieces[1]] and plan.close == [] and a.status is Status.CANCELLED  # b still wants it
    assert s.end_step() == [a]
    b.cancel.cancel()
    assert decode(s).close == [group]


def test_a_failed_segment_is_handed_back_once_its_block_is_free():
    s = Scheduler(2, render_wait=0)
    seg = segment("a", pieces=2)
    s.add(seg)
    decode(s)
    decode(s, done=[seg.pieces[0]])
    render(s)
    decode(s)  # piece 2 decodes while piece 1's render fails alone
    render(s, fail=None)
    plan = s.schedule_render()
    out = RenderOutput(failed=[(g, RuntimeError("bad")) for g in plan.advance])
    s.update_render(plan, out)
    assert seg.status is Status.FAILED and s.end_step() == [] and s.free == 1  # still holds a block
    assert decode(s).drop == [seg.pieces[1]] and s.end_step() == [seg] and s.free == 2


def test_a_shared_render_that_fails_is_retried_piece_by_piece():
    s = Scheduler(2, render_wait=0)
    a, b = segment("a"), segment("b")
    s.add(a)
    s.add(b)
    decode(s)
    decode(s, done=[a.pieces[0], b.pieces[0]])
    render(s, fail=MemoryError("too big"))
    assert {p.status for p in a.pieces + b.pieces} == {Status.READY} and not a.status.ended
    plan = s.schedule_render()
    assert [[g.pieces for g in batch] for batch in plan.start] == [[a.pieces], [b.pieces]]
    assert all(g.to_end for batch in plan.start for g in batch)
    s.update_render(plan, RenderOutput(failed=[(plan.start[0][0], MemoryError("still"))]))
    assert a.status is Status.FAILED and isinstance(a.error, MemoryError) and not b.status.ended


def test_a_piece_that_failed_in_company_gets_a_try_alone():
    """Two length buckets share one features pass: a failure there is no proof against either."""
    s = Scheduler(2, render_wait=0)
    a, b = segment("a"), segment("b")
    s.add(a)
    s.add(b)
    decode(s)
    out = DecodeOutput(done=[PieceCodes(a.pieces[0], codes=object(), frames=300),
                             PieceCodes(b.pieces[0], codes=object(), frames=20)])
    s.update_decode(s.schedule_decode(), out)
    plan = s.schedule_render()
    assert [len(g.pieces) for g in plan.start[0]] == [1, 1]
    s.update_render(plan, RenderOutput(failed=[(g, RuntimeError("features")) for g in plan.start[0]]))
    assert not a.status.ended and not b.status.ended
    assert [[g.pieces for g in batch] for batch in s.schedule_render().start] == [[a.pieces], [b.pieces]]


def test_decode_failures_fail_only_the_segments_they_touch():
    s = Scheduler(3)
    a, b = segment("a"), segment("b")
    s.add(a)
    decode(s)
    s.add(b)
    decode(s, admit_error=RuntimeError("prefill"))
    assert b.status is Status.FAILED and a.status is Status.DECODING
    c = segment("c")
    s.add(c)
    decode(s, decode_error=RuntimeError("step"))  # c was admitted, then the step failed for everyone in it
    assert a.status is c.status is Status.FAILED and s.free == 3
    assert set(seg.tag for seg in s.end_step()) == {"a", "b", "c"}


def test_render_wait_must_not_be_negative():
    with pytest.raises(ValueError, match="render_wait"):
        Scheduler(2, render_wait=-1)


# ----------------------------------------------------------------------------- job queue


def job(owner, priority=REALTIME):
    return SimpleNamespace(owner=owner, priority=priority, urgent=False, cancelled=False)


def test_job_queue_order():
    q = JobQueue(8)
    jobs = [job("a"), job("a"), job("bulk", BULK), job("b"), job("a")]
    assert all(q.push(j, running_owners={"b"}) for j in jobs)
    assert [j.urgent for j in jobs] == [True, False, True, False, False]  # b is running already
    # realtime before bulk; the urgent one first, then owners round-robin, FIFO within an owner
    assert q.take(5) == [jobs[0], jobs[3], jobs[1], jobs[4], jobs[2]] and len(q) == 0


def test_job_queue_limit_forgets_cancelled_jobs():
    q = JobQueue(2)
    first, second = job("a"), job("b")
    assert q.push(first, set()) and q.push(second, set()) and not q.push(job("c"), set())
    first.cancelled = True
    assert q.push(job("c"), set()) and len(q) == 2
    assert [j.owner for j in q.remove_owner("b")] == ["b"] and [j.owner for j in q.drain()] == ["c"]
