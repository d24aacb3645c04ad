"""Telling clients what the engine does with their options: the honest fallback.

The engine declares its ``Capabilities`` (``engine/base.py``: voice cloning, the emotion drivers
it uses, its languages, its speed range). Everything here derives from them, never from an
engine's name, and every endpoint uses it:

* ``check_language``: a ``language`` hint the engine does not speak is refused, naming the ones
  it does (a 400 over HTTP, an ``error`` event on the sockets);
* ``ignored``: the options of a request the engine would silently drop (a reference voice on an
  engine that cannot clone, an emotion it has no control for, a speed it does not follow), as
  ``Notice``s: the ``X-TTS-Warning`` header over HTTP (``header``), ``warning`` events on the
  sockets, a warning line from ``say``.

Pure functions of plain data: the protocol objects use them without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.base import Capabilities, SynthesisOptions

HEADER = "X-TTS-Warning"
MAX_LANGUAGE_CHARS = 35  # a BCP 47 tag such as "zh-Hans-CN" fits easily


@dataclass(frozen=True)
class Notice:
    """Something the server did not do as asked, and why: a warning, never an error."""

    code: str  # voice_ignored, emotion_ignored, speed_ignored, speed_clamped, fields_ignored ...
    message: str

    def payload(self, **extra: Any) -> dict:
        """The ``warning`` event of the WebSockets."""
        return {"type": "warning", "code": self.code, "message": self.message, **extra}

    def describe(self) -> dict:
        return {"code": self.code, "message": self.message}


class LanguageError(ValueError):
    """A ``language`` field that cannot be used: ``unsupported`` when it is well formed but the
    engine does not speak it (code ``unsupported_language``), else the value is malformed."""

    def __init__(self, message: str, *, unsupported: bool) -> None:
        super().__init__(message)
        self.message = message
        self.unsupported = unsupported


def check_language(value: Any, languages: tuple[str, ...] | None, engine: str, param: str = "language") -> str | None:
    """``value`` as a language hint: None (absent, empty or ``auto``: the engine detects it), else
    the tag, whose primary subtag (``en`` of ``en-US``) must be one of ``languages`` (None: any)."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_LANGUAGE_CHARS:
        raise LanguageError(f"'{param}' must be a string such as 'zh' or 'en'", unsupported=False)
    tag = value.strip()
    if not tag or tag.lower() == "auto":
        return None
    if languages is not None and tag.replace("_", "-").split("-")[0].lower() not in languages:
        raise LanguageError(f"'{param}' {value!r} is not spoken by the {engine} engine; use one of "
                            f"{', '.join(languages)} (or auto)", unsupported=True)
    return tag


def emotion_driver(options: SynthesisOptions) -> str | None:
    """Which source drives the emotion (IndexTTS2's precedence: text, vector, reference)."""
    emotion = options.emotion
    if emotion is None:
        return None
    if emotion.text:
        return "text"
    if emotion.vector is not None:
        return "vector"
    return "reference" if emotion.reference is not None else None


def ignored(caps: Capabilities, options: SynthesisOptions, engine: str) -> list[Notice]:
    """The options of ``options`` the engine will not use, each with the reason."""
    notices = []
    if options.voice is not None and not caps.voice_cloning:
        notices.append(Notice("voice_ignored", f"the {engine} engine cannot clone a voice: the reference voice "
                                               f"{options.voice.id!r} is not used (it speaks with its built-in "
                                               "voice)"))
    driver = emotion_driver(options)
    if driver is not None and driver not in caps.emotion:
        what = (f"emotion {driver} control (it has: {', '.join(caps.emotion)})" if caps.emotion
                else "emotion control")
        notices.append(Notice("emotion_ignored", f"the {engine} engine has no {what}: the emotion is not used"))
    if caps.speed is None and options.speed != 1.0:
        notices.append(Notice("speed_ignored", f"the {engine} engine has no speed control: speed "
                                               f"{options.speed:g} is not used"))
    return notices


def engine_notices(engine, options: SynthesisOptions) -> list[Notice]:
    """``ignored`` for a live engine (None while it loads: nothing to say yet)."""
    return [] if engine is None else ignored(engine.capabilities(), options, engine.name)


def _sf_string(text: str) -> str:
    """An RFC 8941 sf-string: printable ASCII, quotes and backslashes escaped."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header(notices: list[Notice]) -> dict[str, str]:
    """``{"X-TTS-Warning": ...}`` for ``notices`` (empty: no header): an RFC 8941 dictionary,
    ``code="message", code="message"``, one member per notice."""
    if not notices:
        return {}
    return {HEADER: ", ".join(f"{n.code}={_sf_string(n.message)}" for n in notices)}
