"""Golden vectors for the IndexTTS2 reference-audio encoders, from the official code (1eafa93).

Run in the oracle venv (transformers 4.52.1, torchaudio, librosa):

    PYTHONPATH=/work/official/index-tts-1eafa93 /work/venvs/official/bin/python tools/golden/encoders.py

Writes tests/fixtures/encoders/ (see tools/golden/README.md, section "encoders"):
  audio/                 small source files (wav s16 stereo 44.1k, wav u8 16k, wav float 48k, flac
                         s24 24k, ogg vorbis 32k, mp3 44.1k) + audio_golden.safetensors with
                         librosa.load(sr=22050) / librosa.load(sr=16000) of each
  features_golden.safetensors  speaker path of a synthetic voiced clip: official 22.05 kHz load,
                         torchaudio Resample(22050 -> 16000), kaldi fbank, official mel_spectrogram,
                         librosa mel basis
  w2vbert_tiny/          tiny random Wav2Vec2BertModel (18 layers, width 16) + feature extractor,
                         saved with save_pretrained under transformers 4.52.1
  w2v_stats.pt           random {"mean", "var"} [16]
  w2vbert_golden.safetensors   official get_emb (hidden_states[17], normalised) of the clip
  codec_tiny.safetensors / codec_golden.safetensors   tiny RepCodec (full official key layout incl.
                         the decoder) and its quantize / vq2emb results
  campplus_tiny.safetensors / campplus_golden.safetensors   tiny CAMPPlus (constructor options) + outputs
  configs.json           the tiny constructor options
  full_shapes.json       key -> shape of the FULL-size official RepCodec and CAMPPlus state dicts
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
import torchaudio
import transformers
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "encoders"

# infer_v2 imports modelscope only for the Qwen emotion model; a stub is enough here
sys.modules.setdefault("modelscope", types.SimpleNamespace(AutoModelForCausalLM=None))
from indextts.infer_v2 import IndexTTS2  # noqa: E402
from indextts.s2mel.modules.audio import mel_spectrogram  # noqa: E402
from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus  # noqa: E402
from indextts.utils.maskgct_utils import build_semantic_codec  # noqa: E402
from indextts.utils.maskgct.models.codec.kmeans.repcodec_model import RepCodec  # noqa: E402

CODEC_TINY = dict(codebook_size=256, hidden_size=32, codebook_dim=8, vocos_dim=16,
                  vocos_intermediate_dim=32, vocos_num_layers=2)
CAMPPLUS_TINY = dict(feat_dim=80, embedding_size=24, growth_rate=8, bn_size=2, init_channels=16)
W2V_TINY = dict(hidden_size=16, num_hidden_layers=18, num_attention_heads=2, intermediate_size=32,
                feature_projection_input_dim=160, conv_depthwise_kernel_size=5, output_hidden_size=16,
                left_max_position_embeddings=8, right_max_position_embeddings=2,
                position_embeddings_type="relative_key", hidden_dropout=0.0, attention_dropout=0.0,
                activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0)


def voiced_clip(sr: int, seconds: float, seed: int) -> np.ndarray:
    """Synthetic voice-like signal: gliding harmonic series, amplitude envelope, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.9 * t) + 10 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum((0.6 / k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 25) if k * 300 < sr / 2)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 2.1 * t) ** 2
    y = 0.3 * y * env + 0.01 * rng.standard_normal(t.shape)
    return (y / np.abs(y).max() * 0.7).astype(np.float32)


