"""xiaozhi binary frames (protocols.md §1.5): exact big-endian layouts of v1/v2/v3 and clear errors."""

import struct

import pytest

from realtime_tts.server.xiaozhi import AudioFrame, FrameError, pack_audio, parse_version, unpack_audio

OPUS = bytes(range(7)) * 20  # any payload: the framing does not look inside


def test_v1_is_the_raw_packet():
    assert pack_audio(1, OPUS) == OPUS
    assert unpack_audio(1, OPUS) == AudioFrame(OPUS)


def test_v2_layout():
    frame = pack_audio(2, OPUS, timestamp_ms=0x01020304)
    assert frame[:16] == bytes([0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]) + struct.pack(">I", len(OPUS))
    assert frame[16:] == OPUS
    assert unpack_audio(2, frame) == AudioFrame(OPUS, 0x01020304)
    # the session clock wraps at 2**32 ms
    assert unpack_audio(2, pack_audio(2, OPUS, timestamp_ms=2**32 + 5)).timestamp_ms == 5


def test_v3_layout():
    frame = pack_audio(3, OPUS)
    assert frame[:4] == bytes([0, 0]) + struct.pack(">H", len(OPUS))
    assert unpack_audio(3, frame) == AudioFrame(OPUS)
    with pytest.raises(FrameError, match="16-bit"):
        pack_audio(3, bytes(70000))


@pytest.mark.parametrize("version, data, message", [
    (2, b"\x00\x02" + bytes(10), "shorter than its 16-byte header"),
    (2, struct.pack(">HHIII", 3, 0, 0, 0, 4) + b"abcd", "says version 3"),
    (2, struct.pack(">HHIII", 2, 0, 0, 0, 9) + b"abcd", "says 9 payload bytes, frame has 4"),
    (3, b"\x00\x00", "shorter than its 4-byte header"),
    (3, struct.pack(">BBH", 0, 0, 100) + b"abc", "says 100 payload bytes, frame has 3"),
])
def test_malformed_frames(version, data, message):
    with pytest.raises(FrameError, match=message):
        unpack_audio(version, data)


def test_versions():
    assert [parse_version(v) for v in ("1", " 2 ", 3)] == [1, 2, 3]
    for bad in ("0", "4", "two", "", None):
        with pytest.raises(ValueError, match="1, 2 or 3"):
            parse_version(bad)
    with pytest.raises(FrameError):
        pack_audio(4, OPUS)
