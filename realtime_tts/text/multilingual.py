"""The IndexTTS-2.5 text front end: text and a language in, token-id segments for the GPT out.

Steps, in the official order (``MultilingualFrontEnd.process`` then ``split``):

1. prefix ``<|lang|> `` (the language tag, then a space) is put before every segment;
2. the punctuation map of the v2 front end (full-width marks, quotes and brackets, "..."),
   for every language;
3. normalisation: zh and en through the v2 ``TextNormalizer`` (which of zh or en TN runs is
   still decided by the text's content, as in v2; annotations are shielded from it); es
   through NeMo where installed (``spanish.py``), else none; ja and ar: none;
4. case: zh, en, ja lower-cased, es upper-cased, ar unchanged;
5. pronunciation annotations ``<word|PRON>`` (``annotations.py``);
6. ja only: words split by MeCab (``japanese.py``);
7. the name inside every ``<|...|>`` upper-cased (what makes ``<|special_token_1|>``-style
   text, lower-cased in step 4, a special token again);
8. cut into segments of at most ``min(max_tokens, max_text_tokens)`` tokens minus the
   prefix's (120 - 2 by default): text that fits stays whole; otherwise annotation spans
   ``<|SPECIAL_TOKEN_n|>...<|SPECIAL_TOKEN_n|>`` are kept whole, the rest is cut after each
   of ``，。！？、；：,.!?;:`` and line breaks, a piece still over budget is cut character by
   character, and the pieces are packed greedily up to the budget;
9. each segment is encoded as ``prefix + segment`` followed by id 1.

Known upstream effects this reproduces on purpose (the tests pin them):
* Japanese with a non-kana annotation: MeCab splits ``<|SPECIAL_TOKEN_n|>`` into
  ``< | SPECIAL _ TOKEN _ n | >``, so step 7 cannot restore it and the marker is read as
  plain text;
* ``!`` and ``"`` are ids 0 and 1, the GPT's start and stop ids, and the GPT drops them
  (``gpt_text_ids``): a lone ``!`` is never heard. ``"`` never survives step 2 anyway.
* Text written as a special token (``<|HAPPY|>``) is encoded as that token after step 7.

Deliberate differences:
* a text that is empty or blank after processing gives no segments (upstream: one segment
  holding only the language tag);
* a segment longer than the GPT's text positions (only possible with one annotation over
  ~600 tokens) raises ``TextTooLongError`` instead of failing inside the model;
* Spanish annotations are shielded from NeMo like zh/en ones (upstream hands them to NeMo).
"""

from __future__ import annotations

import re
from pathlib import Path

from .annotations import apply_annotations, restore, shield
from .languages import (
    SUPPORTED_LANGUAGES, UnsupportedLanguageError, detect_language, language_id, parse_language,
)
from .normalize import CHAR_MAP, TextNormalizer
from .spanish import SpanishNormalizer
from .tiktoken_vocab import MultilingualTokenizer

__all__ = [
    "MultilingualFrontEnd", "SUPPORTED_LANGUAGES", "TextTooLongError", "UnsupportedLanguageError",
    "detect_language", "gpt_text_ids", "language_id", "parse_language",
]

START_TEXT_ID, STOP_TEXT_ID = 0, 1  # the GPT's text start/stop ids (ranks of "!" and '"')
DEFAULT_SEGMENT_TOKENS = 120
_CHAR_MAP_RE = re.compile("|".join(re.escape(k) for k in CHAR_MAP))
_SPECIAL_NAME = re.compile(r"<\|([^|]+)\|>")
_ATOMIC = re.compile(r"<\|SPECIAL_TOKEN_\d+\|>.*?<\|SPECIAL_TOKEN_\d+\|>")
_BREAK_AFTER = re.compile(r"(?<=[，。！？、；：,.!?;:\n])")


class TextTooLongError(ValueError):
    """A segment that cannot fit the GPT's text positions."""


def gpt_text_ids(segment_ids: list[int]) -> list[int]:
    """The ids the 2.5 GPT embeds for a segment: every start/stop id (0 and 1) removed.

    The GPT then wraps the rest in [0, ..., 1] itself; since ids 0 and 1 are also the
    tokens "!" and '"', those characters are dropped wherever they are single tokens.
    """
    return [i for i in segment_ids if i != START_TEXT_ID and i != STOP_TEXT_ID]


def apply_char_map(text: str) -> str:
    return _CHAR_MAP_RE.sub(lambda m: CHAR_MAP[m.group()], text)


