"""WS /xiaozhi/v1/ end to end: a live server on the ToneEngine, heard through the device simulator.

Covers the hello exchange, protocol versions 1/2/3 downlink, 60 ms packets, the encoded
silence between sentences, the tts start -> sentence_start -> stop sequence, pacing as the
device sees it (loosely: the exact schedule is tested on a fake clock in
test_xiaozhi_pacing.py), barge-in, queued turns, emotion/speed fields, streamed turns and
the session API used by the rest of the server.
"""

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from xiaozhi_helpers import ToneEngine, device, on_server_loop, serve, silence_runs_ms, until  # noqa: E402

from realtime_tts.engine.base import SynthesisOptions  # noqa: E402

FRAME = 1440  # 60 ms at 24 kHz


def check_turn(turn, sentences):
    """The wire order of one turn, and every packet exactly 60 ms."""
    kinds = [kind for kind, _ in turn.events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert kinds.count("start") == 1 and kinds.count("stop") == 1
    assert [d for k, d in turn.events if k == "sentence"] == sentences
    assert kinds[1] == "sentence"  # the first subtitle goes out with the first packet
    assert all(kinds[i + 1] == "audio" for i, k in enumerate(kinds) if k == "sentence")
    assert turn.packets and all(p.samples == FRAME for p in turn.packets)


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_protocol_versions(tmp_path, version):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url, version=version) as dev:
            hello = dev.hello
            assert hello["type"] == "hello" and hello["transport"] == "websocket"
            assert hello["audio_params"] == {"format": "opus", "sample_rate": 24000, "channels": 1,
                                             "frame_duration": 60}
            assert hello["version"] == version and len(hello["session_id"]) == 36
            await dev.speak("Hello there. How are you?")
            turn = await dev.next_turn(30)
            check_turn(turn, ["Hello there.", "How are you?"])
            # 12 + 12 characters of tone at 0.05 s each, 200 ms of silence after each sentence
            assert turn.duration_s == pytest.approx(0.6 + 0.2 + 0.6 + 0.2, abs=0.13)
            assert dev.dropped_packets == 0 and dev.bad_frames == 0 and dev.warnings == []
            assert all(m.get("session_id") == hello["session_id"] for _, m in dev.messages)
            if version == 2:
                stamps = [p.timestamp_ms for p in turn.packets]
                assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
            else:
                assert all(p.timestamp_ms is None for p in turn.packets)
            # no session-layer error and nothing sent after stop
            assert not [m for _, m in dev.messages if m.get("type") == "error"]
            session = ctx.devices["default", dev.device_id]
            assert session.version == version and session.features == {"mcp": True}
            assert session.uplink_audio_params["sample_rate"] == 16000
            assert session.listen_state == "start" and session.listen_mode == "auto"


async def test_silence_between_sentences_is_encoded_audio(tmp_path):
    with serve(tmp_path, silence_ms=200) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("One two three. Four five six. Seven eight.")
            turn = await dev.next_turn(30)
            check_turn(turn, ["One two three.", "Four five six.", "Seven eight."])
            gaps = silence_runs_ms(turn.pcm)
            assert len(gaps) == 2, gaps
            assert all(abs(gap - 200) <= 30 for gap in gaps), gaps
            # the subtitle of each sentence arrives with that sentence's audio: the packets before
            # the second sentence_start cover the first sentence and its silence (0.7 + 0.2 s)
            kinds = [k for k, _ in turn.events]
            second = [i for i, k in enumerate(kinds) if k == "sentence"][1]
            before = kinds[:second].count("audio") * 0.06
            assert 0.9 - 0.13 <= before <= 0.9 + 0.13


async def test_pacing_stays_far_under_the_device_buffer(tmp_path):
    with serve(tmp_path, xiaozhi_prebuffer_packets=5, xiaozhi_max_lead_ms=400) as (ctx, url, _):
        async with device(url, version=3) as dev:
            await dev.speak("This sentence is long enough to need real time pacing. And one more.")
            turn = await dev.next_turn(30)
            assert len(turn.packets) > 40  # more than the device's whole 2.4 s queue
            assert dev.max_lead_s <= 2.4 and dev.warnings == []
            # loose on purpose (CI is slow): sending was spread over time, not dumped at once,
            # and tts stop came well after the first packet (the schedule itself is unit-tested)
            span = turn.packets[-1].arrived - turn.packets[0].arrived
            assert span >= 0.5 * turn.duration_s
            assert turn.stopped_at - turn.packets[0].arrived >= 0.5 * turn.duration_s