def perturb_(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.1) -> None:
    """Move every parameter and BatchNorm statistic away from its init so tests see real weights."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            # constant-initialised tensors (norm weights, biases, layer scales) get absolute noise
            spread = p.std().item() if p.numel() > 1 else 0.0
            spread = spread if spread > 0 else (p.abs().mean().item() or 0.05)
            p.add_(torch.randn(p.shape, generator=gen) * scale * spread)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) * 0.5 + 0.75)
            elif name.endswith("num_batches_tracked"):
                b.fill_(1000)


def audio_files() -> None:
    d = OUT / "audio"
    d.mkdir(parents=True, exist_ok=True)
    specs = [  # name, sr, channels, format, subtype
        ("s16_stereo_44k.wav", 44100, 2, "WAV", "PCM_16"),
        ("u8_mono_16k.wav", 16000, 1, "WAV", "PCM_U8"),
        ("float_mono_48k.wav", 48000, 1, "WAV", "FLOAT"),
        ("s24_mono_24k.flac", 24000, 1, "FLAC", "PCM_24"),
        ("vorbis_mono_32k.ogg", 32000, 1, "OGG", "VORBIS"),
        ("mp3_mono_44k.mp3", 44100, 1, "MP3", "MPEG_LAYER_III"),
    ]
    out = {}
    for i, (name, sr, ch, fmt, sub) in enumerate(specs):
        y = voiced_clip(sr, 0.6, seed=10 + i)
        data = np.stack([y, 0.5 * y[::-1].copy()], axis=1) if ch == 2 else y
        sf.write(d / name, data, sr, format=fmt, subtype=sub)
        key = name.replace(".", "_")
        y22, _ = IndexTTS2._load_and_cut_audio(None, str(d / name), 15)  # librosa.load default sr
        y16, _ = IndexTTS2._load_and_cut_audio(None, str(d / name), 15, sr=16000)
        out[f"{key}_22k"] = y22.contiguous()
        out[f"{key}_16k"] = y16.contiguous()
    save_file(out, OUT / "audio_golden.safetensors")


def speaker_path() -> dict:
    path = OUT / "audio" / "speaker_24k.wav"
    sf.write(path, voiced_clip(24000, 1.3, seed=1), 24000, subtype="PCM_16")
    audio, sr = IndexTTS2._load_and_cut_audio(None, str(path), 15)
    assert sr == 22050
    wav22 = torchaudio.transforms.Resample(sr, 22050)(audio)
    wav16 = torchaudio.transforms.Resample(sr, 16000)(audio)
    fb = torchaudio.compliance.kaldi.fbank(wav16, num_mel_bins=80, dither=0, sample_frequency=16000)
    mel = mel_spectrogram(wav22.float(), n_fft=1024, num_mels=80, sampling_rate=22050, hop_size=256,
                          win_size=1024, fmin=0, fmax=None, center=False)
    # a silent stretch drives mel energies below the 1e-5 log floor
    quiet = wav22.clone()
    quiet[:, 4000:12000] = 0.0
    mel_quiet = mel_spectrogram(quiet, n_fft=1024, num_mels=80, sampling_rate=22050, hop_size=256,
                                win_size=1024, fmin=0, fmax=None, center=False)
    assert (mel_quiet <= np.log(1e-5) + 1e-6).any()
    basis = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=None))
    basis8k = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000))
    # an odd-length random signal exercises the resampler's tail handling
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 22050 + 77, generator=gen) * 0.1
    noise16 = torchaudio.transforms.Resample(22050, 16000)(noise)
    noise44_to16 = torchaudio.transforms.Resample(44100, 16000)(noise)
    tensors = dict(wav22=wav22, wav16=wav16, fbank=fb, mel=mel, quiet=quiet, mel_quiet=mel_quiet, mel_basis=basis, mel_basis_8k=basis8k,
                   noise=noise, noise_22k_to_16k=noise16, noise_44k_to_16k=noise44_to16)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "features_golden.safetensors")
    return tensors


def w2vbert(wav16: torch.Tensor) -> None:
    torch.manual_seed(5)
    cfg = transformers.Wav2Vec2BertConfig(**W2V_TINY)
    model = transformers.Wav2Vec2BertModel(cfg).eval()
    perturb_(model, torch.Generator().manual_seed(6), scale=0.2)
    d = OUT / "w2vbert_tiny"
    model.save_pretrained(d)
    fe = transformers.SeamlessM4TFeatureExtractor()
    fe.save_pretrained(d)
    gen = torch.Generator().manual_seed(7)
    stats = {"mean": torch.randn(16, generator=gen) * 0.5, "var": torch.rand(16, generator=gen) * 3 + 0.1}
    torch.save(stats, OUT / "w2v_stats.pt")
    # the official get_emb, on the official feature extractor output (as in infer_generator)
    reloaded = transformers.Wav2Vec2BertModel.from_pretrained(d).eval()
    host = types.SimpleNamespace(semantic_model=reloaded, semantic_mean=stats["mean"],
                                 semantic_std=torch.sqrt(stats["var"]))
    inputs = fe(wav16, sampling_rate=16000, return_tensors="pt")
    feat = IndexTTS2.get_emb(host, inputs["input_features"], inputs["attention_mask"])
    save_file(dict(input_features=inputs["input_features"].contiguous(),
                   attention_mask=inputs["attention_mask"].contiguous(), feat=feat.contiguous()),
              OUT / "w2vbert_golden.safetensors")


def codec() -> None:
    torch.manual_seed(11)
    model = build_semantic_codec(types.SimpleNamespace(**CODEC_TINY))
    gen = torch.Generator().manual_seed(12)
    with torch.no_grad():  # trained-like O(1) activations (the 0.02 init hides GELU/LayerNorm details)
        for name, p in model.named_parameters():
            if p.dim() > 1 and not name.endswith("weight_g") and "codebook" not in name:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5, generator=gen)
    perturb_(model, gen, scale=0.3)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "codec_tiny.safetensors")
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(3, 37, CODEC_TINY["hidden_size"], generator=gen)
    x_small = torch.randn(2, 21, CODEC_TINY["hidden_size"], generator=gen) * 1e-3  # LayerNorm eps matters
    with torch.no_grad():
        codes_small, s_ref_small = model.quantize(x_small)
        codes, s_ref = model.quantize(x)  # [3, 37], [3, 37, 32]
        # S_ref is a function of the codes only; the continuous encoder output is checked on its own
        enc = model.encoder(x.transpose(1, 2))  # [3, 37, 32]
        codes1, s_ref1 = model.quantize(x[:1])  # the batch-1 form the official pipeline uses
        vq = torch.randint(0, CODEC_TINY["codebook_size"], (3, 29), generator=gen)
        # official call pattern, one row at a time (it is only correct for batch 1)
        emb = torch.cat([model.quantizer.vq2emb(vq[i:i + 1].unsqueeze(1)) for i in range(3)], dim=0)
    save_file(dict(x=x, codes=codes, s_ref=s_ref.contiguous(), codes_b1=codes1.contiguous(), x_small=x_small,
                   codes_small=codes_small, s_ref_small=s_ref_small.contiguous(), enc=enc.contiguous(),
                   s_ref_b1=s_ref1.contiguous(), vq=vq, vq_emb=emb.contiguous()), OUT / "codec_golden.safetensors")


def campplus(fb: torch.Tensor) -> None:
    torch.manual_seed(21)
    model = CAMPPlus(**CAMPPLUS_TINY)
    perturb_(model, torch.Generator().manual_seed(22), scale=0.2)
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "campplus_tiny.safetensors")
    gen = torch.Generator().manual_seed(23)
    with torch.no_grad():
        feat = fb - fb.mean(dim=0, keepdim=True)  # as infer_generator does
        style = model(feat.unsqueeze(0))
        # > 100 frames exercises the CAM segment pooling's partial last segment
        batch = torch.randn(2, 233, 80, generator=gen)
        batch_style = model(batch)
        # frame-level map before pooling, and one CAM layer alone on > 2 segments: pooled outputs
        # average away small errors, these do not
        frames = model.xvector[:-2](model.head(batch.permute(0, 2, 1)))
        cam_in = torch.randn(2, model.xvector.block1.tdnnd1.cam_layer.linear1.in_channels, 250, generator=gen)
        cam_out = model.xvector.block1.tdnnd1.cam_layer(cam_in)
    save_file(dict(feat=feat.contiguous(), style=style, batch=batch, batch_style=batch_style,
                   frames=frames.contiguous(), cam_in=cam_in, cam_out=cam_out.contiguous()),
              OUT / "campplus_golden.safetensors")


def full_shapes() -> None:
    shapes = {
        "codec": {k: list(v.shape) for k, v in RepCodec().state_dict().items()},
        "campplus": {k: list(v.shape) for k, v in CAMPPlus(feat_dim=80, embedding_size=192).state_dict().items()},
    }
    (OUT / "full_shapes.json").write_text(json.dumps(shapes, indent=0, sort_keys=True))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    audio_files()
    t = speaker_path()
    w2vbert(t["wav16"])
    codec()
    campplus(t["fbank"])
    full_shapes()
    (OUT / "configs.json").write_text(json.dumps(
        dict(codec=CODEC_TINY, campplus=CAMPPLUS_TINY, w2vbert=W2V_TINY, w2v_layer=17,
             versions=dict(torch=torch.__version__, torchaudio=torchaudio.__version__,
                           transformers=transformers.__version__, librosa=librosa.__version__)),
        indent=1))
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>9}  {p.relative_to(OUT)}")


if __name__ == "__main__":
    main()
