"""AgentStreamProtocol without a socket: every message type and answer, the issue's malformed
inputs, and random message sequences (hypothesis) that never raise, never produce an
unserialisable message, and keep the context rules."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_tts.server.capabilities import Notice
from realtime_tts.server.agent_protocol import (MAX_CONTEXTS, AgentStreamProtocol, Cancel, Close, Configure, End,
                                                Flush, Open, Push, Send, StreamError, audio_frame)

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5000


def protocol(**kw) -> AgentStreamProtocol:
    return AgentStreamProtocol(max_text_chars=kw.pop("max_text_chars", 100), buffer_delay_ms=1500, **kw)


def feed(p, **msg):
    return p.receive_text(json.dumps(msg))


def error_of(actions) -> dict:
    (action,) = actions
    assert isinstance(action, Send) and action.payload["type"] == "error", actions
    assert action.payload["message"], action
    return action.payload


def open_context(p, cid="t", text="Hello. ", end=False, **fields):
    (open_,) = feed(p, type="text", context_id=cid, text=text, end=end, **fields)
    assert open_ == Open(cid, fields, text, end)
    return p.opened(cid, open_)


def test_config_is_checked_then_applied_when_the_session_confirms():
    p = protocol()
    (configure,) = feed(p, type="config", output={"encoding": "opus", "sample_rate": 48000, "frame_ms": 60},
                        audio_transport="base64", max_buffer_delay_ms=50, sentence_timestamps=False, speed=1.5)
    assert isinstance(configure, Configure) and configure.fields == {"speed": 1.5}
    assert p.config.output.encoding == "pcm_s16le"  # nothing applied before the options resolve
    ready, warning = p.configured(configure.config, configure.fields, ready={"session_id": "s", "engine": "e"},
                                  warnings=[Notice("speed_clamped", "clamped")])
    assert ready.payload == {"type": "ready", "session_id": "s", "engine": "e", "audio_transport": "base64",
                             "output": {"encoding": "opus", "sample_rate": 48000, "channels": 1, "frame_ms": 60},
                             "sentence_timestamps": False, "max_buffer_delay_ms": 50}
    assert warning.payload["code"] == "speed_clamped" and p.default_fields == {"speed": 1.5}


def test_a_context_opens_streams_and_finishes():
    p = protocol()
    started, push, end = open_context(p, "t", "Hello. ", end=True)
    assert started == Send({"type": "context_started", "context_id": "t", "slot": 0})
    assert (push, end) == (Push("t", "Hello. "), End("t"))
    assert p.unplayed == 1 and p.contexts["t"].chars == 7
    assert p.done("t", audio_ms=700, sentences=1) == [Send({"type": "done", "context_id": "t", "audio_ms": 700,
                                                             "chars": 7, "sentences": 1})]
    p.retired()
    assert p.unplayed == 0 and p.is_final("t")
    assert error_of(feed(p, type="text", context_id="t", text="again"))["code"] == "context_ended"


def test_text_flush_end_keepalive_on_an_open_context():
    p = protocol()
    open_context(p, "t", "", voice="v")
    assert feed(p, type="text", context_id="t", text="More") == [Push("t", "More")]
    warning, push = feed(p, type="text", context_id="t", text=" text", speed=2)
    assert warning.payload["code"] == "settings_ignored" and push == Push("t", " text")
    assert feed(p, type="flush", context_id="t") == [Flush("t", 1)]
    assert feed(p, type="flush", context_id="t", flush_id="f-2") == [Flush("t", "f-2")]
    assert feed(p, type="keepalive") == []
    assert feed(p, type="text", context_id="t", text="", end=True) == [End("t")]
    for kind in ("text", "flush", "end"):
        assert error_of(feed(p, type=kind, context_id="t", text="x"))["code"] == "context_ended"


def test_cancel_one_all_none_finished_unknown():
    p = protocol()
    open_context(p, "a")
    open_context(p, "b")
    assert feed(p, type="cancel", context_id="b") == [Cancel("b"), Send({"type": "cancelled", "context_id": "b"})]
    assert feed(p, type="cancel") == [Cancel("a"), Send({"type": "cancelled", "context_id": "a"})]
    assert feed(p, type="cancel") == [Send({"type": "cancelled", "context_id": None})]
    assert feed(p, type="cancel", context_id="a") == [Send({"type": "cancelled", "context_id": "a"})]
    assert error_of(feed(p, type="cancel", context_id="zz"))["code"] == "unknown_context"
    assert p.done("a", audio_ms=0, sentences=0) == []  # nothing follows `cancelled`
    assert p.failed("b", "synthesis_failed", "late") == []


def test_refused_open_and_failed_context():
    p = protocol()
    (open_,) = feed(p, type="text", context_id="x", text="hi", voice="nobody")
    error = error_of(p.refused(StreamError("voice_not_found", "no voice 'nobody'", "x", param="voice")))
    assert error == {"type": "error", "code": "voice_not_found", "message": "no voice 'nobody'", "context_id": "x",
                     "param": "voice"}
    assert "x" not in p.contexts and p.unplayed == 0
    open_context(p, "x", "ok")  # the id can be used again: it never opened
    assert error_of(p.failed("x", "synthesis_failed", "sentence 1 failed", index=1))["index"] == 1
    assert error_of(feed(p, type="flush", context_id="x"))["code"] == "context_ended"


def test_language_is_checked_against_the_engines_languages():
    p = protocol(languages=("zh", "en"), engine="espeak")
    (configure,) = feed(p, type="config", language="en-US")
    assert configure.fields == {"language": "en-US"}
    (configure,) = feed(p, type="config", language="auto")
    assert configure.fields == {"language": None}  # auto: the engine detects it
    error = error_of(feed(p, type="config", language="fr"))
    assert error["code"] == "unsupported_language" and error["param"] == "language"
    assert "espeak" in error["message"] and "zh, en" in error["message"]
    error = error_of(feed(p, type="text", context_id="t", text="Bonjour.", language="fr-FR"))
    assert (error["code"], error["context_id"]) == ("unsupported_language", "t")
    assert "t" not in p.contexts and not p._opening  # nothing opened: the id is free
    assert error_of(feed(p, type="text", context_id="t", text="Hi.", language=["en"]))["code"] == "invalid_field"
    assert open_context(p, "t", "你好。", language="zh")[0].payload["type"] == "context_started"
    warning, push = feed(p, type="text", context_id="t", text="More.", language="fr")
    assert warning.payload["code"] == "settings_ignored" and "language" in warning.payload["message"]
    (open_,) = feed(protocol(), type="text", context_id="u", text="Hi.", language="xx")  # None: any hint
    assert open_.fields == {"language": "xx"}


def test_warnings_follow_ready_and_context_started():
    p = protocol()
    (configure,) = feed(p, type="config", voice="alice")
    notices = [Notice("voice_ignored", "the espeak engine cannot clone a voice"),
               Notice("emotion_ignored", "the espeak engine has no emotion control")]
    ready, *warnings = p.configured(configure.config, configure.fields, ready={"session_id": "s"}, warnings=notices)
    assert ready.payload["type"] == "ready"
    assert [w.payload for w in warnings] == [{"type": "warning", "code": n.code, "message": n.message}
                                            for n in notices]
    (open_,) = feed(p, type="text", context_id="t", text="Hi.", voice="alice")
    started, warning, push = p.opened("t", open_, warnings=notices[:1])
    assert started.payload["type"] == "context_started" and push == Push("t", "Hi.")
    assert warning.payload == {"type": "warning", "code": "voice_ignored", "context_id": "t",
                               "message": notices[0].message}


def test_limits():
    p = protocol(max_text_chars=10)
    assert error_of(feed(p, type="text", context_id="a", text="x" * 11))["code"] == "text_too_long"
    open_context(p, "a", "x" * 6)
    assert error_of(feed(p, type="text", context_id="a", text="y" * 5))["code"] == "text_too_long"
    for i in range(1, MAX_CONTEXTS):
        open_context(p, f"c{i}", "")
    assert error_of(feed(p, type="text", context_id="one-too-many", text=""))["code"] == "too_many_contexts"
    assert error_of(feed(p, type="config"))["code"] == "config_locked"


@pytest.mark.parametrize("frame, code", [
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "invalid_json"),
    ('"text"', "invalid_json"),
    ('{"type": []}', "unknown_type"),
    ('{"type": {"a": 1}}', "unknown_type"),
    ('{"context_id": "x"}', "unknown_type"),
    ('{"type": "speak"}', "unknown_type"),
    ('{"type": "text", "context_id": "\\ud800", "text": "hi"}', "invalid_string"),
    ('{"type": "text", "context_id": "x", "text": "a\\udfffb"}', "invalid_string"),
    (DEEP, "json_too_deep"),
    ('{"type": "text", "context_id": "x", "text": "hi", "speed": ' + HUGE + "}", "number_too_long"),
    ('{"type": "text", "context_id": ["x"], "text": "hi"}', "invalid_field"),
    ('{"type": "text", "context_id": "x", "text": {"t": 1}}', "invalid_field"),
    ('{"type": "text", "context_id": "x", "text": "hi", "end": 1}', "invalid_field"),
    ('{"type": "flush", "context_id": 5}', "invalid_field"),
    ('{"type": "cancel", "context_id": []}', "invalid_field"),
    ('{"type": "config", "output": []}', "invalid_field"),
    ('{"type": "config", "output": {"encoding": ["opus"]}}', "unsupported_encoding"),
    ('{"type": "config", "output": {"sample_rate": 24000.0}}', "unsupported_sample_rate"),
    ('{"type": "config", "output": {"sample_rate": true}}', "unsupported_sample_rate"),
    ('{"type": "config", "output": {"frame_ms": "20"}}', "invalid_field"),
    ('{"type": "config", "audio_transport": ["binary"]}', "invalid_field"),
    ('{"type": "config", "max_buffer_delay_ms": 60001}', "invalid_field"),
])
def test_malformed_messages_get_an_error_and_change_nothing(frame, code):
    p = protocol()
    config = p.config
    if '"config"' not in frame:  # config is refused while a context is open: test it on an idle socket
        open_context(p, "x", "Hi")
    error = error_of(p.receive_text(frame))
    assert error["code"] == code, error
    assert p.config == config
    if p.contexts:
        assert set(p.contexts) == {"x"} and p.contexts["x"].chars == 2 and p.unplayed == 1
        assert feed(p, type="text", context_id="x", text="!") == [Push("x", "!")]  # still usable


def test_binary_frames_and_audio_header():
    assert error_of(protocol().receive_bytes(b"\x01\x00"))["code"] == "binary_not_supported"
    assert audio_frame(3, 2**32 + 5, b"ab") == b"\x01\x00\x00\x03\x00\x00\x00\x05ab"


# --- random message sequences ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
IDS = st.sampled_from(["a", "b", "c", "", None, 7, "x" * 129])
LANGUAGES = st.sampled_from(["zh", "en-US", "fr", "auto", "", "x" * 40]) | JSON
MESSAGE = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "context_id": IDS},
                          optional={"text": st.text(max_size=30) | JSON, "end": st.booleans() | JSON,
                                    "speed": JSON, "voice": JSON, "language": LANGUAGES}),
    st.fixed_dictionaries({"type": st.sampled_from(["flush", "end", "cancel"]), "context_id": IDS},
                          optional={"flush_id": JSON}),
    st.fixed_dictionaries({"type": st.just("config")},
                          optional={"output": st.fixed_dictionaries({}, optional={
                              "encoding": st.sampled_from(["opus", "pcm_s16le", "mp3"]) | JSON,
                              "sample_rate": st.sampled_from([16000, 24000, 44100]) | JSON,
                              "frame_ms": st.sampled_from([20, 25]) | JSON}) | JSON,
                              "audio_transport": JSON, "max_buffer_delay_ms": JSON, "sentence_timestamps": JSON,
                              "language": LANGUAGES}),
    st.fixed_dictionaries({"type": JSON | st.sampled_from(["keepalive", "speak"])}),
    JSON,
).map(json.dumps) | st.text(max_size=40)
# What the session answers: an Open is opened or refused; the player finishes or fails contexts.
SESSION = st.sampled_from(["open", "refuse", "done", "fail", "retire"])


@given(st.lists(st.tuples(MESSAGE, SESSION), max_size=25))
def test_random_sequences_keep_the_rules(steps):
    p = protocol(max_text_chars=40, languages=("zh", "en"), engine="espeak")
    final: set[str] = set()  # contexts that got `cancelled`, `done` or an error: nothing may follow
    playing: list[str] = []
    for frame, answer in steps:
        actions = p.receive_text(frame)
        while actions:
            action = actions.pop(0)
            assert isinstance(action, (Send, Configure, Open, Push, Flush, End, Cancel, Close)), action
            if isinstance(action, Send):
                json.dumps(action.payload, ensure_ascii=False).encode("utf-8")  # always sendable
                cid = action.payload.get("context_id")
                if action.payload["type"] in ("cancelled", "done"):
                    final.add(cid)
                elif action.payload["type"] == "error":
                    assert action.payload["code"] and action.payload["message"]
                elif cid is not None:
                    assert cid not in final, (action, final)
            elif isinstance(action, (Push, Flush, End)):
                assert action.context_id in p.contexts and action.context_id not in final
            elif isinstance(action, Open):
                assert action.context_id not in p.contexts
                language = action.fields.get("language")  # only a language the engine speaks gets through
                assert language is None or language.replace("_", "-").split("-")[0].lower() in ("zh", "en"), action.fields
                if answer == "refuse":
                    actions += p.refused(StreamError("voice_not_found", "no", action.context_id))
                else:
                    actions += p.opened(action.context_id, action)
                    playing.append(action.context_id)
            elif isinstance(action, Configure):
                language = action.fields.get("language")
                assert language is None or language.replace("_", "-").split("-")[0].lower() in ("zh", "en"), action.fields
                actions += p.configured(action.config, action.fields, ready={"session_id": "s"},
                                        warnings=[Notice("voice_ignored", "not used")])
        if playing and answer in ("done", "fail"):
            cid = playing[0]
            for a in (p.done(cid, audio_ms=0, sentences=0) if answer == "done" else p.failed(cid, "x", "y")):
                assert a.payload["context_id"] not in final, (a, final)  # one ending per context
                final.add(a.payload["context_id"])
        if playing and answer == "retire" and p.is_final(playing[0]):  # the player moves on once it is over
            playing.pop(0)
            p.retired()
        assert len(p.contexts) <= p.unplayed <= MAX_CONTEXTS
        assert all(c.chars <= 40 for c in p.contexts.values())
