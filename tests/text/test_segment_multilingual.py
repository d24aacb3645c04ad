"""Sentence cuts for streamed text in the IndexTTS-2.5 languages (ja, ar, es beside zh/en)."""

import pytest
from hypothesis import given, strategies as st

from realtime_tts.text.segment import IncrementalSplitter, split_text


def test_japanese_sentences():
    text = "こんにちは。今日はいい天気ですね！「本当？」と彼は言った。明日は雨かな？"
    assert split_text(text) == [
        "こんにちは。", "今日はいい天気ですね！", "「本当？」", "と彼は言った。", "明日は雨かな？",
    ]


def test_japanese_half_width_stop_and_comma():
    assert split_text("ｺﾝﾆﾁﾊ｡ｹﾞﾝｷﾃﾞｽｶ?") == ["ｺﾝﾆﾁﾊ｡", "ｹﾞﾝｷﾃﾞｽｶ?"]
    assert split_text("ﾊｲ､ﾜｶﾘﾏｼﾀ｡", first_clause_min_chars=2) == ["ﾊｲ､", "ﾜｶﾘﾏｼﾀ｡"]


def test_japanese_first_clause_and_wave_dash():
    assert split_text("はい、わかりました。では、また。", first_clause_min_chars=2) == [
        "はい、", "わかりました。", "では、また。",
    ]
    # 〜 between numbers is a range, elsewhere a pause
    assert split_text("10時〜12時です〜よろしく", first_clause_min_chars=2) == ["10時〜12時です〜", "よろしく"]


def test_arabic_sentences():
    text = "مرحبا بكم. كيف حالكم؟ أنا بخير، شكرا! إلى اللقاء؛ مع السلامة"
    assert split_text(text) == ["مرحبا بكم.", "كيف حالكم؟", "أنا بخير، شكرا!", "إلى اللقاء؛", "مع السلامة"]
    assert split_text("انتهى الدرس۔ شكرا") == ["انتهى الدرس۔", "شكرا"]


def test_arabic_comma_is_a_first_clause_mark():
    assert split_text("أنا بخير، شكرا جزيلا. وأنت؟", first_clause_min_chars=4) == [
        "أنا بخير،", "شكرا جزيلا.", "وأنت؟",
    ]


def test_arabic_question_mark_takes_closing_quotes_along():
    assert split_text("قال «هل أنت هنا؟» ثم ذهب") == ["قال «هل أنت هنا؟»", "ثم ذهب"]


def test_spanish_opening_marks_start_the_next_sentence():
    text = "¡Hola! ¿Cómo estás? Muy bien, gracias. ¿Y tú?¡Genial!"
    assert split_text(text) == ["¡Hola!", "¿Cómo estás?", "Muy bien, gracias.", "¿Y tú?", "¡Genial!"]
    assert split_text("Cuesta 1.000,50 euros, ¿vale?", first_clause_min_chars=4) == [
        "Cuesta 1.000,50 euros,", "¿vale?",
    ]


def test_exclamation_question_ligatures():
    assert split_text("Really⁉ Yes‼ Ok") == ["Really⁉", "Yes‼", "Ok"]


_MULTI = [
    "こんにちは。今日は、いい天気ですね！「本当？」と彼は言った〜10〜20個ｱﾘﾏｽ｡ﾊｲ､ﾅﾙﾎﾄﾞ",
    "مرحبا بكم. كيف حالكم؟ أنا بخير، شكرا! إلى اللقاء؛ مع السلامة۔ «نعم؟» لا",
    "¡Hola! ¿Cómo estás? Son las 10:30, ¿vale?¡Vamos! Sr. López. fin",
]


@pytest.mark.parametrize("text", _MULTI)
@pytest.mark.parametrize("max_chars,clause_min", [(120, None), (12, 4), (6, 1), (20, 8)])
def test_every_chunking_of_multilingual_texts(text, max_chars, clause_min):
    whole = split_text(text, max_chars=max_chars, first_clause_min_chars=clause_min)
    for k in range(len(text) + 1):
        sp = IncrementalSplitter(max_chars=max_chars, first_clause_min_chars=clause_min)
        streamed = sp.push(text[:k]) + sp.push(text[k:]) + sp.end()
        assert streamed == whole, k


_ALPHABET = (
    list("あいう漢字カナｱｲ") + list("ابتثج") + list("ñáéÁ") + list("0123")
    + list("。！？｡､、‼⁉؟؛۔،〜~¿¡.,:") + list("「」«»\"")
    + [" ", " ", "\n"]
)
_texts = st.lists(st.sampled_from(_ALPHABET), max_size=60).map("".join)


@st.composite
def _chunked(draw):
    text = draw(_texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    return text, [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@given(_chunked(), st.integers(4, 30), st.one_of(st.none(), st.integers(1, 10)))
def test_streaming_equals_whole_text_in_every_script(case, max_chars, clause_min):
    text, pieces = case
    sp = IncrementalSplitter(max_chars=max_chars, first_clause_min_chars=clause_min)
    streamed = [seg for piece in pieces for seg in sp.push(piece)] + sp.end()
    assert streamed == split_text(text, max_chars=max_chars, first_clause_min_chars=clause_min)
