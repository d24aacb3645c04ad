"""IndexTTS-2.5 front end: languages, vocabulary file checks, Spanish normaliser plumbing and
the behaviour the official code does not define (tests/text/test_multilingual_golden.py
compares everything else with the official output)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from realtime_tts.text.languages import (
    SUPPORTED_LANGUAGES, UnsupportedLanguageError, detect_language, language_id, parse_language,
)
from realtime_tts.text.multilingual import MultilingualFrontEnd, TextTooLongError, gpt_text_ids
from realtime_tts.text.spanish import SpanishNormalizer
from realtime_tts.text.tiktoken_vocab import TIKTOKEN_FILE, MultilingualTokenizer

VOCAB = Path(__file__).parents[1] / "fixtures" / "indextts25" / TIKTOKEN_FILE


@pytest.fixture(scope="module")
def front_end() -> MultilingualFrontEnd:
    return MultilingualFrontEnd(VOCAB)


# ---- languages ---------------------------------------------------------------------------

def test_supported_languages_and_their_embedding_rows():
    assert SUPPORTED_LANGUAGES == ("zh", "en", "ja", "es", "ar")
    assert [language_id(c) for c in SUPPORTED_LANGUAGES] == [1, 0, 7, 3, 13]
    assert language_id("zhen") == language_id("klingon") == 105


@pytest.mark.parametrize("value,code", [
    ("zh", "zh"), ("ZH", "zh"), (" en ", "en"), ("zh-CN", "zh"), ("zh_Hans", "zh"), ("es-MX", "es"),
    ("ja-JP", "ja"), ("ar-SA", "ar"), ("Japanese", "ja"), ("mandarin", "zh"), ("Castilian", "es"),
    ("ara", "ar"), ("eng", "en"),
])
def test_parse_language(value, code):
    assert parse_language(value) == code


@pytest.mark.parametrize("value", ["fr", "de-DE", "", "zhen", "common", "x" * 200, None, 3])
def test_unsupported_language_names_the_supported_ones(value):
    with pytest.raises(UnsupportedLanguageError, match="zh, en, ja, es, ar") as err:
        parse_language(value)
    assert isinstance(err.value, ValueError)
    assert len(str(err.value)) < 120  # a long value is shortened in the message


@pytest.mark.parametrize("text,code", [
    ("مرحبا بكم", "ar"), ("Hello مرحبا 你好 こんにちは", "ar"),
    ("今日は良い天気", "ja"), ("カタカナ only", "ja"), ("ｶﾀｶﾅ", "ja"), ("漢字とかな", "ja"),
    ("你好世界", "zh"), ("Hello 世界", "zh"), ("\U00020000", "zh"),
    ("¿Qué tal?", "es"), ("¡Hola!", "es"), ("mañana", "es"), ("canción", "es"),
    ("café résumé naïve über", "en"), ("Hello world", "en"), ("12345 !!", "en"), ("", "en"),
    ("\ufeffHello", "en"),  # a byte-order mark is not an Arabic letter
])
def test_detect_language_by_script(text, code):
    assert detect_language(text) == code


def test_segments_without_a_language_detect_it(front_end):
    assert front_end.segments("你好。")[0][0] == front_end.tokenizer.special_id("<|zh|>")
    assert front_end.segments("مرحبا")[0][0] == front_end.tokenizer.special_id("<|ar|>")
    assert front_end.segments("Hello", "JA")[0][0] == front_end.tokenizer.special_id("<|ja|>")
    with pytest.raises(UnsupportedLanguageError):
        front_end.segments("Bonjour", "fr")
    with pytest.raises(UnsupportedLanguageError, match="zh, en, ja, es, ar"):
        front_end.process("Bonjour", "fr")
    with pytest.raises(UnsupportedLanguageError, match="not 'ZH'"):
        front_end.process("你好", "ZH")  # process() takes parsed codes only


# ---- vocabulary file ---------------------------------------------------------------------

def _vocab_lines() -> list[str]:
    return VOCAB.read_text(encoding="ascii").splitlines(keepends=True)


def test_vocabulary_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tiktoken"):
        MultilingualTokenizer(tmp_path / "nowhere.tiktoken")
    lines = _vocab_lines()
    # a circulating damaged copy: one rank written twice, every later id shifted by one
    damaged = tmp_path / "damaged.tiktoken"
    damaged.write_text("".join(lines[:8013] + [lines[8013].replace("8013", "8012")] + lines[8014:]))
    with pytest.raises(ValueError, match=r"damaged.tiktoken:8014: rank 8012 out of sequence"):
        MultilingualTokenizer(damaged)
    garbage = tmp_path / "garbage.tiktoken"
    garbage.write_text("IQ== 0\nnot-a-line\n")
    with pytest.raises(ValueError, match=r"garbage.tiktoken:2: expected"):
        MultilingualTokenizer(garbage)
    binary = tmp_path / "binary.tiktoken"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not a .tiktoken vocabulary"):
        MultilingualTokenizer(binary)
    empty = tmp_path / "empty.tiktoken"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty vocabulary"):
        MultilingualTokenizer(empty)


def test_the_empty_token_line_keeps_its_rank(front_end):
    # the released file has a line "=" (rank 48474): strict base64 would refuse the file
    assert _vocab_lines()[48474] == "= 48474\n"
    assert front_end.tokenizer.num_ranks == 58836


# ---- what the official code leaves undefined ---------------------------------------------

@pytest.mark.parametrize("text", ["", "   ", "\n\n", "\t"])
def test_blank_text_gives_no_segments(front_end, text):
    for lang in SUPPORTED_LANGUAGES:
        assert front_end.segments(text, lang) == []


def test_an_annotation_longer_than_the_text_positions_is_refused(front_end):
    long = "<going|" + "AH " * 700 + ">"
    with pytest.raises(TextTooLongError, match="600 text positions"):
        front_end.segments(long, "en")
    ok = "<going|" + "AH " * 100 + ">"
    assert len(front_end.segments(ok, "en")) == 1  # over the 118 budget but within 600: kept whole


def test_gpt_text_ids_drop_start_and_stop_ids():
    assert gpt_text_ids([58838, 7627, 0, 1002, 1, 0, 1]) == [58838, 7627, 1002]


# ---- Spanish through NeMo (optional) -----------------------------------------------------

class _FakeNemo:
    calls: list = []

    def __init__(self, input_case, lang):
        _FakeNemo.calls.append(("init", input_case, lang))

    def normalize(self, text, verbose):
        _FakeNemo.calls.append(("normalize", text, verbose))
        if "fail" in text:
            raise RuntimeError("grammar error")
        return text.replace("25", "veinticinco")


@pytest.fixture
def fake_nemo(monkeypatch):
    module = types.ModuleType("nemo_text_processing.text_normalization.normalize")
    module.Normalizer = _FakeNemo
    for name in ("nemo_text_processing", "nemo_text_processing.text_normalization"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    _FakeNemo.calls = []
    return _FakeNemo


def test_spanish_uses_nemo_where_installed(fake_nemo):
    fe = MultilingualFrontEnd(VOCAB)
    assert fe.process("Tengo 25 años <hola|O L A 25>", "es") == (
        "TENGO VEINTICINCO AÑOS <|SPECIAL_TOKEN_1|>O L A 25<|SPECIAL_TOKEN_1|>"
    )
    assert fake_nemo.calls[0] == ("init", "cased", "es")
    # the annotation went to NeMo as a placeholder, so its digits were not read
    assert fake_nemo.calls[1] == ("normalize", "Tengo 25 años PRONPLACEHOLDERaPRONPLACEHOLDER", False)
    assert "es: NeMo text normalisation" in "\n".join(fe.describe())


def test_spanish_normalisation_failure_keeps_the_text(fake_nemo, caplog):
    es = SpanishNormalizer()
    assert es.normalize("this will fail 25") == "this will fail 25"
    assert "Spanish text normalisation failed" in caplog.text and "Traceback" not in caplog.text


def test_spanish_without_nemo_passes_through(monkeypatch):
    monkeypatch.setitem(sys.modules, "nemo_text_processing", None)  # import fails
    fe = MultilingualFrontEnd(VOCAB)
    assert fe.process("Tengo 25 años.", "es") == "TENGO 25 AÑOS."
    lines = fe.describe()
    assert any(line.startswith("es: no text normalisation") and "not installed" in line for line in lines)
    assert any(line.startswith("zh/en: text normalisation by ") for line in lines)
    assert "ja: no text normalisation; words split by MeCab (unidic-lite" in "\n".join(lines)


def test_text_normalization_off(front_end):
    fe = MultilingualFrontEnd(VOCAB, front_end.normalizer, text_normalization=False)
    assert fe.process("今天是2025年", "zh") == "今天是2025年"
    assert fe.describe() == ["text normalisation off for every language"]
