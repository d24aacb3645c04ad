"""SerialExecutor: one worker thread, bounded queue, round-robin between owners, cancellation of
queued and running jobs, engine failures isolated per job, close() and the metrics hook.

A gate engine makes ordering deterministic: a job whose text starts with "wait" holds the
worker until the test releases it (or the job is cancelled), so the test can queue work
behind it and then watch the order the worker takes it in."""

import asyncio
import threading
import time

import numpy as np
import pytest

from realtime_tts.engine.base import CancelToken, Cancelled, Engine, EngineError, SegmentAudio, SynthesisOptions
from realtime_tts.engine.executor import ExecutorBusy, ExecutorClosed, SerialExecutor

OPTS = SynthesisOptions()


class GateEngine(Engine):
    name = "gate"
    sample_rate = 16000

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = threading.Event()  # a "wait" job is running
        self.release = threading.Event()
        self.saw_cancel: list[str] = []

    def synthesize(self, text: str, options: SynthesisOptions, cancel: CancelToken) -> SegmentAudio:
        self.calls.append(text)
        if text.startswith("wait"):
            self.started.set()
            while not self.release.is_set():
                if cancel.cancelled:
                    self.saw_cancel.append(text)
                    cancel.raise_if_cancelled()
                time.sleep(0.002)
        if text.startswith("boom"):
            raise EngineError(f"cannot say {text!r}")
        return SegmentAudio(np.full(len(text) * 10, 0.1, np.float32), self.sample_rate)


@pytest.fixture
async def setup():
    engine = GateEngine()
    executor = SerialExecutor(engine, max_queue=8)
    await executor.start()
    yield engine, executor
    engine.release.set()
    await executor.close()


async def running(engine: GateEngine) -> None:
    assert await asyncio.to_thread(engine.started.wait, 10), "the gate job never started"


async def test_result_is_the_engine_audio(setup):
    engine, executor = setup
    job = executor.submit("hello", OPTS, owner="a")
    audio = await job.result()
    assert isinstance(audio, SegmentAudio) and len(audio.pcm) == 50 and audio.sample_rate == 16000
    assert job.started_at is not None and job.started_at >= job.submitted_at
    assert engine.calls == ["hello"] and executor.queue_depth == 0


async def test_queue_is_bounded_and_busy_is_an_error(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="a")
    await running(engine)  # the running job does not count against the queue
    queued = [executor.submit(f"q{i}", OPTS, owner=f"o{i % 3}") for i in range(8)]
    assert executor.queue_depth == 8
    with pytest.raises(ExecutorBusy, match="limit 8"):
        executor.submit("one too many", OPTS, owner="z")
    assert executor.queue_depth == 8
    engine.release.set()
    await gate.result()
    for job in queued:
        await job.result()
    assert executor.queue_depth == 0
    executor.submit("room again", OPTS, owner="z")


async def test_owners_take_turns(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="gate")
    await running(engine)
    jobs = [executor.submit(t, OPTS, owner=t[0]) for t in ("A1", "A2", "A3", "B1", "B2", "C1")]
    engine.release.set()
    await gate.result()
    for job in jobs:
        await job.result()
    # Round-robin between owners, FIFO within one: A's long text does not starve B and C.
    assert engine.calls[1:] == ["A1", "B1", "C1", "A2", "B2", "A3"]


async def test_an_idle_owners_job_goes_before_backlogs(setup):
    engine, executor = setup
    gate = executor.submit("wait A1", OPTS, owner="A")
    await running(engine)
    backlog = [executor.submit(t, OPTS, owner=t[0]) for t in ("A2", "A3", "C1", "C2")]
    late = executor.submit("B1", OPTS, owner="B")  # B has nothing queued or running: a listener waits
    assert [j.urgent for j in backlog] == [False, False, True, False] and late.urgent
    engine.release.set()
    for job in [gate, *backlog, late]:
        await job.result()
    # Plain round-robin would give A2, C1, B1, A3, C2: the urgent first sentences of C and B
    # overtake A's backlog, then the owners take turns as before.
    assert engine.calls[1:] == ["C1", "B1", "A2", "C2", "A3"]


async def test_cancel_a_queued_job(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="a")
    await running(engine)
    doomed = executor.submit("never", OPTS, owner="b")
    kept = executor.submit("kept", OPTS, owner="b")
    doomed.cancel()
    assert doomed.cancelled
    with pytest.raises(Cancelled):
        await doomed.result()
    engine.release.set()
    await gate.result()
    await kept.result()
    assert engine.calls == ["wait", "kept"] and executor.queue_depth == 0


async def test_cancel_the_running_job_frees_the_worker(setup):
    engine, executor = setup
    blocked = executor.submit("wait forever", OPTS, owner="a")
    after = executor.submit("after", OPTS, owner="b")
    await running(engine)
    blocked.cancel()
    with pytest.raises(Cancelled):
        await blocked.result()
    assert (await after.result()).sample_rate == 16000  # the worker moved on; nothing was released
    assert engine.saw_cancel == ["wait forever"]


