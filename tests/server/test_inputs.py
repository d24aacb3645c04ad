"""The one JSON reader for untrusted input: bounds before parsing, clean errors, NFC strings."""

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_tts.server.inputs import InputError, MAX_NUMBER_CHARS, clean_string, loads_json, loads_object

LIMIT = 1 << 20


def code_of(data, **kw) -> str:
    with pytest.raises(InputError) as e:
        loads_json(data, max_bytes=kw.pop("max_bytes", LIMIT), **kw)
    assert e.value.message and str(e.value) == e.value.message
    return e.value.code


def test_plain_objects_parse():
    assert loads_object('{"type": "hello", "n": [1, 2.5, true, null]}', max_bytes=LIMIT) == {
        "type": "hello", "n": [1, 2.5, True, None]}


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deep_nesting_is_refused_cleanly(depth):
    assert code_of("[" * depth + "]" * depth) == "json_too_deep"
    assert code_of('{"a":' * depth + "1" + "}" * depth) == "json_too_deep"


def test_nesting_up_to_the_limit_is_fine():
    assert loads_json("[" * 32 + "]" * 32, max_bytes=LIMIT) is not None
    assert code_of("[" * 5 + "]" * 5, max_depth=4) == "json_too_deep"


def test_huge_numbers_are_refused_before_conversion():
    assert code_of('{"n": ' + "9" * 5000 + "}") == "number_too_long"
    assert code_of('{"n": 1.' + "5" * 5000 + "}") == "number_too_long"
    assert loads_json("9" * MAX_NUMBER_CHARS, max_bytes=LIMIT) == int("9" * MAX_NUMBER_CHARS)
    for const in ("NaN", "Infinity", "-Infinity"):
        assert code_of(f'{{"n": {const}}}') == "invalid_json"


def test_size_is_checked_before_parsing():
    assert code_of('{"t": "' + "x" * 100 + '"}', max_bytes=50) == "request_too_large"


@pytest.mark.parametrize("raw", ['"\\ud800"', '{"\\udfff": 1}', '["ok", {"ctx": "a\\ud83d"}]'])
def test_lone_surrogates_are_refused(raw):
    assert code_of(raw) == "invalid_string"


def test_paired_surrogates_and_nfc():
    assert loads_json('"\\ud83d\\ude00"', max_bytes=LIMIT) == "\U0001F600"
    decomposed = "e\u0301"
    assert loads_object(json.dumps({decomposed: decomposed}), max_bytes=LIMIT) == {"\u00e9": "\u00e9"}


def test_bytes_must_be_utf8_and_objects_must_be_objects():
    assert code_of(b'{"a": "\xff"}') == "invalid_utf8"
    assert code_of("") == "invalid_json" and code_of("{") == "invalid_json"
    with pytest.raises(InputError, match="must be a JSON object, got list"):
        loads_object("[]", max_bytes=LIMIT)


def test_clean_string_names_the_field():
    with pytest.raises(InputError, match="'context_id'") as e:
        clean_string("\ud800", "context_id")
    assert e.value.field == "context_id"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_valid_json_round_trips_nfc(value):
    raw = json.dumps(value)
    try:
        out = loads_json(raw, max_bytes=LIMIT)
    except InputError as e:  # only the documented refusals
        assert e.code in {"invalid_string", "number_too_long", "json_too_deep"}
        return
    assert out == _nfc(json.loads(raw))


def _nfc(v):
    if isinstance(v, str):
        return unicodedata.normalize("NFC", v)
    if isinstance(v, list):
        return [_nfc(x) for x in v]
    if isinstance(v, dict):
        return {_nfc(k): _nfc(x) for k, x in v.items()}
    return v


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_input_never_raises_anything_but_input_error(data):
    try:
        loads_json(data, max_bytes=150)
    except InputError:
        pass
