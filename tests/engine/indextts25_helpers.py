"""What the IndexTTS-2.5 engine and server tests share: the GPT's language rows and a spy on the
language row of every text the GPT is prompted with."""

from __future__ import annotations

LANG_ROWS = {"en": 0, "zh": 1, "es": 3, "ja": 7, "ar": 13}  # the GPT's language rows (official index)


def spy_prompt_langs(engine, monkeypatch) -> list[int]:
    """The list the language row of every text ``engine``'s GPT is prompted with is appended to."""
    seen: list[int] = []
    gpt = engine.family.gpt
    real = gpt.prompt

    def spy(cond, texts, langs=None):
        seen.extend(int(t.lang) for t in texts)
        return real(cond, texts, langs)

    monkeypatch.setattr(gpt, "prompt", spy)
    return seen
