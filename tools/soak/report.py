"""Soak figures: per-scenario windows over the probe's samples, the targets check, the Markdown table."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .server import ProcStats

# The targets of docs/reliability.md.
HEALTH_P99_MS = 100.0
DEVICE_GAP_MS = 300.0
RSS_GROWTH = 0.10


@dataclass
class Phase:
    name: str
    start: float  # wall clock
    log_start: int
    before: ProcStats
    left: float = 0.0  # the scenario's last client has gone
    end: float = 0.0  # after the settle time
    log_end: int = 0
    after: ProcStats | None = None
    result: dict = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def health_window(samples: list, start: float, end: float) -> dict:
    """/health answers inside [start, end]: count, failures, p50/p99/max latency in ms."""
    inside = [(lat, status) for t, lat, status in samples if start <= t <= end]
    latencies = [lat * 1000 for lat, _ in inside]
    p = {q: percentile(latencies, q) for q in (0.5, 0.99)}
    return {"n": len(inside), "not_200": sum(1 for _, s in inside if s != 200),
            "p50_ms": _r(p[0.5]), "p99_ms": _r(p[0.99]), "max_ms": _r(max(latencies, default=None))}


def device_window(device: dict, start: float, end: float) -> dict:
    """The well-behaved device inside [start, end]: longest packet interval and dead air, in ms."""
    gaps = [g for t, g in device.get("intervals", []) if start <= t <= end]
    dead = [g for t, g in device.get("underruns", []) if start <= t <= end]
    drops = [d for d in device.get("disconnects", []) if start <= d["t"] <= end]
    first = [w for t, w in device.get("first_audio", []) if start <= t <= end]
    return {"longest_gap_ms": _r(max(gaps, default=0.0) * 1000), "gaps_over_300ms": sum(1 for g in gaps if g > 0.3),
            "longest_wait_for_first_audio_ms": _r(max(first) * 1000) if first else None,
            "longest_dead_air_ms": _r(max(dead, default=0.0) * 1000), "disconnects": len(drops),
            "closed_without_frame": sum(1 for d in drops if d.get("code") in (None, 1006))}


def peak(samples: list[ProcStats], start: float, end: float) -> dict:
    inside = [s for s in samples if start <= s.t <= end]
    return {"rss_mb": _r(max((s.rss_mb for s in inside), default=None)),
            "threads": max((s.threads for s in inside), default=None), "fds": max((s.fds for s in inside), default=None)}


def stats_dict(s: ProcStats | None) -> dict | None:
    return None if s is None else {"rss_mb": _r(s.rss_mb), "threads": s.threads, "fds": s.fds}


def resources_back(before: ProcStats, after: ProcStats) -> bool:
    return after.rss_mb <= before.rss_mb * (1 + RSS_GROWTH) and after.threads <= before.threads


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def machine() -> dict:
    """The machine and what else was running on it (load average), for the figures' caption."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], "commit": commit}


def _cell(x) -> str:
    return "-" if x is None else str(x)


def table(result: dict) -> str:
    """The Markdown table of docs/reliability.md."""
    rows = ["| scenario | 5xx (of which 503) | 1011 closes | tracebacks | closed w/o close frame | /health p99 ms (max) "
            "| device longest gap ms | device wait for first audio ms | RSS MB start / peak / after "
            "| threads start / peak / after | back to start |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["phases"]:
        b, k, a = p["before"], p["peak"], p["after"]
        rows.append(f"| {p['name']}, {p['seconds']} s | {p['status_5xx']} ({p['status_503']}) | {p['close_1011']} | {p['tracebacks']} "
                    f"| {p['closed_without_frame']} | {_cell(p['health']['p99_ms'])} ({_cell(p['health']['max_ms'])}) "
                    f"| {_cell(p['device']['longest_gap_ms'])} | {_cell(p['device']['longest_wait_for_first_audio_ms'])} "
                    f"| {b['rss_mb']} / {_cell(k['rss_mb'])} / {a['rss_mb']} "
                    f"| {b['threads']} / {_cell(k['threads'])} / {a['threads']} | {'yes' if p['back'] else 'NO'} |")
    for req in result.get("big_requests", []):
        h = req["health"]
        rows.append(f"| (d) 4,000 chars {req['format']}: HTTP {_cell(req['status'])}, {req['seconds']} s | "
                    f"{1 if (req['status'] or 0) >= 500 else 0} | - | - | - | {_cell(h['p99_ms'])} ({_cell(h['max_ms'])}) "
                    f"| {_cell(req['device']['longest_gap_ms'])} "
                    f"| {_cell(req['device']['longest_wait_for_first_audio_ms'])} | - | - | - |")
    w = result["whole_run"]
    rows.append(f"| whole run, idle -> settled after the last client | {w['status_5xx']} ({w['status_503']}) | - | {w['tracebacks']} | - | "
                f"{_cell(w['health']['p99_ms'])} ({_cell(w['health']['max_ms'])}) | {_cell(w['device']['longest_gap_ms'])} "
                f"| {_cell(w['device']['longest_wait_for_first_audio_ms'])} "
                f"| {w['idle']['rss_mb']} / {_cell(w['peak']['rss_mb'])} / {w['final']['rss_mb']} "
                f"| {w['idle']['threads']} / {_cell(w['peak']['threads'])} / {w['final']['threads']} "
                f"| {'yes' if w['back'] else 'NO'} |")
    load = next((p["result"] for p in result["phases"] if p["name"] == "(a) load"), None)
    if load:
        rows.append("")
        rows.append(f"Load: {sum(load['sessions'].values())} sessions ({load['sessions'].get('xiaozhi', 0)} xiaozhi, "
                    f"{load['sessions'].get('agent', 0)} agent), {load['turns_done']} turns heard to the end, "
                    f"{sum(load['connect_failures'].values())} connections not opened within 10 s, "
                    f"{load['timeouts']} turns or handshakes not answered in time.")
    nr = result.get("nonreaders")
    if nr:
        rows.append("")
        rows.append(f"Non-readers (write timeout {nr['write_timeout_s']} s + {nr['grace_s']} s for the buffers "
                    f"to fill, watched {nr['hold_s']} s): " + "; ".join(
                        f"{kind} {k['dropped']}/{k['clients']} dropped"
                        + (f" (stall -> drop max {k['stall_to_drop']['max_s']} s)" if k["stall_to_drop"] else "")
                        + f", {k['held_at_end']} still held" for kind, k in nr["kinds"].items())
                    + f". In time: {'yes' if nr['all_dropped_in_time'] else 'NO'}.")
    return "\n".join(rows)
