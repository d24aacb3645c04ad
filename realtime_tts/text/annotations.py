"""Inline pronunciation annotations of the IndexTTS-2.5 front end: ``<word|PRONUNCIATION>``.

``<行|XING2>``, ``<going|G OW1 . IH0 NG>``, ``<明日|あした>``. The written word is dropped and
the pronunciation is what the model reads:

* the pronunciation is upper-cased;
* a pronunciation that is all hiragana or all katakana replaces the annotation as plain text,
  with a space on each side;
* otherwise it is wrapped in ``<|SPECIAL_TOKEN_2|>`` when the written word holds a CJK
  ideograph (U+4E00-9FFF: a pinyin reading) and in ``<|SPECIAL_TOKEN_1|>`` otherwise (an
  ARPAbet-style reading), e.g. ``<|SPECIAL_TOKEN_2|>XING2<|SPECIAL_TOKEN_2|>``.

Text normalisation must not touch an annotation (``XING2`` would become ``XING二``), so the
zh/en normaliser sees each one as a letters-only placeholder (``shield``/``restore``).
"""

from __future__ import annotations

import re

ANNOTATION = re.compile(r"<([^|>\n]+)\|([^>\n]+)>")
_HAN = re.compile("[\u4e00-\u9fff]")
_HIRAGANA = re.compile("[\u3040-\u309f]+")
_KATAKANA = re.compile("[\u30a0-\u30ff]+")
_PLACEHOLDER = "PRONPLACEHOLDER{}PRONPLACEHOLDER"


def is_kana(text: str) -> bool:
    """All hiragana, or all katakana (not a mix of the two)."""
    return bool(_HIRAGANA.fullmatch(text) or _KATAKANA.fullmatch(text))


def _rewrite(match: re.Match) -> str:
    word, pronunciation = match.group(1), match.group(2).upper()
    if is_kana(pronunciation):
        return f" {pronunciation} "
    marker = "<|SPECIAL_TOKEN_2|>" if _HAN.search(word) else "<|SPECIAL_TOKEN_1|>"
    return f"{marker}{pronunciation}{marker}"


def apply_annotations(text: str) -> str:
    """Replace every ``<word|PRONUNCIATION>`` by what the model reads (module docstring)."""
    return ANNOTATION.sub(_rewrite, text)


def _letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa, ... (letters only, so no normaliser reads it as a number)."""
    out = ""
    while True:
        out = chr(ord("a") + n % 26) + out
        n = n // 26 - 1
        if n < 0:
            return out


def shield(text: str) -> tuple[str, dict[str, str]]:
    """Replace each annotation by a placeholder; ``restore`` puts them back."""
    originals: dict[str, str] = {}

    def hide(match: re.Match) -> str:
        key = _PLACEHOLDER.format(_letters(len(originals)))
        originals[key] = match.group(0)
        return key

    return ANNOTATION.sub(hide, text), originals


def restore(text: str, originals: dict[str, str]) -> str:
    for key, original in originals.items():
        text = text.replace(key, original)
    return text
