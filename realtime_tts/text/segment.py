"""Serving-side text segmentation: where to cut a text (or a text stream) into speakable pieces.

One segment is one synthesis job, so a cut is a trade between latency (short first segment)
and prosody (whole sentences). ``split_text`` cuts a whole text; ``IncrementalSplitter`` cuts
a text that arrives in pieces (LLM tokens) and returns exactly the same segments as
``split_text`` on the concatenated text, however it was chunked.

Rules (exact; the tests check each of them):

* Whitespace: every whitespace run becomes one character, a newline when the run contains a
  line break, otherwise a space. Segments are trimmed at both ends; a newline left inside a
  segment (see "symbols" below) is written as a space.
* Sentence boundaries end a segment after the mark:
  - ``。！？!?；;…`` and a line break, always; likewise the half-width ideographic stop
    ``｡``, ``‼ ⁇ ⁈ ⁉``, and the Arabic ``؟`` (question mark), ``؛`` (semicolon) and ``۔``
    (full stop);
  - ``.`` only when followed (after any run of marks and closing quotes) by whitespace or the
    end of the text, and the next non-space character is not a lowercase letter. So
    ``3.14``, ``e.g.x``, ``U.S.A`` and ``e.g. this`` stay whole; ``Mr. Smith`` does split.
  A boundary takes along the run of marks, dots and closing quotes/brackets right after it
  (``"?!"``, ``"。”"``, ``"!)"``), so these never start the next segment.
* Symbols: a character is *content* when it is a letter or a digit (Unicode categories L*,
  N*); everything else is a symbol. A boundary is not used when the text before it, or the
  text from it to the next sentence boundary, has no content: stray marks join the segment
  before them (or the one after, at the start of a text). A text with no content at all
  gives no segments.
* First segment only (``first_clause_min_chars=N``): it may also end at a clause mark once
  it holds at least N characters (counting the mark). Clause marks: ``，、：``, the
  half-width ``､`` and the Arabic comma ``،`` always; ``,`` and ``:`` only when whitespace
  follows (``1,000``, ``10:30``, ``http://`` stay whole); ``~``, ``～`` and ``〜`` unless a
  digit follows (``5~10``). Later segments of the same
  turn cut at sentence boundaries only, even after a ``flush()``.
* Length: no segment is longer than ``max_chars``. A segment that would be longer is cut at
  the last clause mark or sentence mark inside the limit, else at the last space, else hard
  at the limit, always keeping content on both sides of the cut. Only a text holding a run
  of symbols about ``max_chars / 2`` long or longer can defeat this; then the cap wins and a
  piece holding only symbols is dropped. No segment is ever empty or symbols-only.

The marks cover the five IndexTTS-2.5 languages without knowing which one a text is in: each
added mark belongs to one script (Spanish needs none of its own: ``¿`` and ``¡`` open a
sentence, so they are simply the start of the next segment). Chinese and English text cuts
exactly as before they were added.

Cutting never adds or reorders non-whitespace characters, and drops none except symbols that
never meet a letter or digit: a text without content, symbols pending at ``end()`` after a
``flush()``, and symbols-only pieces in the pathological case above.
"""

from __future__ import annotations

import re
import unicodedata

_TERMINATORS = frozenset("。！？!?；;…｡‼⁇⁈⁉؟؛۔")
_CLOSERS = frozenset("\"'”’」』）)】]》〉}〕］｝»›")
_RUN = _TERMINATORS | _CLOSERS | {"."}  # what a sentence boundary takes along
_CLAUSE_ALWAYS = frozenset("，、：､،")
_CLAUSE_SPACED = frozenset(",:")
_TILDES = frozenset("~～〜")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_WS_RUN = re.compile(r"\s+")

_UNKNOWN = -1  # helper verdict: the text seen so far cannot decide; wait for more


