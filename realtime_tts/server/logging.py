"""Log set-up: human text lines, or one JSON object per line for log collectors.

Extra fields passed as ``log.info("...", extra={"endpoint": "openai", "ttfa_ms": 180})``
appear as keys in JSON mode and as ``key=value`` pairs in text mode.

Three filters sit on the one handler, so they see every line (uvicorn's included):

* ``RedactSecrets``: credentials never reach the log. Query-string values of ``api_key``,
  ``token``, ``key``, ``access_token``, ``authorization`` ... and ``Bearer`` tokens become
  ``***`` (uvicorn's access lines and its WebSocket ``[accepted]`` lines carry the full URL).
* ``OneLineClientErrors``: a malformed connection is one warning line, not a traceback. Only
  the client faults uvicorn reports with a traceback are rewritten (an invalid UTF-8 text
  frame, already closed with 1007); every other traceback is a real error and stays.
* ``RateLimit``: warnings and errors repeated by one client are limited per client and kind
  (a token bucket, bounded memory); the next line that passes says how many were dropped.
  Log with ``extra={"client": host, "kind": "bad_frame"}`` to be keyed by client.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import sys
import threading
import time

# Attributes every LogRecord has; anything else on a record came from ``extra``.
# uvicorn adds ``color_message`` (the same text with ANSI colours) to some records: not data.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                       "color_message"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out[key] = value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            pairs = " ".join(f"{k}={v}" for k, v in extras.items())
            head, sep, tail = line.partition("\n")  # keep tracebacks after the pairs
            line = f"{head} {pairs}{sep}{tail}"
        return line


# --- filters -------------------------------------------------------------------------------

SECRET_PARAMS = ("api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "authorization",
                 "password", "secret", "signature", "sig")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:%s)=)[^&;#\s\"']*" % "|".join(re.escape(p) for p in SECRET_PARAMS))
_BEARER = re.compile(r"(?i)\b(bearer(?:\s+|%20|\+))[^\s&;\"',]+")
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` with credential query values and bearer tokens replaced by ``***``."""
    if "=" not in text and "earer" not in text:
        return text
    return _BEARER.sub(r"\1" + REDACTED, _SECRET_QUERY.sub(r"\1" + REDACTED, text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler reports that; redact the parts
            record.msg = redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


# uvicorn (websockets_sansio_impl) logs these client faults with logger.exception; the
# connection is already closed with the right code, so the traceback says nothing new.
CLIENT_FAULTS = {
    ("uvicorn.error", "Invalid UTF-8 sequence received from client.", UnicodeDecodeError):
        ("websocket text frame is not valid UTF-8; closed with 1007", "invalid_utf8_frame"),
}


class OneLineClientErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        known = CLIENT_FAULTS.get((record.name, record.msg, exc)) if exc else None
        if known is not None:
            record.msg, record.args = known[0], ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.kind = known[1]
        return True


def _client_of(record: logging.LogRecord) -> str:
    client = getattr(record, "client", None) or "-"
    host, sep, port = str(client).rpartition(":")  # one client, whatever source port it reconnects from
    return host if sep and port.isdigit() else str(client)


class RateLimit(logging.Filter):
    """At most ``burst`` lines at once, then ``per_minute``, per (client, logger, kind)
    for WARNING and above; the least recently used of more than ``max_keys`` keys is forgotten."""

    def __init__(self, *, burst: int = 5, per_minute: float = 6.0, max_keys: int = 1024,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.burst, self.rate, self.max_keys, self.clock = burst, per_minute / 60.0, max_keys, clock
        self._buckets: collections.OrderedDict[tuple, list] = collections.OrderedDict()  # key -> [tokens, t, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (_client_of(record), record.name, getattr(record, "kind", None) or str(record.msg)[:200])
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(self.burst), now, 0]
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
            if bucket[0] < 1.0:
                bucket[2] += 1
                return False
            bucket[0] -= 1.0
            dropped, bucket[2] = bucket[2], 0
        if dropped:
            record.suppressed = dropped  # "suppressed N similar messages" as an extra field
        return True

    def __len__(self) -> int:
        return len(self._buckets)


def configure_logging(fmt: str = "text", level: str | int = "INFO", stream=None) -> logging.Handler:
    """Route the root logger (and uvicorn's loggers) to one handler in the chosen format,
    behind the filters above (one-line client faults first, so they are rate-limited too)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for log_filter in (OneLineClientErrors(), RateLimit(), RedactSecrets()):
        handler.addFilter(log_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)  # the root's level rules (an earlier uvicorn.Config may have set its own)
    return handler
