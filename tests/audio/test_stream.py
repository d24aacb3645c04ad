"""SpeechEncoder: exact frames, real encoded silence between segments, nothing held back."""

import numpy as np
import pytest

from realtime_tts.audio.opus import OpusDecoder
from realtime_tts.audio.pcm import s16le_to_float
from realtime_tts.audio.stream import SpeechEncoder

IN_RATE = 22050


def tone(seconds: float, freq: float = 440.0, rate: int = IN_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    """Run-length encoding of a boolean mask: [(value, length), ...]."""
    edges = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    bounds = [0, *edges, len(mask)]
    return [(bool(mask[a]), b - a) for a, b in zip(bounds, bounds[1:])]


def loud(pcm: np.ndarray, rate: int, window_ms: int = 5) -> np.ndarray:
    """Per-window 'has signal' mask (the tone is 0.5 peak; silence decodes to ~0)."""
    w = rate * window_ms // 1000
    n = len(pcm) // w
    return np.abs(pcm[: n * w]).reshape(n, w).max(axis=1) > 0.05


@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_opus_frames_are_exact_and_gaps_are_real_silence(rate):
    enc = SpeechEncoder(IN_RATE, rate, encoding="opus", frame_ms=60, silence_ms=200)
    packets = enc.segment(tone(0.5)) + enc.segment(tone(0.7)) + enc.segment(tone(0.3)) + enc.finish()
    dec = OpusDecoder(rate)
    frames = [dec.decode(p) for p in packets]
    assert {len(f) for f in frames} == {rate * 60 // 1000}
    pcm = np.concatenate(frames)
    pattern = runs(loud(pcm, rate))
    # leading codec delay is silent; then tone, gap, tone, gap, tone, trailing silence
    tones = [n * 5 for v, n in pattern if v]  # ms
    gaps = [n * 5 for v, n in pattern[1:-1] if not v]
    assert len(tones) == 3 and len(gaps) == 2, pattern
    # within 10 ms: the 5 ms windows plus the codec's ringing at the tone edges
    assert all(abs(got - want) <= 10 for got, want in zip(tones, [500, 700, 300])), tones
    assert all(abs(got - 200) <= 10 for got in gaps), gaps


def test_segment_tail_is_sent_with_the_segment():
    enc = SpeechEncoder(IN_RATE, 24000, encoding="opus", frame_ms=60, silence_ms=200)
    packets = enc.segment(tone(1.0))
    dec = OpusDecoder(24000)
    pcm = np.concatenate([dec.decode(p) for p in packets])
    # the whole second of tone is in what was returned, before finish() or a next segment
    assert loud(pcm, 24000).sum() * 5 >= 990


def test_pcm_frames_and_padding():
    enc = SpeechEncoder(IN_RATE, 16000, encoding="pcm_s16le", frame_ms=20, silence_ms=0)
    frames = enc.segment(tone(0.105)) + enc.finish()
    assert {len(f) for f in frames} == {320 * 2}
    pcm = s16le_to_float(b"".join(frames))
    assert abs(len(pcm) - 0.105 * 16000) < 320 + 64  # at most one padded frame of extra
    assert np.abs(pcm[-20:]).max() == 0  # zero padding, not repeated audio


def test_reset_starts_clean_after_barge_in():
    enc = SpeechEncoder(IN_RATE, 24000, encoding="opus")
    enc.segment(tone(0.33))
    enc.reset()
    packets = enc.segment(tone(0.2)) + enc.finish()
    dec = OpusDecoder(24000)
    assert all(len(dec.decode(p)) == 1440 for p in packets)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="encoding"):
        SpeechEncoder(IN_RATE, 24000, encoding="mp3")
    with pytest.raises(ValueError, match="sample rate"):
        SpeechEncoder(IN_RATE, 22050, encoding="opus")
    with pytest.raises(ValueError, match="1-D"):
        SpeechEncoder(IN_RATE, 24000).segment(np.zeros((2, 10), np.float32))
