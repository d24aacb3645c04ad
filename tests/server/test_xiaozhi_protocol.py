"""XiaozhiProtocol without a socket: every message type, the issue's malformed inputs, and random
input (hypothesis) never raising, never producing an unserialisable answer or state."""

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_tts.server.capabilities import Notice
from realtime_tts.server.xiaozhi_protocol import (BAD_FRAME_REPORT_EVERY, AWAIT_HELLO, CLOSED, OPEN, Abort, Close,
                                                  Listening, Opened, Send, Speak, XiaozhiProtocol, pack_audio)

HELLO = {"type": "hello", "version": 1, "transport": "websocket", "features": {"mcp": True},
         "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}}
DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5000


def opened(header=None, languages=None, **hello) -> XiaozhiProtocol:
    p = XiaozhiProtocol(header, languages=languages, engine="espeak")
    assert p.connect() == []
    actions = p.receive_text(json.dumps({**HELLO, **hello}))
    assert [type(a) for a in actions] == [Opened, Send] and p.state == OPEN
    return p


def only_error(actions) -> dict:
    (action,) = actions
    assert isinstance(action, Send) and action.message["type"] == "error", actions
    assert isinstance(action.message["code"], str) and action.message["message"], action
    return action.message


def test_hello_opens_and_is_answered():
    p = XiaozhiProtocol()
    p.connect()
    opened_, reply = p.receive_text(json.dumps({**HELLO, "version": 3}))
    assert opened_ == Opened(3) and p.version == 3
    assert reply.message == {"type": "hello", "transport": "websocket", "version": 3, "audio_params": {
        "format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 60}}
    assert p.features == {"mcp": True} and p.uplink_audio_params["sample_rate"] == 16000


def test_header_version_wins_over_hello_and_bad_headers_close():
    assert opened("2", version=3).version == 2
    for header, words in (("7", "unsupported protocol version 7"), ("v2", "'v2' is not a number")):
        p = XiaozhiProtocol(header)
        (close,) = p.connect()
        assert isinstance(close, Close) and close.code == 1008 and words in close.reason and p.state == CLOSED


@pytest.mark.parametrize("frame, words", [
    ('{"type": "speak", "text": "hi"}', "got 'speak'"),
    ("garbage", "unreadable frame"),
    ("[1]", "non-object JSON"),
    ('{"type": []}', "got '[]'"),
    (json.dumps({**HELLO, "version": 9}), "hello.version: unsupported protocol version 9"),
    (json.dumps({**HELLO, "version": True}), "hello.version"),
    (json.dumps({**HELLO, "features": [1]}), "hello.features must be an object"),
    (json.dumps({**HELLO, "audio_params": "opus"}), "hello.audio_params must be an object"),
    (json.dumps({**HELLO, "transport": 5}), "hello.transport must be a string"),
    ('{"type": "hello", "features": {"x": "\\ud800"}}', "unpaired UTF-16 surrogate"),
    (DEEP, "nests deeper"),
    ('{"type": "hello", "version": ' + HUGE + "}", "5000 characters"),
])
def test_anything_but_a_good_hello_first_closes_1008_with_a_reason(frame, words):
    p = XiaozhiProtocol()
    (close,) = p.receive_text(frame)
    assert isinstance(close, Close) and close.code == 1008 and words in close.reason, close
    assert close.metric == "xiaozhi_bad_hello" and p.state == CLOSED
    assert p.receive_text(json.dumps(HELLO)) == []  # closed: nothing more happens


def test_audio_before_hello_is_ignored_and_timeouts_close():
    p = XiaozhiProtocol()
    assert p.receive_bytes(b"\x01\x02") == [] and p.state == AWAIT_HELLO
    assert p.hello_timed_out(0.3) == [Close(1008, "no hello message within 0.3 s", "xiaozhi_hello_timeout")]
    assert opened().idle(180) == [Close(1000, "idle for 180 s")]


def test_every_message_type_after_hello():
    p = opened()
    assert p.receive_text('{"type": "ping"}') == [Send({"type": "pong"})]
    assert p.receive_text('{"type": "listen", "state": "start", "mode": "auto"}') == [Listening("start", "auto")]
    assert p.receive_text('{"type": "listen", "state": "detect", "text": "hi"}') == [Listening("detect", "auto")]
    assert (p.listen_state, p.listen_mode) == ("detect", "auto")
    assert p.receive_text('{"type": "abort"}') == [Abort(None)]
    assert p.receive_text('{"type": "abort", "reason": "wake_word_detected"}') == [Abort("wake_word_detected")]
    (speak,) = p.receive_text('{"type": "speak", "text": "Hi.", "flush": false, "voice": "v"}')
    assert isinstance(speak, Speak) and speak.more and speak.fields["voice"] == "v"
    assert p.receive_text('{"type": "speak", "text": "Hi."}')[0].more is False
    assert p.receive_text('{"type": "mcp", "payload": {"jsonrpc": "2.0"}}') == []
    assert p.receive_text('{"type": "iot", "states": []}') == []
    (hello,) = p.receive_text(json.dumps({**HELLO, "features": {"aec": True}}))
    assert hello.message["type"] == "hello" and p.features == {"aec": True}


def test_speak_language_is_checked_against_the_engines_languages():
    p = opened(languages=("zh", "en"))
    (speak,) = p.receive_text('{"type": "speak", "text": "Hi.", "language": "en-GB"}')
    assert isinstance(speak, Speak) and speak.fields["language"] == "en-GB"
    assert isinstance(p.receive_text('{"type": "speak", "text": "Hi.", "language": "auto"}')[0], Speak)
    error = only_error(p.receive_text('{"type": "speak", "text": "Salut.", "language": "fr"}'))
    assert error["code"] == "unsupported_language" and "espeak" in error["message"] and "zh, en" in error["message"]
    assert only_error(p.receive_text('{"type": "speak", "text": "Hi.", "language": 7}'))["code"] == "invalid_field"
    assert isinstance(opened().receive_text('{"type": "speak", "text": "Hi.", "language": "fr"}')[0], Speak)


def test_warnings_are_messages_the_firmware_ignores():
    p = opened()
    notices = [Notice("voice_ignored", "the espeak engine cannot clone a voice")]
    assert p.warned(notices) == [Send({"type": "warning", "code": "voice_ignored", "message": notices[0].message})]
    assert p.warned([]) == []
    (piece,) = p.piece_warnings({"type": "speak", "text": "more", "voice": "v", "speed": 2, "flush": False})
    assert piece.message["code"] == "settings_ignored" and piece.message["message"].startswith("speed, voice only")
    assert p.piece_warnings({"type": "speak", "text": "more"}) == []


@pytest.mark.parametrize("frame, code, words", [
    ("this is not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "invalid_message", "object"),
    ('{"text": "hi"}', "invalid_message", "no 'type'"),
    ('{"type": "dance"}', "unknown_type", "'dance'"),
    ('{"type": []}', "invalid_message", "'type' must be a string"),
    ('{"type": 7}', "invalid_message", "'type' must be a string"),
    ('{"type": "listen", "state": 5}', "invalid_field", "'state'"),
    ('{"type": "listen", "mode": "' + "m" * 65 + '"}', "invalid_field", "'mode'"),
    ('{"type": "listen", "state": "\\ud800"}', "invalid_string", "surrogate"),
    ('{"type": "abort", "reason": {}}', "invalid_field", "'reason'"),
    ('{"type": "speak", "text": "hi", "flush": "no"}', "invalid_field", "'flush'"),
    ('{"type": "hello", "features": "all"}', "invalid_field", "hello.features"),
    (DEEP, "json_too_deep", "nests deeper"),
    ('{"type": "speak", "text": "hi", "speed": ' + HUGE + "}", "number_too_long", "5000 characters"),
    ('{"type": "ping", "x": NaN}', "invalid_json", "NaN"),
])
def test_bad_messages_after_hello_get_errors_and_change_nothing(frame, code, words):
    p = opened()
    p.receive_text('{"type": "listen", "state": "start", "mode": "auto"}')
    error = only_error(p.receive_text(frame))
    assert error["code"] == code and words in error["message"], error
    assert p.state == OPEN and (p.listen_state, p.listen_mode) == ("start", "auto")
    assert p.features == {"mcp": True}
    assert p.receive_text('{"type": "ping"}') == [Send({"type": "pong"})]  # still usable


@pytest.mark.parametrize("version", [2, 3])
def test_uplink_frames_counted_and_bad_ones_reported_sparingly(version):
    p = opened(str(version))
    assert p.receive_bytes(pack_audio(version, b"\xf8\xff\xfe")) == [] and p.uplink_frames == 1
    assert p.receive_bytes(b"") == []
    reports = [a for _ in range(BAD_FRAME_REPORT_EVERY + 1) for a in p.receive_bytes(b"\x00")]
    assert p.bad_frames == BAD_FRAME_REPORT_EVERY + 1 and len(reports) == 2  # the first, then every 50th
    assert reports[0].message["code"] == "invalid_frame" and f"protocol version {version}" in reports[0].message["message"]
    assert reports[0].metric == "xiaozhi_bad_frame"


# --- random input ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
TYPES = st.sampled_from(["hello", "listen", "abort", "speak", "ping", "mcp", "iot", "goodbye", "", "HELLO"])
FIELDS = st.sampled_from(["state", "mode", "text", "reason", "flush", "features", "audio_params", "version",
                          "transport", "payload", "voice", "speed", "emotion", "language"])
MESSAGES = st.one_of(
    st.builds(lambda t, extra: json.dumps({"type": t, **extra}), TYPES, st.dictionaries(FIELDS, JSON, max_size=4)),
    JSON.map(json.dumps),
    st.text(max_size=60),  # anything at all, lone surrogates included
)


def check_actions(p: XiaozhiProtocol, actions) -> None:
    for action in actions:
        assert isinstance(action, (Send, Close, Opened, Listening, Abort, Speak)), action
        if isinstance(action, Send):
            json.dumps(action.message, ensure_ascii=False).encode("utf-8")  # always sendable
            if action.message["type"] == "error":
                assert action.message["code"] and action.message["message"]
        if isinstance(action, Close):
            assert action.code in (1000, 1008) and action.reason
    # What GET /v1/xiaozhi/devices shows is always valid JSON text.
    json.dumps([p.features, p.uplink_audio_params, p.listen_state, p.listen_mode], ensure_ascii=False).encode()
    assert p.listen_state is None or isinstance(p.listen_state, str)


@given(st.lists(MESSAGES | st.binary(max_size=40), max_size=12))
def test_random_input_before_and_after_hello_never_raises(frames):
    for start in (XiaozhiProtocol(), opened()):
        p = start
        for frame in frames:
            before = p.state
            actions = p.receive_bytes(frame) if isinstance(frame, bytes) else p.receive_text(frame)
            check_actions(p, actions)
            if before == AWAIT_HELLO and isinstance(frame, str):  # a text frame: the hello, or a close
                assert [type(a) for a in actions] in ([Opened, Send], [Close]), actions
            if before == AWAIT_HELLO and isinstance(frame, bytes):
                assert actions == [] and p.state == AWAIT_HELLO


@given(st.lists(MESSAGES, min_size=1, max_size=12))
def test_after_hello_every_text_frame_gets_at_most_an_answer_and_never_closes(frames):
    p = opened(languages=("zh", "en"))
    for frame in frames:
        actions = p.receive_text(frame)
        check_actions(p, actions)
        for speak in (a for a in actions if isinstance(a, Speak)):  # only a language the engine speaks
            language = speak.fields.get("language")
            assert language is None or isinstance(language, str) and (
                language.strip().lower() in ("", "auto")
                or language.strip().replace("_", "-").split("-")[0].lower() in ("zh", "en")), speak.fields
        assert not any(isinstance(a, Close) for a in actions) and p.state == OPEN
        assert len(actions) <= 1


@given(st.binary(max_size=64), st.sampled_from([1, 2, 3]))
def test_random_binary_frames(data, version):
    p = opened(str(version))
    actions = p.receive_bytes(data)
    check_actions(p, actions)
    assert p.uplink_frames + p.bad_frames == (1 if data else 0)


def test_v2_header_round_trip():
    frame = pack_audio(2, b"abc", 77)
    assert struct.unpack_from(">HHIII", frame) == (2, 0, 0, 77, 3)