def _is_content(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def has_content(text: str) -> bool:
    """True when ``text`` holds a letter or a digit (something an engine can speak)."""
    return any(_is_content(ch) for ch in text)


def _normalize(text: str) -> str:
    return _WS_RUN.sub(lambda m: "\n" if _LINE_BREAKS.intersection(m.group()) else " ", text)


def _run_end(s: str, j: int, chars: frozenset[str]) -> int:
    while j < len(s) and s[j] in chars:
        j += 1
    return j


def _sentence_end(s: str, i: int, final: bool) -> int | None:
    """End (exclusive) of the sentence boundary whose mark is ``s[i]``; None if it is not one."""
    ch, n = s[i], len(s)
    if ch == "\n":
        return i + 1
    if ch in _TERMINATORS:
        b = _run_end(s, i + 1, _RUN)
        return _UNKNOWN if b == n and not final else b
    if ch == ".":
        b = _run_end(s, i + 1, _RUN)
        if b == n:
            return b if final else _UNKNOWN
        if not s[b].isspace():
            return None
        if s[b] == "\n" or b + 1 == n:
            # Normalized text has single whitespace, so s[b + 1] is the next word, if any.
            return b if s[b] == "\n" or final else _UNKNOWN
        return None if s[b + 1].islower() else b
    return None


def _is_clause_mark(s: str, i: int) -> bool:
    """Clause mark test for a position whose next character is known (or is the end)."""
    ch = s[i]
    nxt = s[i + 1] if i + 1 < len(s) else ""
    if ch in _CLAUSE_ALWAYS:
        return True
    if ch in _CLAUSE_SPACED:
        return nxt.isspace()
    if ch in _TILDES:
        return not nxt.isdigit()
    return False


def _clause_end(s: str, i: int, final: bool) -> int | None:
    ch, n = s[i], len(s)
    if ch not in _CLAUSE_ALWAYS and ch not in _CLAUSE_SPACED and ch not in _TILDES:
        return None
    if i + 1 == n and ch not in _CLAUSE_ALWAYS:
        return None if final else _UNKNOWN  # at the very end the segment ends here anyway
    if not _is_clause_mark(s, i):
        return None
    b = _run_end(s, i + 1, _CLOSERS)
    return _UNKNOWN if b == n and not final else b


def _span_has_content(s: str, b: int, final: bool) -> bool | None:
    """Does content follow ``b`` before the next sentence boundary? None: not known yet."""
    for j in range(b, len(s)):
        ch = s[j]
        if _is_content(ch):
            return True
        if ch in _TERMINATORS or ch == "\n":
            return False
        if ch == ".":
            e = _sentence_end(s, j, final)
            if e == _UNKNOWN:
                return None
            if e is not None:
                return False
    return False if final else None


def _is_break_mark(s: str, j: int) -> bool:
    """A place a too-long segment may be cut after (sentence or clause mark)."""
    ch = s[j]
    if ch in _TERMINATORS:
        return True
    if ch == ".":
        return j + 1 < len(s) and s[j + 1].isspace()
    return _is_clause_mark(s, j)


def _forced_cut(s: str, limit: int) -> int:
    # Decide from s[: k + 1] only (k = first non-space index >= limit), so the same cut is
    # found whether or not more text has arrived: chunking must not change the result.
    k = limit if not s[limit].isspace() else limit + 1
    content = [j for j in range(k + 1) if _is_content(s[j])]
    if content:
        first, last = content[0], content[-1]

        def ok(c: int) -> bool:  # content on both sides of the cut
            return first < c <= last

        for j in range(limit - 1, -1, -1):
            if _is_break_mark(s, j) and ok(j + 1):
                return j + 1
        for j in range(limit, 0, -1):
            if s[j].isspace() and ok(j):
                return j
        if ok(min(limit, last)):
            return min(limit, last)
    return limit  # a symbols run too long to place anywhere: the cap wins


def _next_cut(s: str, limit: int, clause_min: int | None, final: bool) -> int | None:
    """Length of the next segment of ``s`` (normalized, starting with a non-space).

    ``final``: no text follows ``s``. Returns None when more text is needed to decide.
    """
    content = False
    for i, ch in enumerate(s):
        if i >= limit and not ch.isspace():
            return _forced_cut(s, limit)
        if _is_content(ch):
            content = True
            continue
        b = _sentence_end(s, i, final)
        if b is None and clause_min is not None and i + 1 >= clause_min:
            b = _clause_end(s, i, final)
        if b == _UNKNOWN:
            return None
        if b is None or not content:
            continue
        follows = _span_has_content(s, b, final)
        if follows is None:
            return None
        if not follows:
            continue
        if len(s[:b].rstrip()) > limit:
            return _forced_cut(s, limit)
        return b
    return len(s) if final else None


class IncrementalSplitter:
    """Cuts a text stream into segments as soon as each boundary is certain.

    ``push`` may hold back the last few characters (a ``.`` needs to see the next character,
    a closing quote after ``。`` belongs to the sentence). ``push`` + ``end`` give exactly
    ``split_text`` of the concatenated pieces. ``flush`` forces out the pending text (the
    server's idle timer calls it); pending text without letters or digits stays pending,
    and ``end`` drops it. Only the first segment of the splitter's life may end at a clause
    mark. Pure and synchronous; one instance per text context.
    """

    def __init__(self, max_chars: int = 120, first_clause_min_chars: int | None = 8) -> None:
        if not isinstance(max_chars, int) or max_chars < 4:
            raise ValueError(f"max_chars must be an integer >= 4, got {max_chars!r}")
        if first_clause_min_chars is not None and (
            not isinstance(first_clause_min_chars, int) or first_clause_min_chars < 1
        ):
            raise ValueError(
                f"first_clause_min_chars must be None or an integer >= 1, got {first_clause_min_chars!r}"
            )
        self.max_chars = max_chars
        self.first_clause_min_chars = first_clause_min_chars
        self._buf = ""
        self._emitted = False
        self._closed = False

    @property
    def pending(self) -> str:
        """Text received but not yet emitted (whitespace-normalized)."""
        return self._buf

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, piece: str) -> list[str]:
        if self._closed:
            raise RuntimeError("push() after end(): the splitter is closed")
        if not isinstance(piece, str):
            raise TypeError(f"push() takes str, got {type(piece).__name__}")
        self._buf = _normalize(self._buf + piece).lstrip()
        return self._drain(final=False)

    def flush(self) -> list[str]:
        if self._closed:
            raise RuntimeError("flush() after end(): the splitter is closed")
        return self._drain(final=True)

    def end(self) -> list[str]:
        if self._closed:
            raise RuntimeError("end() called twice")
        out = self._drain(final=True)
        self._buf = ""  # only symbols can be left: nothing to speak
        self._closed = True
        return out

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while self._buf:
            clause_min = None if self._emitted else self.first_clause_min_chars
            cut = _next_cut(self._buf, self.max_chars, clause_min, final)
            if cut is None:
                break
            segment = self._buf[:cut].strip().replace("\n", " ")
            if not has_content(segment):
                if cut == len(self._buf):
                    break  # symbols with nothing to attach to yet
                # Only a forced cut inside a long symbols run gets here: nothing to speak.
            else:
                out.append(segment)
                self._emitted = True
            self._buf = self._buf[cut:].lstrip()
        return out


def split_text(text: str, *, max_chars: int = 120, first_clause_min_chars: int | None = None) -> list[str]:
    """Cut a whole text into segments (see the module docstring for the exact rules)."""
    if not isinstance(text, str):
        raise TypeError(f"split_text() takes str, got {type(text).__name__}")
    splitter = IncrementalSplitter(max_chars, first_clause_min_chars)
    splitter._buf = _normalize(text).lstrip()  # all text known: decide in final mode only
    return splitter.end()
