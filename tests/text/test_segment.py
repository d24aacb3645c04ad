"""Segmentation rules (examples) and the streaming == whole-text property (hypothesis)."""

import re

import pytest
from hypothesis import given, strategies as st

from realtime_tts.text.segment import IncrementalSplitter, has_content, split_text

# --- examples: sentence rules -------------------------------------------------------------


def test_english_sentences_and_dot_rules():
    text = "Pi is 3.14 today. We met e.g.x and the U.S.A team! Really?! Yes"
    assert split_text(text) == ["Pi is 3.14 today.", "We met e.g.x and the U.S.A team!", "Really?!", "Yes"]


def test_dot_before_lowercase_word_is_not_a_boundary():
    assert split_text("Use e.g. this one. Then stop.") == ["Use e.g. this one.", "Then stop."]
    assert split_text("Wait... what? Go... Now") == ["Wait... what?", "Go...", "Now"]


def test_chinese_sentences_keep_closing_quotes():
    text = "你好。“今天天气很好！”他说；然后呢？……好吧"
    assert split_text(text) == ["你好。", "“今天天气很好！”", "他说；", "然后呢？……", "好吧"]


def test_newlines_and_whitespace():
    assert split_text("  line one\n\n  line two  \r\n三  ") == ["line one", "line two", "三"]
    assert split_text("a   b\t c") == ["a b c"]


def test_stray_punctuation_attaches_to_neighbours():
    assert split_text("Hi! !!! ok.") == ["Hi! !!!", "ok."]
    assert split_text("... Hello. !!") == ["... Hello. !!"]
    assert split_text("好。」」 对") == ["好。」」", "对"]


def test_long_symbol_runs_keep_the_cap_and_drop_only_symbols():
    assert split_text("a" + "!" * 30 + "b", max_chars=10) == ["a!!!!!!!!!", "!b"]
    assert split_text("a" + "。" * 12, max_chars=4) == ["a。。。"]


def test_no_content_gives_no_segments():
    assert split_text("") == []
    assert split_text("   \n ") == []
    assert split_text("!!! 。。。 ...") == []


def test_first_clause_only_for_first_segment():
    text = "好的，我们今天去公园，然后回家。明天，再说。"
    assert split_text(text) == ["好的，我们今天去公园，然后回家。", "明天，再说。"]
    assert split_text(text, first_clause_min_chars=8) == ["好的，我们今天去公园，", "然后回家。", "明天，再说。"]
    assert split_text(text, first_clause_min_chars=2) == ["好的，", "我们今天去公园，然后回家。", "明天，再说。"]


def test_ascii_clause_marks_need_a_space_and_tilde_not_before_digit():
    text = "It costs 1,000 at 10:30, said the clerk"
    assert split_text(text, first_clause_min_chars=4) == ["It costs 1,000 at 10:30,", "said the clerk"]
    assert split_text("大约5~10分钟吧~好的", first_clause_min_chars=2) == ["大约5~10分钟吧~", "好的"]


