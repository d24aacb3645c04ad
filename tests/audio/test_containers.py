import io
import struct

import av
import numpy as np
import pytest

from realtime_tts.audio.containers import (
    SUPPORTED_FORMATS, FlacStream, Mp3Stream, OggOpusStream, PcmS16leStream, WavStream,
    make_stream, ogg_crc, wav_bytes,
)
from realtime_tts.audio.pcm import s16le_to_float


def _sine(rate, seconds, f=440.0):
    return (0.3 * np.sin(2 * np.pi * f * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _stream_out(stream, x, chunk):
    parts = [stream.write(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(stream.close())
    return parts


def _decode(data: bytes, fmt: str | None = None):
    with av.open(io.BytesIO(data), format=fmt) as c:
        s = c.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1).astype(np.float32) for f in c.decode(s)]
        rate = s.codec_context.sample_rate
    y = np.concatenate(frames) if frames else np.zeros(0, np.float32)
    if y.dtype == np.float32 and np.abs(y).max(initial=0) > 2:  # integer sample formats
        y = y / 32768.0
    return y, rate


def _peak_hz(y, rate):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spectrum) * rate / len(y)


@pytest.mark.parametrize("fmt,rate,tolerance", [
    ("wav", 24000, 0), ("flac", 24000, 0), ("ogg_opus", 22050, 0), ("opus", 24000, 0), ("mp3", 24000, 0.08),
    ("mp3", 22050, 0.08), ("flac", 16000, 0), ("wav", 48000, 0),
])
@pytest.mark.parametrize("chunk", [997, 24000 * 3])
def test_streams_decode_to_right_duration_and_rate(fmt, rate, tolerance, chunk):
    x = _sine(rate, 1.5)
    stream = make_stream(fmt, rate)
    parts = _stream_out(stream, x, chunk)
    if chunk < len(x):  # streaming: most bytes leave before close()
        assert sum(map(len, parts[:-1])) > 0.6 * sum(map(len, parts))
    y, out_rate = _decode(b"".join(parts))
    assert out_rate == stream.output_rate
    assert abs(len(y) / out_rate - 1.5) <= tolerance + 1e-9
    assert abs(_peak_hz(y, out_rate) - 440) < 3
    if fmt in ("wav", "flac"):
        assert np.max(np.abs(y - x)) < 1e-4  # lossless


def test_pcm_stream_and_full_wav():
    x = _sine(24000, 0.25)
    s = PcmS16leStream(24000)
    data = b"".join(_stream_out(s, x, 1000))
    assert len(data) == 2 * len(x) and s.media_type == "audio/pcm"
    assert np.max(np.abs(s16le_to_float(data) - x)) < 1e-4
    wav = wav_bytes(x, 24000)
    riff, size, wave = struct.unpack("<4sI4s", wav[:12])
    assert (riff, wave, size) == (b"RIFF", b"WAVE", len(wav) - 8)
    assert struct.unpack("<I", wav[40:44])[0] == 2 * len(x)
    y, rate = _decode(wav)
    assert rate == 24000 and len(y) == len(x)


def test_streaming_wav_header_has_unknown_sizes():
    s = WavStream(16000)
    first = s.write(np.zeros(10, np.float32))
    assert first[:4] == b"RIFF" and first[4:8] == b"\xff\xff\xff\xff" and first[40:44] == b"\xff\xff\xff\xff"
    assert len(first) == 44 + 20
    empty = WavStream(16000)
    assert len(empty.close()) == 44  # a header even when nothing was written


def _ogg_pages(data: bytes):
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS"
        _, _, flags, granule, serial, seq, crc, nseg = struct.unpack("<4sBBqIIIB", data[pos : pos + 27])
        lacing = data[pos + 27 : pos + 27 + nseg]
        end = pos + 27 + nseg + sum(lacing)
        raw = bytearray(data[pos:end])
        raw[22:26] = b"\0\0\0\0"
        assert ogg_crc(bytes(raw)) == crc
        packets, cur, body = [], b"", data[pos + 27 + nseg : end]
        for lace in lacing:
            cur, body = cur + body[:lace], body[lace:]
            if lace < 255:
                packets.append(cur)
                cur = b""
        pages.append(dict(flags=flags, granule=granule, serial=serial, seq=seq, packets=packets))
        pos = end
    return pages


def test_ogg_crc_is_the_ogg_polynomial():
    # CRC-32 poly 0x04C11DB7, init 0, unreflected, no xorout ("123456789" check value)
    assert ogg_crc(b"123456789") == 0x89A1897F
    assert ogg_crc(b"") == 0


def test_ogg_opus_page_structure():
    s = OggOpusStream(22050, frame_ms=20, serial=0x1234)
    x = _sine(22050, 1.0)
    data = b"".join(_stream_out(s, x, 5000))
    pages = _ogg_pages(data)
    assert [p["seq"] for p in pages] == list(range(len(pages)))
    assert {p["serial"] for p in pages} == {0x1234}
    assert pages[0]["flags"] == 0x02 and pages[-1]["flags"] == 0x04
    assert all(p["flags"] == 0 for p in pages[1:-1])
    head = pages[0]["packets"][0]
    magic, version, channels, pre_skip, rate_in, gain, family = struct.unpack("<8sBBHIhB", head)
    assert (magic, version, channels, rate_in, gain, family) == (b"OpusHead", 1, 1, 22050, 0, 0)
    assert pre_skip == s._encoder.pre_skip > 0
    assert pages[1]["packets"][0].startswith(b"OpusTags") and pages[1]["granule"] == 0
    audio = pages[2:]
    assert len(audio) == 6  # one page per write (5 writes) + EOS
    granules = [p["granule"] for p in audio]
    assert granules == sorted(granules)
    n_packets = sum(len(p["packets"]) for p in audio)
    assert granules[-2] == sum(len(p["packets"]) for p in audio[:-1]) * 960  # 20 ms at 48 kHz
    assert granules[-1] == pre_skip + 48000  # end trimmed to the real audio
    assert n_packets * 960 >= granules[-1]


def test_ogg_opus_crc_is_checked_by_decoders():
    s = OggOpusStream(24000, serial=1)
    data = s.write(_sine(24000, 1.0)) + s.close()
    assert len(_decode(data, "ogg")[0]) == 48000
    broken = bytearray(data)
    broken[300] ^= 0xFF
    assert len(_decode(bytes(broken), "ogg")[0]) < 48000  # the page with the bad CRC is dropped


def test_media_types_and_factory_errors():
    assert {make_stream(f, 24000).media_type for f in SUPPORTED_FORMATS} == {
        "audio/pcm", "audio/wav", "audio/ogg", "audio/mpeg", "audio/flac"}
    with pytest.raises(ValueError, match="supported: .*mp3"):
        make_stream("aiff", 24000)
    with pytest.raises(ValueError, match="sample rate"):
        Mp3Stream(23000)
    with pytest.raises(ValueError, match="sample rate"):
        WavStream(0)
    f = FlacStream(24000)
    f.close()
    with pytest.raises(RuntimeError, match="closed"):
        f.write(np.zeros(10, np.float32))
    assert f.close() == b""
    with pytest.raises(ValueError, match="1-D"):
        PcmS16leStream(24000).write(np.zeros((2, 2), np.float32))


def test_ogg_opus_long_write_splits_pages_at_255_packets():
    s = OggOpusStream(48000, frame_ms=20, serial=7)
    data = s.write(_sine(48000, 6.0)) + s.close()  # 300 packets in one write
    audio = _ogg_pages(data)[2:]
    counts = [len(p["packets"]) for p in audio]
    assert counts[0] == 255 and sum(counts) >= 300
    assert audio[0]["granule"] == 255 * 960 and audio[1]["granule"] == 300 * 960
    assert audio[-1]["granule"] == s._pre_skip + 6 * 48000
    y, rate = _decode(data)
    assert rate == 48000 and len(y) == 6 * 48000
