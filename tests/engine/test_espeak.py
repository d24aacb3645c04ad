import threading
from pathlib import Path

import numpy as np
import pytest

from realtime_tts.engine.base import Cancelled, CancelToken, EngineError, SynthesisOptions, Voice
from realtime_tts.engine.espeak import EspeakEngine, rate_for, voice_for

EN = "Hello world, this is a test of the speech engine."
ZH = "你好，今天天气很好，我们去公园散步吧。"


@pytest.fixture(scope="module")
def engine():
    return EspeakEngine()


def _say(engine, text, **kw):
    return engine.synthesize(text, SynthesisOptions(**kw), CancelToken())


def _rms(x):
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _pitch_hz(x, sr=22050):
    """Median autocorrelation pitch over loud 40 ms frames."""
    found = []
    for i in range(0, len(x) - 882, 441):
        frame = x[i : i + 882].astype(np.float64)
        if _rms(frame) < 0.05:
            continue
        ac = np.correlate(frame, frame, "full")[881:]
        lo, hi = sr // 400, sr // 60
        found.append(sr / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(found))


def _same_speech(a, b):
    # eSpeak carries a little synthesis state from call to call: a few samples of jitter.
    return abs(len(a) - len(b)) < 0.01 * len(a) and abs(_rms(a) - _rms(b)) < 0.05 * _rms(a)


@pytest.mark.parametrize("text,lo,hi", [(EN, 1.5, 5.0), (ZH, 2.0, 7.0), ("我用iPhone打电话。", 0.8, 4.0)])
def test_speaks_english_and_chinese(engine, text, lo, hi):
    audio = _say(engine, text)
    assert audio.sample_rate == 22050 == engine.sample_rate
    assert audio.pcm.dtype == np.float32 and audio.pcm.ndim == 1
    assert lo < audio.duration < hi
    assert _rms(audio.pcm) > 0.02 and np.abs(audio.pcm).max() <= 1.0
    assert "espeak" in audio.stages


def test_voice_is_picked_from_the_text():
    assert voice_for(EN) == "en-us"
    assert voice_for(ZH) == "cmn"
    assert voice_for("我用iPhone打电话") == "cmn"  # Latin words inside Chinese stay Mandarin
    assert voice_for("hello", "zh-CN") == "cmn"
    assert voice_for("你好", "en") == "en-us"
    with pytest.raises(EngineError, match="language"):
        voice_for("hola", "es")


def test_chinese_is_not_read_by_the_english_voice(engine):
    zh = _say(engine, ZH).pcm
    forced_zh = _say(engine, ZH, language="zh").pcm
    forced_en = _say(engine, ZH, language="en").pcm
    assert _same_speech(zh, forced_zh)
    assert not _same_speech(zh, forced_en)  # en-us spells out "Chinese letter" names instead


def test_speed_maps_to_rate(engine):
    assert rate_for(1.0) == 175 and rate_for(2.0) == 350 and rate_for(0.5) == 88
    normal = _say(engine, EN).duration
    fast = _say(engine, EN, speed=2.0).duration
    slow = _say(engine, EN, speed=0.5).duration
    assert fast < 0.65 * normal
    assert slow > 1.5 * normal


class _CancelAfter(CancelToken):
    """Fires after the engine has polled it ``n`` times (i.e. mid-synthesis)."""

    __slots__ = ("left", "polls")

    def __init__(self, n):
        super().__init__()
        self.left = n
        self.polls = 0

    @property
    def cancelled(self):
        self.polls += 1
        self.left -= 1
        if self.left <= 0:
            self.cancel()
        return super().cancelled


def test_cancel_aborts_mid_synthesis_and_engine_recovers(engine):
    long_text = " ".join([EN] * 6)
    token = _CancelAfter(3)
    with pytest.raises(Cancelled):
        engine.synthesize(long_text, SynthesisOptions(), token)
    assert token.polls == 3  # eSpeak stopped at the first callback after the cancel
    done = CancelToken()
    done.cancel()
    with pytest.raises(Cancelled):
        engine.synthesize(EN, SynthesisOptions(), done)
    assert _same_speech(_say(engine, EN).pcm, _say(engine, EN).pcm)  # still healthy


def test_empty_text_is_a_clear_error(engine):
    for text in ("", "   \n\t"):
        with pytest.raises(EngineError, match="empty text"):
            _say(engine, text)


def test_voice_variants_and_reference_clips(engine):
    clip = Voice(id="v1", audio_path=Path("/nonexistent.wav"), content_hash="x")
    plain = _say(engine, EN).pcm
    assert _same_speech(_say(engine, EN, voice=clip).pcm, plain)  # the clip is ignored
    f3 = Voice(id="espeak:f3", audio_path=Path("/nonexistent.wav"), content_hash="y")
    assert _pitch_hz(_say(engine, EN, voice=f3).pcm) > 1.5 * _pitch_hz(plain)  # female variant
    bad = Voice(id="espeak:../../etc", audio_path=Path("/x.wav"), content_hash="z")
    with pytest.raises(EngineError, match="variant"):
        _say(engine, EN, voice=bad)


def test_many_sequential_calls_are_stable(engine):
    first = {t: _say(engine, t).pcm for t in (EN, ZH)}
    for i in range(150):
        audio = _say(engine, (EN, ZH)[i % 2], speed=(1.0, 1.25, 0.75)[i % 3])
        assert audio.duration > 0.5
    for t, pcm in first.items():
        assert _same_speech(_say(engine, t).pcm, pcm)


def test_works_from_other_threads_concurrently():
    engine = EspeakEngine()  # a second instance shares the one library safely
    expected = {t: _say(engine, t).pcm for t in (EN, ZH)}
    results, errors = [], []

    def worker(text):
        try:
            for _ in range(5):
                results.append((text, _say(engine, text).pcm))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in (EN, ZH, EN, ZH)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    assert len(results) == 20
    assert all(_same_speech(pcm, expected[text]) for text, pcm in results)


def test_synthesis_leaves_no_ctypes_type_per_chunk_length(engine):
    """eSpeak hands audio in chunks of varying length; a ctypes array type made per length is
    cached by ctypes for good, so a long-running server would grow with every new length."""
    import ctypes
    import gc

    def ctypes_types() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, type) and issubclass(o, (ctypes.Array, ctypes._Pointer)))

    engine.synthesize("Warm up the voice first.", SynthesisOptions(), CancelToken())
    before = ctypes_types()
    for n in range(1, 25):
        engine.synthesize("word " * n, SynthesisOptions(speed=0.8 + n / 40), CancelToken())
    assert ctypes_types() - before <= 2
