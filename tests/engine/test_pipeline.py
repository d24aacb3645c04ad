"""The staged pipeline and its model-family seam (engine/pipeline.py, engine/family.py) on the tiny
checkpoint: a second family shaped like IndexTTS-2.5 (no latent pass; its render step expands
each code to two 50 Hz frames; its own mel length rule) runs on the shared engine, scheduler and
runner unchanged; speed is checked where requests enter."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from realtime_tts.engine.base import CancelToken, SynthesisOptions, Voice
from realtime_tts.engine.indextts2 import IndexTTS2Engine, IndexTTS2Family
from realtime_tts.engine.pipeline import PipelineEngine
from realtime_tts.engine.scheduler import Scheduler
from realtime_tts.model.gpt import CodeOverride, SamplingParams

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
SPEAKER = Voice("speaker", FIX / "speaker_24k.wav", "c3" * 32)
HOP = 256


class CodecOnlyFamily(IndexTTS2Family):
    """IndexTTS-2's networks with an IndexTTS-2.5-shaped render step: no GPT latent pass, every code
    decoded to two 50 Hz frames (here: its codec embedding, repeated), ``int(2 L 1.72 / speed)``
    mel frames computed in double precision."""

    name = "codec-only"
    features_stage = "codec"

    def mel_frames(self, codes: int, speed: float) -> int:
        return max(1, int(2 * codes * 1.72 / speed))

    def s2m_features(self, conds, ids, codes):
        lens = torch.tensor([2 * c.numel() for c in codes], device=self.device)
        padded = torch.zeros(len(codes), int(lens.max()), dtype=torch.long, device=self.device)
        for j, c in enumerate(codes):
            padded[j, : 2 * c.numel()] = c.repeat_interleave(2)
        return self.models.codec.vq2emb(padded).transpose(1, 2), lens


@pytest.fixture(scope="module")
def v2() -> IndexTTS2Engine:
    return IndexTTS2Engine.from_checkpoints(FIX / "checkpoints", device="cpu", dtype="fp32", cfm_steps=2,
                                            cache_dir=None, sampling=SamplingParams(max_mel_tokens=40))


def forced(n: int, sampling: SamplingParams) -> SamplingParams:
    return replace(sampling, override=CodeOverride(n))


def test_a_second_family_runs_on_the_shared_pipeline(v2, monkeypatch):
    family = CodecOnlyFamily(v2.models)
    engine = PipelineEngine(family, sampling=forced(8, v2.sampling), cfm_steps=2)
    monkeypatch.setattr(type(v2.models.gpt), "latents", lambda *a, **k: pytest.fail("a latent pass ran"))
    opts = SynthesisOptions(voice=SPEAKER)
    alone = engine.synthesize("Hello there.", opts, CancelToken(), generator=torch.Generator().manual_seed(1))
    assert alone.pcm.shape == (HOP * int(2 * 8 * 1.72),)
    assert set(alone.stages) == {"conditioning", "gpt_prefill", "gpt", "codec", "s2mel", "vocoder"}
    slow = engine.synthesize("Hello there.", SynthesisOptions(voice=SPEAKER, speed=0.8), CancelToken())
    assert slow.pcm.shape == (HOP * int(2 * 8 * 1.72 / 0.8),)  # the family's rule: int(34.4)
    # batched with another segment it is the same audio: the scheduler and runner are the family's too
    together = engine.run_batch([("Hello there.", opts, CancelToken()), ("Okay.", opts, CancelToken())],
                                generators=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    np.testing.assert_allclose(together[0].pcm, alone.pcm, atol=1e-4, rtol=0)
    assert together[1].pcm.shape == alone.pcm.shape


def test_every_synthesis_is_a_scheduled_batch(v2, monkeypatch):
    """``synthesize`` (the serial executor, ``say``) and the warm-up plan their steps like any batch."""
    planned = []
    real = Scheduler.schedule_decode

    def spy(self):
        planned.append(self.capacity)
        return real(self)

    monkeypatch.setattr(Scheduler, "schedule_decode", spy)
    v2.synthesize("Hello there.", SynthesisOptions(voice=SPEAKER), CancelToken(),
                  sampling=forced(5, v2.sampling))
    assert planned and set(planned) == {1}
    planned.clear()
    v2.warmup()
    assert len(planned) == 20 and set(planned) == {1}  # 20 forced codes: one decode step each


@pytest.mark.parametrize("speed", [0.0, -1.0, 0.49, 2.01, math.nan, math.inf])
def test_bad_speeds_are_refused_where_requests_enter(speed):
    with pytest.raises(ValueError, match="speed must be within 0.5-2.0"):
        SynthesisOptions(speed=speed)
