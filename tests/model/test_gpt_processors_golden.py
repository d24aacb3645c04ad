"""Our logits processing against the official one with top-k and top-p off (tools/golden/gpt.py,
``processed.*``): only the repetition penalty and the temperature act, so the penalty's value is
compared directly. With the default top-k 30 the penalised codes mostly drop out of the
candidates whatever the penalty, which is why the decoded-code goldens alone do not pin it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from realtime_tts.model.gpt import SamplingParams
from realtime_tts.model.gpt.decode import process

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"
META = json.loads((FIX / "gpt_golden.json").read_text(encoding="utf-8"))["processed"]
GOLD = load_file(str(FIX / "gpt_golden.safetensors"))
MODES = {"beam": ("beam_sample", 2), "sample": ("sample", 1)}  # our mode, min_keep (2 with beams)


def seen_ids(input_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    seen = torch.zeros(input_ids.size(0), vocab, dtype=torch.bool)
    return seen.scatter_(1, input_ids.long(), True)


@pytest.mark.parametrize("mode", list(MODES))
def test_processors_are_penalty_then_temperature(mode):
    assert META[mode]["processors"] == ["RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper"]
    assert META[mode]["steps"] >= 4


@pytest.mark.parametrize("mode", list(MODES))
def test_processed_scores_match_official(mode):
    ours_mode, min_keep = MODES[mode]
    # our defaults with the two filters off, as in the official run (top_k=0, top_p=1)
    params = SamplingParams(mode=ours_mode, top_k=META[mode]["top_k"], top_p=META[mode]["top_p"])
    for i in range(META[mode]["steps"]):
        ids = GOLD[f"processed.{mode}.{i}.input_ids"]
        scores = GOLD[f"processed.{mode}.{i}.scores"]
        want = GOLD[f"processed.{mode}.{i}.out"]
        seen = seen_ids(ids, scores.size(-1))
        got = process(scores, seen, params, min_keep=min_keep)
        assert torch.allclose(got, want, rtol=0, atol=1e-6), (mode, i, (got - want).abs().max())
        # the penalty is visible: seen codes moved, the others only by the temperature
        assert torch.allclose(got[~seen], scores[~seen] / params.temperature, rtol=0, atol=1e-6)
        assert not torch.allclose(got[seen], scores[seen] / params.temperature)


def test_beam_scores_are_log_probs():
    # the beam path processes log-softmax scores (transformers' beam search), the sample path raw logits
    s = GOLD["processed.beam.0.scores"]
    assert torch.allclose(s.exp().sum(-1), torch.ones(s.size(0)), atol=1e-5)
    assert torch.allclose(F.log_softmax(s, -1), s, atol=1e-5)
    r = GOLD["processed.sample.0.scores"]
    assert not torch.allclose(r.exp().sum(-1), torch.ones(r.size(0)), atol=1e-3)
