"""A speech stream's encoder line (server/stream_codec.py): each segment encoded as soon as its
job is done and the ones before it are encoded (not when the owner reads it), in text order,
with a deadline on the shared pool from how far the client is from running out of audio."""

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from realtime_tts.engine.base import Cancelled, EngineError, SegmentAudio, SynthesisOptions
from realtime_tts.engine.executor import SynthesisJob
from realtime_tts.server.metrics import Metrics
from realtime_tts.server.offload import CodecPool
from realtime_tts.server.stream_codec import REFILL_MARGIN_S, Encoded, StreamCodec

RATE = 1000


class RecordingEncoder:
    """One "frame" per input sample count; records what it was given, in order."""

    input_rate = RATE

    def __init__(self, rate: int) -> None:
        assert rate == RATE
        self.calls: list[int] = []
        self.output_seconds = 0.0
        self.closed = False

    def segment(self, pcm):
        if not np.isfinite(pcm).all():
            raise ValueError("non-finite samples")
        self.calls.append(len(pcm))
        self.output_seconds += len(pcm) / RATE
        return [len(pcm)]

    def finish(self):
        return []

    def close(self) -> None:
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.made: list[RecordingEncoder] = []

    def __call__(self, rate: int) -> RecordingEncoder:
        self.made.append(RecordingEncoder(rate))
        return self.made[-1]


def job() -> SynthesisJob:
    j = SynthesisJob(text="x", options=SynthesisOptions(), owner="o")
    j._future = asyncio.get_running_loop().create_future()
    return j


def finish(j: SynthesisJob, seconds: float = 0.0, pcm=None) -> None:
    if pcm is None:
        pcm = np.zeros(round(seconds * RATE), np.float32)
    j._future.set_result(SegmentAudio(pcm=pcm, sample_rate=RATE, stages={}))


@pytest.fixture
def pool():
    pool = CodecPool(1)
    yield pool
    pool.shutdown()


def line(pool, n: int) -> tuple[Factory, StreamCodec, list[SynthesisJob], list[asyncio.Future]]:
    """A codec line on ``pool`` with ``n`` jobs added (none done yet)."""
    factory = Factory()
    codec = StreamCodec(pool, Metrics(), factory, lambda: 0.0)
    jobs = [job() for _ in range(n)]
    return factory, codec, jobs, [codec.add(j) for j in jobs]


async def test_segments_are_encoded_ahead_of_reading_in_text_order(pool):
    factory, codec, jobs, outs = line(pool, 3)
    finish(jobs[2], 0.3)
    finish(jobs[1], 0.2)
    await asyncio.sleep(0.05)
    assert not factory.made and not any(out.done() for out in outs)  # the first one is not done yet
    finish(jobs[0], 0.1)
    results = await asyncio.wait_for(asyncio.gather(*outs), 20)  # nobody read anything
    assert factory.made[0].calls == [100, 200, 300]
    assert [r.data for r in results] == [[100], [200], [300]]
    assert [r.duration for r in results] == pytest.approx([0.1, 0.2, 0.3])
    tail = await asyncio.wait_for(codec.finish(), 20)
    assert tail == Encoded([], 0.0, 0.0) and factory.made[0].closed  # freed with the tail


class RecordingPool:
    """Runs each call at once and keeps its deadline."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []

    def submit(self, fn, *args, deadline=None):
        self.deadlines.append(deadline)
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future


async def test_a_segment_is_due_a_margin_before_the_client_runs_out():
    pool, consumed = RecordingPool(), [0.0]
    codec = StreamCodec(pool, Metrics(), Factory(), lambda: consumed[0])
    first = job()
    out = codec.add(first)
    finish(first, 2.0)
    await asyncio.wait_for(out, 20)
    assert pool.deadlines[0] == pytest.approx(time.monotonic() - REFILL_MARGIN_S, abs=0.5)  # a listener waits
    consumed[0] = 0.5  # the client has played 0.5 s of the 2 s encoded
    second = job()
    out = codec.add(second)
    finish(second, 1.0)
    await asyncio.wait_for(out, 20)
    assert pool.deadlines[1] == pytest.approx(time.monotonic() + 1.5 - REFILL_MARGIN_S, abs=0.5)
    assert pool.deadlines[1] - pool.deadlines[0] == pytest.approx(1.5, abs=0.2)


async def test_dropping_withdraws_a_call_still_waiting_for_a_thread(pool):
    gate, entered = threading.Event(), threading.Event()
    pool.submit(lambda: (entered.set(), gate.wait(30)))
    assert await asyncio.to_thread(entered.wait, 20)
    factory = Factory()
    codec = StreamCodec(pool, Metrics(), factory, lambda: 0.0)
    j = job()
    out = codec.add(j)
    finish(j, 0.1)
    await asyncio.sleep(0)
    assert pool.waiting == 1
    codec.drop()
    assert pool.waiting == 1  # still in the heap, but withdrawn: the pool skips it
    with pytest.raises(Cancelled):
        await out
    gate.set()
    assert pool.submit(lambda: "after").result(20) == "after"
    assert factory.made == []  # the withdrawn encode never ran
    codec.close()


async def test_failures_stay_with_their_segment(pool):
    factory, codec, jobs, outs = line(pool, 3)
    jobs[0]._future.set_exception(EngineError("engine failed"))
    finish(jobs[1], pcm=np.full(10, np.nan, np.float32))
    finish(jobs[2], 0.05)
    with pytest.raises(EngineError, match="engine failed"):
        await asyncio.wait_for(outs[0], 20)
    with pytest.raises(EngineError, match="unusable audio"):
        await asyncio.wait_for(outs[1], 20)
    assert (await asyncio.wait_for(outs[2], 20)).data == [50]
    codec.close()
    assert factory.made[0].closed
