"""The IndexTTS-2.5 text vocabulary: a byte-level BPE read from the checkpoint's
``multilingual_zh_ja_yue_char_del.tiktoken`` plus 1673 special tokens, run by ``tiktoken``.

File format: one ``<base64 bytes> <rank>`` per line, ranks 0..N-1 (N = 58836 in the released
file). The special tokens follow the last rank in a fixed order, so their ids depend only on
N: ``<|endoftext|>``, ``<|startoftranscript|>``, 99 language tags (``<|en|>`` = N + 2,
``<|zh|>`` N + 3, ``<|es|>`` N + 5, ``<|ja|>`` N + 9, ``<|ar|>`` N + 15), 11 audio-event
tags, 4 emotion tags, 6 task tags, ``<|SPECIAL_TOKEN_1|>`` .. ``<|SPECIAL_TOKEN_30|>``
(N + 122 ..), 20 ``<|TTS/...|>`` tags and 1501 timestamps ``<|0.00|>`` .. ``<|30.00|>``.
Total N + 1673 = 60509, the GPT's ``number_text_tokens``.

Pre-tokenisation uses the GPT-2 split pattern, and every special token written in the text
is encoded as that token (the official front end inserts ``<|SPECIAL_TOKEN_n|>`` for
pronunciation annotations). Ranks 0 and 1 are the bytes ``!`` and ``"``: see
``multilingual.gpt_text_ids`` for what that means for the GPT.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from .languages import LANGUAGE_CODES

TIKTOKEN_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
_AUDIO_EVENTS = ("ASR", "AED", "SER", "Speech", "/Speech", "BGM", "/BGM", "Laughter", "/Laughter",
                 "Applause", "/Applause")
_EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
_TASKS = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")
_TTS_TAGS = ("TTS/B", "TTS/O", "TTS/Q", "TTS/A", "TTS/CO", "TTS/CL", "TTS/H",
             *(f"TTS/SP{i:02d}" for i in range(1, 14)))


def special_token_names() -> list[str]:
    """The 1673 special tokens in id order (the first gets id N, the file's rank count)."""
    names = ["endoftext", "startoftranscript", *LANGUAGE_CODES[:99], *_AUDIO_EVENTS, *_EMOTIONS,
             *_TASKS, *(f"SPECIAL_TOKEN_{i}" for i in range(1, 31)), *_TTS_TAGS,
             *(f"{i * 0.02:.2f}" for i in range(1501))]
    return [f"<|{name}|>" for name in names]


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a .tiktoken file; errors name the file and line. Ranks must be 0..N-1.

    Decoding is lenient like the reference reader: the released file has a line "=" (an
    empty byte string, rank 48474) that strict base64 refuses; it must keep its rank.
    """
    ranks: dict[bytes, int] = {}
    with open(path, encoding="ascii", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                token_b64, rank_text = line.split()
                token, rank = base64.b64decode(token_b64), int(rank_text)
            except (ValueError, binascii.Error) as e:
                raise ValueError(f"{path}:{lineno}: expected '<base64> <rank>' ({e})") from None
            if rank != len(ranks) or token in ranks:
                raise ValueError(
                    f"{path}:{lineno}: rank {rank} out of sequence (expected {len(ranks)}, each "
                    "token once): the vocabulary file is damaged"
                )
            ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path}: empty vocabulary file")
    return ranks


class MultilingualTokenizer:
    """Encodes text to IndexTTS-2.5 text ids. Thread-safe (tiktoken encodings are)."""

    def __init__(self, path: str | Path):
        import tiktoken

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"IndexTTS-2.5 vocabulary not found: {path}")
        try:
            ranks = read_ranks(path)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a .tiktoken vocabulary (non-ASCII content: {e})") from None
        self.path = path
        self.num_ranks = len(ranks)
        self.specials = {name: self.num_ranks + i for i, name in enumerate(special_token_names())}
        self._enc = tiktoken.Encoding(
            name=path.name, pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks,
            special_tokens=self.specials, explicit_n_vocab=self.num_ranks + len(self.specials),
        )

    @property
    def vocab_size(self) -> int:
        """Ranks plus special tokens (60509 for the released file)."""
        return self.num_ranks + len(self.specials)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; any special token written in it becomes that token."""
        return self._enc.encode(text, allowed_special="all")

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def special_id(self, token: str) -> int:
        """Id of a special token given as ``<|name|>``; KeyError if it is not one."""
        return self.specials[token]

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)