async def test_cancel_owner_takes_only_that_owners_jobs(setup):
    engine, executor = setup
    running_job = executor.submit("wait", OPTS, owner="x")
    await running(engine)
    x_queued = [executor.submit(f"x{i}", OPTS, owner="x") for i in range(3)]
    y_job = executor.submit("y", OPTS, owner="y")
    assert executor.cancel_owner("x") == 4  # three queued + the running one
    assert executor.queue_depth == 1
    for job in [running_job, *x_queued]:
        with pytest.raises(Cancelled):
            await job.result()
    await y_job.result()
    assert executor.cancel_owner("nobody") == 0
    assert [c for c in engine.calls if c.startswith("x")] == []


async def test_engine_error_fails_only_that_job(setup):
    engine, executor = setup
    bad = executor.submit("boom now", OPTS, owner="a")
    good = executor.submit("fine", OPTS, owner="a")
    with pytest.raises(EngineError, match="boom now"):
        await bad.result()
    assert len((await good.result()).pcm) == 40
    again = executor.submit("still alive", OPTS, owner="b")
    await again.result()


async def test_close_cancels_everything_and_refuses_new_work():
    engine = GateEngine()
    executor = SerialExecutor(engine, max_queue=8)
    await executor.start()
    running_job = executor.submit("wait", OPTS, owner="a")
    await running(engine)
    queued = [executor.submit(f"q{i}", OPTS, owner="b") for i in range(3)]
    await executor.close()
    for job in [running_job, *queued]:
        with pytest.raises(Cancelled):
            await job.result()
    assert executor.queue_depth == 0 and engine.calls == ["wait"]
    with pytest.raises(ExecutorClosed):
        executor.submit("late", OPTS, owner="c")
    assert not any(t.name == "engine-worker" and t.is_alive() for t in threading.enumerate())


async def test_on_segment_done_hook_sees_every_outcome(setup):
    engine, executor = setup
    seen = []

    def hook(job, result, seconds):
        seen.append((job.text, type(result).__name__, seconds >= 0))
        if job.text == "ok 2":
            raise RuntimeError("a broken hook must not kill the worker")

    executor.on_segment_done = hook
    await executor.submit("ok 1", OPTS, owner="a").result()
    with pytest.raises(EngineError):
        await executor.submit("boom", OPTS, owner="a").result()
    await executor.submit("ok 2", OPTS, owner="a").result()
    blocked = executor.submit("wait", OPTS, owner="a")
    await running(engine)
    blocked.cancel()
    with pytest.raises(Cancelled):
        await blocked.result()
    await executor.submit("ok 3", OPTS, owner="a").result()
    assert seen == [("ok 1", "SegmentAudio", True), ("boom", "EngineError", True), ("ok 2", "SegmentAudio", True),
                    ("wait", "Cancelled", True), ("ok 3", "SegmentAudio", True)]


async def test_cancelled_jobs_waiting_in_line_do_not_make_the_queue_busy(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="a")
    await running(engine)
    stale = [executor.submit(f"s{i}", OPTS, owner="b") for i in range(8)]
    for job in stale[:5]:
        job.cancel()  # e.g. a client's barge-in; the worker has not reached them yet
    fresh = [executor.submit(f"f{i}", OPTS, owner="c") for i in range(5)]
    assert executor.queue_depth == 8
    with pytest.raises(ExecutorBusy):
        executor.submit("over", OPTS, owner="c")
    engine.release.set()
    await gate.result()
    for job in stale[5:] + fresh:
        await job.result()
    # f0 is c's first sentence (urgent); then b and c take turns
    assert engine.calls == ["wait", "f0", "s5", "f1", "s6", "f2", "s7", "f3", "f4"]


async def test_realtime_jobs_go_before_bulk_backlog(setup):
    from realtime_tts.engine.executor import BULK, REALTIME

    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="h")
    await running(engine)
    bulk = [executor.submit(f"bulk{i}", OPTS, owner="http", priority=BULK) for i in range(3)]
    live = [executor.submit(f"live{i}", OPTS, owner=f"dev{i % 2}", priority=REALTIME) for i in range(3)]
    engine.release.set()
    for job in [gate, *bulk, *live]:
        await job.result()
    assert engine.calls == ["wait", "live0", "live1", "live2", "bulk0", "bulk1", "bulk2"]
    with pytest.raises(ValueError, match="priority"):
        executor.submit("x", OPTS, owner="a", priority=7)


async def test_an_abandoned_cancelled_job_logs_no_unretrieved_exception(setup):
    engine, executor = setup
    seen: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: seen.append(context))

    async def submit_and_forget() -> None:
        job = executor.submit("wait", OPTS, owner="a")  # nobody ever awaits it
        job.cancel()
        while not job._future.done():
            await asyncio.sleep(0.005)

    await submit_and_forget()
    import gc

    gc.collect()
    await asyncio.sleep(0.01)
    assert not [c for c in seen if "never retrieved" in c.get("message", "")]
