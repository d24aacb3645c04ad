"""IndexTTS-2.5 end to end against the OFFICIAL ``IndexTTS2.infer`` (ee40fa7) on the tiny
official-layout checkpoint, loaded from its directory with ``realtime_tts.model.indextts25``.

The directory (w2v-BERT 1024 wide x 17 layers, full-size CAMPPlus: ~143 M parameters) is drawn
from its seed into a temporary directory (~4 s, digests checked). The official run seeds the global
RNG; its w2v-BERT (transformers 4.52) draws one ``torch.rand`` per layer per call before the GPT
samples, which the test replays on its generator. Tolerances: 1e-4 per module (reference-audio
conditioning), 1e-3 for the waveform; codes exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from realtime_tts.audio.features import mel_spectrogram
from realtime_tts.audio.io import load_emotion_prompt, load_speaker_prompt
from realtime_tts.model.emotion import scale_by_alpha
from realtime_tts.model.gpt import SamplingParams, generate
from realtime_tts.model.indextts25 import load_models, resolve
from realtime_tts.model.s2mel import PromptCondition, mel_frames_25

sys.path.insert(0, str(Path(__file__).parent))
from indextts25_fixture import FIX, close, gold, meta  # noqa: E402

MODULE_ATOL, E2E_ATOL = 1e-4, 1e-3
PROMPT = FIX / "prompt_24k.wav"


@pytest.fixture(scope="module")
def models(tiny25_checkpoint):
    return load_models(resolve(tiny25_checkpoint))


@pytest.fixture(scope="module")
def g():
    return gold()


@pytest.fixture(scope="module")
def voice(models):
    """What the official code derives from the speaker clip (its cache_* fields)."""
    m = models
    with torch.inference_mode():
        clip = load_speaker_prompt(PROMPT)
        feats = m.w2v.encode(clip.wav_16k)  # [1, T, 1024] normalised layer-17 features
        ref_mel = mel_spectrogram(clip.wav_22k, 22050, 1024, 256, 1024, 80, 0.0, None)
        style = m.campplus.style(clip.wav_16k)
        prompt = m.s2mel.prompt_condition(feats, ref_mel, style)  # S2M prompt from the features themselves
        emo_feats = m.w2v.encode(load_emotion_prompt(PROMPT).wav)  # the speaker clip as emotion reference
    return dict(feats=feats, ref_mel=ref_mel, style=style, prompt=prompt, emo_feats=emo_feats)


def test_reference_conditioning(voice, g):
    close(voice["feats"], g["e2e.spk_cond_emb"], MODULE_ATOL)
    close(voice["ref_mel"], g["e2e.ref_mel"], MODULE_ATOL)
    close(voice["style"], g["e2e.style"], MODULE_ATOL)
    close(voice["prompt"].cond, g["e2e.prompt_condition"], MODULE_ATOL)


def synthesize(m, voice, case: dict, w2v_draws: int) -> dict[str, torch.Tensor]:
    """The 2.5 pipeline for one segment, drawing from one generator in the official order."""
    gen = torch.Generator().manual_seed(case["seed"])
    for _ in range(w2v_draws):
        torch.rand([], generator=gen)
    kw = case["kwargs"]
    with torch.inference_mode():
        merged = m.gpt.merge_emovec(voice["feats"], voice["emo_feats"], alpha=1.0)
        emovec = merged
        if "emo_vector" in kw:
            weights = scale_by_alpha(kw["emo_vector"], kw.get("emo_alpha", 1.0))
            emovec = m.emotion.final_emotion_vector(weights, voice["style"], merged)
        cond = m.gpt.conditioning(voice["style"], emovec)
        params = SamplingParams(max_mel_tokens=meta()["e2e"]["max_mel_tokens"], runaway_guard=False)
        out = generate(m.gpt, cond, [torch.tensor(case["ids"])], params, generator=gen, langs=[case["lang_index"]])
        codes = out.codes[0]
        s_infer = m.codec.decode(codes[None])  # [1, 2L, 1024], 50 Hz
        target = mel_frames_25(s_infer.size(1), kw.get("duration_factor", 1.0))
        p = voice["prompt"]
        prompt = PromptCondition(p.cond, p.mel, p.style, torch.tensor([p.mel.size(-1)]))
        mel, _ = m.s2mel.generate(s_infer, torch.tensor([s_infer.size(1)]), prompt,
                                  target_lens=torch.tensor([target]), generator=gen)
        wav = m.vocoder(mel)[0]  # [1, N]
    return dict(emovec=emovec, codes=codes, mel=mel, wav=wav)


@pytest.mark.parametrize("index", [0, 1])
def test_end_to_end_matches_official(models, voice, g, index):
    e2e = meta()["e2e"]
    case = e2e["cases"][index]
    name = case["name"]
    out = synthesize(models, voice, case, case["w2v_calls"] * e2e["w2v_layers"])
    close(out["emovec"], g[f"e2e.{name}.emovec"], MODULE_ATOL)
    assert out["codes"].tolist() == g[f"e2e.{name}.codes"][0].tolist()
    ref_len = voice["ref_mel"].size(-1)
    close(out["mel"], g[f"e2e.{name}.cfm_out"][:, :, ref_len:], E2E_ATOL)
    err = close(out["wav"], g[f"e2e.{name}.wav"], E2E_ATOL)
    print(f"{name}: {out['codes'].numel()} codes, {out['wav'].numel()} samples, max |wav diff| {err:.2e}")
