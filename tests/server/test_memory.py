"""The server hands memory back after a busy spell (server/memory.py)."""

import asyncio

from realtime_tts.server.memory import malloc_trim, trim_when_quiet


async def test_trims_once_after_each_busy_spell():
    streams, trims = [0], []
    task = asyncio.create_task(trim_when_quiet(lambda: streams[0], interval_s=0.01,
                                               trim=lambda pad: trims.append(pad) or 1))

    async def then(n: int) -> list:
        streams[0] = n
        await asyncio.sleep(0.08)
        return list(trims)

    try:
        assert await then(0) == []  # quiet from the start: nothing to hand back
        assert await then(8) == []  # never while the load holds
        assert await then(3) == []  # more than a quarter of the peak still open
        assert await then(1) == [0]  # the spell ended (one long-lived stream stays): one trim
        assert await then(1) == [0]  # and not again until the next spell
        assert await then(8) == [0]
        assert await then(0) == [0, 0]
        assert await then(3) == [0, 0]  # a spell too small to be worth a trim
        assert await then(0) == [0, 0]
    finally:
        task.cancel()


def test_glibc_trim_is_found_on_linux():
    trim = malloc_trim()
    assert trim is not None and trim(0) in (0, 1)
