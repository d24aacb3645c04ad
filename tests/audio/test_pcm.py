import numpy as np
import pytest

from realtime_tts.audio.pcm import float_to_s16le, s16le_to_float, to_int16


def test_in_range_is_plain_scaling():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1e-5], dtype=np.float32)
    assert to_int16(x).tolist() == [0, 16384, -16384, 32767, -32767, 0]


def test_overshoot_normalises_instead_of_clipping():
    x = np.array([0.5, 2.0, -1.0], dtype=np.float32)
    y = to_int16(x)
    assert y.tolist() == [8192, 32767, -16384]  # scaled by 1/2: shape kept, nothing clipped


def test_round_trip_bytes():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 1000).astype(np.float32)
    data = float_to_s16le(x)
    assert len(data) == 2000
    assert data[:2] == int(np.round(x[0] * 32767)).to_bytes(2, "little", signed=True)
    back = s16le_to_float(data)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) < 2e-4


def test_empty_and_bad_input():
    assert float_to_s16le(np.zeros(0, np.float32)) == b""
    assert s16le_to_float(b"").size == 0
    with pytest.raises(ValueError, match="even"):
        s16le_to_float(b"\x00")
    with pytest.raises(ValueError, match="NaN"):
        to_int16(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        to_int16(np.zeros((2, 3)))
