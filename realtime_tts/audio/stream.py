"""One stream's audio: engine segments in, encoded audio out, in order.

Two encoders with the same shape (``segment(pcm)``, ``finish()``, ``close()``,
``output_seconds``), one per stream, driven by the server's ``SpeechStream``:

* ``SpeechEncoder`` (the xiaozhi endpoint and the agent stream): fixed-size frames (raw Opus
  packets or s16le PCM). Each segment is followed by ``silence_ms`` of real silence (encoded
  like speech, so players never see a gap in the packet sequence), and the silence also pushes
  the segment's tail through the resampler and the frame buffer: a sentence's last syllable is
  sent as soon as the sentence is synthesized, not when the next one arrives.
* ``ContainerEncoder`` (HTTP bodies): one container stream (pcm, wav, Ogg Opus, mp3, flac)
  with ``silence_ms`` between segments and none after the last.

One encoder and one resampler live for the whole stream (no restart between sentences, so
the joins are seamless). ``close`` frees the native codec at once, whether or not the stream
finished; after it the encoder is unusable.
"""

from __future__ import annotations

import numpy as np

from .containers import make_stream
from .opus import OpusEncoder
from .pcm import float_to_s16le
from .resample import StreamingResampler

ENCODINGS = ("opus", "pcm_s16le")


def _mono(pcm) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono PCM as a 1-D array, got shape {x.shape}")
    return x


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
        self.frames_out = 0
        self._silence = np.zeros(input_rate * silence_ms // 1000, np.float32)
        self._resampler = StreamingResampler(input_rate, output_rate)
        self._opus = (OpusEncoder(output_rate, frame_ms=frame_ms, bitrate=bitrate, complexity=complexity)
                      if encoding == "opus" else None)
        self._pending = np.zeros(0, np.float32)  # pcm_s16le only: samples short of a frame

    @property
    def output_seconds(self) -> float:
        """Audio time of every frame produced so far."""
        return self.frames_out * self.frame_ms / 1000

    def segment(self, pcm: np.ndarray) -> list[bytes]:
        """Frames for one synthesized segment followed by the inter-segment silence."""
        x = _mono(pcm)
        return self._frames(self._resampler.process(np.concatenate([x, self._silence])))

    def finish(self) -> list[bytes]:
        """End of the turn: what the resampler still holds, the last frame zero-padded."""
        out = self._frames(self._resampler.flush())
        self._resampler.reset()
        if self._opus is not None:
            tail = self._opus.flush()
            self.frames_out += len(tail)
            return out + tail
        if len(self._pending):
            frame = np.zeros(self.frame_samples, np.float32)
            frame[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, np.float32)
            out.append(float_to_s16le(frame))
            self.frames_out += 1
        return out

    def reset(self) -> None:
        """Drop everything buffered (barge-in): the next segment starts a fresh stream."""
        self._resampler.reset()
        self._pending = np.zeros(0, np.float32)
        if self._opus is not None:
            self._opus.reset()

    def close(self) -> None:
        """Free the native Opus encoder now; idempotent."""
        if self._opus is not None:
            self._opus.close()
        self._pending = np.zeros(0, np.float32)

    def _frames(self, y: np.ndarray) -> list[bytes]:
        if self._opus is not None:
            frames = self._opus.encode(y)
        else:
            buf = np.concatenate([self._pending, y])
            n = len(buf) // self.frame_samples * self.frame_samples
            self._pending = buf[n:].copy()
            frames = [float_to_s16le(buf[i : i + self.frame_samples]) for i in range(0, n, self.frame_samples)]
        self.frames_out += len(frames)
        return frames


class ContainerEncoder:
    """Mono float PCM at ``input_rate`` -> the bytes of one ``container`` stream at ``output_rate``
    (``audio/containers.py`` formats), ``silence_ms`` of silence between segments."""

    def __init__(self, input_rate: int, container: str, output_rate: int, *, silence_ms: int = 200) -> None:
        if silence_ms < 0:
            raise ValueError(f"silence_ms must be >= 0, got {silence_ms}")
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.samples_out = 0
        self._silence = np.zeros(input_rate * silence_ms // 1000, np.float32)
        self._segments = 0
        self._resampler = StreamingResampler(input_rate, output_rate)
        self._stream = make_stream(container, output_rate)

    @property
    def output_seconds(self) -> float:
        return self.samples_out / self.output_rate

    def segment(self, pcm: np.ndarray) -> bytes:
        x = _mono(pcm)
        if self._segments:
            x = np.concatenate([self._silence, x])
        self._segments += 1
        return self._write(self._resampler.process(x))

    def finish(self) -> bytes:
        """The resampler's tail and the container's end; the native encoder is freed."""
        data = self._write(self._resampler.flush())
        return data + self._stream.close()

    def close(self) -> None:
        self._stream.release()

    def _write(self, y: np.ndarray) -> bytes:
        self.samples_out += len(y)
        return self._stream.write(y)
