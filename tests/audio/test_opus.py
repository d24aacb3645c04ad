import numpy as np
import pytest

from realtime_tts.audio.opus import OpusDecoder, OpusEncoder


def _sine(rate, seconds, f=440.0, amp=0.3):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize("rate,frame_ms,samples", [(24000, 60, 1440), (16000, 60, 960), (48000, 60, 2880),
                                                   (24000, 20, 480), (16000, 20, 320), (48000, 20, 960)])
def test_every_packet_is_exactly_one_frame(rate, frame_ms, samples):
    enc = OpusEncoder(rate, frame_ms=frame_ms)
    assert enc.frame_samples == samples
    packets = enc.encode(_sine(rate, 0.5)) + enc.flush()
    assert len(packets) == int(np.ceil(0.5 * 1000 / frame_ms))
    dec = OpusDecoder(rate)
    assert [len(dec.decode(p)) for p in packets] == [samples] * len(packets)


def test_buffers_partial_frames_and_chunking_does_not_matter():
    x = _sine(24000, 1.0) + 0.01 * np.random.default_rng(0).standard_normal(24000).astype(np.float32)
    whole_enc = OpusEncoder(24000)
    whole = whole_enc.encode(x) + whole_enc.flush()
    enc = OpusEncoder(24000)
    chunked, pos = [], 0
    for size in np.random.default_rng(1).integers(1, 3000, 40):
        chunked += enc.encode(x[pos : pos + size])
        pos += size
        assert enc.buffered_samples < 1440
    chunked += enc.encode(x[pos:]) + enc.flush()
    assert chunked == whole  # the encoder is deterministic: same frames in, same packets out
    assert enc.flush() == []


def test_last_frame_is_zero_padded():
    enc = OpusEncoder(24000)
    assert enc.encode(np.full(1440 + 100, 0.0, np.float32))  # one full frame out, 100 samples kept
    assert enc.buffered_samples == 100
    tail = enc.flush()
    assert len(tail) == 1
    assert len(OpusDecoder(24000).decode(tail[0])) == 1440


def test_sine_survives_round_trip_at_24kbps():
    rate, f = 24000, 440.0
    enc = OpusEncoder(rate, frame_ms=60, bitrate=24000)
    packets = enc.encode(_sine(rate, 2.0, f)) + enc.flush()
    sizes = [len(p) for p in packets]
    assert 150 <= np.mean(sizes) <= 210  # ~180 bytes per 60 ms packet at 24 kb/s
    dec = OpusDecoder(rate)
    y = np.concatenate([dec.decode(p) for p in packets])
    assert len(y) == len(packets) * 1440
    seg = y[2400:-2400]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert abs(np.argmax(spectrum) * rate / len(seg) - f) < 3.0
    rms = np.sqrt(np.mean(seg**2))
    assert 0.15 < rms < 0.27  # 0.3 amplitude sine has rms 0.212


def test_options_take_effect_and_reset():
    x = _sine(24000, 0.6)
    def run(**kw):
        e = OpusEncoder(24000, **kw)
        return e.encode(x) + e.flush()
    assert run(application="voip") != run(application="audio")
    assert run(complexity=10) != run(complexity=0)
    assert sum(map(len, run(bitrate=64000))) > 2 * sum(map(len, run(bitrate=16000)))
    enc = OpusEncoder(24000)
    first = enc.encode(x)
    enc.reset()
    assert enc.encode(x) == first
    assert enc.pre_skip > 0


def test_bad_arguments_and_packets():
    with pytest.raises(ValueError, match="sample rate"):
        OpusEncoder(22050)
    with pytest.raises(ValueError, match="frame_ms"):
        OpusEncoder(24000, frame_ms=30)
    with pytest.raises(ValueError, match="application"):
        OpusEncoder(24000, application="music")
    with pytest.raises(ValueError, match="sample rate"):
        OpusDecoder(44100)
    with pytest.raises(ValueError, match="NaN"):
        OpusEncoder(24000).encode(np.array([np.nan], np.float32))
    dec = OpusDecoder(24000)
    with pytest.raises(ValueError, match="empty"):
        dec.decode(b"")
    with pytest.raises(ValueError, match="invalid Opus packet"):
        dec.decode(b"\xff\xff\xff")
