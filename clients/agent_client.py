"""A client for the native LLM-agent socket ``/v1/tts/stream``: an async API and a CLI.

The CLI reads a text (``--file`` or stdin), optionally feeds it like an LLM would (small
token pieces at ``--pace-tokens-per-s``), writes the audio to a WAV file and prints the
time to first audio and each sentence as the server announces it::

    python -m clients.agent_client --url ws://127.0.0.1:8000/v1/tts/stream \\
        --file story.txt --pace-tokens-per-s 30 --voice alice --speed 1.1 --out out.wav

The async API (``AgentStream`` for the raw protocol, ``speak`` for one whole turn) needs
only the ``websockets`` package; Opus output is decoded with this project's decoder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import struct
import sys
import time
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

HEADER = struct.Struct(">BBHI")  # version, kind, context slot, sequence


class AgentStreamError(RuntimeError):
    """The server answered with an ``error`` message (or refused the connection)."""

    def __init__(self, code: str, message: str, context_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.context_id = context_id


@dataclass
class AudioFrame:
    """One binary audio frame (or base64 ``audio`` message), header parsed."""

    context_id: str | None
    slot: int
    seq: int
    data: bytes


class AgentStream:
    """One socket. ``recv`` returns server events: dicts for JSON, ``AudioFrame`` for audio."""

    def __init__(self, ws: ClientConnection, ready: dict) -> None:
        self.ws = ws
        self.ready = ready
        self.slots: dict[int, str] = {}  # binary slot -> context_id (from context_started)

    @classmethod
    async def connect(cls, url: str, *, api_key: str | None = None, config: dict | None = None,
                      open_timeout: float = 10.0) -> AgentStream:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        ws = await connect(url, additional_headers=headers, open_timeout=open_timeout, max_size=None)
        try:
            stream = cls(ws, {})
            stream.ready = await stream._expect_ready()
            if config:
                await stream.send({"type": "config", **config})
                stream.ready = await stream._expect_ready()
        except BaseException:
            await ws.close()
            raise
        return stream

    async def _expect_ready(self, timeout: float = 30.0) -> dict:
        event = await self.recv(timeout)
        if isinstance(event, dict) and event.get("type") == "error":
            raise AgentStreamError(event.get("code", "error"), event.get("message", ""))
        if not isinstance(event, dict) or event.get("type") != "ready":
            raise AgentStreamError("protocol", f"expected 'ready', got {event!r}")
        return event

    async def __aenter__(self) -> AgentStream:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message, ensure_ascii=False))

    async def text(self, context_id: str, text: str, *, end: bool = False, **options: Any) -> None:
        """Append ``text``; ``options`` (voice, emotion, speed) apply on a context's first text."""
        msg = {"type": "text", "context_id": context_id, "text": text, **options}
        if end:
            msg["end"] = True
        await self.send(msg)

    async def flush(self, context_id: str, flush_id: Any = None) -> None:
        msg = {"type": "flush", "context_id": context_id}
        if flush_id is not None:
            msg["flush_id"] = flush_id
        await self.send(msg)

    async def end(self, context_id: str) -> None:
        await self.send({"type": "end", "context_id": context_id})

    async def cancel(self, context_id: str | None = None) -> None:
        await self.send({"type": "cancel", **({"context_id": context_id} if context_id is not None else {})})

    async def keepalive(self) -> None:
        await self.send({"type": "keepalive"})

    async def recv(self, timeout: float | None = None) -> dict | AudioFrame:
        """The next event; raises ``TimeoutError`` or ``websockets.ConnectionClosed``."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            if len(raw) < HEADER.size:
                raise AgentStreamError("protocol", f"binary frame of {len(raw)} bytes has no 8-byte header")
            version, kind, slot, seq = HEADER.unpack_from(raw)
            if version != 1 or kind != 0:
                raise AgentStreamError("protocol", f"unknown binary frame version {version} kind {kind}")
            return AudioFrame(self.slots.get(slot), slot, seq, raw[HEADER.size:])
        event = json.loads(raw)
        if event.get("type") == "context_started":
            self.slots[event["slot"]] = event["context_id"]
        elif event.get("type") == "audio":
            import base64

            return AudioFrame(event["context_id"], -1, event["seq"], base64.b64decode(event["data"]))
        return event

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Utterance:
    """Everything one context produced."""

    context_id: str
    encoding: str
    sample_rate: int
    frames: list[bytes] = field(default_factory=list)
    sentences: list[dict] = field(default_factory=list)  # sentence_start events
    events: list[dict] = field(default_factory=list)  # every JSON event of this context, in order
    done: dict | None = None
    cancelled: bool = False
    ttfa_s: float | None = None  # first text sent -> first audio frame received

    def pcm_s16le(self) -> bytes:
        """The audio as 16-bit little-endian PCM at ``sample_rate`` (Opus is decoded)."""
        if self.encoding == "pcm_s16le":
            return b"".join(self.frames)
        import numpy as np

        from realtime_tts.audio.opus import OpusDecoder
        from realtime_tts.audio.pcm import float_to_s16le

        decoder = OpusDecoder(self.sample_rate)
        try:
            pcm = [decoder.decode(f) for f in self.frames]
        finally:
            decoder.close()
        return float_to_s16le(np.concatenate(pcm) if pcm else np.zeros(0, np.float32))

    @property
    def duration_s(self) -> float:
        return len(self.pcm_s16le()) / 2 / self.sample_rate


_CJK = "\u3000-\u9fff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]{{1,2}}|\s*[^\s{_CJK}]+|\s+")


def llm_tokens(text: str, seed: int = 0) -> list[str]:
    """Cut ``text`` into LLM-like pieces: 1-2 CJK characters, words (with their leading space)
    sometimes split in two. Deterministic for a seed; the pieces always join back to ``text``.
    """
    rng = random.Random(seed)
    pieces: list[str] = []
    for m in _TOKEN.finditer(text):
        word = m.group()
        if len(word.strip()) > 3 and rng.random() < 0.4:
            cut = rng.randint(2, len(word) - 1)
            pieces += [word[:cut], word[cut:]]
        else:
            pieces.append(word)
    return pieces


async def speak(url: str, pieces: Iterable[str], *, api_key: str | None = None, context_id: str = "turn-1",
                pace_tokens_per_s: float = 0.0, encoding: str = "pcm_s16le", sample_rate: int = 24000,
                frame_ms: int = 20, on_sentence=None, timeout: float = 300.0, **options: Any) -> Utterance:
    """Send one context's text (paced like an LLM when asked) and collect its audio until ``done``.

    ``options``: voice, emotion, speed (anything the server accepts on a context's first text).
    Raises ``AgentStreamError`` on a server error about this context or the connection.
    """
    options = {k: v for k, v in options.items() if v is not None}
    config = {"output": {"encoding": encoding, "sample_rate": sample_rate, "frame_ms": frame_ms}}
    async with await AgentStream.connect(url, api_key=api_key, config=config) as stream:
        result = Utterance(context_id, encoding, sample_rate)
        started: list[float] = []

        async def send_text() -> None:
            first = True
            for piece in pieces:
                if not started:
                    started.append(time.monotonic())
                await stream.text(context_id, piece, **(options if first else {}))
                first = False
                if pace_tokens_per_s > 0:
                    await asyncio.sleep(1.0 / pace_tokens_per_s)
            if first:  # no text at all: open and end the context in one message
                started.append(time.monotonic())
                await stream.text(context_id, "", end=True, **options)
            else:
                await stream.end(context_id)

        sender = asyncio.create_task(send_text())
        try:
            deadline = time.monotonic() + timeout
            while True:
                if sender.done() and sender.exception() is not None:
                    raise sender.exception()
                event = await stream.recv(max(0.0, deadline - time.monotonic()))
                if isinstance(event, AudioFrame):
                    if event.context_id == context_id:
                        if result.ttfa_s is None and started:
                            result.ttfa_s = time.monotonic() - started[0]
                        result.frames.append(event.data)
                    continue
                if event.get("type") == "error" and event.get("context_id") in (None, context_id):
                    raise AgentStreamError(event.get("code", "error"), event.get("message", ""), context_id)
                if event.get("context_id") != context_id:
                    continue  # warnings without a context, other contexts
                result.events.append(event)
                kind = event.get("type")
                if kind == "sentence_start":
                    result.sentences.append(event)
                    if on_sentence is not None:
                        on_sentence(event)
                elif kind == "done":
                    result.done = event
                    break
                elif kind == "cancelled":
                    result.cancelled = True
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return result


def write_wav(path: str, pcm16: bytes, sample_rate: int) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16)


def _emotion_arg(value: str | None) -> Any:
    """``--emotion happy``, ``--emotion '{"vector":[...]}'`` or ``--emotion '[0.5,0,...]'``."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"--emotion is not valid JSON: {e}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clients.agent_client", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/tts/stream", help="the server's /v1/tts/stream URL")
    p.add_argument("--file", help="text file to speak (default: read stdin)")
    p.add_argument("--out", required=True, help="WAV file to write")
    p.add_argument("--pace-tokens-per-s", type=float, default=0.0,
                   help="send the text as LLM-like token pieces at this rate (0: all at once)")
    p.add_argument("--voice", help="voice id (or OpenAI voice name)")
    p.add_argument("--speed", type=float, help="0.5-2.0")
    p.add_argument("--emotion", type=_emotion_arg, help="a label (happy, sad...), free text, or JSON")
    p.add_argument("--encoding", choices=("pcm_s16le", "opus"), default="pcm_s16le")
    p.add_argument("--sample-rate", type=int, default=24000)
    p.add_argument("--api-key", help="API key (sent as Authorization: Bearer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the token cutting")
    return p


