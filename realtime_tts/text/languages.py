"""Languages of the IndexTTS-2.5 front end: the request's language code, the GPT's language
id, and a script-based guess when a request names no language.

The 2.5 GPT adds a learned embedding per language (107 rows). Its row for a language is the
language's place in a fixed list of 106 codes (Whisper's 99 languages, then Cantonese, two
Chinese dialect groups, "dialect", two mixed zh/en codes and "common"); every code the list
does not hold maps to "common" (105). The checkpoint was trained on five of them, which are
the only ones this server accepts: zh, en, ja, es, ar.

``parse_language`` accepts what clients send: any case, a region or script subtag
("zh-CN", "es_MX", "zh-Hans"), or the English name ("Japanese", "Mandarin", "Castilian").

``detect_language`` guesses from the script of the text, in this order (first rule that
matches wins):

1. any Arabic letter (U+0600-06FF, 0750-077F, 08A0-08FF, FB50-FDFF, FE70-FEFC) -> ar
2. any hiragana or katakana (U+3040-30FF, 31F0-31FF, FF66-FF9D) -> ja
3. any CJK ideograph (U+3400-4DBF, 4E00-9FFF, F900-FAFF, 20000-2FFFF) -> zh
4. an inverted mark or a letter that English does not use but Spanish does
   (``¿ ¡ ñ Ñ á í ó ú Á Í Ó Ú``; not ``é``/``ü``, which English loanwords carry) -> es
5. anything else, including text without letters -> en

It is a fallback for callers that do not know the language: Latin-script text other than
Spanish is read as English, and a Spanish sentence without any of the marks in rule 4 is
taken for English too. Clients that know the language should send it.
"""

from __future__ import annotations

import re

# Row of the GPT's language embedding = index in this list (official LANGUAGES order).
LANGUAGE_CODES: tuple[str, ...] = tuple(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue minnan wuyu dialect zh/en en/zh common".split()
)
_LANGUAGE_ROW = {code: row for row, code in enumerate(LANGUAGE_CODES)}
COMMON_LANGUAGE_ID = _LANGUAGE_ROW["common"]  # 105

SUPPORTED_LANGUAGES: tuple[str, ...] = ("zh", "en", "ja", "es", "ar")

_NAMES = {
    "chinese": "zh", "mandarin": "zh", "english": "en", "japanese": "ja",
    "spanish": "es", "castilian": "es", "arabic": "ar",
    "cmn": "zh", "zho": "zh", "chi": "zh", "eng": "en", "jpn": "ja", "spa": "es", "ara": "ar",
    "arb": "ar",
}


class UnsupportedLanguageError(ValueError):
    """A language the 2.5 front end does not speak; the message names the supported ones."""


def language_id(language: str) -> int:
    """Row of the GPT's language embedding for a code (case-insensitive); unknown -> 105."""
    return _LANGUAGE_ROW.get(language.lower(), COMMON_LANGUAGE_ID)


def parse_language(value: str) -> str:
    """A client's language value -> one of ``SUPPORTED_LANGUAGES``.

    Raises ``UnsupportedLanguageError`` (a ValueError) naming the supported codes.
    """
    if not isinstance(value, str):
        raise UnsupportedLanguageError(
            f"language must be a string, one of {', '.join(SUPPORTED_LANGUAGES)}"
        )
    key = value.strip().lower().replace("_", "-")
    primary = key.split("-", 1)[0]
    code = primary if primary in SUPPORTED_LANGUAGES else _NAMES.get(primary)
    if code is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise UnsupportedLanguageError(
            f"unsupported language {shown!r}: supported are {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return code


_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufefc]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_SPANISH = re.compile("[¿¡ñÑáíóúÁÍÓÚ]")


def detect_language(text: str) -> str:
    """Guess the language of ``text`` from its script (rules in the module docstring)."""
    if _ARABIC.search(text):
        return "ar"
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    if _SPANISH.search(text):
        return "es"
    return "en"
