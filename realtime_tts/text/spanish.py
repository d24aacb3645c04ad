"""Spanish text normalisation for IndexTTS-2.5: NeMo's Spanish grammars where installed,
otherwise none.

The official front end sends Spanish text through ``nemo_text_processing`` (cased input) and
passes it through unchanged when that package is missing. It is not a dependency of this
server (nor of the official lock file): ``nemo-text-processing`` pins a ``pynini`` build
that conflicts with other text-processing packages. Without it, numbers, dates and symbols in
Spanish text stay as written ("25 %" is not read as "veinticinco por ciento"), which the
model may read poorly; write them out in words, or install the package.

``status`` says which applies, for the start-up log. Building the grammars takes a while the
first time, so ``load`` runs once at start-up, not on the first request.
"""

from __future__ import annotations

import logging
from threading import Lock

log = logging.getLogger(__name__)


class SpanishNormalizer:
    def __init__(self) -> None:
        self._nemo = None
        self._tried = False
        self._error: str | None = None
        self._lock = Lock()

    def load(self) -> None:
        with self._lock:
            if self._tried:
                return
            self._tried = True
            try:
                from nemo_text_processing.text_normalization.normalize import Normalizer
            except ImportError as e:
                self._error = f"nemo_text_processing is not installed ({e.name or e})"
                return
            try:
                self._nemo = Normalizer(input_case="cased", lang="es")
            except Exception as e:  # a broken grammar build: run without, say so
                self._error = f"building NeMo's Spanish grammars failed: {type(e).__name__}: {e}"
                log.warning("Spanish text normalisation disabled: %s", self._error)

    @property
    def available(self) -> bool:
        self.load()
        return self._nemo is not None

    @property
    def status(self) -> str:
        if self.available:
            return "es: NeMo text normalisation (nemo_text_processing, cased)"
        return f"es: no text normalisation, text passed through as written ({self._error})"

    def normalize(self, text: str) -> str:
        if not text or not self.available:
            return text
        try:
            return self._nemo.normalize(text, verbose=False)
        except Exception as e:  # as upstream: a failure leaves the text as written
            log.warning("Spanish text normalisation failed (%s: %s); text used as written",
                        type(e).__name__, e)
            return text