async def _run(args: argparse.Namespace, text: str) -> Utterance:
    pieces = llm_tokens(text, args.seed) if args.pace_tokens_per_s > 0 else [text]

    def show(event: dict) -> None:
        print(f"[{event['audio_ms'] / 1000:7.2f} s] {event['text']}", flush=True)

    return await speak(args.url, pieces, api_key=args.api_key, pace_tokens_per_s=args.pace_tokens_per_s,
                       encoding=args.encoding, sample_rate=args.sample_rate, on_sentence=show,
                       voice=args.voice, speed=args.speed, emotion=args.emotion)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        text = open(args.file, encoding="utf-8").read() if args.file else sys.stdin.read()
    except OSError as e:
        print(f"error: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if not text.strip():
        print("error: no text to speak", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_run(args, text))
    except InvalidStatus as e:
        print(f"error: the server refused the connection: HTTP {e.response.status_code} "
              f"{e.response.body.decode(errors='replace')[:200]}", file=sys.stderr)
        return 1
    except AgentStreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, InvalidURI, ConnectionClosed, TimeoutError) as e:
        print(f"error: {args.url}: {e or type(e).__name__}", file=sys.stderr)
        return 1
    pcm = result.pcm_s16le()
    write_wav(args.out, pcm, args.sample_rate)
    ttfa = f"{result.ttfa_s * 1000:.0f} ms" if result.ttfa_s is not None else "n/a"
    print(f"time to first audio: {ttfa}; {len(result.sentences)} sentences, "
          f"{len(pcm) / 2 / args.sample_rate:.2f} s of audio -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
