"""Reference-audio loading for IndexTTS2: decode, mono mix-down, resample, truncate.

Reproduces the official preprocessing of a speaker prompt:

1. decode (libsndfile through `soundfile`, exactly what librosa.load uses; formats libsndfile
   cannot read, e.g. m4a/aac, go through PyAV/ffmpeg instead), float32, channel mean;
2. resample to 22.05 kHz with soxr at 'soxr_hq' quality (librosa's default resampler), fixing the
   length to ceil(N * ratio) as librosa does; truncate to 15 s = 330 750 samples;
3. derive the 16 kHz signal FROM the 22.05 kHz one with a windowed-sinc resampler equal to
   torchaudio.transforms.Resample's defaults (`SincResampler`).

The emotion prompt is loaded at 16 kHz directly (soxr), truncated to 15 s.

Limits (decided here, see MIN_SECONDS): a clip shorter than 0.1 s after decoding is rejected with
AudioTooShortError; an all-silent clip is accepted but flagged (`silent=True`) so callers can warn.
Only the first `max_seconds` (+0.5 s filter margin) of a long file are decoded, so a huge upload
costs no more than a 15 s one; the soxr output prefix does not depend on the samples after it, so
the result is identical to resampling the whole file and cutting afterwards.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO, Callable, Union

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

SPEAKER_SR = 22050  # s2mel / BigVGAN rate
SEMANTIC_SR = 16000  # w2v-BERT and CAMPPlus rate
MAX_SECONDS = 15.0  # official prompt limit (_load_and_cut_audio)
# Hard floor for a usable prompt: every encoder still produces finite output at 0.1 s (fbank and
# w2v-BERT need >= 400 samples at 16 kHz = 1 frame, CAMPPlus' std pooling needs >= 3 fbank frames,
# the GPT conformer's 2x subsampling needs >= 3 w2v frames = 1040 samples, the mel needs > 384
# samples at 22.05 kHz). Clips this short clone badly; 3-10 s is what the model was trained for.
MIN_SECONDS = 0.1
SILENCE_RMS = 1e-4  # -80 dBFS: below this the prompt is flagged as silent
_DECODE_MARGIN_S = 0.5  # extra source audio decoded past max_seconds for the resampler's tail
MAX_SOURCE_SR = 384_000  # headers beyond these are hostile or broken; refuse before allocating
MAX_SOURCE_CHANNELS = 64


class AudioError(ValueError):
    """Base class for unusable reference audio."""


class AudioDecodeError(AudioError):
    """The input is empty, corrupt, or in a format/codec that cannot be decoded."""


class AudioTooShortError(AudioError):
    """The decoded clip is shorter than MIN_SECONDS."""


@dataclass(frozen=True)
class LoadedAudio:
    wav: torch.Tensor  # [1, N] float32, mono
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    truncated: bool  # the source was longer than max_seconds
    silent: bool  # RMS below SILENCE_RMS

    @property
    def duration(self) -> float:
        return self.wav.shape[-1] / self.sample_rate


@dataclass(frozen=True)
class SpeakerPromptAudio:
    wav_22k: torch.Tensor  # [1, N22] float32 (mel / S2M input)
    wav_16k: torch.Tensor  # [1, N16] float32, derived from wav_22k (w2v-BERT / CAMPPlus input)
    info: LoadedAudio  # the 22.05 kHz clip and its flags


# ----------------------------------------------------------------- decoding

def _describe(src: AudioSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return getattr(src, "name", None) or "<audio bytes>"


def _as_file(src: AudioSource):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src))
    if hasattr(src, "read") and not (hasattr(src, "seekable") and src.seekable()):
        return io.BytesIO(src.read())  # both decoders may need to seek (and we may retry)
    return src


def _rewind(f) -> None:
    if hasattr(f, "seek"):
        f.seek(0)


class _BadStream(Exception):
    """A stream that was opened but must not be decoded (no fallback to another decoder)."""


def _check_stream(sr: int, channels: int) -> None:
    if not 0 < sr <= MAX_SOURCE_SR:
        raise _BadStream(f"unsupported sample rate {sr} Hz")
    if not 0 < channels <= MAX_SOURCE_CHANNELS:
        raise _BadStream(f"unsupported channel count {channels}")


def _decode_soundfile(f, frames_for: Callable[[int], int] | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(f) as snd:
        sr = snd.samplerate
        _check_stream(sr, snd.channels)
        frames = -1 if frames_for is None else frames_for(sr)
        data = snd.read(frames=frames, dtype="float32", always_2d=True)  # [N, C]
    return np.ascontiguousarray(data.T), sr


def _decode_pyav(f, frames_for: Callable[[int], int] | None) -> tuple[np.ndarray, int]:
    from .avlib import av  # imported lazily: only needed for formats libsndfile cannot read

    with av.open(f, mode="r") as container:
        if not container.streams.audio:
            raise _BadStream("no audio stream")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # keep rate and layout, planar float32
        chunks, total, sr, limit = [], 0, None, None
        for frame in container.decode(stream):
            for out in to_float.resample(frame):
                if sr is None:
                    sr = out.sample_rate
                    _check_stream(sr, out.layout.nb_channels)
                    limit = None if frames_for is None else frames_for(sr)
                arr = out.to_ndarray()  # [C, n]
                chunks.append(arr)
                total += arr.shape[1]
            if limit is not None and total >= limit:
                break
        else:
            for out in to_float.resample(None):
                chunks.append(out.to_ndarray())
    if not chunks or sr is None:
        return np.zeros((1, 0), np.float32), sr or 0
    data = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if frames_for is not None:
        data = data[:, : frames_for(sr)]
    return data, sr


def decode_audio(src: AudioSource, *, max_seconds: float | None = None,
                 name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode to float32 [C, N] at the file's own rate.

    Reads at most `max_seconds` of audio when given. Raises AudioDecodeError (with the file name)
    for missing, empty, corrupt or undecodable input.
    """
    label = _describe(src, name)
    if isinstance(src, (str, os.PathLike)) and not os.path.isfile(src):
        raise AudioDecodeError(f"{label}: no such file")
    frames_for = None if max_seconds is None else (lambda sr: int(math.ceil(max_seconds * sr)))
    f = _as_file(src)
    try:
        data, sr = _decode_soundfile(f, frames_for)
    except _BadStream as e:
        raise AudioDecodeError(f"{label}: cannot decode audio ({e})") from None
    except Exception as sf_err:  # libsndfile cannot read it: try ffmpeg (m4a/aac, webm, ...)
        _rewind(f)
        try:
            data, sr = _decode_pyav(f, frames_for)
        except _BadStream as e:
            raise AudioDecodeError(f"{label}: cannot decode audio ({e})") from None
        except Exception as av_err:
            raise AudioDecodeError(
                f"{label}: cannot decode audio (libsndfile: {sf_err}; ffmpeg: {av_err})") from None
    if sr <= 0 or data.ndim != 2 or data.shape[1] == 0:
        raise AudioDecodeError(f"{label}: file contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{label}: audio contains NaN or infinite samples")
    return data, sr


