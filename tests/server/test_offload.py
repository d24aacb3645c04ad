"""The codec pool (server/offload.py): earliest deadline first, withdrawn calls never run,
bounded threads that end when idle, shutdown, errors and the wait hook."""

import threading
import time

import pytest

from realtime_tts.server.offload import CodecPool


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("codec-")]


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


@pytest.fixture
def pool():
    pool = CodecPool(1, idle_exit_s=30)
    yield pool
    pool.shutdown()


def occupy(pool: CodecPool) -> threading.Event:
    """Hold the pool's one thread until the returned event is set."""
    gate, entered = threading.Event(), threading.Event()
    pool.submit(lambda: (entered.set(), gate.wait(30)))
    assert entered.wait(20)
    return gate


def test_calls_run_earliest_deadline_first(pool):
    gate = occupy(pool)
    now, ran = time.monotonic(), []
    futures = [pool.submit(ran.append, name, deadline=deadline) for name, deadline in
               [("in 3 s", now + 3), ("due now", None), ("overdue", now - 1), ("in 1 s", now + 1)]]
    gate.set()
    for f in futures:
        f.result(20)
    assert ran == ["overdue", "due now", "in 1 s", "in 3 s"]


def test_equal_deadlines_run_in_submission_order(pool):
    gate = occupy(pool)
    when, ran = time.monotonic() + 5, []
    futures = [pool.submit(ran.append, i, deadline=when) for i in range(20)]
    gate.set()
    for f in futures:
        f.result(20)
    assert ran == list(range(20))


def test_a_call_withdrawn_before_it_starts_never_runs(pool):
    gate = occupy(pool)
    ran = []
    withdrawn = pool.submit(ran.append, "withdrawn")
    kept = pool.submit(ran.append, "kept")
    assert withdrawn.cancel() and pool.waiting == 2
    gate.set()
    kept.result(20)
    assert ran == ["kept"]


def test_results_errors_and_the_wait_hook():
    waits = []
    pool = CodecPool(2, on_wait=waits.append)
    try:
        assert pool.submit(sum, [1, 2, 3]).result(20) == 6
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(20)
        assert len(waits) == 2 and all(w >= 0 for w in waits)
    finally:
        pool.shutdown()


async def test_run_awaits_the_call():
    pool = CodecPool(1)
    try:
        assert await pool.run(lambda a, b=0: a + b, 2, b=3) == 5
        assert threading.current_thread() not in pool_threads()
    finally:
        pool.shutdown()


def test_threads_are_bounded_start_on_demand_and_end_when_idle():
    others = set(pool_threads())  # other tests' pools may still be winding down
    mine = lambda: [t for t in pool_threads() if t not in others]  # noqa: E731
    pool = CodecPool(3, idle_exit_s=0.2)
    try:
        gate, started = threading.Event(), threading.Semaphore(0)
        futures = [pool.submit(lambda: (started.release(), gate.wait(30))) for _ in range(10)]
        for _ in range(3):
            assert started.acquire(timeout=20)
        assert len(mine()) == 3 and pool.waiting == 7  # never more threads than asked for
        gate.set()
        for f in futures:
            f.result(20)
        wait_until(lambda: mine() == [])  # idle: the threads end
        assert pool.submit(lambda: 7).result(20) == 7  # and work starts one again
    finally:
        pool.shutdown()


def test_shutdown_cancels_waiting_calls_and_a_later_submit_starts_afresh(pool):
    gate = occupy(pool)
    waiting = pool.submit(lambda: "never")
    pool.shutdown()
    assert waiting.cancelled()
    gate.set()
    assert pool.submit(lambda: "again").result(20) == "again"
