import numpy as np
import pytest
import soxr

from realtime_tts.audio.resample import StreamingResampler


def _signal(n, rate=22050, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _run(rs, x, sizes):
    out, pos = [], 0
    for size in sizes:
        out.append(rs.process(x[pos : pos + size]))
        pos += size
    out.append(rs.process(x[pos:]))
    out.append(rs.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("out_rate", [16000, 24000, 48000])
def test_chunked_equals_whole_and_lengths(out_rate):
    x = _signal(22050)
    whole = _run(StreamingResampler(22050, out_rate), x, [])
    rng = np.random.default_rng(1)
    chunked = _run(StreamingResampler(22050, out_rate), x, rng.integers(0, 900, 60).tolist())
    assert whole.dtype == np.float32
    assert len(whole) == out_rate  # one second in, one second out
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) < 1e-6
    # matches soxr's one-shot conversion of the whole signal
    ref = soxr.resample(x, 22050, out_rate, quality="HQ")
    assert np.max(np.abs(whole - ref)) < 1e-4


def test_sine_keeps_its_frequency():
    rate_in, rate_out, f = 22050, 24000, 1000.0
    x = np.sin(2 * np.pi * f * np.arange(rate_in) / rate_in).astype(np.float32)
    y = _run(StreamingResampler(rate_in, rate_out), x, [1000] * 10)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak = np.argmax(spectrum) * rate_out / len(y)
    assert abs(peak - f) < 2.0


def test_sentence_join_has_no_click():
    # Two "sentences" of one continuous sine fed separately: the join must be as smooth as
    # the rest (a restarted filter would leave a gap/transient there).
    x = np.sin(2 * np.pi * 300 * np.arange(22050) / 22050).astype(np.float32)
    rs = StreamingResampler(22050, 16000)
    y = np.concatenate([rs.process(x[:10000]), rs.process(x[10000:]), rs.flush()])
    d = np.abs(np.diff(y[200:-200]))
    assert d.max() < 1.2 * np.median(d[d > np.percentile(d, 90)])


def test_identity_and_errors():
    rs = StreamingResampler(24000, 24000)
    assert rs.identity
    x = _signal(100)
    assert np.array_equal(rs.process(x), x)
    assert rs.flush().size == 0
    with pytest.raises(RuntimeError):
        rs.process(x)
    with pytest.raises(ValueError):
        StreamingResampler(0, 16000)
    with pytest.raises(ValueError, match="1-D"):
        StreamingResampler(22050, 16000).process(np.zeros((2, 2)))


def test_reset_starts_a_fresh_stream():
    x = _signal(5000)
    rs = StreamingResampler(22050, 48000)
    first = _run(rs, x, [777])
    rs.reset()
    second = _run(rs, x, [1234])
    assert np.max(np.abs(first - second)) < 1e-6
