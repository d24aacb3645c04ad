"""IndexTTS-2.5 modules against the OFFICIAL code at ee40fa7 (tools/golden/indextts25.py) on the tiny
official-layout checkpoint: GPT (conditioning, prompt rows, logits, greedy / beam-sampled / sampled
codes per language, a batch), EnhancedCodec decode, the S2M path and BigVGAN. 1e-4 (fp32 CPU),
codes exactly. The w2v-BERT and the whole pipeline are in test_indextts25_e2e.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from realtime_tts.model.gpt import LangText, SamplingParams, generate
from realtime_tts.model.indextts25 import (codec_config, gpt_config, load_codec, load_gpt, load_s2mel, load_vocoder,
                                           read_config, s2mel_config)
from realtime_tts.model.s2mel import mel_frames_25

sys.path.insert(0, str(Path(__file__).parent))
from indextts25_fixture import SMALL_FILES, close, gold, materialise, meta, randn  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return materialise(tmp_path_factory.mktemp("tiny25"), only=SMALL_FILES)


@pytest.fixture(scope="module")
def cfg(ckpt):
    return read_config(ckpt)


@pytest.fixture(scope="module")
def g():
    return gold()


@pytest.fixture(scope="module")
def m():
    return meta()


@pytest.fixture(scope="module")
def gpt(ckpt, cfg):
    return load_gpt(ckpt / "gpt.pth", gpt_config(cfg))


@pytest.fixture(scope="module")
def cond(gpt, g, m):
    style = randn(m["gpt"]["inputs"]["style"])
    with torch.inference_mode():
        return gpt.conditioning(style, g["gpt.emovec"])


def case_ids(m, name):
    case = m["gpt"]["cases"][name]
    return torch.tensor(case["ids"]), case["lang"]


# ---- GPT ------------------------------------------------------------------------------------


def test_emotion_vectors_and_conditioning(gpt, g, m):
    inp = m["gpt"]["inputs"]
    spk, emo, style = randn(inp["spk_feats"]), randn(inp["emo_feats"]), randn(inp["style"])
    with torch.inference_mode():
        close(gpt.emotion_vector(spk), g["gpt.emo_vec_spk"], ATOL)
        close(gpt.emotion_vector(emo), g["gpt.emo_vec_emo"], ATOL)
        merged = gpt.merge_emovec(spk, emo, alpha=m["gpt"]["alpha"])
        close(merged, g["gpt.emovec"], ATOL)
        c = gpt.conditioning(style, g["gpt.emovec"])
    close(c, g["gpt.cond"], ATOL)
    assert torch.count_nonzero(c[:, 1:]) == 0  # the two zero vectors


@pytest.mark.parametrize("name", ["en", "zh", "es", "ja", "ar", "common"])
def test_prompt_rows_and_prefill(gpt, cond, g, m, name):
    """Our rows drop the official masked left padding (ids 0/1 removed) and nothing else."""
    ids, lang = case_ids(m, name)
    official, mask = g[f"gpt.{name}.prompt_emb"], g[f"gpt.{name}.prompt_mask"]
    pad = int((mask == 0).sum())
    removed = int(((ids == 0) | (ids == 1)).sum())
    assert pad == removed >= 1  # the trailing 1 at least
    with torch.inference_mode():
        emb, lengths = gpt.prompt(cond, [ids], [lang])
        assert int(lengths[0]) == official.size(0) - pad + 1  # + start_mel
        close(emb[0, :-1], official[pad:], ATOL)
        cache = gpt.gpt.new_cache(1, emb.size(1) + 8)
        close(gpt.prefill(emb, lengths, cache)[0], g[f"gpt.{name}.prefill_logits"], ATOL)


@pytest.mark.parametrize("name", ["en", "zh", "es"])
def test_step_logits(gpt, cond, g, m, name):
    ids, lang = case_ids(m, name)
    codes = m["gpt"]["cases"][name]["greedy"]
    want = g[f"gpt.{name}.greedy_step_logits"]
    with torch.inference_mode():
        emb, lengths = gpt.prompt(cond, [ids], [lang])
        cache = gpt.gpt.new_cache(1, emb.size(1) + 8)
        steps = [gpt.prefill(emb, lengths, cache)[0]]
        for k in range(want.size(0) - 1):  # code k is fed back at mel position k+2
            steps.append(gpt.decode_step(torch.tensor([codes[k]]), torch.tensor([k + 2]), lengths + k, cache)[0])
    close(torch.stack(steps), want, ATOL)


def official_codes(gpt, codes, stopped):
    return codes.tolist() + ([gpt.cfg.stop_mel_token] if stopped else [])


@pytest.mark.parametrize("name", ["en", "zh", "es", "ja", "ar", "common"])
def test_decoded_codes_match_official(gpt, cond, m, name):
    ids, lang = case_ids(m, name)
    run = m["gpt"]["cases"][name]
    base = dict(max_mel_tokens=m["gpt"]["max_new"], runaway_guard=False)
    out = generate(gpt, cond, [ids], SamplingParams(mode="greedy", **base), langs=[lang])
    assert official_codes(gpt, out.codes[0], out.stopped[0]) == run["greedy"]
    runs = [(k, int(k.split("_")[1])) for k in run if k.startswith(("beam_", "sample_")) and k[-1].isdigit()
            and not k.startswith("beam_short")]
    assert runs
    for key, seed in runs:
        mode = "beam_sample" if key.startswith("beam") else "sample"
        out = generate(gpt, cond, [ids], SamplingParams(mode=mode, **base), langs=[lang],
                       generator=torch.Generator().manual_seed(seed))
        assert official_codes(gpt, out.codes[0], out.stopped[0]) == run[key], key
    if "beam_short_7" in run:
        out = generate(gpt, cond, [ids], SamplingParams(max_mel_tokens=m["gpt"]["short"], runaway_guard=False),
                       langs=[lang], generator=torch.Generator().manual_seed(7))
        assert official_codes(gpt, out.codes[0], out.stopped[0]) == run["beam_short_7"]


def test_greedy_batch_with_different_padding(gpt, cond, g, m):
    """One official call with two rows (different lengths, different left padding) = our batch."""
    batch = m["gpt"]["batch"]
    texts, langs = zip(*(case_ids(m, n) for n in batch["cases"]))
    with torch.inference_mode():
        emb, lengths = gpt.prompt(cond, list(texts), list(langs))
        cache = gpt.gpt.new_cache(2, emb.size(1) + 8)
        close(gpt.prefill(emb, lengths, cache), g["gpt.batch.prefill_logits"], ATOL)
    out = generate(gpt, cond, list(texts), SamplingParams(mode="greedy", max_mel_tokens=m["gpt"]["max_new"],
                                                         runaway_guard=False), langs=list(langs))
    stop = gpt.cfg.stop_mel_token
    for i, row in enumerate(batch["greedy"]):
        want = row[: row.index(stop) + 1] if stop in row else row  # finished rows are padded with stop
        assert official_codes(gpt, out.codes[i], out.stopped[i]) == want


def test_language_is_required_and_checked(gpt, cond, m):
    ids, _ = case_ids(m, "en")
    with pytest.raises(ValueError, match="needs each text's language"):
        gpt.prompt(cond, [ids])
    with pytest.raises(ValueError, match="language index"):
        gpt.prompt(cond, [ids], [gpt.cfg.languages])
    with pytest.raises(ValueError, match="language index"):
        gpt.prompt(cond, [LangText(ids, -1)])
    a, b = gpt.prompt(cond, [LangText(ids, 1)]), gpt.prompt(cond, [ids], [1])  # the two spellings agree
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="1 texts but 2 languages"):
        gpt.prompt(cond, [ids], [0, 1])


def test_bf16_gpt_takes_fp32_style_and_decodes(ckpt, cfg, m):
    """On GPUs the 2.5 GPT runs in bf16 (as upstream) while CAMPPlus and the emotion matrix stay fp32."""
    gpt = load_gpt(ckpt / "gpt.pth", gpt_config(cfg)).to(torch.bfloat16)
    ids, lang = case_ids(m, "zh")
    inp = m["gpt"]["inputs"]
    with torch.inference_mode():
        emo = gpt.emotion_vector(randn(inp["spk_feats"]).to(torch.bfloat16))
        cond = gpt.conditioning(randn(inp["style"]), emo)  # fp32 style
    assert cond.dtype == torch.bfloat16
    out = generate(gpt, cond, [ids], SamplingParams(max_mel_tokens=8, runaway_guard=False), langs=[lang],
                   generator=torch.Generator().manual_seed(0))
    assert 1 <= out.codes[0].numel() <= 8 and int(out.codes[0].max()) < gpt.cfg.start_mel_token


# ---- codec, S2M, vocoder --------------------------------------------------------------------


def test_codec_decode(ckpt, cfg, g, m):
    codec = load_codec(ckpt / "codec.pth", codec_config(cfg))
    codes = torch.tensor(m["codec"]["codes"])
    out = codec.decode(codes)
    assert out.shape == (codes.size(0), 2 * codes.size(1), 1024)
    close(out, g["codec.s_infer"], ATOL)


@pytest.fixture(scope="module")
def s2mel(ckpt, cfg):
    return load_s2mel(ckpt / "s2mel.pth", s2mel_config(cfg))


def test_s2mel_path(s2mel, g, m):
    sm = m["s2mel"]
    feats, style = randn(sm["inputs"]["feats"]), randn(sm["inputs"]["style"])
    ref_mel = randn(sm["inputs"]["ref_mel"]) + sm["ref_mel_shift"]
    s_infer = g["codec.s_infer"][:1]
    frames = torch.tensor([s_infer.size(1)])
    prompt = s2mel.prompt_condition(feats, ref_mel, style)  # normalised w2v features, no quantiser
    close(prompt.cond, g["s2mel.prompt_condition"], ATOL)
    for i, case in enumerate(sm["cases"]):
        target = mel_frames_25(s_infer.size(1), case["duration_factor"])
        assert target == case["target"]
        with torch.no_grad():
            close(s2mel.length_regulator(s_infer, torch.tensor([target]), frames), g[f"s2mel.{i}.cond"], ATOL)
        mel, lens = s2mel.generate(s_infer, frames, prompt, target_lens=torch.tensor([target]),
                                   generator=torch.Generator().manual_seed(case["seed"]))
        assert lens.tolist() == [target]
        close(mel, g[f"s2mel.{i}.mel"], ATOL)


def test_vocoder(ckpt, g):
    voc = load_vocoder(ckpt / "hf_cache/bigvgan/config.json", ckpt / "hf_cache/bigvgan/bigvgan_generator.pt", 80)
    with torch.no_grad():
        close(voc(g["s2mel.0.mel"]), g["vocoder.wav"], ATOL)


def test_mel_frames_25_is_a_double_product():
    assert mel_frames_25(24, 1.37) == int(24 * 1.72 * 1.37)
    # near whole numbers float32 and double disagree; the official product is a Python double
    assert (torch.tensor([460.0]) * 1.72 * 1.25).long().item() == 989
    assert mel_frames_25(460, 1.25) == 988
    with pytest.raises(ValueError):
        mel_frames_25(40, 0.0)
