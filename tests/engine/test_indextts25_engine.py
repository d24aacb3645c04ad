"""IndexTTS-2.5 through the staged pipeline (engine/indextts25.py) on the tiny official-layout
checkpoint drawn from its seed (tests/conftest.py ``tiny25_checkpoint``).

End to end against the OFFICIAL ``IndexTTS2.infer`` of infer_v2_5 (tools/golden/indextts25.py,
the goldens tests/model/test_indextts25_e2e.py checks module by module): the engine reproduces the
codes exactly and the waveform within 1e-3, alone (``synthesize``) and in a continuous batch that
segments join mid-decode. The official run seeds the global RNG and its w2v-BERT (transformers
4.52) draws one ``torch.rand`` per layer per call before the GPT samples; the test replays those
draws on the segment's generator. Then: language per segment, the 2.5 mel-length rule for speed,
emotion from a clip / text (Qwen located, loaded only when asked), the conditioning cache,
``--dtype`` (GPT only), engine selection, describe and the start-up log, missing files.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from realtime_tts.audio.io import load_emotion_prompt, load_speaker_prompt
from realtime_tts.engine.base import CancelToken, Emotion, EngineError, SynthesisOptions, Voice
from realtime_tts.engine.checkpoints import CheckpointError
from realtime_tts.engine.indextts25 import IndexTTS25Engine
from realtime_tts.engine.select import choose_engine, load_engine
from realtime_tts.model.gpt import CodeOverride
from realtime_tts.model.indextts25 import DEFAULT_SAMPLING

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from indextts25_fixture import FIX, gold, meta  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from indextts25_helpers import LANG_ROWS, spy_prompt_langs  # noqa: E402

E2E_ATOL = 1e-3
HOP = 256
E2E = meta()["e2e"]
CASES = {c["name"]: c for c in E2E["cases"]}
V2_CHECKPOINTS = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline" / "checkpoints"


def voice(path: Path, name: str) -> Voice:
    return Voice(name, path, hashlib.sha256(path.read_bytes()).hexdigest())


SPEAKER = voice(FIX / "prompt_24k.wav", "prompt")
OTHER = voice(Path(__file__).resolve().parents[1] / "fixtures" / "pipeline" / "speaker_24k.wav", "other")


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def loaded(tiny25_checkpoint):
    """The module's engine (official sampling at the golden's 20-code budget) and its start-up log."""
    records, log = Records(), logging.getLogger("realtime_tts.engine.pipeline")  # the shared loader logs
    log.addHandler(records)
    log.setLevel(logging.INFO)
    try:
        engine = IndexTTS25Engine.from_checkpoints(
            tiny25_checkpoint, device="cpu", dtype="auto", cache_dir=None,
            sampling=replace(DEFAULT_SAMPLING, max_mel_tokens=E2E["max_mel_tokens"], runaway_guard=False))
    finally:
        log.removeHandler(records)
    return engine, records.messages


@pytest.fixture(scope="module")
def engine(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def g():
    return gold()


@pytest.fixture
def codes_seen(engine, monkeypatch):
    """The codes the render step receives, per call: {leading language tag id: codes}."""
    seen: list[dict[int, list[int]]] = []
    real = engine.family.s2m_features

    def spy(conds, ids, codes):
        seen.append({int(i[0]): c.tolist() for i, c in zip(ids, codes)})
        return real(conds, ids, codes)

    monkeypatch.setattr(engine.family, "s2m_features", spy)
    return seen


def tag(engine, lang: str) -> int:
    return engine.family.front.tokenizer.special_id(f"<|{lang}|>")


def official_generator(case: dict) -> torch.Generator:
    """The official run's RNG stream at the GPT: seeded, then the w2v-BERT draws replayed."""
    gen = torch.Generator().manual_seed(case["seed"])
    for _ in range(case["w2v_calls"] * E2E["w2v_layers"]):
        torch.rand([], generator=gen)
    return gen


def official_options(case: dict) -> SynthesisOptions:
    kw = case["kwargs"]
    emotion = Emotion(vector=tuple(kw["emo_vector"]), alpha=kw["emo_alpha"]) if "emo_vector" in kw else None
    # the official duration_factor is our 1 / speed (the family's mel_frames turns it back)
    return SynthesisOptions(voice=SPEAKER, emotion=emotion, speed=1.0 / kw.get("duration_factor", 1.0),
                            language=case["lang"].lower())


def assert_official(case: dict, pcm: np.ndarray, codes: list[int], g) -> None:
    name = case["name"]
    assert codes == g[f"e2e.{name}.codes"][0].tolist()
    want = g[f"e2e.{name}.wav"][0].numpy()
    assert pcm.shape == want.shape
    np.testing.assert_allclose(pcm, want, atol=E2E_ATOL, rtol=0)


