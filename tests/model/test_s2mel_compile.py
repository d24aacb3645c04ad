"""The compiled DiT estimator (``CFM.compile_estimator``, the engine's ``--compile``) computes what
the eager one does, for batches and lengths it was not first compiled for, and leaves the
checkpoint layout alone."""

import copy
from pathlib import Path

import torch

from realtime_tts.model.s2mel import S2Mel, S2MelConfig, target_lengths

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "s2mel"
CFG = S2MelConfig.tiny()


def _batch(model: S2Mel, code_lens: list[int], ref_frames: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    B, Tp = len(code_lens), max(ref_frames)
    prompt = model.prompt_condition(torch.randn(B, Tp, CFG.semantic_dim, generator=g),
                                    torch.randn(B, CFG.n_mels, Tp, generator=g),
                                    torch.randn(B, CFG.style_dim, generator=g),
                                    ref_lens=torch.tensor(ref_frames), s_ref_lens=torch.tensor(ref_frames))
    L = max(code_lens)
    s_infer = model.semantic(torch.randn(B, L, CFG.semantic_dim, generator=g), torch.randn(B, L, CFG.gpt_dim, generator=g))
    noise = torch.randn(B, CFG.n_mels, 200, generator=g)
    return s_infer, torch.tensor(code_lens), prompt, noise


def test_compiled_estimator_equals_eager():
    eager = S2Mel(CFG)
    eager.load_official(torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"])
    eager.eval()
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    compiled.cfm.compile_estimator()
    assert list(compiled.state_dict()) == keys  # nothing new in the checkpoint layout
    assert compiled.cfm.velocity is not compiled.cfm.estimator.forward
    # one item unpadded (the unmasked path), then batches of other sizes and lengths (masked)
    for code_lens, ref_frames, seed in (([9], [12], 0), ([10, 6, 13], [14, 9, 20], 1), ([4, 17], [7, 7], 2)):
        s_infer, lens, prompt, noise = _batch(eager, code_lens, ref_frames, seed)
        with torch.inference_mode():
            ref, ref_lens = eager.generate(s_infer, lens, prompt, target_lens=target_lengths(lens), noise=noise, steps=3)
            out, out_lens = compiled.generate(s_infer, lens, prompt, target_lens=target_lengths(lens), noise=noise, steps=3)
        assert torch.equal(ref_lens, out_lens)
        err = (out - ref).abs().max().item()
        assert err < 1e-4, (code_lens, err)
        assert ref.abs().max().item() > 0.1  # a real signal, not zeros on both sides
