"""The IndexTTS-2.5 text front end against the official code (ee40fa7) on a multilingual set:
tests/fixtures/indextts25/text_frontend.json, written by tools/golden/indextts25_text.py.

zh/en normalisation: the official code on Linux runs WeTextProcessing; where the wetext
branch of the same code gives another result, the fixture holds that too, and each case is
compared with the one matching the backend our ``TextNormalizer`` runs on.

Deliberate differences (multilingual.py's docstring):
* a blank text gives no segments (official: one segment holding only the language tag);
* ``TextTooLongError`` and the Spanish annotation shield are not reachable in this set (the
  oracle has no NeMo, as the official lock): tests/text/test_multilingual.py covers them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realtime_tts.text.annotations import apply_annotations
from realtime_tts.text.japanese import JapaneseWordSplitter
from realtime_tts.text.languages import language_id, parse_language
from realtime_tts.text.multilingual import MultilingualFrontEnd, gpt_text_ids
from realtime_tts.text.tiktoken_vocab import TIKTOKEN_FILE, special_token_names

FIXTURES = Path(__file__).parents[1] / "fixtures" / "indextts25"
GOLDEN = json.loads((FIXTURES / "text_frontend.json").read_text(encoding="utf-8"))
COMPONENTS = GOLDEN["components"]
CASES = GOLDEN["cases"]


@pytest.fixture(scope="module")
def front_end() -> MultilingualFrontEnd:
    fe = MultilingualFrontEnd(FIXTURES / TIKTOKEN_FILE)
    fe.load()
    return fe


@pytest.fixture(scope="module")
def front_end_no_tn(front_end) -> MultilingualFrontEnd:
    fe = MultilingualFrontEnd(FIXTURES / TIKTOKEN_FILE, front_end.normalizer, text_normalization=False)
    fe.load()
    return fe


def expected(case: dict, key: str, backend: str):
    if backend == "wetext" and key in case.get("wetext", {}):
        return case["wetext"][key]
    return case[key]


def test_special_tokens_and_vocabulary_size(front_end):
    assert special_token_names() == COMPONENTS["specials"]
    assert front_end.tokenizer.num_ranks == COMPONENTS["first_special_id"] == 58836
    assert front_end.tokenizer.vocab_size == COMPONENTS["n_vocab"] == 60509


@pytest.mark.parametrize("case", COMPONENTS["encode"], ids=lambda c: repr(c["text"][:24]))
def test_encode(front_end, case):
    assert front_end.tokenizer.encode(case["text"]) == case["ids"]


def test_language_ids():
    for code, row in COMPONENTS["lang_to_token"].items():
        assert language_id(code) == row, code


@pytest.mark.parametrize("case", COMPONENTS["annotations"], ids=lambda c: repr(c["text"]))
def test_annotations(case):
    assert apply_annotations(case["text"]) == case["out"]


def test_japanese_word_split():
    splitter = JapaneseWordSplitter()
    for case in COMPONENTS["ja_split"]:
        assert splitter.split(case["text"]) == case["out"], case["text"]


@pytest.mark.parametrize("case", COMPONENTS["split"], ids=lambda c: f"{c['max_tokens']}-{c['text'][:16]!r}")
def test_token_budget_split(front_end, case):
    budget = max(1, min(case["max_tokens"], 600) - front_end.tokenizer.count(case["prefix"]))
    assert front_end.split(case["text"], budget) == case["segments"]


def _case_id(case: dict) -> str:
    flags = "" if case["text_normalization"] else "-noTN"
    return f"{case['lang']}-{case['max_tokens']}{flags}-{case['text'][:18]!r}"


@pytest.mark.parametrize("case", [c for c in CASES if c["text"].strip()], ids=_case_id)
def test_pipeline(front_end, front_end_no_tn, case):
    fe = front_end if case["text_normalization"] else front_end_no_tn
    backend = front_end.zh_en_backend
    lang = parse_language(case["lang"])
    processed = fe.process(case["text"], lang)
    assert processed == expected(case, "processed", backend)
    assert fe.split(processed, fe.budget(lang, case["max_tokens"])) == expected(case, "segments", backend)
    assert fe.segments(case["text"], lang, case["max_tokens"]) == expected(case, "ids", backend)
    assert language_id(lang) == case["lang_id"]


def test_blank_text_is_a_deliberate_difference(front_end):
    (case,) = [c for c in CASES if not c["text"].strip()]
    assert case["ids"] == [[58838, 220, 1]]  # official: the language tag alone
    assert front_end.segments(case["text"], "en") == []


def test_the_golden_set_covers_the_upstream_quirks():
    by_text = {(c["text"], c["max_tokens"]): c for c in CASES}
    tokyo = by_text[("<東京|TOKYO>に行きます。", 120)]
    assert "< | SPECIAL _ TOKEN _ 2 | >" in tokyo["processed"]  # Japanese-annotation quirk
    hello = by_text[("Hello world! This is a test.", 120)]
    assert hello["ids"] == [[58838, 7627, 1002, 0, 341, 307, 257, 1500, 13, 1]]
    assert gpt_text_ids(hello["ids"][0]) == [58838, 7627, 1002, 341, 307, 257, 1500, 13]  # "!" gone
    assert any(len(c["ids"]) > 2 for c in CASES if c["max_tokens"] == 120)  # long texts cut
    assert {parse_language(c["lang"]) for c in CASES} == {"zh", "en", "ja", "es", "ar"}
