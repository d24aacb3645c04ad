"""Untrusted input at the edge: one JSON reader and one string check for every endpoint.

Every HTTP body and WebSocket text message goes through ``loads_json`` before any handler
looks at it, so a handler only ever sees well-formed, bounded data:

* the size is checked before parsing (``max_bytes``);
* bytes must be UTF-8 (``invalid_utf8``);
* nesting deeper than ``max_depth`` is refused (``json_too_deep``), however deep the input
  (the C scanner's recursion guard turns 100,000 levels into the same clean error);
* numbers longer than ``max_number_chars`` are refused before Python converts them
  (``number_too_long``): a 5,000-digit integer would otherwise raise deep inside ``int()``;
  ``NaN`` and ``Infinity`` are not JSON and are refused too;
* every string, keys included, must be valid Unicode (a lone surrogate such as ``"\\ud800"``
  is ``invalid_string``) and comes back NFC-normalised.

Errors are ``InputError`` with a stable ``code`` (the HTTP error code or WebSocket error event
code) and a message that names the problem; callers map them to 400 or their protocol's error.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 64


class InputError(ValueError):
    """Malformed or out-of-bounds input; ``code`` names the problem for the client."""

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def clean_string(value: str, field: str | None = None) -> str:
    """``value`` NFC-normalised; ``InputError`` for lone surrogates (not encodable as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        where = f"'{field}'" if field else "a string"
        raise InputError("invalid_string", f"{where} holds an unpaired UTF-16 surrogate; send valid Unicode text",
                         field=field) from None
    return unicodedata.normalize("NFC", value)


def _number_hook(kind):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise InputError("number_too_long", f"a number of {len(text)} characters is longer than the "
                             f"{MAX_NUMBER_CHARS} allowed")
        return kind(text)

    return parse


def _no_constant(name: str):
    raise InputError("invalid_json", f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_int=_number_hook(int), parse_float=_number_hook(float),
                            parse_constant=_no_constant)


def loads_json(data: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "message") -> Any:
    """Parse untrusted JSON within the bounds of the module doc; ``InputError`` otherwise."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InputError("request_too_large", f"{what} is {size} bytes; the limit is {max_bytes}")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError("invalid_utf8", f"{what} is not valid UTF-8 (byte {e.start})") from None
    if not data.strip():
        raise InputError("invalid_json", f"{what} is empty; send a JSON object")
    try:
        value = _DECODER.decode(data)
    except RecursionError:
        raise InputError("json_too_deep", f"{what} nests deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise InputError("invalid_json", f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
                         ) from None
    return _checked(value, max_depth, what)


def _checked(value: Any, max_depth: int, what: str) -> Any:
    """The parsed value with every string NFC-normalised; refuses depth and bad strings.
    Iterative, so a deep value cannot exhaust the stack here either."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, int]] = [(root, 0, 1)]  # (container, key in it, depth of the value)
    while stack:
        parent, key, depth = stack.pop()
        item = parent[key]
        if isinstance(item, str):  # named by its key when it is an object member
            parent[key] = clean_string(item, key if isinstance(key, str) else None)
        elif isinstance(item, (list, dict)):
            if depth > max_depth:
                raise InputError("json_too_deep", f"{what} nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                cleaned = {clean_string(k): v for k, v in item.items()}
                parent[key] = cleaned
                stack.extend((cleaned, k, depth + 1) for k in cleaned)
            else:
                stack.extend((item, i, depth + 1) for i in range(len(item)))
    return root[0]


def loads_object(data: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "message") -> dict:
    """``loads_json`` that must give a JSON object."""
    value = loads_json(data, max_bytes=max_bytes, max_depth=max_depth, what=what)
    if not isinstance(value, dict):
        raise InputError("invalid_json", f"{what} must be a JSON object, got {type(value).__name__}")
    return value
