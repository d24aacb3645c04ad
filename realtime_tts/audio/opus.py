"""Raw Opus packets for streaming (xiaozhi downlink, the native socket, Ogg Opus pages).

Encoding goes through PyAV's ``libopus`` encoder. What ffmpeg's wrapper exposes (and so what
we can set): ``bit_rate``, ``compression_level`` (= Opus complexity 0-10), ``application``
(``voip``/``audio``/``lowdelay``), ``frame_duration`` (ms), ``vbr`` (``off``/``on``/
``constrained``), ``packet_loss``, ``fec``, ``dtx``. It has no ``OPUS_SET_SIGNAL``, so the
"voice" signal hint that xiaozhi-esp32-server pairs with ``audio`` is not available; our
default is ``voip``, libopus's speech-tuned mode. ffmpeg also ignores unknown options
silently, which is why the options used here are checked by tests for their effect.

Decoding uses the same bundled libopus through ctypes: ffmpeg's Opus decoders always output
48 kHz, while a device (and our tests) decode at the stream rate, 60 ms -> exactly 1440
samples at 24 kHz.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading

import numpy as np

from .avlib import av

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_MS = (10, 20, 40, 60)
APPLICATIONS = ("voip", "audio", "lowdelay")


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus needs a sample rate in {OPUS_RATES}, got {sample_rate}")


class OpusEncoder:
    """Mono float32 PCM -> one raw Opus packet per full frame of exactly ``frame_ms``.

    Keep one encoder per stream for its whole life (no reset between sentences: the codec
    state carries across the join). ``flush`` zero-pads the last partial frame and leaves
    the encoder usable; ``reset`` drops all state (after a barge-in).
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        frame_ms: int = 60,
        bitrate: int = 24000,
        complexity: int = 10,
        application: str = "voip",
    ) -> None:
        _check_rate(sample_rate)
        if frame_ms not in FRAME_MS:
            raise ValueError(f"Opus frame_ms must be one of {FRAME_MS}, got {frame_ms}")
        if not 6000 <= bitrate <= 510000:
            raise ValueError(f"Opus bitrate must be within 6000-510000 b/s, got {bitrate}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity must be within 0-10, got {complexity}")
        if application not in APPLICATIONS:
            raise ValueError(f"Opus application must be one of {APPLICATIONS}, got {application!r}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.bitrate = bitrate
        self.complexity = complexity
        self.application = application
        self._ctx = None
        self.reset()

    def close(self) -> None:
        """Free the native encoder now (never left to the garbage collector); idempotent."""
        self._ctx = None
        self._pending = np.zeros(0, np.float32)

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def reset(self) -> None:
        ctx = av.codec.CodecContext.create("libopus", "w")
        ctx.sample_rate = self.sample_rate
        ctx.layout = "mono"
        ctx.format = "flt"
        ctx.bit_rate = self.bitrate
        ctx.options = {
            "application": self.application,
            "frame_duration": str(self.frame_ms),
            "compression_level": str(self.complexity),
            "vbr": "on",
        }
        ctx.open()
        if ctx.frame_size != self.frame_samples:
            raise RuntimeError(f"libopus chose {ctx.frame_size} samples per frame, expected {self.frame_samples}")
        head = bytes(ctx.extradata or b"")
        if len(head) < 12 or not head.startswith(b"OpusHead"):
            raise RuntimeError("libopus did not provide an OpusHead")
        self._pre_skip = int.from_bytes(head[10:12], "little")
        self._ctx = ctx
        self._pending = np.zeros(0, np.float32)
        self._pts = 0

    @property
    def pre_skip(self) -> int:
        """Encoder lookahead in 48 kHz samples (the OpusHead pre-skip), from libopus."""
        return self._pre_skip

    def encode(self, pcm) -> list[bytes]:
        x = np.asarray(pcm, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono PCM as a 1-D array, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("PCM contains NaN or infinite samples")
        buf = np.concatenate([self._pending, np.clip(x, -1.0, 1.0)])
        n_full = len(buf) // self.frame_samples * self.frame_samples
        self._pending = buf[n_full:].copy()
        packets: list[bytes] = []
        for start in range(0, n_full, self.frame_samples):
            packets += self._encode_frame(buf[start : start + self.frame_samples])
        return packets

    def flush(self) -> list[bytes]:
        """Encode what is buffered, zero-padded to a full frame. The stream may continue."""
        if not len(self._pending):
            return []
        frame = np.zeros(self.frame_samples, np.float32)
        frame[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, np.float32)
        return self._encode_frame(frame)

    @property
    def buffered_samples(self) -> int:
        return len(self._pending)

    def _encode_frame(self, frame: np.ndarray) -> list[bytes]:
        if self._ctx is None:
            raise RuntimeError("encoder is closed")
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(frame)[None, :], format="flt", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = self._pts
        self._pts += self.frame_samples
        return [bytes(p) for p in self._ctx.encode(af)]


def _load_libopus() -> ctypes.CDLL:
    libs_dir = os.path.dirname(av.__file__) + ".libs"  # PyAV wheels bundle libopus here
    candidates = sorted(glob.glob(os.path.join(libs_dir, "libopus*.so*")))
    for path in candidates + ["libopus.so.0"]:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode_float.restype = ctypes.c_int
        lib.opus_decode_float.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
            ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int,
        ]
        lib.opus_strerror.restype = ctypes.c_char_p
        lib.opus_strerror.argtypes = [ctypes.c_int]
        return lib
    raise RuntimeError(f"libopus not found (looked in {libs_dir} and the system library path)")


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _libopus() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load_libopus()
        return _lib


class OpusDecoder:
    """Raw Opus packets -> mono float32 PCM at ``sample_rate`` (one decoder per stream)."""

    _MAX_SAMPLES_48K = 5760  # 120 ms, the longest Opus packet

    _st = None

    def __init__(self, sample_rate: int) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        self._lib = _libopus()
        err = ctypes.c_int(0)
        self._st = self._lib.opus_decoder_create(sample_rate, 1, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise RuntimeError(f"opus_decoder_create failed: {self._lib.opus_strerror(err.value).decode()}")
        self._max = self._MAX_SAMPLES_48K * sample_rate // 48000
        self._out = (ctypes.c_float * self._max)()

    def decode(self, packet: bytes) -> np.ndarray:
        if self._st is None:
            raise RuntimeError("decoder is closed")
        if not isinstance(packet, (bytes, bytearray, memoryview)):
            raise TypeError(f"decode() takes bytes, got {type(packet).__name__}")
        if not packet:
            raise ValueError("empty Opus packet")
        n = self._lib.opus_decode_float(self._st, bytes(packet), len(packet), self._out, self._max, 0)
        if n < 0:
            raise ValueError(f"invalid Opus packet: {self._lib.opus_strerror(n).decode()}")
        return np.frombuffer(self._out, dtype=np.float32, count=n).copy()

    def close(self) -> None:
        if self._st is not None:
            self._lib.opus_decoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        self.close()
