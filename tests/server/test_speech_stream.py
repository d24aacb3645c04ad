"""SpeechStream, the one ordered speech stream behind every endpoint: order, markers, failures,
the bounded lead (submission counted on the executor's public submit, so no timing is
involved), cancellation, encoders freed at once, codec work off the event loop."""

import asyncio
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from http_helpers import ToneEngine, make_ctx  # noqa: E402

from realtime_tts.audio.stream import SpeechEncoder  # noqa: E402
from realtime_tts.engine.base import EngineError, SynthesisOptions  # noqa: E402
from realtime_tts.engine.executor import BULK, REALTIME, ExecutorBusy  # noqa: E402
from realtime_tts.server.speech import SUBMIT_AHEAD, Failure, Marker, Sentence, SpeechStream, Tail  # noqa: E402

SENTENCES = " ".join(f"Word {i:02d} here." for i in range(12))  # 13 characters: 0.65 s + 0.1 s silence each


class Encoders:
    """Encoder factory that keeps what it made and on which threads the codec ran."""

    def __init__(self, block: threading.Event | None = None) -> None:
        self.made: list[SpeechEncoder] = []
        self.threads: set[str] = set()
        self.block = block
        self.entered = threading.Event()
        self.segments = 0  # segment() calls, on every encoder made

    def __call__(self, rate: int) -> SpeechEncoder:
        self.threads.add(threading.current_thread().name)
        encoder = SpeechEncoder(rate, 24000, encoding="opus", frame_ms=20, silence_ms=100)
        segment = encoder.segment

        def recorded(pcm):
            self.threads.add(threading.current_thread().name)
            self.entered.set()
            if self.block is not None:
                assert self.block.wait(30)
            self.segments += 1
            return segment(pcm)

        encoder.segment = recorded
        self.made.append(encoder)
        return encoder


@pytest.fixture
def engine():
    return ToneEngine()


@pytest.fixture
async def ctx(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine, max_lead_s=1.0, silence_ms=100)
    ctx.submitted = []
    real_submit = ctx.executor.submit

    def submit(text, options, *, owner, priority=REALTIME):
        job = real_submit(text, options, owner=owner, priority=priority)
        ctx.submitted.append((text, priority))
        return job

    ctx.executor.submit = submit
    await ctx.executor.start()
    yield ctx
    await ctx.executor.close()
    ctx.codec.shutdown()


def stream(ctx, encoders, **kw) -> SpeechStream:
    return SpeechStream(ctx, SynthesisOptions(), owner="owner", encoder=encoders, **kw)


def live(ctx) -> tuple[float, float]:
    return ctx.metrics.speech_streams._value.get(), ctx.metrics.encoders._value.get()