# ----------------------------------------------------------------------------- official end to end


def test_voice_conditioning_is_the_officials(engine, g):
    """What the official code caches for the speaker clip (cache_s2mel_prompt/_style, the mel)."""
    vc = engine.conditioner.voice(SPEAKER)
    for ours, theirs in ((vc.ref_mel, "e2e.ref_mel"), (vc.style, "e2e.style"), (vc.prompt, "e2e.prompt_condition")):
        torch.testing.assert_close(ours, g[theirs], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_synthesize_matches_the_official_infer(engine, codes_seen, g, name):
    case = CASES[name]
    opts = official_options(case)
    assert engine.text_ids(case["text"], opts.language) == [case["ids"]]  # front end + vocabulary
    out = engine.synthesize(case["text"], opts, CancelToken(), generator=official_generator(case))
    assert len(codes_seen) == 1
    assert_official(case, out.pcm, codes_seen[0][tag(engine, opts.language)], g)
    assert set(out.stages) == {"conditioning", "gpt_prefill", "gpt", "codec", "s2mel", "vocoder"}  # no latent pass


def test_a_continuous_batch_matches_the_official_and_a_run_alone(engine, codes_seen, g):
    """Segments join a running decode at different steps; each is what it is alone."""
    en, zh = CASES["en"], CASES["zh_vector"]
    ja_text, ja_opts = "今日はいい天気ですね。", SynthesisOptions(voice=SPEAKER, language="ja")
    alone = engine.synthesize(ja_text, ja_opts, CancelToken(), generator=torch.Generator().manual_seed(11))
    alone_codes = codes_seen.pop()[tag(engine, "ja")]
    batch = engine.open_batch(4)
    batch.add("en", en["text"], official_options(en), CancelToken(), generator=official_generator(en))
    results = dict(batch.step())
    batch.add("zh", zh["text"], official_options(zh), CancelToken(), generator=official_generator(zh))
    batch.add("ja", ja_text, ja_opts, CancelToken(), generator=torch.Generator().manual_seed(11))
    assert len(batch) == 3  # all three decode together
    while len(batch):
        results.update(batch.step())
    codes = {k: v for step in codes_seen for k, v in step.items()}
    assert_official(en, results["en"].pcm, codes[tag(engine, "en")], g)
    assert_official(zh, results["zh"].pcm, codes[tag(engine, "zh")], g)
    assert codes[tag(engine, "ja")] == alone_codes
    np.testing.assert_allclose(results["ja"].pcm, alone.pcm, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- languages


LANG_TEXTS = {"zh": "你好。", "en": "Hello.", "ja": "こんにちは。", "es": "¿Qué tal?", "ar": "مرحبا."}


@pytest.fixture
def prompt_langs(engine, monkeypatch):
    """The language row of every text the GPT's prompt receives."""
    return spy_prompt_langs(engine, monkeypatch)


def forced(engine, codes: int = 4):
    return replace(engine.sampling, override=CodeOverride(codes))


def test_each_segment_speaks_its_own_language(engine, prompt_langs):
    """One batch, five languages detected from the script: each piece gets its tag and its row."""
    items = [(text, SynthesisOptions(voice=SPEAKER), CancelToken()) for text in LANG_TEXTS.values()]
    for lang, text in LANG_TEXTS.items():
        assert engine.text_ids(text)[0][0] == tag(engine, lang)
    results = engine.run_batch(items, generators=[torch.Generator().manual_seed(i) for i in range(5)],
                               sampling=forced(engine))
    assert all(r.pcm.size for r in results)
    assert sorted(prompt_langs) == sorted(LANG_ROWS[lang] for lang in LANG_TEXTS)


def test_the_request_language_wins_over_detection(engine, prompt_langs):
    text = "Hola amigo."  # no Spanish-only letter: detected as English
    assert engine.text_ids(text)[0][0] == tag(engine, "en")
    engine.synthesize(text, SynthesisOptions(voice=SPEAKER, language="es-MX"), CancelToken(),
                      generator=torch.Generator().manual_seed(0), sampling=forced(engine))
    assert prompt_langs == [LANG_ROWS["es"]]
    # pre-tokenised ids carry no tag: the request's language, else the official unknown row
    ids = torch.tensor(engine.text_ids(text, "es")[0][1:])
    cond = engine.conditioner.segment(SPEAKER, None, "ja")
    assert engine.family.gpt_texts([cond], [ids])[0].lang == LANG_ROWS["ja"]
    assert engine.family.gpt_texts([engine.conditioner.segment(SPEAKER, None)], [ids])[0].lang == 105


def test_an_unsupported_language_is_a_clear_error(engine):
    for bad in ("fr", "klingon"):
        with pytest.raises(EngineError, match="supported are zh, en, ja, es, ar"):
            engine.synthesize("Bonjour.", SynthesisOptions(voice=SPEAKER, language=bad), CancelToken())
    with pytest.raises(EngineError, match="nothing to say"):
        engine.text_ids("  ")


# ----------------------------------------------------------------------------- speed, emotion


@pytest.mark.parametrize("speed", [1.0, 0.8, 1.25, 0.5, 1 / 1.2])
def test_speed_stretches_the_mel_by_the_official_duration_rule(engine, speed):
    """8 codes -> 16 codec frames -> int(16 * 1.72 * duration_factor) mel frames, duration_factor = 1/speed."""
    out = engine.synthesize("Hello there.", SynthesisOptions(voice=SPEAKER, speed=speed), CancelToken(),
                            generator=torch.Generator().manual_seed(0), sampling=forced(engine, 8))
    assert out.pcm.shape == (HOP * int(2 * 8 * 1.72 * (1 / speed)),)


def test_emotion_from_a_reference_clip_is_merged_by_alpha(engine):
    m = engine.models
    with torch.inference_mode():
        base = m.gpt.emotion_vector(m.w2v.encode(load_speaker_prompt(SPEAKER.audio_path).wav_16k))
        emo = m.gpt.emotion_vector(m.w2v.encode(load_emotion_prompt(OTHER.audio_path).wav))
        cond = engine.conditioner.segment(SPEAKER, Emotion(reference=OTHER, alpha=0.4), "en")
        want = base + 0.4 * (emo - base)
        torch.testing.assert_close(cond.emovec, want, atol=1e-5, rtol=0)
        style = cond.voice.style
        torch.testing.assert_close(cond.gpt, m.gpt.conditioning(style, want), atol=1e-5, rtol=0)
    assert cond.gpt.shape == (1, 3, m.gpt.cfg.model_dim)  # speaker + emotion, then two zero vectors
    assert torch.equal(cond.gpt[0, 1:], torch.zeros_like(cond.gpt[0, 1:]))


def test_emotion_text_needs_the_qwen_model(engine):
    assert engine.capabilities().emotion == ("vector", "reference")
    with pytest.raises(EngineError, match="Qwen emotion model"):
        engine.synthesize("Hello.", SynthesisOptions(voice=SPEAKER, emotion=Emotion(text="very happy")),
                          CancelToken())


# ----------------------------------------------------------------------------- cache


def test_conditioning_is_cached_in_memory_and_on_disk(engine, tmp_path, monkeypatch):
    a = IndexTTS25Engine(engine.family, cache_dir=tmp_path, fingerprint=engine.fingerprint)
    vc = a.conditioner.voice(SPEAKER)
    assert a.conditioner.voice(SPEAKER) is vc and a.conditioner.voices.hits == 1
    assert len(list(tmp_path.glob("*.pt"))) == 1
    # a restart on the same weights reads the entry from disk, nothing is recomputed
    monkeypatch.setattr(engine.family, "voice_conditioning", lambda src: pytest.fail("recomputed"))
    b = IndexTTS25Engine(engine.family, cache_dir=tmp_path, fingerprint=engine.fingerprint)
    vc2 = b.conditioner.voice(SPEAKER)
    for name in ("ref_mel", "style", "prompt", "spk_emovec"):
        assert torch.equal(getattr(vc, name), getattr(vc2, name)), name
    # other weights (fingerprint) never read these entries
    c = IndexTTS25Engine(engine.family, cache_dir=tmp_path, fingerprint="other-weights")
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        c.conditioner.voice(SPEAKER)


# ----------------------------------------------------------------------------- dtype, selection, describe


def linked_copy(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    """The checkpoint directory as symbolic links (no 300 MB copy), minus ``skip``."""
    for f in src.rglob("*"):
        rel = f.relative_to(src).as_posix()
        if f.is_file() and rel not in skip:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(f)
    return dst


def test_dtype_setting_and_a_qwen_directory(tiny25_checkpoint, tmp_path, engine):
    """``serve --dtype bf16`` on an IndexTTS-2.5 directory: engine chosen by ``auto``, the GPT in
    bf16 and everything else fp32 (as the official ``use_bf16``); a Qwen directory makes emotion
    text available without loading Qwen."""
    from realtime_tts.cli import build_context
    from realtime_tts.config import Settings

    ck = linked_copy(tiny25_checkpoint, tmp_path / "ck")
    qwen = ck / "qwen0.6bemo4-merge"
    qwen.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (qwen / name).write_text("{}")
    settings = Settings(data_dir=tmp_path / "data", checkpoints=ck, device="cpu", dtype="bf16", engine="auto")
    choice = choose_engine(settings.engine, ck)
    assert choice.name == "indextts2.5"
    bf16 = build_context(settings, choice).load_engine()
    try:
        m = bf16.models
        assert {p.dtype for p in m.gpt.parameters()} == {torch.bfloat16}
        for module in (m.codec, m.s2mel, m.vocoder, m.w2v, m.campplus):
            assert {p.dtype for p in module.parameters()} == {torch.float32}
        info = bf16.describe()
        assert info["dtype"] == "bfloat16" and info["precision"] == "GPT bfloat16, everything else float32"
        assert bf16.fingerprint != engine.fingerprint  # dtype is part of the cache identity
        out = bf16.synthesize("你好。", SynthesisOptions(voice=SPEAKER), CancelToken(),
                              generator=torch.Generator().manual_seed(0), sampling=forced(bf16, 4))
        assert out.pcm.shape == (HOP * int(8 * 1.72),) and np.isfinite(out.pcm).all()
        # emotion text: offered, Qwen not loaded until a text emotion arrives
        assert "text" in bf16.capabilities().emotion and info["emotion_text"] is True
        assert not m.qwen.loaded
        answers = []
        answer = {"happy": 0.9, "angry": 0, "sad": 0, "afraid": 0, "disgusted": 0, "melancholic": 0,
                  "surprised": 0.1, "calm": 0}
        m.qwen.analyze = lambda text: answers.append(text) or answer
        cond = bf16.conditioner.segment(SPEAKER, Emotion(text="overjoyed"), "en")
        vec = bf16.conditioner.segment(SPEAKER, Emotion(vector=tuple(answer.values())), "en")
        assert answers == ["overjoyed"] and torch.equal(cond.emovec, vec.emovec)
    finally:
        bf16.close()


def test_engine_selection_reads_the_directory(tiny25_checkpoint, tmp_path, monkeypatch):
    assert choose_engine("auto", tiny25_checkpoint).name == "indextts2.5"
    assert choose_engine("indextts2.5", tiny25_checkpoint).name == "indextts2.5"
    assert choose_engine("auto", V2_CHECKPOINTS).name == "indextts2"
    with pytest.raises(CheckpointError, match=r"holds an IndexTTS-2\.5 checkpoint; use --engine indextts2\.5"):
        choose_engine("indextts2", tiny25_checkpoint)
    with pytest.raises(CheckpointError, match=r"holds an IndexTTS-2 checkpoint; use --engine indextts2 "):
        choose_engine("indextts2.5", V2_CHECKPOINTS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=rf"codec\.pth(.|\n)*realtime-tts download --model indextts-2\.5 "
                                              rf"--dir {empty}"):
        choose_engine("indextts2.5", empty)
    partial = linked_copy(tiny25_checkpoint, tmp_path / "partial", skip=("codec.pth",))
    choice = choose_engine("auto", partial)
    assert choice.name == "espeak" and f"realtime-tts download --model indextts-2.5 --dir {partial}" in choice.reason
    with pytest.raises(CheckpointError, match=rf"codec\.pth(.|\n)*download --model indextts-2\.5 --dir {partial}"):
        IndexTTS25Engine.from_checkpoints(partial, device="cpu", cache_dir=None)
    built = []
    monkeypatch.setattr(IndexTTS25Engine, "from_checkpoints", classmethod(lambda cls, path, **kw: built.append(path)))
    load_engine(choose_engine("auto", tiny25_checkpoint), checkpoints=tiny25_checkpoint)
    assert built == [tiny25_checkpoint]


def test_batching_is_automatic_on_a_gpu(monkeypatch):
    from realtime_tts.cli import batch_size
    from realtime_tts.config import Settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert batch_size(Settings(max_batch=0), "indextts2.5") == 8
    assert batch_size(Settings(max_batch=0), "espeak") == 1


def test_describe_names_the_family_languages_and_front_end(loaded):
    engine, startup_log = loaded
    info = engine.describe()
    assert info["name"] == "indextts2.5" and info["family"] == "IndexTTS-2.5"
    assert info["languages"] == ["zh", "en", "ja", "es", "ar"] and info["dtype"] == "float32"
    assert info["text_frontend"][0].startswith("zh/en: text normalisation by ")
    assert any(line.startswith("ja: ") and "MeCab" in line for line in info["text_frontend"])
    logged = [m for m in startup_log if "text front end" in m]
    assert len(logged) == len(info["text_frontend"]) and all(line in "\n".join(logged)
                                                              for line in info["text_frontend"])
    assert engine.sampling.num_beams == 3 and engine.family.default_sampling() == DEFAULT_SAMPLING


def test_warmup_runs_and_leaves_the_seed_alone(engine):
    before = engine.conditioner.describe()["entries"]
    engine.warmup()
    assert engine.warmed_up and engine.conditioner.describe()["entries"] == before
