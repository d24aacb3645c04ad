"""The server hands memory back after a busy spell (server/memory.py)."""

import asyncio

from realtime_tts.server.memory import malloc_trim, trim_when_quiet


async def test_trims_once_after_each_busy_spell():
    streams, trims = [0], []
    task = asyncio.create_task(trim_when_quiet(lambda: streams[0], interval_s=0.01,
                                               trim=lambda pad: trims.append(pad) or 1))

    async def then(n: int, expect: list) -> list:
        """Set the open streams, give the checker time, and wait (bounded) for ``expect``."""
        streams[0] = n
        await asyncio.sleep(0.08)
        deadline = asyncio.get_running_loop().time() + 20  # the release's gc pass may take a while
        while trims != expect and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return list(trims)

    try:
        assert await then(0, []) == []  # quiet from the start: nothing to hand back
        assert await then(8, []) == []  # never while the load holds
        assert await then(3, []) == []  # more than a quarter of the peak still open
        assert await then(1, [0]) == [0]  # the spell ended (one long-lived stream stays): one trim
        assert await then(1, [0]) == [0]  # and not again until the next spell
        assert await then(8, [0]) == [0]
        assert await then(0, [0, 0]) == [0, 0]
        assert await then(3, [0, 0]) == [0, 0]  # a spell too small to be worth a trim
        assert await then(0, [0, 0]) == [0, 0]
    finally:
        task.cancel()


def test_glibc_trim_is_found_on_linux():
    trim = malloc_trim()
    assert trim is not None and trim(0) in (0, 1)


async def test_the_release_after_a_spell_collects_reference_cycles_first():
    """Garbage in reference cycles (connection objects, among others) holds memory until a full
    collection, which a quiet server may not make for a long time: the release makes one."""
    import gc
    import weakref

    from realtime_tts.server.memory import release

    class Node:
        pass

    gc.disable()  # no automatic pass may do it for us
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        a.payload = bytearray(1 << 20)
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: reference counting alone never frees it
        trims = []
        release(trims.append)
        assert gone() is None and trims == [0]
    finally:
        gc.enable()
