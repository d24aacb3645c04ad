"""PCM sample-format conversions between engines (float32) and the wire (signed 16-bit LE)."""

from __future__ import annotations

import numpy as np


def _as_float32(pcm) -> np.ndarray:
    arr = np.asarray(pcm, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"expected mono PCM as a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("PCM contains NaN or infinite samples")
    return arr


def to_int16(pcm) -> np.ndarray:
    """Float PCM in [-1, 1] to int16. A buffer that overshoots is scaled down as a whole
    (peak to full scale) instead of clipped, so loud vocoder output never crackles."""
    arr = _as_float32(pcm)
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > 1.0:
        arr = arr / peak
    return np.round(arr * 32767.0).astype(np.int16)


def float_to_s16le(pcm) -> bytes:
    """Float PCM to raw little-endian signed 16-bit bytes (see ``to_int16``)."""
    return to_int16(pcm).astype("<i2", copy=False).tobytes()


def s16le_to_float(data: bytes) -> np.ndarray:
    """Raw little-endian signed 16-bit bytes to float32 PCM in [-1, 1)."""
    if len(data) % 2:
        raise ValueError(f"s16le data must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