def test_max_chars_prefers_clause_then_space_then_hard_cut():
    text = "alpha beta, gamma delta epsilon zeta eta theta."
    assert split_text(text, max_chars=20) == ["alpha beta,", "gamma delta epsilon", "zeta eta theta."]
    assert split_text("x" * 25, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_text("我" * 12 + "，" + "你" * 12, max_chars=20) == ["我" * 12 + "，", "你" * 12]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_chars"):
        split_text("hi", max_chars=0)
    with pytest.raises(ValueError, match="first_clause_min_chars"):
        IncrementalSplitter(first_clause_min_chars=0)
    with pytest.raises(TypeError):
        split_text(b"hi")  # type: ignore[arg-type]


# --- incremental splitter -----------------------------------------------------------------


def test_push_holds_back_until_boundary_is_certain():
    sp = IncrementalSplitter(first_clause_min_chars=None)
    assert sp.push("It is 3.") == []  # "3." may be "3.14"
    assert sp.push("14. Next") == ["It is 3.14."]
    assert sp.pending == "Next"
    assert sp.push(" one。") == []  # a closing quote may follow
    assert sp.push("」x") == ["Next one。」"]
    assert sp.end() == ["x"]
    assert sp.closed
    with pytest.raises(RuntimeError):
        sp.push("more")


def test_flush_emits_pending_and_disables_early_clause():
    sp = IncrementalSplitter(first_clause_min_chars=4)
    assert sp.push("Well then, let us") == ["Well then,"]
    assert sp.flush() == ["let us"]
    assert sp.pending == ""
    assert sp.push("okay, fine, good. X") == ["okay, fine, good."]  # no clause cut any more
    assert sp.push("!!") == []
    assert sp.flush() == ["X!!"]
    assert sp.push("?? ") == []
    assert sp.flush() == []  # symbols alone wait for words to attach to
    assert sp.pending == "?? "
    assert sp.end() == []


def test_first_clause_counts_the_very_first_segment_only():
    sp = IncrementalSplitter(first_clause_min_chars=3)
    assert sp.push("Hello there, how are you, friend") == ["Hello there,"]
    assert sp.end() == ["how are you, friend"]


_TRICKY = [
    "It is 3.14. and e.g. this. Then U.S.A. Now. x",
    "Mr. Smith... went?! Yes. “Quote.” Done. 'Single.' ok",
    "你好。」「再见！」他说；好…… 嗯？！",
    "Well then, 1,000 apples: 10:30, ok~5~6～好吧，行、可以：好",
    "!!! ...Lead. !! Hi.\n\n Next line\r\nlast line . end.",
    "abcdefghij, klmnop qrstuv wxyz 0123456789 abc. 我们今天去公园玩，然后回家吃饭。",
]


@pytest.mark.parametrize("text", _TRICKY)
@pytest.mark.parametrize("max_chars,clause_min", [(120, None), (12, 4), (6, 1), (20, 8)])
def test_every_chunking_of_tricky_texts(text, max_chars, clause_min):
    whole = split_text(text, max_chars=max_chars, first_clause_min_chars=clause_min)
    chunkings = [[text[:k], text[k:]] for k in range(len(text) + 1)] + [list(text)]
    for pieces in chunkings:
        sp = IncrementalSplitter(max_chars=max_chars, first_clause_min_chars=clause_min)
        streamed = [seg for piece in pieces for seg in sp.push(piece)] + sp.end()
        assert streamed == whole, pieces


# --- properties ---------------------------------------------------------------------------

_ALPHABET = (
    list("abcdeXYZ") + list("你好世界中文") + list("0123456789")
    + list("。！？!?；;….，,、：:~") + list("\"'“”‘’「」（）()")
    + [" ", " ", " ", "\n", "\t", "  "]
)
_WORDS = ["Hello", "world", "3.14", "e.g.", "U.S.A", "Mr.", "你好", "今天天气", "1,000", "10:30", "ok",
          ". a", ". B", "。”", "?! ", ", x", "5~6"]
_token = st.one_of(st.sampled_from(_ALPHABET), st.sampled_from(_WORDS))
_texts = st.lists(_token, max_size=80).map("".join)


def _symbol_runs(text: str) -> int:
    runs = re.findall(r"[^\w]+|_+", re.sub(r"\s+", " ", text))
    return max((len(r) for r in runs), default=0)


@st.composite
def _chunked(draw):
    text = draw(_texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    return text, pieces


@given(_chunked(), st.integers(4, 40), st.one_of(st.none(), st.integers(1, 12)))
def test_streaming_equals_whole_text(case, max_chars, clause_min):
    text, pieces = case
    sp = IncrementalSplitter(max_chars=max_chars, first_clause_min_chars=clause_min)
    streamed = [seg for piece in pieces for seg in sp.push(piece)] + sp.end()
    whole = split_text(text, max_chars=max_chars, first_clause_min_chars=clause_min)
    assert streamed == whole


@given(_texts, st.integers(4, 40), st.one_of(st.none(), st.integers(1, 12)))
def test_segments_keep_text_and_respect_limits(text, max_chars, clause_min):
    segments = split_text(text, max_chars=max_chars, first_clause_min_chars=clause_min)
    squash = lambda s: re.sub(r"\s+", "", s)  # noqa: E731
    if not has_content(text):
        assert segments == []
    elif _symbol_runs(text) < max_chars // 2:
        assert squash("".join(segments)) == squash(text)
        assert all(has_content(seg) for seg in segments), segments
    else:  # pathological symbol runs: only symbols may be dropped
        words = lambda s: re.sub(r"[\W_]+", "", s)  # noqa: E731
        assert words("".join(segments)) == words(text)
    for seg in segments:
        assert seg and seg == seg.strip() and has_content(seg)
        assert len(seg) <= max_chars
        assert "\n" not in seg


@given(_chunked(), st.integers(1, 5))
def test_flush_never_loses_or_reorders_text(case, every):
    text, pieces = case
    sp = IncrementalSplitter(max_chars=30)
    out = []
    for i, piece in enumerate(pieces):
        out += sp.push(piece)
        if i % every == 0:
            out += sp.flush()
    tail = sp.pending
    out += sp.end()
    squash = lambda s: re.sub(r"\s+", "", s)  # noqa: E731
    assert squash("".join(out)) + (squash(tail) if not has_content(tail) else "") == squash(text)
    assert all(seg and len(seg) <= 30 for seg in out)