class MultilingualFrontEnd:
    """Thread-safe after ``load()`` (which ``segments`` calls on first use).

    ``normalizer``: the zh/en ``TextNormalizer`` (pass the engine's, with its glossary);
    ``max_text_tokens``: the GPT config's ``max_text_tokens`` (600): no segment goes past it.
    """

    def __init__(self, tiktoken_path: str | Path, normalizer: TextNormalizer | None = None,
                 *, max_text_tokens: int = 600, text_normalization: bool = True):
        self.tokenizer = MultilingualTokenizer(tiktoken_path)
        self.normalizer = normalizer if normalizer is not None else TextNormalizer()
        self.spanish = SpanishNormalizer()
        self.max_text_tokens = max_text_tokens
        self.text_normalization = text_normalization
        self._japanese = None

    def load(self) -> None:
        """Build everything slow up front (TN grammars, MeCab), not on a first request."""
        from .japanese import JapaneseWordSplitter

        if self.text_normalization:
            self.normalizer.load()
            self.spanish.load()
        if self._japanese is None:
            self._japanese = JapaneseWordSplitter()

    def describe(self) -> list[str]:
        """One line per language about how its text is processed (for the start-up log)."""
        self.load()
        if not self.text_normalization:
            return ["text normalisation off for every language"]
        return [
            f"zh/en: text normalisation by {self.zh_en_backend}",
            self.spanish.status,
            f"ja: no text normalisation; words split by MeCab ({self._japanese.dictionary})",
            "ar: no text normalisation",
        ]

    @property
    def zh_en_backend(self) -> str:
        """Which FST package the zh/en ``TextNormalizer`` runs on: "wetext" or "WeTextProcessing"."""
        self.normalizer.load()
        package = type(getattr(self.normalizer, "_zh", None)).__module__.split(".")[0]
        return "WeTextProcessing" if package == "tn" else package

    # ---- text --------------------------------------------------------------------

    @staticmethod
    def resolve_language(language: str | None, text: str) -> str:
        """The request's language (validated) or, when it names none, the script's guess."""
        return detect_language(text) if language is None else parse_language(language)

    def normalize(self, text: str, language: str) -> str:
        """Steps 2-3: punctuation map, then the language's normaliser (if any)."""
        text = apply_char_map(text)
        if not self.text_normalization:
            return text
        if language in ("zh", "en"):
            hidden, originals = shield(text)
            return restore(self.normalizer.normalize(hidden), originals)
        if language == "es":
            hidden, originals = shield(text)
            return restore(self.spanish.normalize(hidden), originals)
        return text

    def process(self, text: str, language: str) -> str:
        """Steps 2-7 for a supported language code: the text that is cut and encoded."""
        if language not in SUPPORTED_LANGUAGES:
            parse_language(language)  # raises, naming the supported codes
            raise UnsupportedLanguageError(f"pass a language code, not {language!r}: see parse_language")
        if self._japanese is None:
            self.load()
        text = self.normalize(text, language)
        if language in ("zh", "en", "ja"):
            text = text.lower()
        elif language == "es":
            text = text.upper()
        text = apply_annotations(text)
        if language == "ja":
            text = self._japanese.split(text)
        return _SPECIAL_NAME.sub(lambda m: f"<|{m.group(1).upper()}|>", text)

    # ---- segments ----------------------------------------------------------------

    @staticmethod
    def prefix(language: str) -> str:
        return f"<|{language}|> "

    def budget(self, language: str, max_tokens: int = DEFAULT_SEGMENT_TOKENS) -> int:
        cap = min(max_tokens, self.max_text_tokens)
        return max(1, cap - self.tokenizer.count(self.prefix(language)))

    def split(self, text: str, budget: int) -> list[str]:
        """Step 8 on processed text: segment texts of at most ``budget`` tokens each."""
        count = self.tokenizer.count
        if count(text) <= budget:
            return [text]
        pieces: list[str] = []
        for piece, atomic in _atomic_pieces(text):
            if atomic:
                pieces.append(piece)
                continue
            for part in _BREAK_AFTER.split(piece):
                if part:
                    pieces.extend([part] if count(part) <= budget else _cut_chars(part, budget, count))
        return _pack(pieces, budget, count) or [text]

    def segments(self, text: str, language: str | None = None,
                 max_tokens: int = DEFAULT_SEGMENT_TOKENS) -> list[list[int]]:
        """Token ids per segment (prefix + segment + trailing id 1), as upstream feeds the GPT.

        ``language``: a supported code (or anything ``parse_language`` accepts); None guesses
        it from the script. Pair the ids with ``language_id(language)`` for the GPT.
        """
        language = self.resolve_language(language, text)
        processed = self.process(text, language)
        if not processed.strip():
            return []
        prefix = self.prefix(language)
        out = []
        for seg in self.split(processed, self.budget(language, max_tokens)):
            ids = self.tokenizer.encode(prefix + seg) + [STOP_TEXT_ID]
            if len(gpt_text_ids(ids)) > self.max_text_tokens:
                raise TextTooLongError(
                    f"a segment of {len(ids)} tokens does not fit the model's "
                    f"{self.max_text_tokens} text positions (a pronunciation annotation too long?)"
                )
            out.append(ids)
        return out


def _atomic_pieces(text: str) -> list[tuple[str, bool]]:
    """(piece, is an annotation span) in text order."""
    pieces, pos = [], 0
    for m in _ATOMIC.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos:m.start()], False))
        pieces.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces


def _cut_chars(part: str, budget: int, count) -> list[str]:
    """A piece with no usable mark, cut where adding one more character would overflow."""
    return _pack(list(part), budget, count)


def _pack(pieces: list[str], budget: int, count) -> list[str]:
    """Greedy: each piece joins the running segment unless that would pass the budget."""
    out, current = [], ""
    for piece in pieces:
        if current and count(current + piece) > budget:
            out.append(current)
            current = piece
        else:
            current += piece
    if current:
        out.append(current)
    return out
