"""Batched synthesis: a batch of many in the staged pipeline equals batches of one (``synthesize``) on
the tiny checkpoint, and BatchingExecutor forms fair batches behind the same contract as
SerialExecutor (bounded queue, busy, per-job and per-owner cancellation, close, the metrics hook).

Engine equality: each batch item draws from its own generator, in the order a run alone draws
(GPT sampling then CFM noise, piece by piece), so item i of a batch equals item i run alone with
the same seed (codes exactly, audio to 1e-4), in greedy and in the default beam_sample mode. The
official goldens (test_indextts2_golden.py) hold the run alone to the official code."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import realtime_tts.engine.scheduler as scheduler
from realtime_tts.engine.base import (Cancelled, CancelToken, Emotion, Engine, EngineError, SegmentAudio,
                                      SynthesisOptions, Voice)
from realtime_tts.engine.batching import BatchingExecutor
from realtime_tts.engine.executor import ExecutorBusy, ExecutorClosed
from realtime_tts.engine.indextts2 import IndexTTS2Engine
from realtime_tts.model.gpt import CodeOverride, SamplingParams
from realtime_tts.model.gpt.decode import DecodePool

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
SPEAKER = Voice("speaker", FIX / "speaker_24k.wav", "c3" * 32)
OTHER = Voice("other", FIX / "emotion_16k.wav", "e6" * 32)  # another voice, another prompt length
# the random tiny GPT rarely stops by itself: per-text budgets (4 + 4 per text token) give rows of
# different lengths
GREEDY = SamplingParams(mode="greedy", max_mel_tokens=40, runaway_base=4, runaway_per_token=4)
HOP = 256


@pytest.fixture(scope="module")
def engine() -> IndexTTS2Engine:
    return IndexTTS2Engine.from_checkpoints(FIX / "checkpoints", device="cpu", dtype="fp32", cfm_steps=3,
                                            cache_dir=None, sampling=GREEDY)


@pytest.fixture
def codes_seen(monkeypatch):
    """Every code row the engine's GPT produces (alone or batched), in the order they complete."""
    seen: list[list[int]] = []
    real = DecodePool.step

    def recording(self):
        done = real(self)
        seen.extend(r.codes.tolist() for r in done)
        return done

    monkeypatch.setattr(DecodePool, "step", recording)
    return seen


ITEMS = [
    ("Hello there.", SynthesisOptions(voice=SPEAKER)),
    ("Good day. See you.", SynthesisOptions(voice=OTHER)),  # 2 pieces at 8 tokens per piece
    ("Fine, thanks.", SynthesisOptions(voice=SPEAKER, speed=1.5)),  # its own S2M call
    ("Okay.", SynthesisOptions(voice=OTHER, emotion=Emotion(vector=(0, 0, 0.5, 0, 0, 0, 0, 0.2)))),
]


def serial(engine, items, seeds, sampling=None):
    """Item i run alone (a batch of one) with a generator seeded ``seeds[i]``."""
    return [engine.synthesize(text, opts, CancelToken(), generator=torch.Generator().manual_seed(s), sampling=sampling)
            for (text, opts), s in zip(items, seeds)]


def codes(engine, counts, exact=False):
    """The engine's sampling with a forced code count per text (``exact``: the stop code forbidden;
    otherwise only the budget)."""
    return replace(engine.sampling, override=CodeOverride(counts if isinstance(counts, int) else counts.get,
                                                          exact=exact))


def batched(engine, items, seeds, tokens=None):
    """One batch; item i draws from a generator seeded ``seeds[i]``."""
    tokens = tokens or [CancelToken() for _ in items]
    return engine.run_batch([(t, o, c) for (t, o), c in zip(items, tokens)],
                            generators=[torch.Generator().manual_seed(s) for s in seeds])


