"""Continuous batching of the GPT decode (``DecodePool``): requests that join a running decode at
any step, leave when done or dropped, and reuse freed blocks get exactly the codes they get alone
(``generate`` of a batch of one, same seed), in every decoding mode."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from realtime_tts.model.gpt import SamplingParams, UnifiedVoice, generate
from realtime_tts.model.gpt.decode import DecodePool, PoolFull

TEXTS = [torch.tensor([5, 9, 33, 7]), torch.tensor([12, 40, 41, 42, 43, 44, 45, 46, 47, 3, 3]),
         torch.tensor([100]), torch.tensor([8, 8, 20, 21, 22])]
# the random tiny GPT rarely stops by itself: per-text budgets (3 + 3 per token) end requests at
# different steps
BASE = SamplingParams(max_mel_tokens=40, runaway_base=3, runaway_per_token=3)
MODES = {"greedy": replace(BASE, mode="greedy"), "sample": replace(BASE, mode="sample"), "beam_sample": BASE}


@pytest.fixture(scope="module")
def model(tiny_gpt) -> UnifiedVoice:
    return tiny_gpt


@pytest.fixture(scope="module")
def conds(model):
    """A different conditioning per text (other voices, other emotions)."""
    g = torch.Generator().manual_seed(3)
    out = []
    with torch.inference_mode():
        for n in (33, 21, 27, 30):
            spk, emo = torch.randn(1, n, 1024, generator=g), torch.randn(1, 19, 1024, generator=g)
            out.append(model.conditioning(model.speaker_latents(spk), model.merge_emovec(spk, emo, 0.7)))
    return out


def alone(model, cond, text, params, seed, **kw):
    return generate(model, cond, [text], params, generator=torch.Generator().manual_seed(seed), **kw)


def run_schedule(pool, conds, params, joins, seeds, forbid=None):
    """Admit request i before step ``joins[i]`` (or as soon as a block is free after it); step
    until everything is done. Returns the requests in admission order and the steps taken."""
    pending = sorted(range(len(joins)), key=lambda i: joins[i])
    requests, step = {}, 0
    with torch.inference_mode():
        while pending or len(pool):
            while pending and joins[pending[0]] <= step and pool.free:
                i = pending.pop(0)
                budget = params.code_budget(TEXTS[i].numel())
                (requests[i],) = pool.admit(conds[i], [TEXTS[i]], [budget],
                                            [torch.Generator().manual_seed(seeds[i])], tags=[i],
                                            forbid=None if forbid is None else [forbid])
            pool.step()
            step += 1
    return [requests[i] for i in range(len(joins))], step


@pytest.mark.parametrize("mode", list(MODES))
def test_requests_joining_a_running_decode_equal_their_runs_alone(model, conds, mode):
    params = MODES[mode]
    seeds = [11, 12, 13, 14]
    want = [alone(model, conds[i], TEXTS[i], params, seeds[i]) for i in range(4)]
    # 2 blocks for 4 requests: the later ones wait for a block, then reuse a freed one (stale cache)
    pool = DecodePool(model, params, capacity=2, max_len=64)
    got, _ = run_schedule(pool, conds, params, joins=[0, 3, 5, 6], seeds=seeds)
    assert len({r.block for r in got}) == 2
    assert len({len(w.codes[0]) for w in want}) > 1  # requests of different lengths shared the pool
    for r, w in zip(got, want):
        assert r.codes.tolist() == w.codes[0].tolist()
        assert r.stopped == w.stopped[0]
    assert len(pool) == 0 and sorted(pool.free) == [0, 1]


def test_a_dropped_request_draws_nothing_more_and_frees_its_block(model, conds):
    params = MODES["sample"]
    pool = DecodePool(model, params, capacity=2, max_len=64)
    gens = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
    with torch.inference_mode():
        a, b = pool.admit(torch.cat(conds[:2]), TEXTS[:2], [30, 30], gens)
        pool.step()
        pool.step()
        state = gens[0].get_state()
        pool.drop(a)
        assert pool.free == [a.block] and a.codes is None
        c, = pool.admit(conds[2], [TEXTS[2]], [6], [torch.Generator().manual_seed(7)])
        while len(pool):
            pool.step()
    assert torch.equal(gens[0].get_state(), state)
    assert b.codes.tolist() == alone(model, conds[1], TEXTS[1], params, 6, budgets=[30]).codes[0].tolist()
    assert c.codes.tolist() == alone(model, conds[2], TEXTS[2], params, 7, budgets=[6]).codes[0].tolist()


def test_rows_grow_for_a_longer_request(model, conds):
    params = MODES["beam_sample"]
    pool = DecodePool(model, params, capacity=2, max_len=8)  # shorter than any prompt
    got, _ = run_schedule(pool, conds, params, joins=[0, 2], seeds=[1, 2])
    assert pool.max_len == 256  # grown in a whole 256-slot step
    for i, r in enumerate(got):
        assert r.codes.tolist() == alone(model, conds[i], TEXTS[i], params, i + 1).codes[0].tolist()


def test_forbidden_codes_force_the_full_budget(model, conds):
    params = replace(MODES["sample"], runaway_base=30)
    stop, start = model.cfg.stop_mel_token, model.cfg.start_mel_token
    pool = DecodePool(model, params, capacity=1, max_len=64)
    got, _ = run_schedule(pool, conds, params, joins=[0], seeds=[3], forbid=(stop, start))
    r = got[0]
    assert len(r.codes) == params.code_budget(TEXTS[0].numel()) and not r.stopped
    assert start not in r.codes.tolist()
    assert r.codes.tolist() == alone(model, conds[0], TEXTS[0], params, 3, forbid=(stop, start)).codes[0].tolist()


def test_admission_limits(model, conds):
    pool = DecodePool(model, MODES["greedy"], capacity=1, max_len=64)
    g = [torch.Generator()]
    with torch.inference_mode():
        with pytest.raises(ValueError, match="budget"):
            pool.admit(conds[0], [TEXTS[0]], [41], g)  # over max_codes (max_mel_tokens 40)
        with pytest.raises(ValueError, match="as many"):
            pool.admit(conds[0], [TEXTS[0]], [5, 5], g)
        pool.admit(conds[0], [TEXTS[0]], [5], g)
        with pytest.raises(PoolFull):
            pool.admit(conds[1], [TEXTS[1]], [5], g)
    with pytest.raises(ValueError, match="capacity"):
        DecodePool(model, MODES["greedy"], capacity=0, max_len=64)
