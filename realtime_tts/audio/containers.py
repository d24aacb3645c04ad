"""Streaming audio encoders for HTTP bodies and sockets: PCM, WAV, Ogg Opus, MP3, FLAC.

Every stream has the same shape: ``write(pcm)`` takes mono float32 PCM at ``input_rate``
and returns the bytes ready to send now (possibly ``b""``); ``close()`` returns the rest.
Headers go out with the first bytes, so a client can start decoding the first sentence
while later ones are still being synthesized. One stream object per response.

Ogg Opus framing (RFC 3533 / RFC 7845) is written here rather than by ffmpeg's ogg muxer,
because that muxer holds audio pages back until it is closed (no streaming). Audio is
resampled to 48 kHz for Ogg Opus, the rate its granule positions count in anyway.
"""

from __future__ import annotations

import contextlib
import random
import struct

import numpy as np

from .avlib import av
from .opus import OpusEncoder
from .pcm import float_to_s16le
from .resample import StreamingResampler

_UNKNOWN_SIZE = 0xFFFFFFFF


def _mono_float(pcm) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono PCM as a 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("PCM contains NaN or infinite samples")
    return x


class AudioStream:
    """Common shape of all stream encoders (see the module docstring)."""

    format: str = ""
    media_type: str = "application/octet-stream"

    def __init__(self, input_rate: int, output_rate: int | None = None) -> None:
        if not isinstance(input_rate, int) or input_rate <= 0:
            raise ValueError(f"sample rate must be a positive integer, got {input_rate!r}")
        self.input_rate = input_rate
        self.output_rate = output_rate or input_rate
        self.closed = False

    def write(self, pcm) -> bytes:
        if self.closed:
            raise RuntimeError(f"write() on a closed {type(self).__name__}")
        return self._write(_mono_float(pcm))

    def close(self) -> bytes:
        """End the stream: the remaining bytes. Native encoders are freed here."""
        if self.closed:
            return b""
        self.closed = True
        try:
            return self._close()
        finally:
            self._release()

    def release(self) -> None:
        """Abandon the stream (client gone, synthesis failed): free native encoders now, write nothing."""
        if not self.closed:
            self.closed = True
            self._release()

    def _write(self, x: np.ndarray) -> bytes:
        raise NotImplementedError

    def _close(self) -> bytes:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop native resources (encoders, muxers); nothing to do for pure-Python streams."""


class PcmS16leStream(AudioStream):
    """Headerless signed 16-bit little-endian mono PCM."""

    format = "pcm"
    media_type = "audio/pcm"

    def _write(self, x: np.ndarray) -> bytes:
        return float_to_s16le(x)

    def _close(self) -> bytes:
        return b""


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """44-byte PCM s16 mono WAV header; ``data_bytes=None`` writes the streaming form with
    unknown sizes (0xFFFFFFFF), which ffmpeg, browsers and most players read to the end."""
    if data_bytes is None:
        riff_size = data_size = _UNKNOWN_SIZE
    else:
        if data_bytes > _UNKNOWN_SIZE - 36:
            raise ValueError(f"WAV data too large for a RIFF header: {data_bytes} bytes")
        riff_size, data_size = 36 + data_bytes, data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff_size, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16,
        b"data", data_size,
    )


def wav_bytes(pcm, sample_rate: int) -> bytes:
    """A complete, non-streamed WAV file (exact sizes) for clients that need one."""
    data = float_to_s16le(_mono_float(pcm))
    return wav_header(sample_rate, len(data)) + data


class WavStream(AudioStream):
    """Streamed WAV: header with unknown sizes first, then raw s16le PCM."""

    format = "wav"
    media_type = "audio/wav"

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header_sent = False

    def _header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.input_rate)

    def _write(self, x: np.ndarray) -> bytes:
        return self._header() + float_to_s16le(x)

    def _close(self) -> bytes:
        return self._header()


# --- Ogg Opus ------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, initial 0, not reflected, no final xor."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


class OggPageWriter:
    """Frames whole packets into Ogg pages of one logical stream."""

    def __init__(self, serial: int) -> None:
        self.serial = serial & 0xFFFFFFFF
        self.sequence = 0

    def pages(self, packets: list[bytes], granules: list[int], *, eos: bool = False) -> bytes:
        """Pages holding ``packets`` whole, a new page every 255 lacing values; each page
        carries the granule of its last packet (``granules[i]`` is the one after packet i)."""
        out, group, laces = b"", [], 0
        for i, p in enumerate(packets):
            n = len(p) // 255 + 1
            if n > 255:
                raise ValueError(f"packet of {len(p)} bytes does not fit one Ogg page")
            if laces + n > 255:
                out += self.page(group, granules[i - 1])
                group, laces = [], 0
            group.append(p)
            laces += n
        if group:
            out += self.page(group, granules[len(packets) - 1], eos=eos)
        return out

    def page(self, packets: list[bytes], granule: int, *, bos: bool = False, eos: bool = False) -> bytes:
        lacing = bytearray()
        for p in packets:
            lacing += b"\xff" * (len(p) // 255) + bytes([len(p) % 255])
        flags = (0x02 if bos else 0) | (0x04 if eos else 0)
        header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, self.serial, self.sequence, 0, len(lacing))
        self.sequence += 1
        page = bytearray(header + lacing + b"".join(packets))
        page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
        return bytes(page)


class OggOpusStream(AudioStream):
    """Ogg Opus (RFC 7845) at 48 kHz: OpusHead page, OpusTags page, then one page per
    ``write`` holding the packets completed so far (granule = 48 kHz samples decoded up to
    the page's last packet, pre-skip included), and an EOS page whose granule trims the
    padding off the end."""

    format = "ogg_opus"
    media_type = "audio/ogg"
    RATE = 48000
    VENDOR = b"realtime-tts"

    def __init__(
        self,
        rate_in: int,
        frame_ms: int = 20,
        *,
        bitrate: int = 24000,
        application: str = "voip",
        serial: int | None = None,
    ) -> None:
        super().__init__(rate_in, self.RATE)
        self._resampler = StreamingResampler(rate_in, self.RATE)
        self._encoder = OpusEncoder(self.RATE, frame_ms=frame_ms, bitrate=bitrate, application=application)
        self._pre_skip = self._encoder.pre_skip
        self._ogg = OggPageWriter(random.getrandbits(32) if serial is None else serial)
        self._frame = self._encoder.frame_samples
        self._packets = 0  # packets written so far
        self._samples = 0  # real audio so far, 48 kHz samples
        self._headers_sent = False

    def _headers(self) -> bytes:
        if self._headers_sent:
            return b""
        self._headers_sent = True
        head = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, self._pre_skip, self.input_rate, 0, 0)
        tags = b"OpusTags" + struct.pack("<I", len(self.VENDOR)) + self.VENDOR + struct.pack("<I", 0)
        return self._ogg.page([head], 0, bos=True) + self._ogg.page([tags], 0)

    def _write(self, x: np.ndarray) -> bytes:
        y = self._resampler.process(x)
        self._samples += len(y)
        packets = self._encoder.encode(y)
        out = self._headers()
        if packets:
            out += self._ogg.pages(packets, self._granules(len(packets)))
        return out

    def _granules(self, count: int) -> list[int]:
        first = self._packets
        self._packets += count
        return [(first + k + 1) * self._frame for k in range(count)]

    def _close(self) -> bytes:
        y = self._resampler.flush()
        self._samples += len(y)
        # Feed zeros as long as the encoder lookahead so the real audio's end is fully coded.
        packets = self._encoder.encode(y) + self._encoder.encode(np.zeros(self._pre_skip, np.float32))
        packets += self._encoder.flush()
        out = self._headers()
        granules = self._granules(len(packets))
        # The last granule trims the zero padding: decoders stop at pre-skip + real audio.
        assert granules[-1] >= self._pre_skip + self._samples
        granules[-1] = self._pre_skip + self._samples
        return out + self._ogg.pages(packets, granules, eos=True)

    def _release(self) -> None:
        self._encoder.close()


# --- PyAV-muxed formats ----------------------------------------------------------------------


class _Sink:
    """Write-only file object for PyAV: collects what the muxer writes until taken."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


class _MuxedStream(AudioStream):
    """In-memory PyAV muxing to a non-seekable sink: bytes leave as soon as muxed."""

    container_format = ""
    codec = ""
    container_options: dict[str, str] = {}

    def __init__(self, sample_rate: int, rates: tuple[int, ...] | None = None, bit_rate: int | None = None) -> None:
        super().__init__(sample_rate)
        if rates is not None and sample_rate not in rates:
            raise ValueError(f"{self.format} needs a sample rate in {rates}, got {sample_rate}")
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=self.container_format, options=self.container_options)
        self._stream = self._container.add_stream(self.codec, rate=sample_rate, layout="mono")
        if bit_rate:
            self._stream.codec_context.bit_rate = bit_rate
        self._pts = 0

    def _write(self, x: np.ndarray) -> bytes:
        if len(x):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(x, -1.0, 1.0))[None, :],
                                               format="flt", layout="mono")
            frame.sample_rate = self.input_rate
            frame.pts = self._pts
            self._pts += len(x)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def _close(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()

    def _release(self) -> None:
        # The only references to the muxer and its codec: they are freed here, not by the GC.
        container, self._container, self._stream = self._container, None, None
        if container is not None:
            with contextlib.suppress(Exception):  # already closed, or abandoned mid-stream
                container.close()


class Mp3Stream(_MuxedStream):
    """MP3 (libmp3lame, CBR), no ID3/Xing tags (they would need a seek back)."""

    format = "mp3"
    media_type = "audio/mpeg"
    container_format = "mp3"
    codec = "libmp3lame"
    container_options = {"write_xing": "0", "id3v2_version": "0", "write_id3v1": "0"}
    RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

    def __init__(self, sample_rate: int, *, bitrate: int = 64000) -> None:
        super().__init__(sample_rate, self.RATES, bitrate)


class FlacStream(_MuxedStream):
    """FLAC; the STREAMINFO sample count stays 0 (unknown), as allowed for streams."""

    format = "flac"
    media_type = "audio/flac"
    container_format = "flac"
    codec = "flac"

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)


_FORMATS = {
    "pcm": PcmS16leStream,
    "pcm_s16le": PcmS16leStream,
    "wav": WavStream,
    "ogg_opus": OggOpusStream,
    "opus": OggOpusStream,  # OpenAI's "opus" is Ogg Opus
    "mp3": Mp3Stream,
    "flac": FlacStream,
}
SUPPORTED_FORMATS = tuple(_FORMATS)


def make_stream(format: str, sample_rate: int) -> AudioStream:
    """Stream encoder for ``format`` fed with PCM at ``sample_rate`` (Ogg Opus resamples
    to 48 kHz itself; the others keep ``sample_rate``)."""
    cls = _FORMATS.get(format.lower() if isinstance(format, str) else format)
    if cls is None:
        raise ValueError(f"unsupported audio format {format!r}; supported: {', '.join(SUPPORTED_FORMATS)}")
    return cls(sample_rate)