def assert_same_audio(got, want):
    assert isinstance(got, SegmentAudio), got
    assert got.pcm.shape == want.pcm.shape and got.sample_rate == want.sample_rate
    np.testing.assert_allclose(got.pcm, want.pcm, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- engine


def test_batch_equals_serial_runs(engine, codes_seen):
    engine.max_segment_tokens = 8  # the long item splits into pieces: more rows than items
    try:
        assert len(engine.text_ids(ITEMS[1][0])) == 2
        want = serial(engine, ITEMS, seeds=[3, 4, 5, 6])
        serial_codes = list(codes_seen)
        codes_seen.clear()
        got = batched(engine, ITEMS, seeds=[3, 4, 5, 6])
    finally:
        engine.max_segment_tokens = 120
    # the second piece re-entered the decode after the first; the same codes exactly
    assert sorted(codes_seen) == sorted(serial_codes)
    assert len({len(c) for c in serial_codes}) > 1  # rows of different lengths were batched
    for g, w in zip(got, want):
        assert_same_audio(g, w)
        assert set(g.stages) == {"conditioning", "gpt_prefill", "gpt", "gpt_latent", "s2mel", "vocoder"}


@pytest.mark.parametrize("mode", ["greedy", "beam_sample"])
def test_segments_joining_a_running_batch_equal_their_runs_alone(engine, codes_seen, mode):
    """Continuous batching: segments join the decode while others are mid-way, wait for a free
    block, and a 2-piece segment's second piece re-enters the pool; each equals its run alone."""
    eng = engine if mode == "greedy" else sampled_engine(engine, mode)
    eng.max_segment_tokens = 8
    seeds = [21, 22, 23, 24]
    try:
        want = serial(eng, ITEMS, seeds)
        serial_codes = list(codes_seen)
        codes_seen.clear()
        batch = eng.open_batch(2)  # fewer blocks than segments
        joins = {0: [0], 3: [1], 5: [2, 3]}  # step -> segments that arrive then
        finished, step, queued = {}, 0, []
        while len(finished) < len(ITEMS):
            queued += joins.get(step, [])
            while queued and batch.free:
                i = queued.pop(0)
                batch.add(i, *ITEMS[i], CancelToken(), generator=torch.Generator().manual_seed(seeds[i]))
            finished.update(batch.step())
            step += 1
    finally:
        eng.max_segment_tokens = 120
    assert sorted(codes_seen) == sorted(serial_codes) and len(codes_seen) == 5
    for i, w in enumerate(want):
        assert_same_audio(finished[i], w)
        assert set(finished[i].stages) == {"conditioning", "gpt_prefill", "gpt", "gpt_latent", "s2mel", "vocoder"}


def test_bulk_renders_interleave_with_decoding_urgent_ones_run_at_once(engine, monkeypatch):
    """A complete piece starts rendering when it is urgent, or once it has waited ``render_wait``
    steps for company; a bulk render's CFM steps then run one per engine step while the decode
    goes on, an urgent render's all at once."""
    starts: list[int] = []  # the step at which each render started
    decoding: list[int] = []  # the step of every GPT decode step
    # a long segment keeps the decode busy while the short ones complete
    batch = engine.open_batch(3, render_wait=4, sampling=codes(engine, {"Good day. See you.": 30, ITEMS[3][0]: 5}))
    real_start, real_step = batch.runner._start, DecodePool.step
    monkeypatch.setattr(batch.runner, "_start", lambda groups, out: (starts.append(batch.steps), real_start(groups, out))[1])

    def counting(self):
        decoding.append(batch.steps)
        return real_step(self)

    monkeypatch.setattr(DecodePool, "step", counting)
    batch.add("long", "Good day. See you.", SynthesisOptions(voice=OTHER), CancelToken())
    batch.add("bulk", *ITEMS[3], CancelToken())
    finished = {}
    while "bulk" not in finished:
        finished.update(batch.step())
    assert starts == [4 + 4]  # its codes completed at step 4, then it waited render_wait steps
    cfm = engine.cfm_steps
    assert batch.steps == 8 + cfm  # its CFM steps ran at steps 8, 9, 10 ...
    assert set(range(8, 8 + cfm)) <= set(decoding)  # ... each beside a GPT decode step
    batch.add("urgent", *ITEMS[3], CancelToken(), urgent=True)
    first = batch.steps
    while "urgent" not in finished:
        finished.update(batch.step())
    # urgent: it starts rendering the step its codes complete and renders to the end there
    assert starts[-1] == first + 4 and batch.steps == first + 5 and len(batch.runner.pool) == 1
    while len(batch):
        finished.update(batch.step())
    assert all(isinstance(finished[k], SegmentAudio) for k in ("long", "bulk", "urgent"))
    want = engine.synthesize(*ITEMS[3], CancelToken(), generator=torch.Generator(), sampling=codes(engine, 5))
    assert finished["bulk"].pcm.shape == want.pcm.shape


def test_s2m_solves_follow_the_length_buckets(engine, monkeypatch):
    """One S2M call per length bucket (engine/buckets.py) within a speed; any grouping gives the same audio."""
    sizes: list[int] = []
    real = engine.models.s2mel.generate_steps

    def spy(s_infer, *args, **kwargs):
        sizes.append(s_infer.size(0))
        return real(s_infer, *args, **kwargs)

    monkeypatch.setattr(engine.models.s2mel, "generate_steps", spy)
    items = [ITEMS[0], ITEMS[1], ITEMS[3]]  # one speed
    want = serial(engine, items, seeds=[3, 4, 6])
    for grouping, expected in ((lambda n: [[i] for i in reversed(range(n))], [1, 1, 1]),
                               (lambda n: [[0, 2], [1]], [2, 1]),
                               (lambda n: [list(range(n))], [3])):
        monkeypatch.setattr(scheduler, "length_buckets", lambda frames, g=grouping: g(len(frames)))
        sizes.clear()
        batch = engine.open_batch(3, render_wait=10**6)  # every piece renders in one pass at the end
        for i, ((text, opts), seed) in enumerate(zip(items, [3, 4, 6])):
            batch.add(i, text, opts, CancelToken(), generator=torch.Generator().manual_seed(seed))
        finished = {}
        while len(batch):
            finished.update(batch.step())
        got = [finished[i] for i in range(3)]
        assert sizes == expected
        for g, w in zip(got, want):
            assert_same_audio(g, w)


def test_forced_code_counts_in_a_batch(engine, codes_seen):
    """Benchmarks force per-segment code counts; a batch does it like ``run`` (same codes, same audio)."""
    items = [ITEMS[0], ITEMS[3]]
    bias = engine.models.gpt.mel_head.bias.clone()
    forced = codes(engine, {items[0][0]: 7, items[1][0]: 13}, exact=True)
    want = [serial(engine, [item], [s], sampling=replace(engine.sampling, override=CodeOverride(n)))[0]
            for item, s, n in zip(items, [3, 4], [7, 13])]
    codes_seen.clear()
    got = engine.run_batch([(t, o, CancelToken()) for t, o in items], sampling=forced,
                           generators=[torch.Generator().manual_seed(s) for s in [3, 4]])
    assert sorted(len(c) for c in codes_seen) == [7, 13]
    for g, w in zip(got, want):
        assert_same_audio(g, w)
    assert torch.equal(engine.models.gpt.mel_head.bias, bias)  # the stop/start suppression is undone
    with pytest.raises(ValueError, match="forced code count"):
        CodeOverride(0)
    ids = [engine.text_ids(items[0][0])[0]]  # a per-text count needs the text
    (err,) = engine.run_batch([(ids, items[0][1], CancelToken())], sampling=forced)
    assert isinstance(err, ValueError) and "needs the text" in str(err)


def pool_steps(monkeypatch, at_step=None):
    """Records the requests in the pool at every decode step; calls ``at_step[n]()`` before step n."""
    sizes: list[int] = []
    real = DecodePool.step

    def spy(self):
        if at_step and len(sizes) in at_step:
            at_step[len(sizes)]()
        sizes.append(len(self))
        return real(self)

    monkeypatch.setattr(DecodePool, "step", spy)
    return sizes


def test_cancelling_one_item_spares_the_others(engine, monkeypatch):
    items = ITEMS[:3]
    tokens = [CancelToken() for _ in items]
    sizes = pool_steps(monkeypatch, {2: tokens[1].cancel})  # the client hangs up during the GPT decode
    got = batched(engine, items, seeds=[5, 6, 7], tokens=tokens)
    assert isinstance(got[1], Cancelled)
    assert sizes[:4] == [3, 3, 3, 2]  # it left the decode at the next step
    for g, w in zip([got[0], got[2]], serial(engine, [items[0], items[2]], seeds=[5, 7])):
        assert_same_audio(g, w)


def test_cancelling_every_item_ends_the_batch(engine, monkeypatch):
    tokens = [CancelToken(), CancelToken()]
    sizes = pool_steps(monkeypatch, {3: lambda: [t.cancel() for t in tokens]})
    got = batched(engine, ITEMS[:2], seeds=[0, 1], tokens=tokens)
    assert len(sizes) == 4 and all(isinstance(r, Cancelled) for r in got)


def test_items_cancelled_before_the_batch_never_reach_the_gpt(engine, codes_seen):
    tokens = [CancelToken(), CancelToken()]
    for t in tokens:
        t.cancel()
    got = batched(engine, ITEMS[:2], seeds=[0, 1], tokens=tokens)
    assert all(isinstance(r, Cancelled) for r in got) and codes_seen == []


def test_bad_items_fail_alone(engine):
    missing = Voice("gone", FIX / "no-such.wav", "f7" * 32)
    items = [(" ", SynthesisOptions(voice=SPEAKER)), ITEMS[0],
             ("Hello.", SynthesisOptions(voice=missing)), ("Hello.", SynthesisOptions())]
    got = batched(engine, items, seeds=[1, 2, 3, 4])
    assert isinstance(got[0], EngineError) and "empty text" in str(got[0])
    assert_same_audio(got[1], serial(engine, [ITEMS[0]], seeds=[2])[0])
    assert isinstance(got[2], EngineError) and "reference voice" in str(got[2])
    assert isinstance(got[3], EngineError) and "reference voice" in str(got[3])


@pytest.mark.parametrize("when", ["start", "mid-solve"])
def test_a_failing_render_retries_pieces_alone(engine, monkeypatch, when):
    real = engine.models.s2mel.generate_steps

    def fails_on_batches(s_infer, *args, **kwargs):
        steps = real(s_infer, *args, **kwargs)
        if s_infer.size(0) == 1:
            return steps
        if when == "start":
            raise RuntimeError("out of memory")  # e.g. a batch too big for the GPU

        def failing():
            next(steps)
            yield
            raise RuntimeError("out of memory")

        return failing()

    monkeypatch.setattr(engine.models.s2mel, "generate_steps", fails_on_batches)
    items = [ITEMS[0], ITEMS[3]]
    got = engine.run_batch([(t, o, CancelToken()) for t, o in items], sampling=codes(engine, 9),
                           generators=[torch.Generator().manual_seed(s) for s in [2, 3]])
    want = serial(engine, items, [2, 3], sampling=codes(engine, 9))
    for g, w in zip(got, want):
        assert_same_audio(g, w)


def test_a_failing_decode_step_fails_the_segments_in_it_and_the_batch_goes_on(engine, monkeypatch):
    real = DecodePool.step
    calls = []

    def fails_once(self):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(self)

    monkeypatch.setattr(DecodePool, "step", fails_once)
    batch = engine.open_batch(2)
    batch.add("a", *ITEMS[0], CancelToken(), generator=torch.Generator().manual_seed(1))
    finished = dict(batch.step() + batch.step())
    assert isinstance(finished["a"], RuntimeError) and "illegal memory" in str(finished["a"])
    assert len(batch) == 0 and batch.free == 2
    batch.add("b", *ITEMS[3], CancelToken(), generator=torch.Generator().manual_seed(4))
    while len(batch):
        finished.update(batch.step())
    assert_same_audio(finished["b"], serial(engine, [ITEMS[3]], seeds=[4])[0])


def sampled_engine(engine, mode="beam_sample", seed=None) -> IndexTTS2Engine:
    """The fixture's weights and conditioning, sampled decoding with per-text budgets."""
    e = IndexTTS2Engine(engine.models, sampling=replace(GREEDY, mode=mode), cfm_steps=3,
                        fingerprint=engine.fingerprint, seed=seed)
    # same weights: reuse the conditioning
    e.conditioner.voices, e.conditioner.emotions = engine.conditioner.voices, engine.conditioner.emotions
    return e


@pytest.mark.parametrize("mode", ["beam_sample", "sample"])
def test_sampled_batch_equals_serial_runs(engine, codes_seen, mode):
    eng = sampled_engine(engine, mode)
    assert eng.sampling.num_beams == 3
    eng.max_segment_tokens = 8  # a 2-piece item: its second piece runs in a second GPT wave
    seeds = [4, 40, 400, 4000]
    want = serial(eng, ITEMS, seeds)
    serial_codes = list(codes_seen)
    codes_seen.clear()
    got = batched(eng, ITEMS, seeds)
    assert len(serial_codes) == 5 and len({len(c) for c in serial_codes}) > 1  # rows stop at different steps
    assert sorted(codes_seen) == sorted(serial_codes)  # the same codes exactly
    for g, w in zip(got, want):
        assert_same_audio(g, w)
    # the generators matter: other seeds give other samples
    codes_seen.clear()
    batched(eng, ITEMS, [s + 1 for s in seeds])
    assert sorted(codes_seen) != sorted(serial_codes)


def test_seeded_synthesize_batch_equals_serial_synthesize(engine):
    """Call n of a seeded engine draws from seed + n, alone or inside a batch (call 0: the seed
    itself, which the official-golden test relies on)."""
    items = [ITEMS[0], ITEMS[2], ITEMS[3]]
    alone = sampled_engine(engine, seed=9)
    want = [alone.synthesize(t, o, CancelToken()) for t, o in items]
    assert_same_audio(want[0], serial(alone, items[:1], [9])[0])
    together = sampled_engine(engine, seed=9)
    got = together.synthesize_batch([(t, o, CancelToken()) for t, o in items])
    for g, w in zip(got, want):
        assert_same_audio(g, w)
    # the next call goes on from seed + 3 either way
    assert_same_audio(alone.synthesize(*ITEMS[1], CancelToken()), together.synthesize(*ITEMS[1], CancelToken()))


def test_run_batch_needs_one_generator_per_item(engine):
    with pytest.raises(ValueError, match="one torch.Generator per item"):
        engine.run_batch([(t, o, CancelToken()) for t, o in ITEMS[:2]], generators=[torch.Generator()])


def test_default_synthesize_batch_loops_and_isolates_errors():
    class Plain(Engine):
        def synthesize(self, text, options, cancel):
            if text == "bad":
                raise EngineError("bad text")
            return SegmentAudio(np.zeros(len(text), np.float32), self.sample_rate)

    gone = CancelToken()
    gone.cancel()
    tokens = [CancelToken(), CancelToken(), gone, CancelToken()]
    out = Plain().synthesize_batch([(t, SynthesisOptions(), c) for t, c in zip(["ab", "bad", "abc", "abcd"], tokens)])
    assert [type(r).__name__ for r in out] == ["SegmentAudio", "EngineError", "Cancelled", "SegmentAudio"]
    assert len(out[3].pcm) == 4


# ----------------------------------------------------------------------------- executor


OPTS = SynthesisOptions()


class BatchRecorder(Engine):
    """Records every batch. A batch with a "wait" text holds the worker until ``release`` (cancelled
    items leave it early); "boom" texts fail; "crash" fails the whole call."""

    name = "recorder"
    sample_rate = 16000

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def synthesize(self, text, options, cancel):  # pragma: no cover - the batch path is used
        raise AssertionError("BatchingExecutor must call synthesize_batch")

    def synthesize_batch(self, items):
        texts = [t for t, _, _ in items]
        self.batches.append(texts)
        if "crash" in texts:
            raise RuntimeError("the GPU fell over")
        waiting = [i for i, t in enumerate(texts) if t.startswith("wait")]
        if waiting:
            self.started.set()
            while not self.release.is_set() and not all(items[i][2].cancelled for i in waiting):
                time.sleep(0.002)
        out = []
        for text, _, cancel in items:
            if cancel.cancelled:
                out.append(Cancelled())
            elif text.startswith("boom"):
                out.append(EngineError(f"cannot say {text!r}"))
            else:
                out.append(SegmentAudio(np.full(len(text) * 10, 0.1, np.float32), self.sample_rate))
        return out


@pytest.fixture
async def setup():
    engine = BatchRecorder()
    executor = BatchingExecutor(engine, max_queue=8, max_batch=4)
    await executor.start()
    yield engine, executor
    engine.release.set()
    await executor.close()


async def running(engine) -> None:
    assert await asyncio.to_thread(engine.started.wait, 10), "the gate batch never started"


async def test_batches_form_and_owners_take_turns(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="gate")
    await running(engine)
    jobs = [executor.submit(t, OPTS, owner=t[0]) for t in ("A1", "A2", "A3", "B1", "B2", "C1")]
    assert executor.queue_depth == 6
    engine.release.set()
    await gate.result()
    for job in jobs:
        assert len((await job.result()).pcm) == 20
    # every owner's head job first (C1 before A2), FIFO within an owner, at most 4 per batch
    assert engine.batches == [["wait"], ["A1", "B1", "C1", "A2"], ["B2", "A3"]]
    assert executor.queue_depth == 0


async def test_cancel_one_job_of_a_running_batch(setup):
    engine, executor = setup
    a = executor.submit("wait a", OPTS, owner="a")
    b = executor.submit("wait b", OPTS, owner="b")
    c = executor.submit("c", OPTS, owner="c")
    await running(engine)
    assert engine.batches == [["wait a", "wait b", "c"]]
    a.cancel()
    with pytest.raises(Cancelled):
        await a.result()
    engine.release.set()
    assert len((await b.result()).pcm) == 60 and len((await c.result()).pcm) == 10


async def test_cancel_owner_reaches_queued_and_running_jobs(setup):
    engine, executor = setup
    x_running = executor.submit("wait x", OPTS, owner="x")
    await running(engine)
    x_queued = [executor.submit(f"x{i}", OPTS, owner="x") for i in range(3)]
    y = executor.submit("y", OPTS, owner="y")
    assert executor.cancel_owner("x") == 4
    for job in [x_running, *x_queued]:
        with pytest.raises(Cancelled):
            await job.result()
    await y.result()  # the gate left early: its only waiting item was cancelled
    assert engine.batches == [["wait x"], ["y"]]


async def test_busy_when_the_queue_is_full(setup):
    engine, executor = setup
    gate = executor.submit("wait", OPTS, owner="a")
    await running(engine)  # the running batch does not count against the queue
    queued = [executor.submit(f"q{i}", OPTS, owner=f"o{i % 3}") for i in range(8)]
    with pytest.raises(ExecutorBusy, match="limit 8"):
        executor.submit("one too many", OPTS, owner="z")
    queued[0].cancel()  # a cancelled job waiting in line frees its place
    executor.submit("room again", OPTS, owner="z")
    engine.release.set()
    await gate.result()
    for job in queued[1:]:
        await job.result()


async def test_failures_stay_per_job_and_the_hook_sees_each(setup):
    engine, executor = setup
    seen = []
    executor.on_segment_done = lambda job, result, seconds: seen.append((job.text, type(result).__name__))
    gate = executor.submit("wait", OPTS, owner="g")
    await running(engine)
    bad = executor.submit("boom", OPTS, owner="a")
    good = executor.submit("fine", OPTS, owner="b")
    engine.release.set()
    await gate.result()
    with pytest.raises(EngineError, match="boom"):
        await bad.result()
    await good.result()
    crash = executor.submit("crash", OPTS, owner="a")
    with pytest.raises(RuntimeError, match="fell over"):
        await crash.result()
    await executor.submit("still alive", OPTS, owner="a").result()
    assert seen == [("wait", "SegmentAudio"), ("boom", "EngineError"), ("fine", "SegmentAudio"),
                    ("crash", "RuntimeError"), ("still alive", "SegmentAudio")]


async def test_close_cancels_everything_and_refuses_new_work():
    engine = BatchRecorder()
    executor = BatchingExecutor(engine, max_queue=8, max_batch=2)
    await executor.start()
    running_jobs = [executor.submit("wait 1", OPTS, owner="a"), executor.submit("wait 2", OPTS, owner="b")]
    await running(engine)
    queued = [executor.submit(f"q{i}", OPTS, owner="c") for i in range(3)]
    await executor.close()
    for job in running_jobs + queued:
        with pytest.raises(Cancelled):
            await job.result()
    assert executor.queue_depth == 0 and engine.batches == [["wait 1", "wait 2"]]
    with pytest.raises(ExecutorClosed):
        executor.submit("late", OPTS, owner="c")
    assert not any(t.name == "engine-worker" and t.is_alive() for t in threading.enumerate())


async def test_max_batch_one_runs_like_the_serial_executor():
    engine = BatchRecorder()
    executor = BatchingExecutor(engine, max_queue=8, max_batch=1)
    await executor.start()
    try:
        gate = executor.submit("wait", OPTS, owner="gate")
        await running(engine)
        jobs = [executor.submit(t, OPTS, owner=t[0]) for t in ("A1", "A2", "A3", "B1", "B2", "C1")]
        engine.release.set()
        await gate.result()
        for job in jobs:
            await job.result()
    finally:
        engine.release.set()
        await executor.close()
    assert engine.batches == [["wait"], ["A1"], ["B1"], ["C1"], ["A2"], ["B2"], ["A3"]]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        BatchingExecutor(None, max_batch=0)


# ----------------------------------------------------------------------------- executor, continuous


async def test_continuous_executor_jobs_join_a_running_decode(engine, monkeypatch):
    """With IndexTTS2 the executor drives a continuous batch: a job submitted while another decodes
    joins it at the next step, and every job's audio equals its synthesize call alone (seed + n)."""
    eng = sampled_engine(engine, seed=30)
    want = [sampled_engine(engine, seed=30 + n).synthesize(t, o, CancelToken()) for n, (t, o) in enumerate(ITEMS)]
    sizes = pool_steps(monkeypatch)
    executor = BatchingExecutor(eng, max_queue=8, max_batch=2)
    await executor.start()
    try:
        first = executor.submit(*ITEMS[0], owner="a")
        while not sizes:  # the first job is decoding
            await asyncio.sleep(0.001)
        rest = [executor.submit(*item, owner=f"o{n}") for n, item in enumerate(ITEMS[1:])]
        got = [await job.result() for job in [first, *rest]]
    finally:
        await executor.close()
    assert sizes[0] == 1 and max(sizes) == 2  # joined mid-decode, never more than max_batch
    for g, w in zip(got, want):
        assert_same_audio(g, w)


async def test_continuous_executor_cancel_bad_input_and_close(engine):
    executor = BatchingExecutor(engine, max_queue=8, max_batch=2)
    await executor.start()
    seen = []
    executor.on_segment_done = lambda job, result, seconds: seen.append((job.owner, type(result).__name__))
    try:
        bad = executor.submit("Hello.", SynthesisOptions(voice=Voice("gone", FIX / "no-such.wav", "f7" * 32)),
                              owner="bad")
        long = executor.submit(*ITEMS[1], owner="long")
        good = executor.submit(*ITEMS[3], owner="good")
        with pytest.raises(EngineError, match="reference voice"):
            await bad.result()
        long.cancel()
        with pytest.raises(Cancelled):
            await long.result()
        assert isinstance(await good.result(), SegmentAudio)
        left = executor.submit(*ITEMS[1], owner="left")
    finally:
        await executor.close()
    with pytest.raises(Cancelled):
        await left.result()
    with pytest.raises(ExecutorClosed):
        executor.submit("late", OPTS, owner="x")
    assert ("bad", "EngineError") in seen and ("good", "SegmentAudio") in seen
