"""Golden vectors for the S2M model (length regulator, DiT, CFM) and the BigVGAN vocoder.

Runs the OFFICIAL IndexTTS2 modules (index-tts commit 1eafa93) at tiny sizes with fixed
seeds and stores, in tests/fixtures/s2mel/:
  s2mel_tiny.pth    {"net": {"cfm", "length_regulator", "gpt_layer"}} official key layout
  s2mel_golden.pt   inputs and outputs of: regulator, one estimator call, a 25-step CFM
                    solve with given noise, the infer_v2 S2M path from S_infer parts
  bigvgan_tiny.pt   {"generator": state_dict} in weight-norm form + "config"
  bigvgan_golden.pt mel in, waveform out

Run in the oracle venv:
  PYTHONPATH=/work/official/index-tts-1eafa93 /work/venvs/official/bin/python tools/golden/s2mel.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import randomize_bigvgan  # noqa: E402  (the one random-BigVGAN init of the goldens)

# The tiny S2M config (mirrors realtime_tts.model.s2mel.S2MelConfig.tiny()).
TINY_S2MEL = {
    "dit_type": "DiT",
    "reg_loss_type": "l1",
    "style_encoder": {"dim": 8},
    "length_regulator": {
        "channels": 32, "is_discrete": False, "in_channels": 24, "content_codebook_size": 4,
        "sampling_ratios": [1, 1], "vector_quantize": False, "n_codebooks": 1,
        "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512,
    },
    "DiT": {
        "hidden_dim": 32, "num_heads": 2, "depth": 5, "class_dropout_prob": 0.1, "block_size": 8192,
        "in_channels": 12, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
        "content_dim": 32, "content_codebook_size": 4, "content_type": "discrete", "f0_condition": False,
        "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
        "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
        "uvit_skip_connection": True, "add_resblock_in_transformer": False,
    },
    "wavenet": {"hidden_dim": 32, "num_layers": 3, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                "style_condition": True},
}
GPT_DIM, GPT_LAYER_DIMS = 40, (16, 8)  # official hard-codes 1280 -> 256 -> 128 -> in_channels

# Real 256x structure (six upsamplers, three AMP blocks each), narrow channels.
TINY_BIGVGAN = {
    "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 64, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
    "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "num_mels": 80,
    "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": None,
}


def perturb(module: torch.nn.Module, scale: float) -> None:
    """Move every float parameter off its (often 0/1) init so each one matters in the test."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _skip_dac_import() -> None:
    """length_regulator.py imports DAC's VectorQuantize (only for vector_quantize=True, unused
    by IndexTTS2); the DAC package pulls in descript-audiotools, absent from the oracle venv."""
    import types

    for name in ("indextts.s2mel.dac", "indextts.s2mel.dac.nn"):
        sys.modules.setdefault(name, types.ModuleType(name))
    stub = types.ModuleType("indextts.s2mel.dac.nn.quantize")
    stub.VectorQuantize = None
    sys.modules.setdefault("indextts.s2mel.dac.nn.quantize", stub)


