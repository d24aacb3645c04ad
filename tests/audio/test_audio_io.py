"""Reference-audio loading: formats, channel/bit-depth handling, limits and clear errors.

All inputs are generated in tmp dirs; exactness against librosa/torchaudio is covered by
test_features_golden.py.
"""

import io

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from realtime_tts.audio.features import fbank, fbank_num_frames, mel_spectrogram
from realtime_tts.audio.io import (MAX_SECONDS, MIN_SECONDS, AudioDecodeError, AudioError, AudioTooShortError,
                                   decode_audio, load_audio, load_emotion_prompt, load_speaker_prompt,
                                   soxr_resample)


def tone(sr, seconds, freq=440.0, amp=0.5):
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav, sr):
    spec = np.abs(np.fft.rfft(wav.numpy().reshape(-1)))
    return np.argmax(spec) * sr / (2 * (spec.shape[0] - 1))


def write_av(path, y, sr, codec, fmt, rate=None):
    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate or sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(y[None], format="flt", layout="mono")
        frame.sample_rate = sr
        for p in stream.encode(frame):
            c.mux(p)
        for p in stream.encode(None):
            c.mux(p)


# ------------------------------------------------------------------ formats

@pytest.mark.parametrize("ext,fmt,subtype", [
    ("wav", "WAV", "PCM_16"), ("wav", "WAV", "PCM_24"), ("wav", "WAV", "PCM_32"), ("wav", "WAV", "FLOAT"),
    ("wav", "WAV", "PCM_U8"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
])
def test_soundfile_formats(tmp_path, ext, fmt, subtype):
    sr = 48000 if subtype == "OPUS" else 24000
    path = tmp_path / f"clip.{ext}"
    sf.write(path, tone(sr, 1.0), sr, format=fmt, subtype=subtype)
    clip = load_audio(path)
    assert clip.sample_rate == 22050 and clip.source_sample_rate == sr
    assert abs(clip.duration - 1.0) < 0.1
    assert abs(peak_hz(clip.wav, 22050) - 440) < 3
    rms = clip.wav.pow(2).mean().sqrt().item()
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.05


@pytest.mark.parametrize("ext,codec,fmt,rate", [("m4a", "aac", "mp4", None), ("webm", "libopus", "webm", 48000)])
def test_ffmpeg_only_formats(tmp_path, ext, codec, fmt, rate):
    # libsndfile cannot read these: the PyAV fallback decodes them
    path = tmp_path / f"clip.{ext}"
    write_av(path, tone(44100, 1.0), 44100, codec, fmt, rate)
    with pytest.raises(Exception):
        sf.info(path)
    clip = load_audio(path)
    assert abs(clip.duration - 1.0) < 0.1  # AAC adds ~1024 priming samples
    assert abs(peak_hz(clip.wav, 22050) - 440) < 3
    assert abs(clip.wav.pow(2).mean().sqrt().item() - 0.354) < 0.05
    # bytes input takes the same path
    assert torch.equal(load_audio(path.read_bytes(), name=path.name).wav, clip.wav)


def test_path_bytes_and_file_object_agree(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(16000, 0.7), 16000)
    a = load_audio(path).wav
    assert torch.equal(load_audio(path.read_bytes()).wav, a)
    assert torch.equal(load_audio(io.BytesIO(path.read_bytes())).wav, a)
    assert torch.equal(load_audio(str(path)).wav, a)

    class Pipe(io.RawIOBase):  # a stream that cannot seek, like a socket or stdin
        def __init__(self, data):
            self._buf = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self._buf.readinto(b)

    assert torch.equal(load_audio(Pipe(path.read_bytes())).wav, a)
    m4a = tmp_path / "a.m4a"  # the PyAV fallback on a non-seekable stream
    write_av(m4a, tone(16000, 0.7), 16000, "aac", "mp4")
    assert torch.equal(load_audio(Pipe(m4a.read_bytes())).wav, load_audio(m4a).wav)


# --------------------------------------------------- channels and bit depth

def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = tone(22050, 0.5, 300), tone(22050, 0.5, 700, amp=0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 22050, subtype="FLOAT")
    clip = load_audio(tmp_path / "s.wav")  # 22.05 kHz source: no resampling, exact mean
    assert clip.source_channels == 2 and clip.wav.shape == (1, left.shape[0])
    assert torch.equal(clip.wav[0], torch.from_numpy((left + right) / 2))


def test_multichannel(tmp_path):
    data = np.stack([tone(22050, 0.5, 200 * (c + 1), amp=0.1) for c in range(6)], 1)
    sf.write(tmp_path / "51.wav", data, 22050, subtype="FLOAT")
    clip = load_audio(tmp_path / "51.wav")
    assert clip.source_channels == 6
    assert torch.allclose(clip.wav[0], torch.from_numpy(data.mean(1)), atol=1e-7)


@pytest.mark.parametrize("subtype,step", [("PCM_U8", 1 / 128), ("PCM_16", 1 / 32768), ("PCM_24", 1 / 2 ** 23),
                                          ("PCM_32", 1 / 2 ** 31), ("FLOAT", 0.0), ("DOUBLE", 0.0)])
def test_bit_depths_scale_to_unit_range(tmp_path, subtype, step):
    y = tone(22050, 0.3, amp=0.9)
    sf.write(tmp_path / "b.wav", y, 22050, subtype=subtype)
    clip = load_audio(tmp_path / "b.wav")
    assert clip.wav.dtype == torch.float32
    assert (clip.wav[0] - torch.from_numpy(y)).abs().max().item() <= step + 1e-7


# ------------------------------------------------------------------- limits

def test_too_short_is_rejected_with_the_file_name(tmp_path):
    sf.write(tmp_path / "tiny.wav", tone(16000, 0.05), 16000)
    with pytest.raises(AudioTooShortError, match="tiny.wav.*0.1 s"):
        load_audio(tmp_path / "tiny.wav")


def test_minimum_clip_runs_through_every_front_end(tmp_path):
    sf.write(tmp_path / "min.wav", tone(16000, MIN_SECONDS), 16000)
    prompt = load_speaker_prompt(tmp_path / "min.wav")
    assert prompt.wav_16k.shape[-1] >= 1040  # w2v-BERT: >= 3 frames for the GPT's 2x subsampling
    feats = fbank(prompt.wav_16k)
    assert feats.shape[0] == fbank_num_frames(prompt.wav_16k.shape[-1]) >= 3  # CAMPPlus std pooling
    mel = mel_spectrogram(prompt.wav_22k)
    assert mel.shape[-1] == prompt.wav_22k.shape[-1] // 256 and torch.isfinite(mel).all()


def test_long_audio_is_truncated_to_15_seconds(tmp_path):
    sr = 16000
    y = np.random.default_rng(0).standard_normal(sr * 40).astype(np.float32) * 0.1
    sf.write(tmp_path / "long.wav", y, sr, subtype="FLOAT")
    clip = load_audio(tmp_path / "long.wav")
    assert clip.truncated and clip.wav.shape == (1, int(MAX_SECONDS * 22050)) == (1, 330750)
    # reading only the first 15.5 s gives exactly what resampling the whole file and cutting gives
    full = soxr_resample(y, sr, 22050)[:330750]
    assert torch.equal(clip.wav[0], torch.from_numpy(full))
    emo = load_emotion_prompt(tmp_path / "long.wav")
    assert emo.truncated and emo.wav.shape == (1, 240000)
    assert torch.equal(emo.wav[0], torch.from_numpy(y[:240000]))  # 16 kHz source: no resampling
    prompt = load_speaker_prompt(tmp_path / "long.wav")
    assert prompt.wav_16k.shape == (1, 240000)


def test_exactly_15_seconds_is_not_truncated(tmp_path):
    sf.write(tmp_path / "15.wav", tone(22050, 15.0), 22050)
    clip = load_audio(tmp_path / "15.wav")
    assert not clip.truncated and clip.wav.shape == (1, 330750)


def test_silence_is_accepted_but_flagged(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(22050, np.float32), 22050)
    clip = load_audio(tmp_path / "silent.wav")
    assert clip.silent and clip.wav.abs().max() == 0
    sf.write(tmp_path / "speech.wav", tone(22050, 1.0, amp=0.01), 22050)
    assert not load_audio(tmp_path / "speech.wav").silent


# ------------------------------------------------------------------- errors

def test_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError, match="corrupt.wav: cannot decode audio"):
        load_audio(bad)


