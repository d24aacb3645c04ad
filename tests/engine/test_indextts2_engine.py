"""IndexTTS2 engine behaviour on the tiny official-layout checkpoint (tests/fixtures/pipeline):
loading and its error messages, the conditioning cache (memory + disk), cancellation between GPT
steps and between CFM steps, speed, forced code counts, long-text splitting, warm-up, describe.
Every synthesis here is the staged pipeline's batch of one (``synthesize``)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from realtime_tts.engine.base import Cancelled, CancelToken, Emotion, EngineError, SynthesisOptions, Voice
from realtime_tts.engine.checkpoints import CheckpointError
from realtime_tts.engine.devices import expected_cpu_rtf, pick_dtype
from realtime_tts.engine.indextts2 import IndexTTS2Engine
from realtime_tts.model.gpt import CodeOverride, SamplingParams
from realtime_tts.model.gpt.decode import DecodePool

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline"
CKPT = FIX / "checkpoints"
SPEAKER = Voice("speaker", FIX / "speaker_24k.wav", "c3" * 32)
CFM_STEPS = 3  # behaviour only: keep the tiny runs short


def load(path: Path = CKPT, **kw) -> IndexTTS2Engine:
    kw.setdefault("cache_dir", None)
    kw.setdefault("sampling", SamplingParams(max_mel_tokens=50))
    return IndexTTS2Engine.from_checkpoints(path, device="cpu", dtype="fp32", cfm_steps=CFM_STEPS, **kw)


@pytest.fixture(scope="module")
def engine() -> IndexTTS2Engine:
    return load()


def copy_checkpoint(tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(CKPT, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


# ----------------------------------------------------------------------------- loading


def test_identity_and_describe(engine):
    assert engine.name == "indextts2" and engine.sample_rate == 22050
    info = engine.describe()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["clones_voices"] is True and info["emotion_text"] is False  # no Qwen in the fixture
    assert info["expected_rtf"] == round(expected_cpu_rtf(), 1)


def test_missing_file_is_named(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    (ckpt / "s2mel.pth").unlink()
    with pytest.raises(CheckpointError, match=r"s2mel\.pth"):
        load(ckpt)


def test_gpt_missing_key_is_named(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    sd = torch.load(ckpt / "gpt.pth", weights_only=True)
    del sd["emo_layer.bias"]
    torch.save(sd, ckpt / "gpt.pth")
    with pytest.raises(CheckpointError, match=r"gpt\.pth[\s\S]*missing keys \(1\): emo_layer\.bias"):
        load(ckpt)


def test_s2mel_wrong_shape_is_named(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    ck = torch.load(ckpt / "s2mel.pth", weights_only=True)
    w = ck["net"]["cfm"]["estimator.cond_projection.weight"]
    ck["net"]["cfm"]["estimator.cond_projection.weight"] = torch.zeros(w.shape[0] + 1, w.shape[1])
    torch.save(ck, ckpt / "s2mel.pth")
    with pytest.raises(CheckpointError, match=r"s2mel\.pth[\s\S]*estimator\.cond_projection\.weight"):
        load(ckpt)


def test_config_mismatch_names_the_key(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    cfg["semantic_codec"]["hidden_size"] = 48
    (ckpt / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"semantic_codec\.hidden_size 48"):
        load(ckpt)


def test_partial_hf_cache_is_named(tmp_path):
    ckpt = copy_checkpoint(tmp_path)
    for p in (ckpt / "hf_cache").rglob("campplus_cn_common.bin"):
        p.unlink()
    with pytest.raises(CheckpointError, match=r"funasr/campplus campplus_cn_common\.bin"):
        load(ckpt)


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert pick_dtype(cpu) == torch.float32
    assert pick_dtype(cpu, "bf16") == torch.bfloat16  # honoured (with a warning)
    with pytest.raises(EngineError, match="unknown dtype"):
        pick_dtype(cpu, "int8")


# ----------------------------------------------------------------------------- conditioning cache


def test_conditioning_cache_memory_and_disk(tmp_path):
    cache = tmp_path / "cond"
    eng = load(cache_dir=cache)
    voices = eng.conditioner.voices
    vc = eng.conditioner.voice(SPEAKER)
    assert voices.misses == 1 and len(list(cache.glob("*.pt"))) == 1
    assert eng.conditioner.voice(SPEAKER) is vc and voices.hits == 1  # memory hit
    # a restart: a new engine on the same checkpoint reads the entry from disk, no recomputation
    eng2 = load(cache_dir=cache)
    eng2.family.voice_conditioning = None  # would raise if called
    vc2 = eng2.conditioner.voice(SPEAKER)
    for name in ("feats", "codes", "ref_mel", "style", "prompt", "spk_latents", "spk_emovec"):
        assert torch.equal(getattr(vc, name), getattr(vc2, name)), name
    # the key is the content hash: another hash for the same path is computed afresh
    other = Voice("speaker", SPEAKER.audio_path, "d4" * 32)
    voices.hits = voices.misses = 0
    eng.conditioner.voice(other)
    assert voices.misses == 1
    # a different checkpoint (fingerprint) never reads these entries
    assert eng.fingerprint == eng2.fingerprint
    eng3 = IndexTTS2Engine(eng.models, cache_dir=cache, fingerprint="another-model", cfm_steps=CFM_STEPS)
    eng3.conditioner.voice(SPEAKER)
    assert eng3.conditioner.voices.misses == 1


# ----------------------------------------------------------------------------- synthesis


def forced(engine, speed: float = 1.0, codes: int = 8, cancel=None, pieces=None):
    """``codes`` codes per piece exactly (a CodeOverride on the sampling parameters)."""
    ids = pieces or [engine.text_ids("Hello there.")[0]]
    g = torch.Generator().manual_seed(0)
    return engine.synthesize(ids, SynthesisOptions(voice=SPEAKER, speed=speed), cancel or CancelToken(), generator=g,
                             sampling=replace(engine.sampling, override=CodeOverride(codes)))


@pytest.fixture
def counted(engine, monkeypatch):
    """Counts GPT decode steps, CFM steps and vocoder passes; ``at[(kind, n)]()`` runs at the n-th."""
    seen = {"decode": 0, "cfm": 0, "vocoder": 0}
    at = {}

    def counting(kind, real):
        def wrapper(*args, **kwargs):
            seen[kind] += 1
            if (kind, seen[kind]) in at:
                at[kind, seen[kind]]()
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(DecodePool, "step", counting("decode", DecodePool.step))
    s2mel = engine.models.s2mel
    monkeypatch.setattr(s2mel.cfm, "velocity", counting("cfm", s2mel.cfm.velocity))
    monkeypatch.setattr(engine.family, "vocoder", counting("vocoder", engine.family.vocoder))
    return seen, at


def test_forced_code_count_and_speed(engine):
    # 8 codes -> int(8 * 1.72 / speed) mel frames -> 256 samples each
    assert forced(engine).pcm.shape == (256 * 13,)
    assert forced(engine, speed=2.0).pcm.shape == (256 * 6,)
    assert forced(engine, speed=0.5).pcm.shape == (256 * 27,)


def test_pieces_are_joined_with_200ms(engine):
    ids = engine.text_ids("Hello there.")[0]
    out = forced(engine, codes=5, pieces=[ids, ids])
    assert out.pcm.shape == (2 * 256 * 8 + 4410,)
    assert not out.pcm[256 * 8 : 256 * 8 + 4410].any()


def test_long_text_is_split_like_the_official_front_end(engine):
    text = "Hello there, how are you? I am fine. And you?"
    whole = engine.text_ids(text)
    assert len(whole) == 1
    engine.max_segment_tokens = 8
    try:
        pieces = engine.text_ids(text)
    finally:
        engine.max_segment_tokens = 120
    assert len(pieces) > 1 and all(len(p) <= 8 for p in pieces)
    assert sum(pieces, []) == whole[0]


def test_cancel_between_gpt_steps(engine, counted):
    seen, at = counted
    forced(engine)
    assert seen == {"decode": 8, "cfm": CFM_STEPS, "vocoder": 1}  # 8 codes, one decode step each
    seen.update(decode=0, cfm=0, vocoder=0)
    token = CancelToken()
    at["decode", 2] = token.cancel  # the client hangs up during the 2nd GPT step
    with pytest.raises(Cancelled):
        forced(engine, cancel=token)
    assert seen == {"decode": 2, "cfm": 0, "vocoder": 0}  # that step ends, no other runs


def test_cancel_between_cfm_steps(engine, counted):
    seen, at = counted
    token = CancelToken()
    at["cfm", 2] = token.cancel  # during the 2nd CFM step
    with pytest.raises(Cancelled):
        forced(engine, cancel=token)
    assert seen == {"decode": 8, "cfm": 2, "vocoder": 0}


def test_errors_are_clear(engine):
    with pytest.raises(EngineError, match="reference voice"):
        engine.synthesize("Hello.", SynthesisOptions(), CancelToken())
    with pytest.raises(EngineError, match="empty text"):
        engine.synthesize("  ", SynthesisOptions(voice=SPEAKER), CancelToken())
    with pytest.raises(EngineError, match="Qwen"):
        engine.synthesize("Hello.", SynthesisOptions(voice=SPEAKER, emotion=Emotion(text="cheerful")), CancelToken())
    missing = Voice("gone", FIX / "no-such.wav", "e5" * 32)
    with pytest.raises(EngineError, match="reference voice"):
        engine.synthesize("Hello.", SynthesisOptions(voice=missing), CancelToken())


def test_warmup_leaves_caches_and_seed_alone(engine):
    c = engine.conditioner
    before = (len(c.voices), len(c.emotions))
    engine.warmup()
    assert engine.warmed_up and engine.describe()["warmed_up"]
    assert (len(c.voices), len(c.emotions)) == before