# ---------------------------------------------------------------- resampling

def soxr_resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """librosa.resample(res_type='soxr_hq') for a 1-D float32 signal (length fixed to ceil)."""
    if orig_sr == new_sr:
        return x
    y = soxr.resample(x, orig_sr, new_sr, quality="soxr_hq")
    n = int(math.ceil(x.shape[-1] * float(new_sr) / orig_sr))
    if y.shape[-1] < n:
        y = np.pad(y, (0, n - y.shape[-1]))
    return np.asarray(y[:n], dtype=x.dtype)


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, zero_crossings: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc polyphase kernel, [new, 1, 2 * width + orig] float32, and width.

    Built in float64 with the same operation order as torchaudio (including its float32 phase
    offsets) and rounded to float32 at the end, so the kernel is bit-identical.
    """
    cutoff = min(orig, new) * rolloff  # in units of the reduced rates
    width = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phase = torch.arange(0, -new, -1)[:, None, None] / new  # float32, as torchaudio does
    t = ((phase + taps) * cutoff).clamp_(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    return (sinc * (window * (cutoff / orig))).to(torch.float32), width


class SincResampler(torch.nn.Module):
    """Band-limited resampler equal to torchaudio.transforms.Resample(orig, new) with defaults
    (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99). Input [..., N] -> [..., ceil(N*new/orig)].
    """

    def __init__(self, orig_sr: int, new_sr: int, zero_crossings: int = 6, rolloff: float = 0.99):
        super().__init__()
        if orig_sr <= 0 or new_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
        g = math.gcd(int(orig_sr), int(new_sr))
        self.orig, self.new = int(orig_sr) // g, int(new_sr) // g
        kernel, self.width = _sinc_kernel(self.orig, self.new, zero_crossings, rolloff)
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.orig == self.new:
            return wav
        if not wav.is_floating_point():
            raise TypeError(f"expected a float waveform, got {wav.dtype}")
        lead, n = wav.shape[:-1], wav.shape[-1]
        x = F.pad(wav.reshape(-1, 1, n), (self.width, self.width + self.orig))
        y = F.conv1d(x, self.kernel.to(wav.dtype), stride=self.orig)  # [B, new, frames]
        y = y.transpose(1, 2).reshape(x.shape[0], -1)
        n_out = math.ceil(self.new * n / self.orig)
        return y[:, :n_out].reshape(*lead, -1)


@lru_cache(maxsize=8)
def _resampler(orig_sr: int, new_sr: int) -> SincResampler:
    return SincResampler(orig_sr, new_sr)


def sinc_resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Functional `SincResampler` with a cached kernel."""
    return _resampler(int(orig_sr), int(new_sr))(wav)