def test_truncated_header(tmp_path):
    sf.write(tmp_path / "ok.wav", tone(16000, 1.0), 16000)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "ok.wav").read_bytes()[:30])
    with pytest.raises(AudioDecodeError, match="cut.wav"):
        load_audio(tmp_path / "cut.wav")


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty.wav"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioDecodeError, match="upload.mp3"):
        load_audio(b"", name="upload.mp3")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="zero.wav: file contains no audio samples"):
        load_audio(tmp_path / "zero.wav")


def test_missing_file(tmp_path):
    with pytest.raises(AudioDecodeError, match="nope.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_non_audio_media_and_nan(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, this is not audio\n" * 50)
    with pytest.raises(AudioDecodeError, match="notes.txt"):
        decode_audio(tmp_path / "notes.txt")
    y = tone(22050, 0.5)
    y[100] = np.nan
    sf.write(tmp_path / "nan.wav", y, 22050, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="nan.wav: audio contains NaN"):
        load_audio(tmp_path / "nan.wav")


def test_errors_are_value_errors():
    assert issubclass(AudioDecodeError, AudioError) and issubclass(AudioTooShortError, AudioError)
    assert issubclass(AudioError, ValueError)


def test_hostile_header_sample_rate(tmp_path):
    sf.write(tmp_path / "ok.wav", tone(16000, 0.5), 16000)
    raw = bytearray((tmp_path / "ok.wav").read_bytes())
    assert raw[24:28] == (16000).to_bytes(4, "little")  # canonical 44-byte header: fmt sample rate
    raw[24:28] = (50_000_000).to_bytes(4, "little")
    (tmp_path / "hostile.wav").write_bytes(bytes(raw))
    with pytest.raises(AudioDecodeError, match="hostile.wav: cannot decode audio .*sample rate"):
        load_audio(tmp_path / "hostile.wav")
