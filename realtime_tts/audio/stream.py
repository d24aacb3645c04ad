"""One stream's downlink audio: engine segments in, fixed-size encoded frames out.

Shared by the xiaozhi endpoint and the agent stream. Each segment is followed by
``silence_ms`` of real silence (encoded like speech, so players never see a gap in the
packet sequence), and the silence also pushes the segment's tail through the resampler
and the frame buffer: a sentence's last syllable is sent as soon as the sentence is
synthesized, not when the next one arrives. One encoder and one resampler live for the
whole stream; ``reset`` after a barge-in.
"""

from __future__ import annotations

import numpy as np

from .opus import OpusEncoder
from .pcm import float_to_s16le
from .resample import StreamingResampler

ENCODINGS = ("opus", "pcm_s16le")


class SpeechEncoder:
    """Mono float PCM at ``input_rate`` -> frames of exactly ``frame_ms`` at ``output_rate``.

    ``encoding="opus"``: raw Opus packets (one per frame). ``"pcm_s16le"``: little-endian
    16-bit frames. ``finish`` zero-pads the last partial frame.
    """

    def __init__(self, input_rate: int, output_rate: int, *, encoding: str = "opus", frame_ms: int = 60,
                 silence_ms: int = 200, bitrate: int = 24000, complexity: int = 10) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if silence_ms < 0:
            raise ValueError(f"silence_ms must be >= 0, got {silence_ms}")
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.encoding = encoding
        self.frame_ms = frame_ms
        self.frame_samples = output_rate * frame_ms // 1000
        self._silence = np.zeros(input_rate * silence_ms // 1000, np.float32)
        self._resampler = StreamingResampler(input_rate, output_rate)
        self._opus = (OpusEncoder(output_rate, frame_ms=frame_ms, bitrate=bitrate, complexity=complexity)
                      if encoding == "opus" else None)
        self._pending = np.zeros(0, np.float32)  # pcm_s16le only: samples short of a frame

    def segment(self, pcm: np.ndarray) -> list[bytes]:
        """Frames for one synthesized segment followed by the inter-segment silence."""
        x = np.asarray(pcm, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono PCM as a 1-D array, got shape {x.shape}")
        return self._frames(self._resampler.process(np.concatenate([x, self._silence])))

    def finish(self) -> list[bytes]:
        """End of the turn: what the resampler still holds, the last frame zero-padded."""
        out = self._frames(self._resampler.flush())
        self._resampler.reset()
        if self._opus is not None:
            return out + self._opus.flush()
        if len(self._pending):
            frame = np.zeros(self.frame_samples, np.float32)
            frame[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, np.float32)
            out.append(float_to_s16le(frame))
        return out

    def reset(self) -> None:
        """Drop everything buffered (barge-in): the next segment starts a fresh stream."""
        self._resampler.reset()
        self._pending = np.zeros(0, np.float32)
        if self._opus is not None:
            self._opus.reset()

    def _frames(self, y: np.ndarray) -> list[bytes]:
        if self._opus is not None:
            return self._opus.encode(y)
        buf = np.concatenate([self._pending, y])
        n = len(buf) // self.frame_samples * self.frame_samples
        self._pending = buf[n:].copy()
        return [float_to_s16le(buf[i : i + self.frame_samples]) for i in range(0, n, self.frame_samples)]