# ------------------------------------------------------------------ loading

def load_audio(src: AudioSource, sr: int = SPEAKER_SR, max_seconds: float = MAX_SECONDS,
               name: str | None = None, min_seconds: float = MIN_SECONDS) -> LoadedAudio:
    """librosa.load(src, sr=sr) followed by the official cut to `max_seconds`.

    src: a path, raw file bytes, or a binary file object; `name` labels errors for bytes input.
    """
    label = _describe(src, name)
    data, src_sr = decode_audio(src, max_seconds=max_seconds + _DECODE_MARGIN_S, name=name)
    channels = data.shape[0]
    mono = np.mean(data, axis=0) if channels > 1 else data[0]  # librosa.to_mono
    y = soxr_resample(np.ascontiguousarray(mono), src_sr, sr)
    limit = int(max_seconds * sr)
    # decode_audio stops reading at max_seconds + margin, so "longer than the limit" is judged
    # on the source duration that was read
    truncated = y.shape[0] > limit
    y = y[:limit]
    if y.shape[0] < min_seconds * sr:
        raise AudioTooShortError(
            f"{label}: audio is {y.shape[0] / sr:.3f} s long, at least {min_seconds} s is needed")
    wav = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).unsqueeze(0)
    rms = float(torch.sqrt(torch.mean(wav.double() ** 2)))
    return LoadedAudio(wav=wav, sample_rate=sr, source_sample_rate=src_sr, source_channels=channels,
                       truncated=truncated, silent=rms < SILENCE_RMS)


def load_speaker_prompt(src: AudioSource, name: str | None = None,
                        max_seconds: float = MAX_SECONDS) -> SpeakerPromptAudio:
    """Speaker prompt: 22.05 kHz (soxr) and 16 kHz derived from it (sinc), as the official code."""
    clip = load_audio(src, sr=SPEAKER_SR, max_seconds=max_seconds, name=name)
    return SpeakerPromptAudio(wav_22k=clip.wav, wav_16k=sinc_resample(clip.wav, SPEAKER_SR, SEMANTIC_SR),
                              info=clip)


def load_emotion_prompt(src: AudioSource, name: str | None = None,
                        max_seconds: float = MAX_SECONDS) -> LoadedAudio:
    """Emotion prompt: loaded at 16 kHz directly (one soxr resampling), cut to `max_seconds`."""
    return load_audio(src, sr=SEMANTIC_SR, max_seconds=max_seconds, name=name)