async def until(condition, timeout: float = 20.0) -> None:
    """Wait for something the engine thread does (a deadline for hangs, never a timing assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def idle(ctx) -> None:
    """Every job queued before this one has been run or dropped (the serial executor is FIFO here)."""
    await ctx.executor.submit("Idle.", SynthesisOptions(), owner="probe").result()


async def test_events_come_in_text_order_with_markers_and_a_tail(ctx):
    encoders = Encoders()
    s = stream(ctx, encoders)
    assert s.push("Hello there. How") == ["Hello there."]
    s.mark("m1")
    s.push(" are you?")
    assert s.end() == ["How are you?"]
    events = [e async for e in s]
    assert [type(e) for e in events] == [Sentence, Marker, Sentence, Tail]
    first, mark, second, tail = events
    assert (first.index, first.text, first.offset) == (0, "Hello there.", 0)
    assert mark == Marker("m1")
    assert (second.index, second.text) == (1, "How are you?")
    assert second.offset == pytest.approx(0.6 + 0.1) and first.duration == pytest.approx(0.6)
    frames = sum(len(e.data) for e in (first, second, tail))
    assert frames * 0.02 == pytest.approx(first.seconds + second.seconds + tail.seconds)
    assert abs(frames * 0.02 - (0.6 + 0.1) * 2) <= 0.04
    assert await s.next() is None
    assert encoders.made[0]._opus.closed and live(ctx) == (1, 0)  # the encoder went with the tail
    s.close()
    assert live(ctx) == (0, 0)


async def test_a_client_that_consumes_nothing_holds_synthesis_within_the_lead(ctx, engine):
    s = stream(ctx, Encoders())  # max_lead_s = 1.0
    s.push(SENTENCES)
    s.end()
    assert len(ctx.submitted) == SUBMIT_AHEAD  # the window, not the whole text
    first = await s.next()
    assert isinstance(first, Sentence) and s.lead_s == pytest.approx(first.seconds)
    assert len(ctx.submitted) == SUBMIT_AHEAD + 1  # 0.76 s read, under the lead: one more
    await s.next()
    assert s.lead_s > 1.0 and len(ctx.submitted) == SUBMIT_AHEAD + 1  # over the lead: nothing new
    await until(lambda: len(engine.calls) == SUBMIT_AHEAD + 1)
    await idle(ctx)
    assert len(ctx.submitted) == SUBMIT_AHEAD + 2  # (+ the probe): still nothing of the stream
    s.acknowledge(s.lead_s)  # the client took it all
    assert s.lead_s == 0 and len(ctx.submitted) == SUBMIT_AHEAD + 3 and s.jobs_ahead == SUBMIT_AHEAD
    s.close()


async def test_reading_acknowledges_when_asked_and_every_sentence_arrives(ctx):
    s = stream(ctx, Encoders(), ack_on_read=True)
    s.push(SENTENCES)
    s.end()
    reads = 0
    while (event := await s.next()) is not None:
        reads += isinstance(event, Sentence)
        assert len(ctx.submitted) <= reads + SUBMIT_AHEAD
        assert s.lead_s <= 1.0
    assert reads == 12 and [t for t, _ in ctx.submitted] == [f"Word {i:02d} here." for i in range(12)]
    s.close()


async def test_close_cancels_running_and_queued_jobs_and_frees_the_encoder(ctx, engine):
    encoders = Encoders()
    s = stream(ctx, encoders)
    s.push("One. BLOCK here. Three. Four.")
    assert isinstance(await s.next(), Sentence)
    assert await asyncio.to_thread(engine.blocked.wait, 20)
    assert live(ctx) == (1, 1)
    s.close()
    assert encoders.made[0]._opus.closed and live(ctx) == (0, 0)
    await idle(ctx)  # BLOCK was cancelled and the queued ones dropped, or the probe could not run
    assert [t for t, _ in engine.calls] == ["One.", "BLOCK here.", "Idle."]
    assert await s.next() is None
    with pytest.raises(RuntimeError):
        s.push("more")


async def test_close_during_a_codec_call_frees_the_encoder_when_the_call_returns(ctx):
    gate = threading.Event()
    encoders = Encoders(block=gate)
    s = stream(ctx, encoders)
    s.push("Hello there. And")
    reader = asyncio.create_task(s.next())
    assert await asyncio.to_thread(encoders.entered.wait, 20)  # the pool thread is inside the encoder
    s.close()
    assert not encoders.made[0]._opus.closed  # never freed under a running call
    gate.set()
    await s.aclose()
    assert encoders.made[0]._opus.closed and live(ctx) == (0, 0)
    assert await reader is None


async def test_sentences_are_encoded_before_the_owner_reads_them(ctx):
    """Encoding is not left until the owner reads: a device's next sentence is ready the moment
    the one before it has been sent, however busy the shared pool is."""
    encoders = Encoders()
    s = stream(ctx, encoders)
    s.push("One. Two. Three.")
    s.end()
    await until(lambda: encoders.segments == 3)  # nothing was read yet
    assert [e.text for e in [await s.next() for _ in range(3)]] == ["One.", "Two.", "Three."]
    s.close()


async def test_codec_work_runs_on_the_shared_pool_not_on_the_event_loop(ctx):
    encoders = Encoders()
    s = stream(ctx, encoders)
    s.push("One. Two.")
    s.end()
    assert [type(e) for e in [e async for e in s]] == [Sentence, Sentence, Tail]
    assert encoders.threads and all(name.startswith("codec") for name in encoders.threads)
    assert threading.current_thread().name not in encoders.threads
    s.close()


async def test_an_engine_failure_loses_one_sentence_and_the_stream_goes_on(ctx):
    s = stream(ctx, Encoders())
    s.push("Good one. This will FAIL now. Good again.")
    s.end()
    events = [e async for e in s]
    assert [type(e) for e in events] == [Sentence, Failure, Sentence, Tail]
    failure = events[1]
    assert failure.index == 1 and isinstance(failure.error, EngineError) and not failure.refused
    s.close()


async def test_a_refusal_ends_the_stream_and_leaves_nothing_queued(tmp_path, engine):
    ctx = make_ctx(tmp_path, engine, max_queue=1)
    await ctx.executor.start()
    try:
        s = SpeechStream(ctx, SynthesisOptions(), owner="o", encoder=Encoders())
        with pytest.raises(ExecutorBusy):
            s.push("BLOCK one. Two. Three. Four.")
        failure = await s.next()
        assert isinstance(failure, Failure) and failure.refused and isinstance(failure.error, ExecutorBusy)
        assert await s.next() is None and not s.open
        s.close()
        assert (await ctx.executor.submit("After.", SynthesisOptions(), owner="x").result()).duration > 0
        assert [t for t, _ in engine.calls][-1] == "After."
    finally:
        await ctx.executor.close()


async def test_a_paused_stream_submits_nothing_until_resumed(ctx):
    s = stream(ctx, Encoders(), paused=True)
    s.push("Queued turn. Two.")
    s.end()
    assert ctx.submitted == [] and s.segments == ["Queued turn.", "Two."]
    s.resume()
    assert [t for t, _ in ctx.submitted] == ["Queued turn.", "Two."]
    assert [type(e) for e in [e async for e in s]] == [Sentence, Sentence, Tail]
    s.close()


async def test_priority_reaches_the_executor(ctx):
    s = stream(ctx, Encoders(), priority=BULK)
    s.push("Bulk one. Bulk two.")
    s.end()
    assert {p for _, p in ctx.submitted} == {BULK}
    s.close()


async def test_timers_flush_idle_text_and_end_a_forgotten_stream(ctx):
    s = stream(ctx, Encoders(), flush_after_s=0.05, end_after_s=0.2)
    s.push("an LLM that paused mid")
    first = await asyncio.wait_for(s.next(), 20)  # neither flush nor end was called
    assert isinstance(first, Sentence) and first.text == "an LLM that paused mid"
    assert isinstance(await asyncio.wait_for(s.next(), 20), Tail) and s.ended  # ended by its idle timer
    s.close()
