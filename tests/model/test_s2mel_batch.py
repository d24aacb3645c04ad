"""A batch of segments with different lengths and different voices equals one-by-one runs."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from realtime_tts.model.s2mel import PromptCondition, S2Mel, S2MelConfig, target_lengths
from realtime_tts.model.s2mel.length_regulator import nearest_indices
from realtime_tts.model.s2mel.wavenet import reflect_pad

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "s2mel"
CFG = S2MelConfig.tiny()


@pytest.fixture(scope="module")
def model():
    m = S2Mel(CFG)
    m.load_official(torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"])
    return m.eval()


def pad_stack(xs, dim):
    n = max(x.size(dim) for x in xs)
    out = []
    for x in xs:
        pad = [0, 0] * (x.dim() - 1 - dim) + [0, n - x.size(dim)]
        out.append(F.pad(x, pad))
    return torch.cat(out)


def test_nearest_indices_match_interpolate():
    for n_in in range(1, 40):
        for n_out in range(1, 80):
            x = torch.arange(n_in, dtype=torch.float32)[None, None]
            ref = F.interpolate(x, size=n_out, mode="nearest")[0, 0].long()
            got = nearest_indices(torch.tensor([n_in]), torch.tensor([n_out]), n_out)[0]
            assert torch.equal(got, ref), (n_in, n_out)


def test_reflect_pad_per_item_equals_unbatched():
    x = torch.randn(3, 4, 10)
    lens = torch.tensor([10, 7, 3])
    out = reflect_pad(x, 2, lens)
    for i, n in enumerate(lens.tolist()):
        ref = F.pad(x[i : i + 1, :, :n], (2, 2), mode="reflect")
        assert torch.equal(out[i : i + 1, :, : n + 4], ref)


def test_regulator_batch_equals_single(model):
    torch.manual_seed(1)
    in_lens, out_lens = [9, 5, 12], [15, 9, 20]
    xs = [torch.randn(1, n, CFG.semantic_dim) for n in in_lens]
    batch = model.length_regulator(pad_stack(xs, 1), torch.tensor(out_lens), torch.tensor(in_lens))
    for i, x in enumerate(xs):
        single = model.length_regulator(x, torch.tensor([out_lens[i]]))
        assert torch.allclose(batch[i : i + 1, : out_lens[i]], single, atol=1e-5)
        assert batch[i, out_lens[i] :].abs().sum() == 0


def _voices_and_segments():
    torch.manual_seed(7)
    ref_frames = [14, 9, 20]  # different prompt lengths
    s_ref_frames = [8, 5, 12]
    code_lens = [10, 6, 13]
    voices = [
        (torch.randn(1, s, CFG.semantic_dim), torch.randn(1, CFG.n_mels, r), torch.randn(1, CFG.style_dim))
        for s, r in zip(s_ref_frames, ref_frames)
    ]
    segments = [(torch.randn(1, n, CFG.semantic_dim), torch.randn(1, n, CFG.gpt_dim)) for n in code_lens]
    return ref_frames, s_ref_frames, code_lens, voices, segments


@pytest.mark.parametrize("speed", [1.0, 1.3])
def test_s2mel_batch_equals_one_by_one(model, speed):
    ref_frames, s_ref_frames, code_lens, voices, segments = _voices_and_segments()
    B = len(code_lens)
    prompt = model.prompt_condition(
        pad_stack([v[0] for v in voices], 1),
        pad_stack([v[1] for v in voices], 2),
        torch.cat([v[2] for v in voices]),
        ref_lens=torch.tensor(ref_frames),
        s_ref_lens=torch.tensor(s_ref_frames),
    )
    s_infer = model.semantic(pad_stack([s[0] for s in segments], 1), pad_stack([s[1] for s in segments], 1))
    noise = torch.randn(B, CFG.n_mels, 60)
    mel, gen_lens = model.generate(s_infer, torch.tensor(code_lens), prompt,
                                   target_lens=target_lengths(torch.tensor(code_lens), speed=speed), noise=noise, steps=6)

    for i in range(B):
        s_ref, ref_mel, style = voices[i]
        p1 = model.prompt_condition(s_ref, ref_mel, style)
        s1 = model.semantic(*segments[i])
        total = ref_frames[i] + int(gen_lens[i])
        mel1, g1 = model.generate(s1, torch.tensor([code_lens[i]]), p1,
                                  target_lens=target_lengths(torch.tensor([code_lens[i]]), speed=speed),
                                  noise=noise[i : i + 1, :, :total], steps=6)
        assert g1.item() == gen_lens[i].item()
        n = int(g1)
        err = (mel[i : i + 1, :, :n] - mel1).abs().max().item()
        assert err < 1e-4, (i, err)
        assert mel[i, :, n:].abs().sum() == 0


def test_generator_draws_per_item_in_order(model):
    """Noise from a generator does not depend on how segments are grouped into batches."""
    ref_frames, s_ref_frames, code_lens, voices, segments = _voices_and_segments()
    s_ref, ref_mel, style = voices[0]
    p1 = model.prompt_condition(s_ref, ref_mel, style)
    two = PromptCondition(
        cond=torch.cat([p1.cond, p1.cond]), mel=torch.cat([p1.mel, p1.mel]),
        style=torch.cat([p1.style, p1.style]), lengths=torch.cat([p1.lengths, p1.lengths]),
    )
    s_a, s_b = model.semantic(*segments[0]), model.semantic(*segments[1])
    both, lens = model.generate(
        pad_stack([s_a, s_b], 1), torch.tensor(code_lens[:2]), two, target_lens=target_lengths(torch.tensor(code_lens[:2])),
        steps=3, generator=torch.Generator().manual_seed(5)
    )
    gen = torch.Generator().manual_seed(5)
    a, _ = model.generate(s_a, torch.tensor(code_lens[:1]), p1, target_lens=target_lengths(torch.tensor(code_lens[:1])),
                          steps=3, generator=gen)
    b, _ = model.generate(s_b, torch.tensor(code_lens[1:2]), p1, target_lens=target_lengths(torch.tensor(code_lens[1:2])),
                          steps=3, generator=gen)
    assert torch.allclose(both[0:1, :, : a.size(-1)], a, atol=1e-4)
    assert torch.allclose(both[1:2, :, : b.size(-1)], b, atol=1e-4)


def test_bad_batch_inputs(model):
    ref_frames, s_ref_frames, code_lens, voices, segments = _voices_and_segments()
    p1 = model.prompt_condition(*voices[0])
    s1 = model.semantic(*segments[0])
    with pytest.raises(ValueError, match="batch mismatch"):
        model.generate(s1, torch.tensor([3, 4]), p1, target_lens=target_lengths(torch.tensor([3, 4])))
    with pytest.raises(ValueError, match="noise must be"):
        model.generate(s1, torch.tensor([code_lens[0]]), p1, target_lens=target_lengths(torch.tensor([code_lens[0]])),
                       noise=torch.zeros(1, CFG.n_mels, 3))


def test_estimator_in_bfloat16_tracks_float32():
    """The estimator may run in a low-precision dtype while the Euler state stays float32."""
    m = S2Mel(CFG)
    m.load_official(torch.load(FIX / "s2mel_tiny.pth", weights_only=True)["net"])
    m.eval()
    ref_frames, s_ref_frames, code_lens, voices, segments = _voices_and_segments()
    p1 = m.prompt_condition(*voices[0])
    s1 = m.semantic(*segments[0])
    noise = torch.randn(1, CFG.n_mels, 64)
    lens = torch.tensor(code_lens[:1])
    ref, _ = m.generate(s1, lens, p1, target_lens=target_lengths(lens), noise=noise, steps=4)
    m.cfm.estimator.to(torch.bfloat16)
    low, _ = m.generate(s1, lens, p1, target_lens=target_lengths(lens), noise=noise, steps=4)
    assert low.dtype == torch.float32
    err = (low - ref).abs().max().item()
    assert 0 < err < 0.1 * ref.abs().max().item(), err
