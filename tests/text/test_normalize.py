"""Text normalisation (realtime_tts.text.normalize) against the official ``TextNormalizer``.

The golden cases in tests/fixtures/gpt/text_frontend.json were produced by the official code
(wetext branch, tools/golden/gpt.py). The extra cases written out below were checked once
against the same official code in the oracle venv; they pin behaviour the pipeline relies on
(pinyin passthrough, units, dates, punctuation map, glossary language fallback).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realtime_tts.text.normalize import TextNormalizer, correct_pinyin, is_chinese

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"
GOLDEN = json.loads((FIX / "text_frontend.json").read_text(encoding="utf-8"))["normalize"]


@pytest.fixture(scope="module")
def plain() -> TextNormalizer:
    n = TextNormalizer()
    n.load()
    return n


@pytest.fixture(scope="module")
def glossary() -> TextNormalizer:
    n = TextNormalizer()
    assert n.load_glossary(FIX / "glossary.yaml")
    return n


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{i}" for i in range(len(GOLDEN))])
def test_matches_official(plain, glossary, case):
    assert is_chinese(case["text"]) == case["zh"]
    assert plain.normalize(case["text"]) == case["out"]
    assert glossary.normalize(case["text"]) == case["glossary_out"]


def test_golden_set_covers_both_languages_and_the_glossary():
    assert sum(c["zh"] for c in GOLDEN) >= 20 and sum(not c["zh"] for c in GOLDEN) >= 8
    assert sum(c["glossary_out"] != c["out"] for c in GOLDEN) >= 2


@pytest.mark.parametrize(
    ("text", "zh", "out"),
    [
        # pinyin with tone digits passes through untouched (the digit is not read as a number)
        ("衣CHANG2和衣chang2", True, "衣CHANG2和衣chang2"),
        ("重庆的重读CHONG2", True, "重庆的重读CHONG2"),
        ("yu3 yan2", True, "yu3 yan2"),
        ("lv4色", True, "lv4色"),
        # a pinyin syllable makes Latin-only text Chinese
        ("Zhang1 San1 is here", True, "Zhang1 San1 is here"),
        # numbers, money, units, dates, percent, negative temperature
        ("第3名", True, "第三名"),
        ("价格$5", True, "价格五美元"),
        ("温度-5°C", True, "温度负五摄氏度"),
        ("50%的人", True, "百分之五十的人"),
        ("I have 3 apples and 2.5 kg rice on 2024-05-01.", False,
         "I have three apples and two point five kilograms rice on the first of may twenty twenty four."),
        # punctuation map: one alternation, the single full-width comma wins over "，，，"
        ("你好，，，世界", True, "你好,,,世界"),
        ("你好~", True, "你好-"),
        ("He said: (yes) [no]", False, "He said, 'yes' 'no'"),
        ("hello world", False, "hello world"),
    ],
)
def test_official_behaviour_cases(plain, text, zh, out):
    assert is_chinese(text) == zh
    assert plain.normalize(text) == out


def test_language_decision():
    assert is_chinese("你好 world")
    assert is_chinese("12345")  # no Latin letter
    assert is_chinese("user@example.com")  # bare e-mail address
    assert not is_chinese("beta2")  # "a2" follows a letter: not a pinyin syllable
    assert not is_chinese("Hello, world!")


@pytest.mark.parametrize(
    ("syllable", "out"),
    [("ju4", "JV4"), ("que4", "QVE4"), ("xun2", "XVN2"), ("QUAN2", "QVAN2"), ("chang2", "chang2"),
     ("lv4", "lv4"), ("jia1", "JIA1"), ("xiang3", "XIANG3")],
)
def test_jqx_u_is_written_with_v(syllable, out):
    # every j/q/x syllable comes back upper-cased, as upstream
    assert correct_pinyin(syllable) == out


def test_glossary_language_fallback_and_case():
    n = TextNormalizer(glossary={"SSD": {"en": "S S D"}, "PCIe": "PCIE",
                                 "GPU": {"zh": "G P U", "en": "graphics card"}})
    # a per-language reading missing for this language falls back to the term itself (upstream)
    assert n.normalize("买了SSD硬盘") == "买了SSD硬盘"
    assert n.normalize("buy an SSD now") == "buy an S S D now"
    # terms match case-insensitively
    assert n.normalize("pcie 和 GPU") == "PCIE 和 G P U"
    assert n.normalize("the gpu and pcie") == "the graphics card and PCIE"
    assert TextNormalizer(glossary={"GPU": "x"}, enable_glossary=False).normalize("the GPU") == "the GPU"


def test_glossary_reading_is_literal():
    # upstream hands the reading to re.sub as a template (a backslash raises); ours inserts it as is
    n = TextNormalizer(glossary={"foo": r"a\1b"})
    assert n.apply_glossary("x foo y", "en") == r"x a\1b y"


def test_glossary_file_errors(tmp_path):
    n = TextNormalizer()
    assert n.load_glossary(tmp_path / "missing.yaml") is False
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        n.load_glossary(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="mapping"):
        n.load_glossary(tmp_path / "list.yaml")
    (tmp_path / "ok.yaml").write_text("Wi-Fi: {zh: 无线网, en: why fi}\n", encoding="utf-8")
    assert n.load_glossary(tmp_path / "ok.yaml")
    assert n.normalize("打开Wi-Fi") == "打开无线网"


def test_empty_and_whitespace(plain):
    assert plain.normalize("") == ""
    assert plain.normalize("   ").strip() == ""
