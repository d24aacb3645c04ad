"""Streaming sample-rate conversion that keeps filter state across calls.

One ``StreamingResampler`` per output stream: feeding sentence after sentence through the
same instance makes the joins seamless (no filter restart, no click), and resampling a
signal in any chunking gives the same samples as resampling it whole.
"""

from __future__ import annotations

import numpy as np
import soxr


class StreamingResampler:
    """Mono float32 resampler (soxr ``HQ``). ``process`` returns what is ready now; the
    filter delay is returned by ``flush`` at the end of the stream."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = None
        self._closed = False
        if self.in_rate != self.out_rate:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32")

    @property
    def identity(self) -> bool:
        return self._stream is None

    def process(self, pcm) -> np.ndarray:
        if self._closed:
            raise RuntimeError("process() after flush(): create a new resampler for a new stream")
        x = np.ascontiguousarray(pcm, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono PCM as a 1-D array, got shape {x.shape}")
        if self._stream is None:
            return x.copy()
        return self._stream.resample_chunk(x, last=False)

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still inside the filter."""
        if self._closed:
            return np.zeros(0, np.float32)
        self._closed = True
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)

    def reset(self) -> None:
        """Forget all state (after a barge-in), ready for a new stream."""
        self._closed = False
        if self._stream is not None:
            self._stream.clear()
