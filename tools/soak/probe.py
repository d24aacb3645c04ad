"""The soak harness's observer, in its own process so the load generator's CPU use cannot skew it.

* ``/health`` is requested every ``--health-interval`` seconds on one keep-alive connection
  (a thread with a blocking client): each answer's latency and status, stamped with wall time.
* One well-behaved xiaozhi device (clients/device_simulator.py) speaks a paragraph, waits for
  ``tts stop`` and speaks again, throughout. For every turn it records the wait from its
  ``speak`` to the first packet, the intervals between audio packets (the server paces 60 ms
  packets, so a longer interval is a stall the listener may hear) and the dead air of a device
  playing each packet on arrival (an underrun).

It runs until a line (or EOF) arrives on stdin, then writes one JSON file (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from clients.device_simulator import DeviceSimulator  # noqa: E402

PARAGRAPH = ("The soak test keeps this device talking the whole time. Every packet should arrive on time, "
             "whatever the other clients do. Abusive clients come and go around it. They send broken frames, "
             "huge numbers and deep nesting. None of that may stall the audio here. This is the last sentence "
             "of the paragraph.")
PACKET_S = 0.060
RECORD_INTERVAL_S = 0.0  # every interval is kept (about 16 a second), so the longest one is exact
MAX_SAMPLES = 200_000


class HealthProbe(threading.Thread):
    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True, name="health-probe")
        self.port, self.interval = port, interval
        self.samples: list[tuple[float, float, int]] = []  # (wall time, latency s, status; 0 = no answer)
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = None
        while not self.stopping.is_set() and len(self.samples) < MAX_SAMPLES:
            started, wall = time.perf_counter(), time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/health")
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status, conn = 0, None
            self.samples.append((wall, time.perf_counter() - started, status))
            self.stopping.wait(max(0.0, self.interval - (time.perf_counter() - started)))


class Listener:
    """The well-behaved device: speaks, listens to the whole turn, speaks again."""

    def __init__(self, port: int, version: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/xiaozhi/v1/"
        self.version = version
        self.turns = self.packets = 0
        self.intervals: list[tuple[float, float]] = []  # (wall time of the late packet, interval s)
        self.underruns: list[tuple[float, float]] = []  # (wall time, dead air s)
        self.first_audio: list[tuple[float, float]] = []  # (wall time, speak -> first packet s)
        self._spoken: list[float] = []  # monotonic time of each speak on the current device
        self.disconnects: list[dict] = []
        self.offset = time.time() - time.monotonic()  # monotonic -> wall
        self.device: DeviceSimulator | None = None
        self._turn = self._packet = 0  # what collect() has seen of the current device's turns
        self._last: float | None = None  # the previous packet's arrival in this turn
        self._play_end: float | None = None

    def collect(self) -> None:
        """Account for packets that arrived since the last call (a turn may still be playing)."""
        device = self.device
        while device is not None and self._turn < len(device.turns):
            turn = device.turns[self._turn]
            for p in turn.packets[self._packet:]:
                self.packets += 1
                if self._last is None and self._turn < len(self._spoken):
                    self.first_audio.append((p.arrived + self.offset, p.arrived - self._spoken[self._turn]))
                if self._last is not None and p.arrived - self._last > RECORD_INTERVAL_S:
                    self.intervals.append((p.arrived + self.offset, p.arrived - self._last))
                if self._play_end is not None and p.arrived - self._play_end > 0.02:
                    self.underruns.append((p.arrived + self.offset, p.arrived - self._play_end))
                self._last = p.arrived
                self._play_end = max(self._play_end or p.arrived, p.arrived) + PACKET_S
            self._packet = len(turn.packets)
            turn.chunks.clear()  # the audio itself is not needed: keep the probe's memory flat
            if turn.stopped_at is None:
                return
            self.turns += 1
            self._turn, self._packet, self._last, self._play_end = self._turn + 1, 0, None, None
        del self.intervals[MAX_SAMPLES:], self.underruns[MAX_SAMPLES:], self.first_audio[MAX_SAMPLES:]

    async def watch(self) -> None:
        while True:
            self.collect()
            await asyncio.sleep(0.5)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            device = DeviceSimulator(self.url, version=self.version, warn=lambda msg: None)
            self.collect()
            self.device, self._turn, self._packet, self._last, self._play_end = device, 0, 0, None, None
            self._spoken = []
            try:
                await device.connect()
                while not stop.is_set():
                    self._spoken.append(time.monotonic())
                    await device.speak(PARAGRAPH)
                    await device.next_turn(timeout=120)
            except (OSError, ConnectionError, asyncio.TimeoutError, TimeoutError) as e:
                self.disconnects.append({"t": time.time(), "code": device.close_code, "reason": device.close_reason,
                                         "error": f"{type(e).__name__}: {e}"[:200]})
                await asyncio.sleep(0.5)
            finally:
                if device.ws is not None:
                    await device.close()

    def as_dict(self) -> dict:
        self.collect()
        return {"turns": self.turns, "packets": self.packets, "intervals": self.intervals,
                "underruns": self.underruns, "first_audio": self.first_audio, "disconnects": self.disconnects}


async def main_async(args: argparse.Namespace) -> dict:
    health = HealthProbe(args.port, args.health_interval)
    health.start()
    listener = Listener(args.port, args.device_version)
    stop = asyncio.Event()
    device = asyncio.create_task(listener.run(stop))
    watch = asyncio.create_task(listener.watch())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the harness says stop
    stop.set()
    health.stopping.set()
    watch.cancel()
    device.cancel()
    try:
        await device
    except asyncio.CancelledError:
        pass
    health.join(35)
    return {"health": health.samples, "device": listener.as_dict()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--health-interval", type=float, default=0.05)
    ap.add_argument("--device-version", type=int, choices=(1, 2, 3), default=2)
    args = ap.parse_args(argv)
    result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
