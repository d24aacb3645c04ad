"""Text normalisation in front of the IndexTTS2 tokenizer (behaviour of the official
``TextNormalizer``), built on ``wetext`` (the light runtime of WeTextProcessing).

Pipeline for text judged Chinese (any CJK ideograph, no Latin letter, a bare e-mail address,
or a tone-numbered pinyin syllable):
    "'s" contractions -> glossary (zh readings) -> protect tech-term hyphens -> protect pinyin
    syllables -> protect CJK names -> wetext zh TN -> restore names -> restore pinyin (j/q/x+u
    written with v, upper-cased) -> restore hyphens -> character map (plus "$" -> ".")
and for English:
    contractions -> glossary (en) -> protect hyphens -> wetext en TN -> restore -> character map.

Number, date, unit and symbol readings come from wetext's FSTs; nothing here reads numbers.

Consciously reproduced upstream behaviour:
* a glossary entry given per language falls back to the term itself, never to the other
  language;
* "'s" expansion has no word boundary on the left ("bit's" -> "bit is");
* the character map is one alternation in a fixed key order, so "，，，" becomes ",,," (the
  single full-width comma matches first) while ",,," becomes "…".
Deliberate differences (only where upstream is undefined or crashes):
* placeholders are assigned longest match first (upstream iterates over a ``set``, so when one
  pinyin syllable is a substring of another its result depends on the hash seed);
* glossary readings are inserted literally (upstream passes them to ``re.sub`` as templates,
  so a backslash in a reading raises).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from threading import Lock

log = logging.getLogger(__name__)

PINYIN_TONE = re.compile(
    r"(?<![a-z])((?:[bpmfdtnlgkhjqxzcsryw]|[zcs]h)?(?:[aeiouüv]|[ae]i|u[aio]|ao|ou|i[aue]|[uüv]e|"
    r"[uvü]ang?|uai|[aeiuv]n|[aeio]ng|ia[no]|i[ao]ng)|ng|er)([1-5])",
    re.IGNORECASE,
)
CJK_NAME = re.compile(r"[\u4e00-\u9fff]+(?:[-·—][\u4e00-\u9fff]+){1,2}", re.IGNORECASE)
TECH_TERM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+")
CONTRACTION = re.compile(r"(what|where|who|which|how|t?here|it|s?he|that|this)'s", re.IGNORECASE)
EMAIL = re.compile(r"^[a-zA-Z0-9]+@[a-zA-Z0-9]+\.[a-zA-Z]+$")
HAN = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[a-zA-Z]")
JQX_U = re.compile(r"([jqx])[uü](n|e|an)*(\d)", re.IGNORECASE)
HYPHEN_MARK = "<H>"
HYPHEN_RESTORE = re.compile(r"\s*<H>\s*")

# order matters: one alternation, earlier keys win at the same position
CHAR_MAP = {
    "：": ",", "；": ",", ";": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": " ",
    "·": "-", "、": ",", "...": "…", ",,,": "…", "，，，": "…", "……": "…",
    "“": "'", "”": "'", '"': "'", "‘": "'", "’": "'", "（": "'", "）": "'", "(": "'", ")": "'",
    "《": "'", "》": "'", "【": "'", "】": "'", "[": "'", "]": "'", "—": "-", "～": "-", "~": "-",
    "「": "'", "」": "'", ":": ",",
}
ZH_CHAR_MAP = {"$": ".", **CHAR_MAP}


def _alternation(table: dict[str, str]) -> re.Pattern:
    return re.compile("|".join(re.escape(k) for k in table))


_CHAR_RE = _alternation(CHAR_MAP)
_ZH_CHAR_RE = _alternation(ZH_CHAR_MAP)


def is_chinese(text: str) -> bool:
    """Official language decision: the zh path unless the text is Latin and has no pinyin."""
    if HAN.search(text) or not LATIN.search(text) or EMAIL.match(text):
        return True
    return PINYIN_TONE.search(text) is not None


def correct_pinyin(syllable: str) -> str:
    """j/q/x + u/ü is written with v (ju4 -> JV4, xun2 -> XVN2); any j/q/x syllable is upper-cased."""
    if syllable[0] not in "jqxJQX":
        return syllable
    return JQX_U.sub(r"\g<1>v\g<2>\g<3>", syllable).upper()


def _protect(text: str, found: list[str], tag: str) -> tuple[str, list[str]]:
    """Replace each distinct match by ``<tag_a>``, ``<tag_b>``...; longest first."""
    distinct = sorted(dict.fromkeys(found), key=len, reverse=True)
    for i, s in enumerate(distinct):
        text = text.replace(s, f"<{tag}_{chr(ord('a') + i)}>")
    return text, distinct


def _restore(text: str, distinct: list[str], tag: str, fix=lambda s: s) -> str:
    for i, s in enumerate(distinct):
        text = text.replace(f"<{tag}_{chr(ord('a') + i)}>", fix(s))
    return text


class TextNormalizer:
    """Thread-safe after ``load()``; ``normalize`` loads lazily on first use."""

    def __init__(self, glossary: dict | None = None, enable_glossary: bool = True):
        self.enable_glossary = enable_glossary
        self.glossary: dict = dict(glossary or {})
        self._zh = None
        self._en = None
        self._lock = Lock()

    def load(self) -> None:
        with self._lock:
            if self._zh is not None:
                return
            from wetext import Normalizer

            self._zh = Normalizer(remove_erhua=False, lang="zh", operator="tn")
            self._en = Normalizer(lang="en", operator="tn")

    # ---- glossary ------------------------------------------------------------------

    def load_glossary(self, path: str | Path) -> bool:
        """Replace the glossary with ``path`` (YAML: term -> reading or {en:..., zh:...}).

        Returns False when the file does not exist; raises ValueError on a malformed file.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            return False
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"glossary {path}: not valid YAML ({e})") from e
        if not data:
            return False
        if not isinstance(data, dict):
            raise ValueError(f"glossary {path}: top level must be a mapping of term -> reading")
        self.glossary = {str(k): v for k, v in data.items()}
        return True

    def apply_glossary(self, text: str, lang: str) -> str:
        if not self.enable_glossary or not self.glossary:
            return text
        for term in sorted(self.glossary, key=len, reverse=True):
            value = self.glossary[term]
            reading = value.get(lang, term) if isinstance(value, dict) else value
            reading = str(reading)
            text = re.sub(re.escape(term), lambda _m, r=reading: r, text, flags=re.IGNORECASE)
        return text

    # ---- main entry ----------------------------------------------------------------

    def normalize(self, text: str) -> str:
        if self._zh is None:
            self.load()
        if is_chinese(text):
            return self._normalize_zh(text)
        return self._normalize_en(text)

    def _normalize_zh(self, text: str) -> str:
        text = CONTRACTION.sub(r"\1 is", text)
        text = self.apply_glossary(text, "zh")
        text = text.rstrip()
        text, terms = _protect_terms(text)
        text, syllables = _protect(text, ["".join(m) for m in PINYIN_TONE.findall(text)], "pinyin")
        text, names = _protect(text, CJK_NAME.findall(text), "n")
        try:
            out = self._zh.normalize(text)
        except Exception:  # upstream: a TN failure yields an empty text
            log.exception("zh text normalisation failed")
            out = ""
        out = _restore(out, names, "n")
        out = _restore(out, syllables, "pinyin", correct_pinyin)
        if terms:
            out = HYPHEN_RESTORE.sub("-", out)
        return _ZH_CHAR_RE.sub(lambda m: ZH_CHAR_MAP[m.group()], out)

    def _normalize_en(self, text: str) -> str:
        text = CONTRACTION.sub(r"\1 is", text)
        text = self.apply_glossary(text, "en")
        try:
            protected, terms = _protect_terms(text)
            out = self._en.normalize(protected)
            if terms:
                out = HYPHEN_RESTORE.sub("-", out)
        except Exception:  # upstream: fall back to the (contraction/glossary-processed) input
            log.exception("en text normalisation failed")
            out = text
        return _CHAR_RE.sub(lambda m: CHAR_MAP[m.group()], out)


def _protect_terms(text: str) -> tuple[str, list[str]]:
    """GPT-5-nano -> GPT<H>5<H>nano so TN reads the digits but not a minus sign."""
    terms = sorted(dict.fromkeys(TECH_TERM.findall(text)), key=len, reverse=True)
    for term in terms:
        text = text.replace(term, term.replace("-", HYPHEN_MARK))
    return text, terms
