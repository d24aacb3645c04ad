"""The compiled GPT decode step (``UnifiedVoice.compile_decode_step``, the engine's ``--compile``)
decodes what the eager one decodes, across batch sizes and cache lengths."""

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file

from realtime_tts.model.gpt import GPTConfig, SamplingParams, UnifiedVoice, generate

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"
TEXTS = [torch.tensor([5, 9, 33, 7]), torch.tensor([12, 40, 41, 42, 43, 44, 45, 46, 47, 3, 3]),
         torch.tensor([100])]


def test_compiled_decode_step_generates_the_same_codes():
    eager = UnifiedVoice(GPTConfig.tiny())
    eager.load_state_dict({k: v.float() for k, v in load_file(str(FIX / "tiny_gpt.safetensors")).items()})
    eager.eval()
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    compiled.compile_decode_step()
    assert list(compiled.state_dict()) == keys
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        spk, emo = torch.randn(1, 33, 1024, generator=g), torch.randn(1, 21, 1024, generator=g)
        cond = eager.conditioning(eager.speaker_latents(spk), eager.merge_emovec(spk, emo, 0.5))
        for texts, params in ((TEXTS, SamplingParams(mode="greedy", max_mel_tokens=24)),
                              (TEXTS[:1], SamplingParams(mode="greedy", max_mel_tokens=40)),
                              (TEXTS[1:], SamplingParams(num_beams=3, max_mel_tokens=20))):
            ref = generate(eager, cond, texts, params, generator=torch.Generator().manual_seed(9))
            out = generate(compiled, cond, texts, params, generator=torch.Generator().manual_seed(9))
            assert [c.tolist() for c in out.codes] == [c.tolist() for c in ref.codes], params
            assert out.stopped == ref.stopped
            assert sum(c.numel() for c in ref.codes) > 10  # real decoding on both sides
