"""Spectral features used by the IndexTTS2 reference-audio encoders.

- `fbank`: Kaldi-style log mel filterbank (the CAMPPlus input), numerically equal to
  torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0, sample_frequency=16000) with all
  other Kaldi defaults (25 ms Povey window, 10 ms hop, snip edges, pre-emphasis 0.97, DC removal,
  512-point power spectrum, 20 Hz .. Nyquist, natural log floored at float32 eps).
- `mel_spectrogram`: the BigVGAN / S2M log mel (22.05 kHz, n_fft 1024, hop 256, Slaney mel basis).
- `slaney_mel_basis`: librosa-compatible mel filterbank (Slaney scale + Slaney area norm), computed
  here so that librosa is not a runtime dependency.

The w2v-BERT input features are produced by transformers' SeamlessM4TFeatureExtractor
(see realtime_tts/model/w2vbert.py), not here.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- Kaldi fbank

KALDI_EPS = float(torch.finfo(torch.float32).eps)  # log floor used by Kaldi/torchaudio


def _kaldi_mel(f):
    return 1127.0 * math.log(1.0 + f / 700.0)


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int = 80, n_fft: int = 512, sample_rate: float = 16000.0,
                    low_freq: float = 20.0, high_freq: float = 0.0) -> torch.Tensor:
    """Triangular filters on the HTK-style mel scale, [num_bins, n_fft // 2 + 1] float32.

    The arithmetic follows torchaudio's float32/float64 mix step by step so that the result is
    bit-identical (the last FFT bin, Nyquist, always gets weight 0 as in Kaldi).
    """
    if num_bins <= 3:
        raise ValueError("need more than 3 mel bins")
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"bad band [{low_freq}, {high_freq}] for Nyquist {nyquist}")
    mel_lo, mel_hi = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_hi - mel_lo) / (num_bins + 1)
    k = torch.arange(num_bins).unsqueeze(1)  # int64 -> float32 on the first multiply
    left = mel_lo + k * delta
    center = mel_lo + (k + 1.0) * delta
    right = mel_lo + (k + 2.0) * delta
    bin_hz = (sample_rate / n_fft) * torch.arange(n_fft / 2)  # n_fft/2 bins, Nyquist added below
    mel = (1127.0 * (1.0 + bin_hz / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).float()  # [num_bins, n_fft // 2 + 1]


@lru_cache(maxsize=4)
def _povey_window(size: int) -> torch.Tensor:
    return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)


def fbank_num_frames(num_samples: int, frame_length: int = 400, frame_shift: int = 160) -> int:
    """Frames produced by `fbank` for a clip (snip-edges framing); 0 when it is too short."""
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_shift


def fbank(wav: torch.Tensor, num_mel_bins: int = 80, sample_rate: int = 16000) -> torch.Tensor:
    """Kaldi log mel filterbank of one mono clip.

    wav: [N] or [1, N] float waveform (any scale; IndexTTS2 passes [-1, 1] floats).
    Returns [F, num_mel_bins] with F = 1 + (N - 400) // 160 at 16 kHz.
    """
    if wav.dim() == 2:
        if wav.shape[0] != 1:
            raise ValueError(f"fbank takes one channel, got shape {tuple(wav.shape)}")
        wav = wav[0]
    if wav.dim() != 1 or not wav.is_floating_point():
        raise ValueError(f"fbank expects a 1-D float waveform, got {wav.dtype} {tuple(wav.shape)}")
    frame_length = int(sample_rate * 0.025)
    frame_shift = int(sample_rate * 0.010)
    n_fft = 1 << (frame_length - 1).bit_length()
    if wav.numel() < frame_length:
        raise ValueError(f"fbank needs at least {frame_length} samples (25 ms), got {wav.numel()}")
    # contiguous input keeps the reduction order (and so the bits) independent of the caller's layout
    frames = wav.contiguous().unfold(0, frame_length, frame_shift)  # [F, 400], snip-edges framing
    frames = frames - frames.mean(dim=1, keepdim=True)  # DC removal per frame
    # pre-emphasis; the first sample of each frame uses itself as predecessor
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev
    frames = frames * _povey_window(frame_length).to(wav.device, wav.dtype)
    frames = F.pad(frames, (0, n_fft - frame_length))
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [F, n_fft/2 + 1]
    banks = kaldi_mel_banks(num_mel_bins, n_fft, float(sample_rate)).to(wav.device, wav.dtype)
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=KALDI_EPS).log()


# ----------------------------------------------------- librosa-compatible mel

def _hz_to_slaney_mel(f: np.ndarray) -> np.ndarray:
    f = np.asanyarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=8)
def _slaney_mel_basis_np(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    fmax = sr / 2.0 if fmax is None else float(fmax)
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    dist = edges[:, None] - fft_hz[None, :]  # [n_mels + 2, n_bins]
    rising = -dist[:-2] / widths[:-1, None]
    falling = dist[2:] / widths[1:, None]
    # librosa stores the triangles as float32 first and then scales them in place
    tri = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges[2:] - edges[:-2])
    return (tri.astype(np.float64) * area[:, None]).astype(np.float32)


def slaney_mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                     fmax: float | None = None) -> torch.Tensor:
    """Equal to librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=) (Slaney scale and norm)."""
    return torch.from_numpy(_slaney_mel_basis_np(int(sr), int(n_fft), int(n_mels), float(fmin),
                                                 None if fmax is None else float(fmax)).copy())


# ----------------------------------------------------- BigVGAN / S2M mel

class MelSpectrogram(torch.nn.Module):
    """Log mel spectrogram of IndexTTS2's s2mel / BigVGAN front end (22.05 kHz, 80 bins).

    Reflect-pads (n_fft - hop) / 2 on both sides, STFT without centering, magnitude with a 1e-9
    floor inside the square root, Slaney mel basis, natural log clamped at 1e-5.
    Frames = N // hop.
    """

    def __init__(self, sample_rate: int = 22050, n_fft: int = 1024, hop: int = 256, win: int = 1024,
                 n_mels: int = 80, fmin: float = 0.0, fmax: float | None = None):
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("basis", slaney_mel_basis(sample_rate, n_fft, n_mels, fmin, fmax), persistent=False)
        self.register_buffer("window", torch.hann_window(win), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # wav: [B, N] -> [B, n_mels, N // hop]
        if wav.dim() != 2:
            raise ValueError(f"expected [B, N] waveform, got shape {tuple(wav.shape)}")
        pad = (self.n_fft - self.hop) // 2
        if wav.shape[-1] <= pad:
            raise ValueError(f"waveform of {wav.shape[-1]} samples is too short for reflect padding ({pad})")
        x = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        mag = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)  # [B, n_fft/2 + 1, frames]
        return torch.log(torch.clamp(torch.matmul(self.basis, mag), min=1e-5))


_MEL_CACHE: dict = {}


def mel_spectrogram(wav: torch.Tensor, sample_rate: int = 22050, n_fft: int = 1024, hop: int = 256,
                    win: int = 1024, n_mels: int = 80, fmin: float = 0.0,
                    fmax: float | None = None) -> torch.Tensor:
    """Functional form of `MelSpectrogram` ([B, N] -> [B, n_mels, N // hop]); modules are cached."""
    key = (sample_rate, n_fft, hop, win, n_mels, fmin, fmax, wav.device, wav.dtype)
    mod = _MEL_CACHE.get(key)
    if mod is None:
        mod = MelSpectrogram(sample_rate, n_fft, hop, win, n_mels, fmin, fmax).to(wav.device, wav.dtype)
        _MEL_CACHE[key] = mod
    return mod(wav)
