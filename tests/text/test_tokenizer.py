"""Tokenisation and segmentation (realtime_tts.text.tokenizer) against the official
``TextTokenizer`` (tests/fixtures/gpt/text_frontend.json, written by tools/golden/gpt.py with the
small BPE model tests/fixtures/gpt/tiny_bpe.model), plus the segment-length guarantees."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from realtime_tts.text.normalize import TextNormalizer
from realtime_tts.text.tokenizer import QUOTES, TextTokenizer, space_cjk, split_segments

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"
FRONT = json.loads((FIX / "text_frontend.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer(FIX / "tiny_bpe.model", TextNormalizer())


@pytest.mark.parametrize("case", FRONT["tokenize"], ids=[f"{i}" for i in range(len(FRONT["tokenize"]))])
def test_tokenize_matches_official(tok, case):
    pieces = tok.tokenize(case["text"])
    assert pieces == case["pieces"]
    assert tok.convert_tokens_to_ids(pieces) == case["ids"]
    assert tok.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize("case", FRONT["segments"], ids=[f"{i}" for i in range(len(FRONT["segments"]))])
def test_segments_match_official(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # blind cuts of over-long clauses warn
        assert split_segments(case["pieces"], case["max_tokens"], case["quick"]) == case["segments"]


def test_gpt_text_ids_match_official(tok):
    texts = {"zh": "你好。今天天气很好！", "en": "Hello there, how are you?",
             "mixed": "今天是个好日子 it's a good day"}
    for name, text in texts.items():
        assert tok.encode(text) == FRONT["gpt_text_ids"][name]


def test_single_character_and_empty(tok):
    assert tok.tokenize("") == []
    assert tok.tokenize("a") == ["▁a"]  # one character: encoded as is, not upper-cased or normalised
    assert tok.tokenize(" 好 ") == ["▁好"]
    assert "".join(tok.tokenize("5")).replace("▁", "") == "5"  # a lone digit is not read out


def test_pinyin_passes_through_upper_cased(tok):
    assert space_cjk("衣chang2好") == "衣 CHANG2 好"
    joined = "".join(tok.tokenize("衣chang2，而是读衣shang5")).replace("▁", "")
    assert "衣CHANG2" in joined and "衣SHANG5" in joined
    assert "".join(tok.tokenize("这个字念ju4")).replace("▁", "") == "这个字念JV4"


def test_space_cjk():
    assert space_cjk("  hello 世界 abc ") == "HELLO 世 界 ABC"
    assert space_cjk("ｶﾀｶﾅ한글") == "ｶ ﾀ ｶ ﾅ 한 글"  # half-width kana and Hangul are CJK ranges too


def test_segment_ids(tok):
    text = FRONT["tokenize"][-1]["text"]  # the long mixed text
    with pytest.warns(RuntimeWarning, match="cut blindly"):  # two clauses run past 24 tokens
        segs = tok.segment_ids(text, 24)
    assert len(segs) > 3 and all(0 < len(s) <= 24 for s in segs)
    assert [i for s in segs for i in s] == tok.encode(text)  # no quote inside: nothing duplicated
    assert tok.segment_ids("") == []


@pytest.mark.parametrize("limit", [2, 3, 5, 8, 20])
def test_segments_respect_limit_and_keep_every_token(limit):
    rng = random.Random(limit)
    vocab = ["▁A", "B", "C", "▁D", ".", "!", "?", "▁.", "▁?", "▁!", ",", "▁,", "-", "'", "▁'", "▁..."]
    weights = [8, 8, 8, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(300):
            tokens = rng.choices(vocab, weights, k=rng.randint(0, 60))
            quick = rng.choice([0, 0, 5, 30])
            segs = split_segments(tokens, limit, quick)
            assert all(0 < len(s) <= limit for s in segs), segs
            flat = [t for s in segs for t in s]
            # every token kept in order; quotes may only be repeated (the upstream quirk)
            assert [t for t in flat if t not in QUOTES] == [t for t in tokens if t not in QUOTES]
            assert sum(t in QUOTES for t in flat) >= sum(t in QUOTES for t in tokens)


def test_over_long_clause_is_cut_with_a_warning():
    tokens = [f"T{i}" for i in range(25)]
    with pytest.warns(RuntimeWarning, match="cut blindly"):
        segs = split_segments(tokens, 10)
    # upstream cuts each time the clause passes the limit (10 + 1 tokens), then merges neighbours
    assert [len(s) for s in segs] == [10, 1, 10, 4]
    assert [t for s in segs for t in s] == tokens


def test_quote_after_sentence_end_is_duplicated():
    # upstream quirk, kept for parity: the quote closes one segment and opens the next
    tokens = ["▁A", "B", ".", "'", "▁C", "D", "E", "."]
    assert split_segments(tokens, 8) == [["▁A", "B", ".", "'"], ["'", "▁C", "D", "E", "."]]
    # ...except where the closing segment is already at the limit (upstream would give 4 here)
    with pytest.warns(RuntimeWarning):
        assert split_segments(tokens, 3) == [["▁A", "B", "."], ["'", "▁C", "D"], ["E", "."]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_text_tokens_per_segment"):
        split_segments(["▁A"], 0)
    with pytest.raises(FileNotFoundError, match="BPE model"):
        TextTokenizer(FIX / "missing.model")
