"""A xiaozhi ESP32 device simulator: connects like the firmware and listens like it.

It opens ``/xiaozhi/v1/`` with the firmware's headers (``Authorization``, ``Protocol-Version``,
``Device-Id``, ``Client-Id``), says hello, sends ``listen start`` as a device does after the
handshake, and then plays what the server sends: binary frames are parsed with the
connection's protocol version (1, 2 or 3), each Opus packet is decoded at 24 kHz, and audio
that arrives outside the Speaking state (before ``tts start`` / after ``tts stop``) is
dropped and counted, as the firmware does. Packet arrival times drive a model of the
device's 2.4 s decode queue: a packet that arrives more than 2.4 s ahead of play-out would
be dropped by a real device, and is reported.

Importable (``DeviceSimulator``, ``simulate``) and a CLI::

    python -m clients.device_simulator --url ws://127.0.0.1:8000/xiaozhi/v1/ \\
        --text "Hello there. How are you?" --version 2 --out heard.wav

Without ``--text`` it waits for speech sent through the control API
(``POST /v1/xiaozhi/devices/{device_id}/speak``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import websockets
from websockets.asyncio.client import connect

from realtime_tts.audio.opus import OpusDecoder
from realtime_tts.server.xiaozhi import FrameError, pack_audio, unpack_audio

SAMPLE_RATE = 24000
DEVICE_BUFFER_S = 2.4  # MAX_DECODE_PACKETS_IN_QUEUE (40) x 60 ms


@dataclass
class Packet:
    arrived: float  # monotonic seconds
    size: int  # Opus payload bytes
    samples: int  # decoded samples at 24 kHz
    timestamp_ms: int | None  # v2 header timestamp
    lead_s: float  # audio queued on the device after this packet, in seconds


@dataclass
class HeardTurn:
    """One ``tts start`` ... ``tts stop`` as the device saw it."""

    started_at: float
    stopped_at: float | None = None
    sentences: list[str] = field(default_factory=list)
    emotion: str | None = None
    packets: list[Packet] = field(default_factory=list)
    events: list[tuple[str, object]] = field(default_factory=list)  # ("start"|"sentence"|"audio"|"stop", detail)
    chunks: list[np.ndarray] = field(default_factory=list)

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    @property
    def duration_s(self) -> float:
        return sum(p.samples for p in self.packets) / SAMPLE_RATE


class DeviceSimulator:
    """One simulated device connection. Use ``async with DeviceSimulator(url, ...) as dev``."""

    def __init__(self, url: str, *, version: int = 1, device_id: str | None = None, client_id: str | None = None,
                 token: str | None = None, hello_version: int | None = None, send_listen: bool = True,
                 listen_mode: str = "auto", credentials_in_query: bool = False, send_header_version: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.version = version
        self.device_id = device_id or "sim:" + uuid.uuid4().hex[:10]
        self.client_id = client_id or str(uuid.uuid4())
        self.token = token
        self.hello_version = version if hello_version is None else hello_version
        self.send_listen = send_listen
        self.listen_mode = listen_mode
        self.credentials_in_query = credentials_in_query
        self.send_header_version = send_header_version
        self.warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
        self.ws = None
        self.hello: dict | None = None
        self.session_id: str | None = None
        self.messages: list[tuple[float, dict]] = []  # every JSON message, with its arrival time
        self.turns: list[HeardTurn] = []
        self.dropped_packets = 0  # audio outside the Speaking state (the firmware drops it)
        self.bad_frames = 0
        self.warnings: list[str] = []
        self.speaking = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._decoder = OpusDecoder(SAMPLE_RATE)
        self._play_end = 0.0  # when the modelled device queue runs dry
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None

    # --- connection -----------------------------------------------------------------------------
    async def __aenter__(self) -> DeviceSimulator:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> dict:
        """Open the socket, send hello (and listen start); returns the server hello."""
        headers = {"Device-Id": self.device_id, "Client-Id": self.client_id}
        if self.send_header_version:
            headers["Protocol-Version"] = str(self.version)
        url = self.url
        if self.token is not None:
            headers["Authorization"] = self.token if " " in self.token else f"Bearer {self.token}"
        if self.credentials_in_query:  # the browser client's convention (no headers on a WebSocket)
            query = {"device-id": self.device_id, "client-id": self.client_id}
            if self.token is not None:
                query["authorization"] = headers["Authorization"]
            url += ("&" if "?" in url else "?") + urlencode(query)
            headers = {k: v for k, v in headers.items() if k == "Protocol-Version"}
        self.ws = await connect(url, additional_headers=headers, open_timeout=timeout, max_size=None)
        self._reader = asyncio.create_task(self._read())
        await self.send_json({"type": "hello", "version": self.hello_version, "features": {"mcp": True},
                              "transport": "websocket",
                              "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1,
                                               "frame_duration": 60}})
        self.hello = await self.wait_for(lambda m: m.get("type") == "hello", timeout)
        self.session_id = self.hello.get("session_id")
        if self.send_listen:
            await self.send_json({"type": "listen", "state": "start", "mode": self.listen_mode})
        return self.hello

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # --- sending ------------------------------------------------------------------------------------
    async def send_json(self, message: dict) -> None:
        if self.session_id and "session_id" not in message:
            message = {"session_id": self.session_id, **message}
        await self.ws.send(json.dumps(message))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def send_audio(self, opus_packet: bytes, timestamp_ms: int = 0) -> None:
        """One uplink Opus packet framed for this connection's protocol version."""
        await self.ws.send(pack_audio(self.version, opus_packet, timestamp_ms))

    async def speak(self, text: str, **fields) -> None:
        """The in-band extension frame: ask the server to speak ``text`` on this device."""
        await self.send_json({"type": "speak", "text": text, **fields})

    async def abort(self, reason: str | None = None) -> None:
        await self.send_json({"type": "abort", **({"reason": reason} if reason else {})})

    # --- waiting --------------------------------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0, *, since: int = 0) -> dict:
        """The first JSON message (from index ``since``) matching ``predicate``."""
        async def find() -> dict:
            async with self._changed:
                while True:
                    for _, message in self.messages[since:]:
                        if predicate(message):
                            return message
                    if self.closed:
                        raise ConnectionError(f"connection closed ({self.close_code} {self.close_reason!r}) "
                                              "before the expected message")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def next_turn(self, timeout: float = 30.0, *, index: int | None = None) -> HeardTurn:
        """Wait until turn ``index`` (default: the first not yet returned) has ended with ``tts stop``."""
        if index is None:
            index = getattr(self, "_returned", 0)
        self._returned = index + 1

        async def find() -> HeardTurn:
            async with self._changed:
                while not (len(self.turns) > index and self.turns[index].stopped_at is not None):
                    if self.closed:
                        raise ConnectionError(f"connection closed ({self.close_code} {self.close_reason!r}) "
                                              f"before turn {index} ended")
                    await self._changed.wait()
                return self.turns[index]

        return await asyncio.wait_for(find(), timeout)

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    # --- receiving ----------------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            async for data in self.ws:
                now = time.monotonic()
                if isinstance(data, str):
                    self._on_text(data, now)
                else:
                    self._on_audio(data, now)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.close_reason = self.ws.close_reason or ""
            if self.speaking and self.turns:
                self._note("connection closed while speaking")
            async with self._changed:
                self._changed.notify_all()

    def _note(self, message: str) -> None:
        self.warnings.append(message)
        self.warn(message)

    def _on_text(self, text: str, now: float) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self._note(f"server sent non-JSON text: {text[:80]!r}")
            return
        if not isinstance(message, dict):
            self._note(f"server sent a JSON {type(message).__name__}, not an object")
            return
        self.messages.append((now, message))
        if message.get("type") != "hello" and self.session_id and message.get("session_id") != self.session_id:
            self._note(f"message without our session_id: {message}")
        if message.get("type") == "tts":
            state = message.get("state")
            if state == "start":
                if not self.speaking:  # Idle/Listening -> Speaking: the firmware resets its decoder
                    self._decoder = OpusDecoder(SAMPLE_RATE)
                    self.turns.append(HeardTurn(started_at=now))
                self.speaking = True
                self.turns[-1].events.append(("start", None))
            elif state == "sentence_start" and self.speaking:
                self.turns[-1].sentences.append(message.get("text", ""))
                self.turns[-1].events.append(("sentence", message.get("text", "")))
            elif state == "stop":
                if self.speaking:
                    self.turns[-1].stopped_at = now
                    self.turns[-1].events.append(("stop", None))
                self.speaking = False
            elif state == "sentence_end":
                self._note("server sent the obsolete sentence_end")
        elif message.get("type") == "llm" and self.speaking:
            self.turns[-1].emotion = message.get("emotion")

    def _on_audio(self, data: bytes, now: float) -> None:
        try:
            frame = unpack_audio(self.version, data)
        except FrameError as e:
            self.bad_frames += 1
            self._note(f"malformed downlink frame: {e}")
            return
        if not self.speaking:
            self.dropped_packets += 1
            return
        try:
            pcm = self._decoder.decode(frame.payload)
        except ValueError as e:
            self.bad_frames += 1
            self._note(f"undecodable Opus packet: {e}")
            return
        self._play_end = max(self._play_end, now) + len(pcm) / SAMPLE_RATE
        lead = self._play_end - now
        if lead > DEVICE_BUFFER_S:
            self._note(f"server is {lead:.2f} s ahead of playback; a device drops audio beyond {DEVICE_BUFFER_S} s")
        turn = self.turns[-1]
        turn.packets.append(Packet(now, len(frame.payload), len(pcm), frame.timestamp_ms, lead))
        turn.chunks.append(pcm)
        turn.events.append(("audio", len(pcm)))

    # --- results --------------------------------------------------------------------------------------
    @property
    def pcm(self) -> np.ndarray:
        chunks = [t.pcm for t in self.turns]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    @property
    def max_lead_s(self) -> float:
        return max((p.lead_s for t in self.turns for p in t.packets), default=0.0)

    def summary(self) -> dict:
        return {
            "device_id": self.device_id, "session_id": self.session_id, "protocol_version": self.version,
            "turns": len(self.turns),
            "sentences": [s for t in self.turns for s in t.sentences],
            "packets": sum(len(t.packets) for t in self.turns),
            "audio_seconds": round(sum(t.duration_s for t in self.turns), 3),
            "max_lead_seconds": round(self.max_lead_s, 3),
            "dropped_packets": self.dropped_packets, "bad_frames": self.bad_frames,
            "errors": [m for _, m in self.messages if m.get("type") == "error"],
            "warnings": list(self.warnings),
        }


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    data = (np.clip(pcm, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data)


async def simulate(url: str, text: str | None = None, *, version: int = 1, out: str | Path | None = None,
                   token: str | None = None, device_id: str | None = None, turns: int = 1,
                   timeout: float = 120.0, fields: dict | None = None) -> dict:
    """Connect, optionally speak ``text`` in-band, hear ``turns`` turns, save the audio; returns a summary."""
    async with DeviceSimulator(url, version=version, token=token, device_id=device_id) as device:
        if text is not None:
            await device.speak(text, **(fields or {}))
        else:
            print(f"device {device.device_id} connected; waiting for speech via "
                  f"POST /v1/xiaozhi/devices/{device.device_id}/speak", file=sys.stderr)
        for _ in range(turns):
            await device.next_turn(timeout)
        if out:
            write_wav(out, device.pcm)
        return device.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.device_simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/xiaozhi/v1/", help="server WebSocket URL")
    parser.add_argument("--text", help="speak this in-band; without it, wait for control-API speech")
    parser.add_argument("--version", type=int, choices=(1, 2, 3), default=1, help="binary protocol version")
    parser.add_argument("--out", help="save the heard audio as a 24 kHz WAV")
    parser.add_argument("--token", help="API key / token sent as 'Authorization: Bearer <token>'")
    parser.add_argument("--device-id", help="Device-Id header (default: a random sim:... id)")
    parser.add_argument("--voice", help="voice id for --text")
    parser.add_argument("--emotion", help="emotion label for --text (e.g. happy, sad)")
    parser.add_argument("--speed", type=float, help="speed for --text (0.5-2.0)")
    parser.add_argument("--turns", type=int, default=1, help="turns to hear before exiting")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each turn")
    args = parser.parse_args(argv)
    fields = {k: v for k, v in (("voice", args.voice), ("emotion", args.emotion), ("speed", args.speed))
              if v is not None}
    try:
        summary = asyncio.run(simulate(args.url, args.text, version=args.version, out=args.out, token=args.token,
                                       device_id=args.device_id, turns=args.turns, timeout=args.timeout,
                                       fields=fields))
    except (OSError, ConnectionError, asyncio.TimeoutError, websockets.InvalidStatus, websockets.InvalidURI) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for sentence in summary["sentences"]:
        print(f"sentence: {sentence}")
    print(json.dumps({k: v for k, v in summary.items() if k != "sentences"}, ensure_ascii=False, indent=2))
    if args.out:
        print(f"saved {summary['audio_seconds']} s of audio to {args.out}")
    return 1 if summary["warnings"] or summary["dropped_packets"] or summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
