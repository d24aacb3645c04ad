"""Decoding behaviour of UnifiedVoice v2 beyond the golden vectors: batching with per-row
lengths, cancellation, the runaway guard, the position quirk switch and the helpers."""

from __future__ import annotations

import pytest
import torch

from realtime_tts.engine.base import CancelToken, Cancelled
from realtime_tts.model.gpt import (SamplingParams, UnifiedVoice, codes_for_speed, generate,
                                   remove_long_silence)
from realtime_tts.model.gpt.decode import top_k_filter, top_p_filter


@pytest.fixture(scope="module")
def model(tiny_gpt) -> UnifiedVoice:
    return tiny_gpt


@pytest.fixture(scope="module")
def feats():
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 33, 1024, generator=g), torch.randn(1, 21, 1024, generator=g)


@pytest.fixture(scope="module")
def cond(model, feats):
    with torch.inference_mode():
        spk, emo = feats
        return model.conditioning(model.speaker_latents(spk), model.merge_emovec(spk, emo, 0.5))


TEXTS = [torch.tensor([5, 9, 33, 7]), torch.tensor([12, 40, 41, 42, 43, 44, 45, 46, 47, 3, 3]),
         torch.tensor([100])]


def test_conditioning_batch_equals_single_rows(model):
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 27, 1024, generator=g), torch.randn(1, 27, 1024, generator=g)
    batch = torch.cat([a, b])
    with torch.inference_mode():
        out = model.speaker_latents(batch)
        torch.testing.assert_close(out[0], model.speaker_latents(a)[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(out[1], model.speaker_latents(b)[0], atol=1e-5, rtol=0)
        emo = model.emotion_vector(batch)
        torch.testing.assert_close(emo[1], model.emotion_vector(b)[0], atol=1e-5, rtol=0)
        # explicit lengths mask frames: a shorter length changes the result
        assert not torch.allclose(model.speaker_latents(a, torch.tensor([15])), out[:1])


def test_batched_greedy_equals_one_by_one(model, cond):
    p = SamplingParams(mode="greedy", max_mel_tokens=30, runaway_guard=False)
    together = generate(model, cond, TEXTS, p)
    for i, t in enumerate(TEXTS):
        alone = generate(model, cond, [t], p)
        assert together.codes[i].tolist() == alone.codes[0].tolist()
        assert together.stopped[i] == alone.stopped[0]


def test_batched_latents_equal_one_by_one(model, cond, feats):
    with torch.inference_mode():
        spk = model.speaker_latents(feats[0])
        emo = model.emotion_vector(feats[1])
        codes = [torch.tensor([3, 4, 5, 6, 7]), torch.tensor([9, 8]), torch.tensor([1, 2, 3])]
        together = model.latents(spk.expand(3, -1, -1), emo.expand(3, -1), TEXTS, codes)
        assert together.shape == (3, 5, model.cfg.model_dim)
        for i in range(3):
            alone = model.latents(spk, emo, [TEXTS[i]], [codes[i]])
            torch.testing.assert_close(together[i, : len(codes[i])], alone[0], atol=1e-5, rtol=0)
            assert together[i, len(codes[i]):].abs().sum() == 0


def test_beam_batch_runs_per_request(model, cond):
    g = torch.Generator().manual_seed(1)
    out = generate(model, cond, TEXTS[:2], SamplingParams(max_mel_tokens=25, runaway_guard=False), generator=g)
    stop = model.cfg.stop_mel_token
    for c in out.codes:
        assert 0 < c.numel() <= 25 and stop not in c.tolist()


@pytest.mark.parametrize("mode", ["beam_sample", "sample"])
def test_batched_sampling_with_per_request_generators_equals_one_by_one(model, cond, mode):
    # per-text budgets (2 + 3 per text token: 14, 35, 5 codes) end the requests at different steps
    p = SamplingParams(mode=mode, max_mel_tokens=40, runaway_base=2, runaway_per_token=3)
    seeds = [11, 12, 13]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    together = generate(model, cond, TEXTS, p, generator=gens)
    lengths = set()
    for i, (t, s) in enumerate(zip(TEXTS, seeds)):
        g = torch.Generator().manual_seed(s)
        alone = generate(model, cond, [t], p, generator=g)
        assert together.codes[i].tolist() == alone.codes[0].tolist(), (mode, i)
        assert together.stopped[i] == alone.stopped[0]
        # the same number of draws: a request that finished early drew nothing more
        assert torch.equal(gens[i].get_state(), g.get_state()), (mode, i)
        # the list form of a batch of one is the single-generator form
        single = generate(model, cond, [t], p, generator=[torch.Generator().manual_seed(s)])
        assert single.codes[0].tolist() == alone.codes[0].tolist()
        lengths.add(alone.codes[0].numel())
    assert len(lengths) == 3  # three different stopping steps were batched
    # other seeds give other samples: the generators are really used
    other = generate(model, cond, TEXTS, p, generator=[torch.Generator().manual_seed(s + 100) for s in seeds])
    assert [c.tolist() for c in other.codes] != [c.tolist() for c in together.codes]


def test_generator_list_must_match_the_requests(model, cond):
    p = SamplingParams(mode="sample", max_mel_tokens=5)
    with pytest.raises(ValueError, match="one per request"):
        generate(model, cond, TEXTS[:2], p, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="one per request"):
        generate(model, cond, TEXTS[:2], p, generator=[torch.Generator(), 3])


def test_position_quirk_switch_changes_decoding(model, cond):
    base = dict(mode="greedy", max_mel_tokens=30, runaway_guard=False)
    hf = generate(model, cond, TEXTS[:1], SamplingParams(**base)).codes[0]
    fixed = generate(model, cond, TEXTS[:1], SamplingParams(hf_position_quirk=False, **base)).codes[0]
    assert hf.tolist() != fixed.tolist()


class CountingCancel(CancelToken):
    __slots__ = ("steps", "after")

    def __init__(self, after: int):
        super().__init__()
        self.steps, self.after = 0, after

    def raise_if_cancelled(self) -> None:
        self.steps += 1
        if self.steps > self.after:
            self.cancel()
        super().raise_if_cancelled()


@pytest.mark.parametrize("mode", ["beam_sample", "sample", "greedy"])
def test_cancel_is_checked_every_step(model, cond, mode):
    token = CountingCancel(after=3)
    with pytest.raises(Cancelled):
        generate(model, cond, TEXTS[:1], SamplingParams(mode=mode, max_mel_tokens=50, runaway_guard=False),
                 cancel=token, generator=torch.Generator().manual_seed(0))
    assert token.steps == 4


def test_runaway_guard_caps_short_texts(model, cond):
    p = SamplingParams(mode="sample", max_mel_tokens=100, runaway_base=3, runaway_per_token=2)
    assert p.code_budget(1) == 5 and p.code_budget(1000) == 100
    assert SamplingParams(runaway_guard=False).code_budget(1) == 1500
    assert SamplingParams().code_budget(4) == 200  # 100 + 25 per token
    out = generate(model, cond, [TEXTS[2]], p, generator=torch.Generator().manual_seed(0))
    assert out.codes[0].numel() <= 5


@pytest.mark.parametrize("mode", ["beam_sample", "sample", "greedy"])
def test_target_codes_gives_exact_length(model, cond, mode):
    stop = model.cfg.stop_mel_token
    free = generate(model, cond, TEXTS[:1], SamplingParams(mode="greedy", max_mel_tokens=60, runaway_guard=False))
    assert free.stopped[0]
    n = free.codes[0].numel()
    for target in (max(1, n // 2), n + 7):  # shorter and longer than the free-running result
        p = SamplingParams(mode=mode, max_mel_tokens=60, target_codes=target)
        out = generate(model, cond, TEXTS[:2], p, generator=torch.Generator().manual_seed(0))
        for c in out.codes:
            assert c.numel() == target and stop not in c.tolist()
    # the greedy prefix is unchanged up to where the free run stopped
    fixed = generate(model, cond, TEXTS[:1], SamplingParams(mode="greedy", max_mel_tokens=60, target_codes=n + 7))
    assert fixed.codes[0][:n].tolist() == free.codes[0].tolist()


def test_codes_for_speed():
    assert codes_for_speed(100, 1.0) == 100
    assert codes_for_speed(100, 2.0) == 50
    assert codes_for_speed(100, 0.5) == 200
    assert codes_for_speed(1, 4.0) == 1
    with pytest.raises(ValueError, match="speed"):
        codes_for_speed(100, 0.0)
    with pytest.raises(ValueError, match="target_codes"):
        SamplingParams(max_mel_tokens=50, target_codes=51)


def test_bad_inputs_are_named(model, cond):
    with pytest.raises(ValueError, match="mode"):
        SamplingParams(mode="nucleus")
    with pytest.raises(ValueError, match="tokens"):
        generate(model, cond, [torch.arange(2, 80)], SamplingParams(mode="greedy", max_mel_tokens=30))
    with pytest.raises(ValueError, match="max_mel_tokens"):
        generate(model, cond, TEXTS[:1], SamplingParams(mode="greedy", max_mel_tokens=500, runaway_guard=False))
    with pytest.raises(ValueError, match="out of range"):
        generate(model, cond, [torch.tensor([5000])], SamplingParams(mode="greedy", max_mel_tokens=30))
    with pytest.raises(ValueError, match=r"\[B, T, F\]"):
        model.speaker_latents(torch.zeros(30, 1024))
    with pytest.raises(ValueError, match="at least 3"):
        model.speaker_latents(torch.zeros(1, 2, 1024))


def test_decode_step_writes_into_the_preallocated_cache(model, cond):
    with torch.inference_mode():
        emb, lengths = model.prompt(cond, TEXTS[:1])
        cache = model.gpt.new_cache(1, emb.size(1) + 4)
        ptr = cache.k.data_ptr()
        model.prefill(emb, lengths, cache)
        before = cache.k[:, 0, :, emb.size(1)].clone()
        model.decode_step(torch.tensor([3]), torch.tensor([2]), lengths, cache)
        assert cache.k.data_ptr() == ptr
        assert not torch.equal(cache.k[:, 0, :, emb.size(1)], before)


def test_filters_keep_minimum_tokens():
    s = torch.tensor([[0.0, -1.0, -2.0, -3.0, -50.0]])
    assert torch.isinf(top_k_filter(s, 1, min_keep=2)).sum() == 3
    assert torch.isinf(top_k_filter(s, 0, min_keep=1)).sum() == 0
    kept = ~torch.isinf(top_p_filter(s, 0.01, min_keep=2))
    assert kept.tolist() == [[True, True, False, False, False]]


def test_remove_long_silence():
    codes = torch.tensor([1] + [52] * 25 + [2] + [52] * 12 + [3])
    out = remove_long_silence(codes)  # 37 silence codes > 30: each run shrinks to 10
    assert out.tolist() == [1] + [52] * 10 + [2] + [52] * 10 + [3]
    short = torch.tensor([1, 52, 52, 2])
    assert remove_long_silence(short).tolist() == short.tolist()


def test_explicit_budgets_override_the_sampling_budget(model, cond):
    params = SamplingParams(mode="greedy", max_mel_tokens=40)
    with torch.inference_mode():
        out = generate(model, cond, TEXTS, params, budgets=[3, None, 5])
        ref = generate(model, cond, TEXTS[1:2], params)
    assert len(out.codes[0]) == 3 or out.stopped[0]
    assert len(out.codes[2]) == 5 or out.stopped[2]
    assert out.codes[1].tolist() == ref.codes[0].tolist()
    with pytest.raises(ValueError, match="budgets"):
        generate(model, cond, TEXTS, params, budgets=[3, 4])
    with pytest.raises(ValueError, match="budgets"):
        generate(model, cond, TEXTS, params, budgets=[3, 0, 1])
