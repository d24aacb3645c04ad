"""Golden tests: audio loading / resampling / fbank / mel against the official preprocessing.

Fixtures come from tools/golden/encoders.py (oracle venv: librosa 0.11, torchaudio 2.11, the
official s2mel mel_spectrogram). Every comparison below is in fact bit-exact; the asserts use the
project's 1e-4 golden tolerance and the exactness is reported in tools/golden/README.md.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realtime_tts.audio.features import fbank, mel_spectrogram, slaney_mel_basis
from realtime_tts.audio.io import SincResampler, load_audio, load_emotion_prompt, load_speaker_prompt, sinc_resample

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "encoders"
TOL = 1e-4


@pytest.fixture(scope="module")
def feats():
    return load_file(FIX / "features_golden.safetensors")


def close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a.float() - b.float()).abs().max().item() <= tol


def test_speaker_prompt_matches_official_load_and_resample(feats):
    prompt = load_speaker_prompt(FIX / "audio" / "speaker_24k.wav")
    close(prompt.wav_22k, feats["wav22"])  # librosa.load (soxr_hq) path
    close(prompt.wav_16k, feats["wav16"])  # torchaudio Resample(22050 -> 16000) of it
    assert prompt.info.sample_rate == 22050 and not prompt.info.truncated and not prompt.info.silent


def test_sinc_resampler_equals_torchaudio(feats):
    close(SincResampler(22050, 16000)(feats["wav22"]), feats["wav16"])
    close(sinc_resample(feats["noise"], 22050, 16000), feats["noise_22k_to_16k"])
    close(sinc_resample(feats["noise"], 44100, 16000), feats["noise_44k_to_16k"])
    # a batch is resampled row by row
    close(sinc_resample(feats["noise"][1:], 22050, 16000), feats["noise_22k_to_16k"][1:])
    assert torch.equal(sinc_resample(feats["noise"], 22050, 22050), feats["noise"])


def test_fbank_equals_kaldi(feats):
    close(fbank(feats["wav16"], num_mel_bins=80), feats["fbank"])
    close(fbank(feats["wav16"][0]), feats["fbank"])


def test_fbank_rejects_bad_input():
    with pytest.raises(ValueError, match="400 samples"):
        fbank(torch.zeros(399))
    with pytest.raises(ValueError, match="one channel"):
        fbank(torch.zeros(2, 1000))
    with pytest.raises(ValueError, match="float"):
        fbank(torch.zeros(1000, dtype=torch.int16))


def test_mel_basis_equals_librosa(feats):
    close(slaney_mel_basis(22050, 1024, 80, 0.0, None), feats["mel_basis"], tol=1e-7)
    close(slaney_mel_basis(22050, 1024, 80, 0.0, 8000), feats["mel_basis_8k"], tol=1e-7)


def test_mel_equals_official(feats):
    close(mel_spectrogram(feats["wav22"]), feats["mel"])
    close(mel_spectrogram(feats["quiet"]), feats["mel_quiet"])  # reaches the log(1e-5) floor
    assert feats["mel"].shape[-1] == feats["wav22"].shape[-1] // 256


@pytest.mark.parametrize("name", ["s16_stereo_44k.wav", "u8_mono_16k.wav", "float_mono_48k.wav",
                                  "s24_mono_24k.flac", "vorbis_mono_32k.ogg", "mp3_mono_44k.mp3"])
def test_load_equals_librosa(name):
    gold = load_file(FIX / "audio_golden.safetensors")
    key = name.replace(".", "_")
    close(load_audio(FIX / "audio" / name).wav, gold[f"{key}_22k"])
    close(load_emotion_prompt(FIX / "audio" / name).wav, gold[f"{key}_16k"])
