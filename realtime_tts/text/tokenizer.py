"""SentencePiece BPE tokenizer and segmentation of the official IndexTTS2 front end.

``tokenize``: an empty text gives no tokens; a text that is one character once stripped is
encoded as-is (no normalisation, no upper-casing); anything else is normalised, every CJK
character is set apart by spaces, all other text is upper-cased, and the result is encoded.

``split_segments`` cuts a token list into pieces of at most ``max_text_tokens_per_segment``
tokens exactly where the official ``split_segments_by_token`` cuts (the tests compare against
its output). Reproduced quirks:
* "▁!" is not a sentence end (only ".", "!", "?", "▁.", "▁?", "▁...");
* when a sentence end is followed by a quote token ("'" or "▁'"), the quote is appended to the
  closing segment AND starts the next one - it is duplicated (upstream advances a copy of the
  loop index, not the loop itself);
* a comma anywhere in the running segment re-splits it on commas at once; likewise "-".
One deliberate difference: upstream appends that quote even to a segment already at the limit
(giving limit + 1 tokens, which at the GPT's 600-token maximum overflows its text positions);
here the quote is then left to the next segment only, so no segment ever exceeds the limit.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from .normalize import TextNormalizer

SENTENCE_ENDS = (".", "!", "?", "▁.", "▁?", "▁...")
COMMAS = (",", "▁,")
QUOTES = ("'", "▁'")
CJK_CHAR = re.compile(
    r"([\u1100-\u11ff\u2e80-\ua4cf\ua840-\uD7AF\uF900-\uFAFF\uFE30-\uFE4F\uFF65-\uFFDC"
    r"\U00020000-\U0002FFFF])"
)


def space_cjk(text: str) -> str:
    """Spaces around each CJK character, everything else upper-cased and trimmed."""
    parts = CJK_CHAR.split(text.strip())
    return " ".join(p.strip().upper() for p in parts if p.strip())


class TextTokenizer:
    def __init__(self, bpe_model: str | Path, normalizer: TextNormalizer | None = None):
        from sentencepiece import SentencePieceProcessor

        path = Path(bpe_model)
        if not path.is_file():
            raise FileNotFoundError(f"BPE model not found: {path}")
        self.sp = SentencePieceProcessor(model_file=str(path))
        self.normalizer = normalizer

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    @property
    def unk_id(self) -> int:
        return self.sp.unk_id()

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        if len(text.strip()) == 1:
            return self.sp.Encode(text, out_type=str)
        if self.normalizer is not None:
            text = self.normalizer.normalize(text)
        return self.sp.Encode(space_cjk(text), out_type=str)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.sp.PieceToId(t) for t in tokens]

    def encode(self, text: str) -> list[int]:
        return self.convert_tokens_to_ids(self.tokenize(text))

    def split_segments(self, tokens: Sequence[str], max_text_tokens_per_segment: int = 120,
                       quick_streaming_tokens: int = 0) -> list[list[str]]:
        return split_segments(tokens, max_text_tokens_per_segment, quick_streaming_tokens)

    def segment_ids(self, text: str, max_text_tokens_per_segment: int = 120,
                    quick_streaming_tokens: int = 0) -> list[list[int]]:
        """The official per-segment GPT input: normalise, tokenise, segment, map to ids."""
        pieces = self.tokenize(text)
        segs = split_segments(pieces, max_text_tokens_per_segment, quick_streaming_tokens)
        return [self.convert_tokens_to_ids(s) for s in segs]


def split_segments(tokens: Sequence[str], max_text_tokens_per_segment: int = 120,
                   quick_streaming_tokens: int = 0) -> list[list[str]]:
    if max_text_tokens_per_segment < 1:
        raise ValueError("max_text_tokens_per_segment must be >= 1")
    return _split(list(tokens), SENTENCE_ENDS, max_text_tokens_per_segment, quick_streaming_tokens)


def _split(tokens: list[str], enders: Sequence[str], limit: int, quick: int) -> list[list[str]]:
    if not tokens:
        return []
    pieces: list[list[str]] = []
    cur: list[str] = []
    for i, tok in enumerate(tokens):
        cur.append(tok)
        if not any(c in enders for c in COMMAS) and any(c in cur for c in COMMAS):
            pieces.extend(_split(cur, COMMAS, limit, quick))
        elif "-" not in enders and "-" in cur:
            pieces.extend(_split(cur, ("-",), limit, quick))
        elif len(cur) <= limit:
            if tok in enders and len(cur) > 2:
                if i + 1 < len(tokens) and tokens[i + 1] in QUOTES and len(cur) < limit:
                    cur.append(tokens[i + 1])  # and it still starts the next piece (quirk)
                pieces.append(cur)
                cur = []
            continue
        else:
            warnings.warn(f"segment longer than {limit} tokens is cut blindly: {cur}", RuntimeWarning,
                          stacklevel=2)
            pieces.extend(cur[j : j + limit] for j in range(0, len(cur), limit))
        cur = []
    if cur:
        pieces.append(cur)
    return _merge(pieces, limit, quick)


def _merge(pieces: list[list[str]], limit: int, quick: int) -> list[list[str]]:
    """Pack neighbours up to ``limit`` once ``quick`` tokens have passed; below that, only
    pieces that together stay within half the limit are joined (short early segments)."""
    merged: list[list[str]] = []
    total = 0
    for p in pieces:
        total += len(p)
        if not p:
            continue
        if merged and len(merged[-1]) + len(p) <= limit and total > quick:
            merged[-1] = merged[-1] + p
        elif merged and len(merged[-1]) + len(p) <= limit / 2:
            merged[-1] = merged[-1] + p
        else:
            merged.append(p)
    return merged
