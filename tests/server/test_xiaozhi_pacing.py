"""The xiaozhi pacer on a fake clock: pre-buffer at once, then one packet per frame on a
drift-free virtual clock, the lead never above its cap, and a re-pre-buffer after a stall."""

import pytest

from realtime_tts.server.pacing import HARD_MAX_LEAD_MS, Pacer, lead_frames


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def send_all(pacer: Pacer, clock: FakeClock, n: int, jitter=lambda k: 0.0) -> list[tuple[float, float]]:
    """Send ``n`` packets as a sender would: sleep until due (+ jitter), send. Returns (time, lead)."""
    out = []
    for k in range(n):
        clock.t = max(clock.t, pacer.due()) + jitter(k)
        pacer.sent()
        out.append((clock.t, pacer.lead()))
    return out


@pytest.mark.parametrize("prebuffer, max_lead_ms, expected", [
    (5, 400, 5),  # the default: 300 ms pre-buffer, under the 400 ms cap
    (10, 400, 6),  # the cap wins: 6 x 60 = 360 ms
    (5, 0, 1),  # at least one packet may always go
    (40, 5000, HARD_MAX_LEAD_MS // 60),  # never beyond the 1 s hard cap
    (0, 400, 1),
])
def test_lead_frames(prebuffer, max_lead_ms, expected):
    assert lead_frames(60, prebuffer, max_lead_ms) == expected


def test_prebuffer_then_real_time():
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=5, max_lead_ms=400, clock=clock)
    t0 = clock.t
    sends = send_all(pacer, clock, 40)
    times = [round(t - t0, 6) for t, _ in sends]
    assert times[:5] == [0.0] * 5  # the pre-buffer goes at once
    for k in range(5, 40):  # then packet k leaves when the device has played k+1-5 frames
        assert times[k] == pytest.approx((k + 1 - 5) * 0.06)
    leads = [lead for _, lead in sends]
    assert max(leads) == pytest.approx(0.3)
    assert all(lead <= pacer.max_lead_s + 1e-9 for lead in leads)
    assert pacer.rebuffers == 0 and pacer.packets == 40


def test_late_wakeups_do_not_drift():
    """A sender that oversleeps a little each time stays on the run's grid (no accumulated delay)."""
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=5, max_lead_ms=400, clock=clock)
    t0 = clock.t
    sends = send_all(pacer, clock, 200, jitter=lambda k: 0.015 if k % 2 else 0.0)
    # Each due time comes from the run start, so packet k is never later than its slot + one jitter.
    for k in range(5, 200):
        slot = t0 + (k + 1 - 5) * 0.06
        assert slot - 1e-9 <= sends[k][0] <= slot + 0.015 + 1e-9
    assert pacer.rebuffers == 0
    assert all(lead <= pacer.max_lead_s + 1e-9 for _, lead in sends)


def test_short_stall_catches_up_without_exceeding_the_lead():
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=5, max_lead_ms=400, clock=clock)
    send_all(pacer, clock, 10)
    clock.t += 0.2  # the next sentence is 200 ms late: the device still holds audio
    assert pacer.lead() > 0
    sends = send_all(pacer, clock, 10)
    assert pacer.rebuffers == 0
    assert all(lead <= pacer.max_lead_s + 1e-9 for _, lead in sends)
    # the overdue packets went at once, then the grid resumed
    assert sends[0][0] == sends[1][0] == sends[2][0]


def test_stall_longer_than_the_lead_rebuffers():
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=5, max_lead_ms=400, clock=clock)
    send_all(pacer, clock, 10)
    drained = pacer.drained_at
    clock.t = drained + 1.0  # the device ran dry a second ago
    assert pacer.lead() == 0.0 and pacer.delay() == 0.0
    t_resume = clock.t
    sends = send_all(pacer, clock, 12)
    assert pacer.rebuffers == 1
    assert [round(t - t_resume, 6) for t, _ in sends[:5]] == [0.0] * 5  # a fresh pre-buffer, no burst beyond it
    assert sends[5][0] == pytest.approx(t_resume + 0.06)
    assert all(lead <= pacer.max_lead_s + 1e-9 for _, lead in sends)


def test_max_lead_caps_the_prebuffer():
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=20, max_lead_ms=250, clock=clock)
    sends = send_all(pacer, clock, 30)
    assert pacer.lead_frames == 4
    assert max(lead for _, lead in sends) == pytest.approx(0.24)
    assert sum(1 for t, _ in sends if t == sends[0][0]) == 4


def test_lead_and_drain_time():
    clock = FakeClock()
    pacer = Pacer(frame_ms=60, prebuffer_packets=5, max_lead_ms=400, clock=clock)
    assert pacer.drained_at is None and pacer.lead() == 0.0 and pacer.delay() == 0.0
    for _ in range(3):
        pacer.sent()
    assert pacer.drained_at == pytest.approx(clock.t + 0.18)
    clock.t += 0.1
    assert pacer.lead() == pytest.approx(0.08)
    assert pacer.delay() == 0.0  # 3 of 5 pre-buffer packets sent: the next may go now


def test_bad_frame_ms():
    with pytest.raises(ValueError):
        lead_frames(0, 5, 400)
