"""Japanese word splitting for the IndexTTS-2.5 front end: MeCab (through ``fugashi``) with
the UniDic-lite dictionary puts a space between words, the way the model's training text was
written.

Behaviour (the official processor with its kana-substitution ratio at 0, as 2.5 runs it):
the text is cut at runs of ASCII spaces, which are kept as they are; every other piece is
replaced by MeCab's surfaces joined by single spaces. Nothing is read or converted to kana.

The dictionary is named explicitly (``unidic_lite``), so that installing the full ``unidic``
package beside it cannot change the split.
"""

from __future__ import annotations

import re
from threading import Lock

_SPACES = re.compile(r"( +)")


class JapaneseWordSplitter:
    """Thread-safe; MeCab's tagger is not, so calls are serialised."""

    def __init__(self) -> None:
        try:
            import fugashi
            import unidic_lite
        except ImportError as e:  # both are pinned dependencies; a broken install lands here
            raise RuntimeError(
                f"Japanese text needs fugashi and unidic-lite ({e}); install them with "
                "`pip install fugashi unidic-lite`"
            ) from e
        self.dictionary = f"unidic-lite {unidic_lite.VERSION}"
        dicdir = unidic_lite.DICDIR
        self._tagger = fugashi.Tagger(f'-d "{dicdir}" -r "{dicdir}/mecabrc"')
        self._lock = Lock()

    def words(self, text: str) -> list[str]:
        """MeCab's surfaces of ``text`` (a piece without spaces)."""
        with self._lock:
            return [node.surface for node in self._tagger(text)]

    def split(self, text: str) -> str:
        parts = _SPACES.split(text)
        return "".join(" ".join(self.words(p)) if p.strip() else p for p in parts)
