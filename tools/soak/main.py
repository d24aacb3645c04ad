"""``realtime-tts bench soak``: the realtime-under-abuse soak of docs/reliability.md.

It starts its own server (``realtime-tts serve --engine espeak`` on a free loopback port,
JSON logs to a file), an observer process (``/health`` every 50 ms and one well-behaved
xiaozhi device speaking throughout; tools/soak/probe.py) and then runs, one after another:

  (a) load: ``--sessions`` xiaozhi devices (protocol v1/v2/v3 at random) and ``--agents``
      agent streams for ``--duration-s``, each speaking, then at random hearing the turn out,
      aborting it, dropping the TCP connection without a close frame or closing, and
      reconnecting; (d) a 4,000-character mp3 and Ogg Opus OpenAI speech request meanwhile;
  (b) fuzz: malformed input at every HTTP and WebSocket endpoint (every case of the
      hardening issue), then ``--fuzz-random`` seeded mutations;
  (c) non-readers: ``--nonreaders`` clients that ask for 4,000 characters and never read.

After each scenario it waits ``--settle-s`` and samples the server again. Reported per
scenario: 5xx answers, 1011 closes, tracebacks in the server log, sockets closed without a
close frame, ``/health`` latency p99, the well-behaved device's longest audio gap, RSS and
threads before / at peak / after; for (d) the /health p99 during each big request; for (c)
how soon after its writes stalled the server dropped each non-reader. A Markdown table, one
``JSON {...}`` line and ``--out`` results. Loopback only; every loop is bounded in count and
time. A benchmark, not a test: the figures depend on the machine and on what else runs.

    realtime-tts bench soak                                  # the full soak (about 5 minutes)
    realtime-tts bench soak --duration-s 5 --sessions 4 --agents 2 --nonreaders 5 \\
        --nonreader-hold-s 5 --fuzz-random 20 --settle-s 2  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .fuzz import run_fuzz
from .load import run_load
from .nonreaders import run_nonreaders
from .report import (Phase, device_window, health_window, machine, peak, resources_back, stats_dict, table)
from .server import ServerProcess, scan_log

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("load", "fuzz", "nonreaders")
SAMPLE_S = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="realtime-tts bench soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="which to run, in order (default: all)")
    ap.add_argument("--duration-s", type=float, default=60.0, help="(a) load duration (default 60)")
    ap.add_argument("--sessions", type=int, default=100, help="(a) xiaozhi devices (default 100)")
    ap.add_argument("--agents", type=int, default=20, help="(a) agent streams (default 20)")
    ap.add_argument("--no-big-requests", action="store_true", help="skip (d) during (a)")
    ap.add_argument("--fuzz-rounds", type=int, default=1, help="(b) passes over the fixed cases (default 1)")
    ap.add_argument("--fuzz-random", type=int, default=200, help="(b) random mutations (default 200)")
    ap.add_argument("--fuzz-max-s", type=float, default=600.0, help="(b) time limit (default 600)")
    ap.add_argument("--nonreaders", type=int, default=50, help="(c) clients that never read (default 50)")
    ap.add_argument("--nonreader-hold-s", type=float, default=60.0,
                    help="(c) how long to wait for the server to drop them (default 60)")
    ap.add_argument("--write-timeout-s", type=float, default=10.0,
                    help="(c) the server's write timeout the verdict uses (default 10)")
    ap.add_argument("--drop-grace-s", type=float, default=30.0,
                    help="(c) allowance for kernel and asyncio send buffers to fill after a stall (default 30)")
    ap.add_argument("--settle-s", type=float, default=10.0, help="wait after each scenario before sampling (default 10)")
    ap.add_argument("--warmup-s", type=float, default=3.0, help="the device streams alone this long first (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                    help="extra flag for the server, e.g. --server-arg=--max-queue=512 (repeatable)")
    ap.add_argument("--server-log", type=Path, help="keep the server's log here (default: a temporary file)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args(argv)
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    if not a.scenarios or any(s not in SCENARIOS for s in a.scenarios):
        ap.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    if min(a.sessions, a.agents, a.fuzz_rounds, a.fuzz_random, a.nonreaders) < 0 or a.duration_s <= 0:
        ap.error("counts must be >= 0 and --duration-s > 0")
    if min(a.settle_s, a.warmup_s, a.nonreader_hold_s, a.fuzz_max_s, a.write_timeout_s, a.drop_grace_s) < 0:
        ap.error("times must be >= 0")
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sample(server: ServerProcess, into: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            into.append(server.stats())
        except OSError:  # the process is gone: nothing more to sample
            return
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except (asyncio.TimeoutError, TimeoutError):
            pass


async def scenario(name: str, server: ServerProcess, args: argparse.Namespace) -> dict:
    port = server.port
    if name == "load":
        stats = await run_load(port, sessions=args.sessions, agents=args.agents, duration_s=args.duration_s,
                               seed=args.seed, big_requests=not args.no_big_requests)
        return stats.as_dict()
    if name == "fuzz":
        return await run_fuzz(port, rounds=args.fuzz_rounds, random_cases=args.fuzz_random, seed=args.seed,
                              duration_s=args.fuzz_max_s)
    return await run_nonreaders(port, count=args.nonreaders, hold_s=args.nonreader_hold_s,
                                write_timeout_s=args.write_timeout_s, grace_s=args.drop_grace_s)


def start_probe(port: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe.py")), "--port", str(port),
                             "--out", str(out)], stdin=subprocess.PIPE, cwd=ROOT)


def stop_probe(probe: subprocess.Popen, out: Path) -> dict:
    probe.stdin.write(b"stop\n")
    probe.stdin.close()
    try:
        probe.wait(60)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.wait(10)
        return {"health": [], "device": {"error": "the probe did not stop"}}
    return json.loads(out.read_text()) if out.is_file() else {"health": [], "device": {"error": "no probe output"}}


async def soak(server: ServerProcess, args: argparse.Namespace, work: Path) -> dict:
    idle, samples, stop = server.stats(), [], asyncio.Event()
    sampler = asyncio.create_task(sample(server, samples, stop))
    probe_out = work / "probe.json"
    probe = start_probe(server.port, probe_out)
    phases: list[Phase] = []
    try:
        await asyncio.sleep(args.warmup_s)
        for name in args.scenarios:
            phase = Phase(name, time.time(), server.log_offset(), server.stats())
            print(f"soak: scenario {name} ...", file=sys.stderr, flush=True)
            phase.result = await scenario(name, server, args)
            phase.left = time.time()
            await asyncio.sleep(args.settle_s)
            phase.after, phase.end, phase.log_end = server.stats(), time.time(), server.log_offset()
            phases.append(phase)
    finally:
        observed = await asyncio.to_thread(stop_probe, probe, probe_out)
    left = time.time()
    await asyncio.sleep(args.settle_s)
    final = server.stats()
    stop.set()
    await sampler
    return summarize(server, phases, observed, samples, idle, final, left)


def summarize(server, phases: list[Phase], observed: dict, samples: list, idle, final, left: float) -> dict:
    health, device = observed.get("health", []), observed.get("device", {})
    out_phases, big = [], []
    for p in phases:
        log = scan_log(server.log_path, p.log_start, p.log_end)
        fuzz = p.result if p.name == "fuzz" else {}
        dev = device_window(device, p.start, p.end)
        out_phases.append({
            "name": {"load": "(a) load", "fuzz": "(b) fuzz", "nonreaders": "(c) non-readers"}[p.name],
            "seconds": round(p.left - p.start, 1), "status_5xx": log.status_5xx, "status_503": log.status_503,
            "close_1011": fuzz.get("close_1011", 0) + _load_1011(p),
            "tracebacks": log.tracebacks, "log": log.as_dict(),
            "closed_without_frame": fuzz.get("closed_without_frame", 0) + p.result.get("no_close_frame", 0)
            + dev["closed_without_frame"],
            "health": health_window(health, p.start, p.left), "device": dev,
            "before": stats_dict(p.before), "peak": peak(samples, p.start, p.left), "after": stats_dict(p.after),
            "back": resources_back(p.before, p.after), "result": p.result})
        for req in p.result.get("http", []):
            big.append({"format": req["format"], "status": req["status"], "bytes": req["bytes"],
                        "seconds": round(req["end"] - req["start"], 1), "first_byte_s": req["first_byte_s"],
                        "health": health_window(health, req["start"], req["end"]),
                        "device": device_window(device, req["start"], req["end"])})
    whole_log = scan_log(server.log_path)
    start = phases[0].start if phases else left
    return {"phases": out_phases, "big_requests": big,
            "nonreaders": next((p.result for p in phases if p.name == "nonreaders"), None),
            "whole_run": {"status_5xx": whole_log.status_5xx, "status_503": whole_log.status_503,
                          "tracebacks": whole_log.tracebacks,
                          "health": health_window(health, start, left), "device": device_window(device, start, left),
                          "idle": stats_dict(idle), "peak": peak(samples, start, left), "final": stats_dict(final),
                          "back": resources_back(idle, final), "device_turns": device.get("turns"),
                          "device_packets": device.get("packets"), "health_samples": len(health)}}


def _load_1011(phase: Phase) -> int:
    return int(phase.result.get("server_closes", {}).get("1011", 0))


def run_soak(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rtts-soak-") as tmp:
        work = Path(tmp)
        log_path = args.server_log or work / "server.log"
        server = ServerProcess(ROOT, free_port(), work / "data", log_path, args.server_arg)
        about = machine()
        server.start()
        try:
            result = asyncio.run(soak(server, args, work))
        finally:
            server.stop()
    result["machine"] = {**about, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["server_exit_code"] = server.exit_code
    print(table(result))
    print("JSON " + json.dumps(result, ensure_ascii=False, default=_default))
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=_default))
    return 0


def _default(value):
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)
