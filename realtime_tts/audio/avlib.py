"""PyAV, imported once, with FFmpeg's automatic threading turned off.

Every PyAV encoder converts its input through a small filter graph (sample format and frame
size), and FFmpeg gives each graph, and each codec left on automatic threading, a pool of
CPU-count + 1 native threads. The server runs one encoder per live stream, so those pools
multiplied native threads by sessions (hundreds on a 2-core box, thousands on a big one) for
work that takes microseconds per frame. Our encoders and decoders run on the server's one
bounded codec pool instead, so FFmpeg is told the machine has one CPU: no graph or codec
creates threads of its own (``av_cpu_force_count`` is FFmpeg's documented override).

Import ``av`` from here, never directly, so the override is in place before the first codec.
"""

from __future__ import annotations

import ctypes
import glob
import os

import av

__all__ = ["av", "ffmpeg_cpu_count"]


def _libavutil() -> ctypes.CDLL | None:
    libs_dir = os.path.dirname(av.__file__) + ".libs"  # PyAV wheels bundle FFmpeg here
    for path in sorted(glob.glob(os.path.join(libs_dir, "libavutil*.so*"))) + ["libavutil.so"]:
        try:
            lib = ctypes.CDLL(path)  # the library PyAV already loaded: the same handle
        except OSError:
            continue
        lib.av_cpu_count.restype = ctypes.c_int
        lib.av_cpu_force_count.argtypes = [ctypes.c_int]
        return lib
    return None


_LIB = _libavutil()
if _LIB is not None:
    _LIB.av_cpu_force_count(1)


def ffmpeg_cpu_count() -> int | None:
    """What FFmpeg believes the CPU count is (1 once the override is in place; None if unknown)."""
    return None if _LIB is None else int(_LIB.av_cpu_count())