def s2mel_goldens(out: Path) -> None:
    _skip_dac_import()
    from indextts.s2mel.modules.commons import MyModel

    torch.manual_seed(1234)
    args = OmegaConf.create(TINY_S2MEL)
    model = MyModel(args, use_gpt_latent=True)
    d1, d2 = GPT_LAYER_DIMS
    model.models["gpt_layer"] = torch.nn.Sequential(
        torch.nn.Linear(GPT_DIM, d1), torch.nn.Linear(d1, d2), torch.nn.Linear(d2, 24)
    )
    perturb(model, 0.05)
    model.eval()
    cfm, reg, gpt_layer = model.models["cfm"], model.models["length_regulator"], model.models["gpt_layer"]
    cfm.estimator.setup_caches(max_batch_size=1, max_seq_length=8192)
    n_mels, style_dim = 12, 8
    g: dict[str, torch.Tensor] = {}

    with torch.no_grad():
        # 1) length regulator, stretch (50 Hz -> 86 Hz like the prompt path) and another ratio
        for name, (l_in, l_out) in {"reg_a": (9, 15), "reg_b": (11, 19)}.items():
            x = torch.randn(1, l_in, 24)
            y = reg(x, ylens=torch.tensor([l_out]), n_quantizers=3, f0=None)[0]
            g[f"{name}_x"], g[f"{name}_ylen"], g[f"{name}_out"] = x, torch.tensor([l_out]), y

        # 2) one estimator call on a CFG-style doubled batch (second half: null condition)
        T = 23
        x = torch.randn(2, n_mels, T)
        prompt_x = torch.zeros(2, n_mels, T)
        prompt_x[0, :, :7] = torch.randn(n_mels, 7)
        style = torch.cat([torch.randn(1, style_dim), torch.zeros(1, style_dim)])
        mu = torch.cat([torch.randn(1, T, 32), torch.zeros(1, T, 32)])
        t = torch.tensor([0.36, 0.36])
        v = cfm.estimator(x, prompt_x, torch.tensor([T]), t, style, mu)
        g.update(est_x=x, est_prompt_x=prompt_x, est_t=t, est_style=style, est_mu=mu, est_out=v)

        # 3) full CFM Euler solve, 25 steps, CFG 0.7, given noise
        Tp, T = 10, 27
        z = torch.randn(1, n_mels, T)
        prompt = torch.randn(1, n_mels, Tp)
        mu = torch.randn(1, T, 32)
        style = torch.randn(1, style_dim)
        t_span = torch.linspace(0, 1, 26)
        sol = cfm.solve_euler(z.clone(), torch.tensor([T]), prompt, mu.clone(), style, None, t_span, 0.7)
        g.update(cfm_z=z, cfm_prompt=prompt, cfm_mu=mu, cfm_style=style, cfm_out=sol)

        # 4) infer_v2 S2M path: gpt_layer -> + code embedding -> regulator -> cat prompt -> CFM
        L, Ls, Tr = 10, 8, 14
        latent = torch.randn(1, L, GPT_DIM)
        code_emb = torch.randn(1, L, 24)  # stands in for semantic_codec.quantizer.vq2emb(codes)^T
        s_ref = torch.randn(1, Ls, 24)
        ref_mel = torch.randn(1, n_mels, Tr)
        style = torch.randn(1, style_dim)
        code_lens = torch.tensor([L])
        prompt_condition = reg(s_ref, ylens=torch.LongTensor([ref_mel.size(2)]), n_quantizers=3, f0=None)[0]
        s_infer = code_emb + gpt_layer(latent)
        target_lengths = (code_lens * 1.72).long()
        cond = reg(s_infer, ylens=target_lengths, n_quantizers=3, f0=None)[0]
        cat_condition = torch.cat([prompt_condition, cond], dim=1)
        seed = 20251202
        torch.manual_seed(seed)
        vc = cfm.inference(cat_condition, torch.LongTensor([cat_condition.size(1)]), ref_mel, style, None, 25,
                           inference_cfg_rate=0.7)
        vc = vc[:, :, ref_mel.size(-1):]
        torch.manual_seed(seed)
        noise = torch.randn(1, n_mels, cat_condition.size(1))  # what inference drew
        g.update(path_latent=latent, path_code_emb=code_emb, path_s_ref=s_ref, path_ref_mel=ref_mel,
                 path_style=style, path_code_lens=code_lens, path_seed=torch.tensor(seed), path_noise=noise,
                 path_prompt_condition=prompt_condition, path_mel=vc)

    net = {k: {n: t.clone() for n, t in model.models[k].state_dict().items()}
           for k in ("cfm", "length_regulator", "gpt_layer")}
    torch.save({"net": net}, out / "s2mel_tiny.pth")
    torch.save({k: v.contiguous() for k, v in g.items()}, out / "s2mel_golden.pt")
    print("s2mel: regulator", tuple(g["reg_a_out"].shape), "est", tuple(g["est_out"].shape),
          "cfm", tuple(g["cfm_out"].shape), "path mel", tuple(g["path_mel"].shape),
          "mel range", float(vc.min()), float(vc.max()))


def bigvgan_goldens(out: Path) -> None:
    from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
    from indextts.s2mel.modules.bigvgan.env import AttrDict

    torch.manual_seed(4321)
    model = BigVGAN(AttrDict(dict(TINY_BIGVGAN)), use_cuda_kernel=False)
    with torch.no_grad():
        randomize_bigvgan(model)
        model.conv_post.weight_g.mul_(2.5)  # push a few samples past +-1 to exercise the clamp
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}  # weight-norm form, as shipped
    mel = torch.randn(1, 80, 6)
    with torch.no_grad():
        model.remove_weight_norm()  # infer_v2 removes it before inference
        wav = model(mel)
    config = dict(TINY_BIGVGAN)
    torch.save({"generator": state, "config": config}, out / "bigvgan_tiny.pt")
    torch.save({"mel": mel, "wav": wav}, out / "bigvgan_golden.pt")
    clipped = float((wav.abs() >= 1).float().mean())
    print("bigvgan: wav", tuple(wav.shape), "std", float(wav.std()), "clipped fraction", clipped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/s2mel")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    s2mel_goldens(a.out)
    bigvgan_goldens(a.out)


if __name__ == "__main__":
    sys.exit(main())