async def test_abort_stops_audio_and_sends_stop(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            long_text = " ".join(f"Sentence number {i} is here." for i in range(12))
            await dev.speak(long_text)
            await dev.wait_for(lambda m: m.get("state") == "sentence_start", 20)
            while not dev.turns[0].packets:
                await asyncio.sleep(0.01)
            await dev.abort("wake_word_detected")
            turn = await dev.next_turn(5)
            heard = len(turn.packets)
            assert heard * 0.06 < 10.0  # far less than the ~17 s of the text
            assert len(turn.sentences) < 12
            await asyncio.sleep(0.5)
            assert dev.dropped_packets == 0  # nothing arrived after stop
            session = ctx.devices["default", dev.device_id]
            assert session.current_turn is None and session.queued_turns == 0
            # the device can be spoken to again, from a fresh encoder state
            await dev.speak("Back again.")
            again = await dev.next_turn(20)
            check_turn(again, ["Back again."])


async def test_abort_cancels_running_synthesis(tmp_path):
    engine = ToneEngine()
    with serve(tmp_path, engine) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("BLOCK this one please. And then this.")
            await dev.wait_for(lambda m: m.get("state") == "start", 10)
            assert await asyncio.to_thread(engine.blocked.wait, 10)
            await dev.abort()  # the button path: it waits for our stop
            turn = await dev.next_turn(5)
            assert turn.packets == [] and turn.sentences == []
            await dev.speak("Still alive.")
            check_turn(await dev.next_turn(20), ["Still alive."])
            assert ctx.executor.queue_depth == 0


async def test_abort_when_idle_answers_stop(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            await dev.abort()
            await dev.wait_for(lambda m: m.get("type") == "tts" and m.get("state") == "stop", 5)


async def test_speak_while_speaking_is_queued(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("First turn.")
            await dev.speak("Second turn.")
            first = await dev.next_turn(20)
            second = await dev.next_turn(20)
            check_turn(first, ["First turn."])
            check_turn(second, ["Second turn."])
            assert second.started_at >= first.stopped_at


async def test_engine_failure_skips_the_sentence(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("Good one. This will FAIL now. Good again.")
            turn = await dev.next_turn(20)
            check_turn(turn, ["Good one.", "Good again."])
            error = await dev.wait_for(lambda m: m.get("type") == "error", 5)
            assert error["code"] == "engine_error" and "FAIL" in error["message"]
            assert 'kind="engine_error"' in ctx.metrics.render().decode()


async def test_emotion_label_speed_and_voice_fields(tmp_path):
    engine = ToneEngine()
    with serve(tmp_path, engine) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("Oh no.", emotion="sad", speed=5)
            turn = await dev.next_turn(20)
            assert turn.emotion == "sad"
            llm = [m for _, m in dev.messages if m.get("type") == "llm"]
            assert llm and llm[0]["emotion"] == "sad" and llm[0]["text"]
            warning = [m for _, m in dev.messages if m.get("type") == "warning"][0]
            assert warning["code"] == "speed_clamped"
            text, options = engine.calls[-1]
            assert options.speed == 2.0
            assert options.emotion is not None and max(options.emotion.vector) == options.emotion.vector[2]  # sad
            # a vector through the shared parser; no llm message for it
            await dev.speak("Fine.", emotion={"vector": [0, 0, 0, 0, 0, 0, 0, 1]})
            turn = await dev.next_turn(20)
            assert turn.emotion is None
            assert engine.calls[-1][1].emotion.vector[7] > 0
            await dev.speak("Who?", voice="no-such-voice")
            error = await dev.wait_for(lambda m: m.get("type") == "error", 5)
            assert error["code"] == "voice_not_found"


async def test_streamed_in_band_turn(tmp_path):
    with serve(tmp_path, max_buffer_delay_ms=5000) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("Hello the", flush=False)
            await dev.speak("re. How are", flush=False)
            await dev.speak(" you?")  # ends the turn
            turn = await dev.next_turn(20)
            check_turn(turn, ["Hello there.", "How are you?"])


async def test_session_turn_api(tmp_path):
    """What other endpoints use to forward streamed text to a device: open_turn / push / end."""
    with serve(tmp_path) as (ctx, url, _):
        async with device(url, version=2) as dev:
            session = ctx.devices["default", dev.device_id]

            async def feed():
                turn = session.open_turn(SynthesisOptions())
                for piece in ("Streamed ", "text. ", "More ", "text."):
                    turn.push(piece)
                turn.end()
                return await turn.wait()

            assert await on_server_loop(session, feed) == "done"
            check_turn(await dev.next_turn(10), ["Streamed text.", "More text."])
            info = session.describe()
            assert info["device_id"] == dev.device_id and info["protocol_version"] == 2


async def test_ping_mcp_iot_listen(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            await dev.send_json({"type": "ping"})
            await dev.wait_for(lambda m: m.get("type") == "pong", 5)
            await dev.send_json({"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 1, "result": {}}})
            await dev.send_json({"type": "iot", "descriptors": []})
            await dev.send_json({"type": "listen", "state": "detect", "text": "hi"})
            await dev.send_json({"type": "listen", "state": "stop"})
            await dev.send_json({"type": "ping"})
            pongs = 0
            while pongs < 2:
                await dev.wait_for(lambda m: m.get("type") == "pong", 5)
                pongs = sum(1 for _, m in dev.messages if m.get("type") == "pong")
            assert not [m for _, m in dev.messages if m.get("type") == "error"]
            assert ctx.devices["default", dev.device_id].listen_state == "stop"
            # uplink audio in the connection's framing is accepted and dropped
            await dev.send_audio(b"\xf8\xff\xfe")
            await dev.send_json({"type": "ping"})
            await dev.wait_for(lambda m: m.get("type") == "pong", 5, since=len(dev.messages))
            assert ctx.devices["default", dev.device_id].uplink_frames == 1


async def test_metrics(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            assert 'rtts_active_connections{endpoint="xiaozhi"} 1.0' in ctx.metrics.render().decode()
            await dev.speak("Metrics please.")
            await dev.next_turn(20)
        text = ctx.metrics.render().decode()
        assert 'rtts_time_to_first_audio_seconds_count{endpoint="xiaozhi"} 1.0' in text


class SlowEngine(ToneEngine):
    """Takes 1.5 s over a sentence with SLOW in it: far longer than the device holds."""

    def synthesize(self, text, options, cancel):
        if "SLOW" in text:
            import time
            time.sleep(1.5)
        return super().synthesize(text, options, cancel)


async def test_a_gap_the_device_hears_is_counted(tmp_path):
    underruns = 'rtts_playback_underruns_total{endpoint="xiaozhi"}'
    with serve(tmp_path, SlowEngine()) as (ctx, url, _):
        async with device(url) as dev:
            assert underruns not in ctx.metrics.render().decode()
            await dev.speak("Hi. SLOW down now.")  # the device plays "Hi." out long before the rest
            await dev.next_turn(20)
        assert f"{underruns} 1.0" in ctx.metrics.render().decode()


async def test_server_close_reaches_the_device(tmp_path):
    """What app shutdown does to each live session: close(code, reason)."""
    with serve(tmp_path) as (ctx, url, _):
        async with device(url) as dev:
            await dev.speak("A long sentence that will be cut short by the server going away.")
            await dev.wait_for(lambda m: m.get("state") == "start", 10)
            session = ctx.devices["default", dev.device_id]
            await on_server_loop(session, lambda: session.close(1001, "server shutting down"))
            assert await dev.wait_closed(5) == (1001, "server shutting down")
        await until(lambda: not ctx.devices)
        assert ctx.executor.queue_depth == 0


async def test_same_device_reconnecting_replaces_the_old_connection(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url, device_id="aa:bb:cc:dd:ee:ff") as old:
            async with device(url, device_id="aa:bb:cc:dd:ee:ff") as new:
                code, reason = await old.wait_closed(5)
                assert code == 1000 and "replaced" in reason
                assert ctx.devices["default", "aa:bb:cc:dd:ee:ff"].session_id == new.session_id
                await new.speak("Still me.")
                check_turn(await new.next_turn(20), ["Still me."])


async def test_path_without_trailing_slash_and_query_identity(tmp_path):
    with serve(tmp_path) as (ctx, url, _):
        async with device(url.rstrip("/"), credentials_in_query=True, send_header_version=False,
                          device_id="11:22:33:44:55:66", version=3) as dev:
            session = ctx.devices["default", "11:22:33:44:55:66"]
            assert session.client_id == dev.client_id
            assert session.version == 3  # from hello.version, no header
            await dev.speak("Query identity.")
            check_turn(await dev.next_turn(20), ["Query identity."])
