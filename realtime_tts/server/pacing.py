"""Real-time pacing of fixed-length audio packets to a device with a small receive buffer.

A xiaozhi device queues at most 40 packets (2.4 s) and silently drops the rest, and audio
it already holds keeps playing after a barge-in. So the server sends a short pre-buffer at
once and then one packet per frame time, keeping the device only a little ahead
(protocols.md §1.8, §5.1 item 6).

``Pacer`` models the device's play-out on a virtual clock: a run starts when the first
packet goes out, and the device has played ``now - start`` of the ``sent * frame`` seconds
it received. Packet *k* of a run is due at ``start + (k + 1 - lead_frames) * frame``, so the
first ``lead_frames`` packets go at once and the lead after any send is at most
``lead_frames * frame``. Due times come from the run's start, never from the previous
send, so a late wake-up does not push every later packet back (no drift). When the device
has run dry (a stall longer than the lead: the next sentence is still being synthesized),
the next packet starts a new run, which pre-buffers again instead of bursting to catch up.

Pure and synchronous, with an injectable clock, so its schedule is testable without a socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable

HARD_MAX_LEAD_MS = 1000


def lead_frames(frame_ms: int, prebuffer_packets: int, max_lead_ms: int) -> int:
    """Packets the device may hold ahead of playback: the pre-buffer, capped by the max lead.

    At least one packet (nothing could be sent otherwise); never beyond ``HARD_MAX_LEAD_MS``.
    """
    if frame_ms <= 0:
        raise ValueError(f"frame_ms must be positive, got {frame_ms}")
    cap_ms = min(max(0, max_lead_ms), HARD_MAX_LEAD_MS)
    return max(1, min(prebuffer_packets, cap_ms // frame_ms))


class Pacer:
    """When may the next packet go? One instance per turn of one connection."""

    def __init__(self, *, frame_ms: int = 60, prebuffer_packets: int = 5, max_lead_ms: int = 400,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.frame_s = frame_ms / 1000
        self.lead_frames = lead_frames(frame_ms, prebuffer_packets, max_lead_ms)
        self.clock = clock
        self._start: float | None = None  # clock time the current run's first packet went out
        self._sent = 0  # packets sent in the current run
        self.packets = 0  # packets sent in all runs
        self.rebuffers = 0  # runs started after the device ran dry

    @property
    def max_lead_s(self) -> float:
        return self.lead_frames * self.frame_s

    @property
    def drained_at(self) -> float | None:
        """Clock time at which the device has played everything sent so far (None before the first packet)."""
        return None if self._start is None else self._start + self._sent * self.frame_s

    def lead(self, now: float | None = None) -> float:
        """Seconds of sent audio the device has not played yet."""
        drained = self.drained_at
        if drained is None:
            return 0.0
        now = self.clock() if now is None else now
        return max(0.0, drained - now)

    def due(self, now: float | None = None) -> float:
        """Clock time at which the next packet may be sent (``<= now`` means: send it now)."""
        now = self.clock() if now is None else now
        if self._start is None or now > self.drained_at:
            return now  # first packet, or the device ran dry: a new run pre-buffers at once
        return self._start + (self._sent + 1 - self.lead_frames) * self.frame_s

    def delay(self, now: float | None = None) -> float:
        """Seconds to wait before the next packet may be sent."""
        now = self.clock() if now is None else now
        return max(0.0, self.due(now) - now)

    def sent(self, now: float | None = None) -> None:
        """Record that one packet went out at ``now``."""
        now = self.clock() if now is None else now
        if self._start is None or now > self.drained_at:
            if self._start is not None:
                self.rebuffers += 1
            self._start, self._sent = now, 0
        self._sent += 1
        self.packets += 1
