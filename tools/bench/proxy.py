"""``realtime-tts bench --streams 1,2,4 --engine espeak --ray-replicas 3``: what Ray Serve's proxy adds.

The same clients and levels (tools/bench/serve.py) run twice: against one ``realtime-tts serve``
process directly, then through a local Ray cluster with N replicas behind Serve's HTTP proxy
(server/ray_serve.py, voice affinity and all). Both servers are processes of their own, with
the same settings and voice; the clients run here, so both sides are measured the same way,
from the client:

* time to first audio: first text sent -> first audio packet received, p50/p95 per level;
  the proxy's added time is Ray minus direct;
* inter-packet jitter (``--client xiaozhi``: paced 60 ms packets, as a device hears them):
  |arrival gap - 60 ms| for every packet after the pre-buffer, p50/p95/max per level;
* underruns, as in the serving benchmark.

At one stream nothing queues, so the difference is the proxy's own cost; at higher levels
it also holds the difference between one engine and N engines sharing this machine's cores.
This is a benchmark, never a test: timings depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, timeout: float, alive=lambda: True) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{base}: the server exited before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{base} not ready within {timeout:g} s")


def server_settings(a: argparse.Namespace, data_dir: Path) -> dict:
    """The settings both servers get (as `serve` flags / Settings fields)."""
    out = {"engine": a.engine, "data_dir": str(data_dir), "default_voice": a.voice_id, "max_queue": a.max_queue}
    if a.checkpoints is not None:
        out["checkpoints"] = str(a.checkpoints)
    if a.engine != "espeak":
        out["device"] = a.device
    if a.max_batch:
        out["max_batch"] = a.max_batch
    return out


@contextlib.contextmanager
def direct_server(a: argparse.Namespace, data_dir: Path, log: Path):
    """One `realtime-tts serve` process; yields its port."""
    port = free_port()
    flags = [x for k, v in server_settings(a, data_dir).items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "realtime_tts.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *flags], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", 600, alive=lambda: proc.poll() is None)
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def ray_cluster(a: argparse.Namespace, data_dir: Path):
    """A local Ray cluster with ``a.ray_replicas`` replicas behind Serve's proxy; yields the proxy's port."""
    import ray
    from ray import serve

    from realtime_tts.cli import replica_context
    from realtime_tts.config import Settings
    from realtime_tts.server.ray_serve import ClusterOptions, build_application

    temp = tempfile.mkdtemp(prefix="rtts-ray-", dir="/tmp")  # Ray's socket paths must stay short
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    try:
        ray.init(num_cpus=max(8, 2 * a.ray_replicas), include_dashboard=False, _temp_dir=temp, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": None})
        fields = server_settings(a, data_dir)
        settings = Settings(**{**fields, "data_dir": Path(fields["data_dir"])})
        options = ClusterOptions(min_replicas=a.ray_replicas, max_replicas=a.ray_replicas, cpus_per_replica=0.5,
                                 name="bench")
        serve.run(build_application(settings, options, replica_context), name="bench", route_prefix="/")
        wait_ready(f"http://127.0.0.1:{port}", 600)
        yield port
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        shutil.rmtree(temp, ignore_errors=True)


async def measure(bench, port: int, a: argparse.Namespace) -> list[dict]:
    """Prime (one turn: the voice warm where it lands), then every level, client side only."""
    rec = bench.Recorder()  # stays empty: the server is another process
    await bench.run_level(1, port, argparse.Namespace(**{**vars(a), "turns": 1}), rec, None)
    levels = []
    for n in a.streams:
        level = await bench.run_level(n, port, a, rec, None)
        cli = level["ttfa_client_s"]
        print(f"  {n} stream(s): {level['turns_ok']}/{level['turns']} turns, client TTFA p50 "
              f"{bench._ms(cli, 'p50')} / p95 {bench._ms(cli, 'p95')} ms, jitter p95 "
              f"{_jitter(level, 'p95')} ms, {level['underruns']} underrun(s)", flush=True)
        levels.append(level)
    return levels


def _jitter(level: dict, key: str) -> str:
    stats = level.get("jitter_s")
    return f"{1000 * stats[key]:.1f}" if stats else "-"


def comparison_table(direct: list[dict], ray: list[dict], replicas: int) -> str:
    """Markdown: per level, client TTFA and jitter directly and through Ray, and what Ray adds."""

    def ms(stats: dict | None, key: str) -> str:
        return f"{1000 * stats[key]:.0f}" if stats else "-"

    def added(d: dict | None, r: dict | None, key: str) -> str:
        return f"{round(1000 * (r[key] - d[key])):+d}" if d and r else "-"

    def jitter(level: dict) -> str:
        stats = level.get("jitter_s")
        return " / ".join(f"{1000 * stats[k]:.1f}" for k in ("p50", "p95", "max")) if stats else "-"

    lines = ["| streams | TTFA p50 / p95, direct (ms) | TTFA p50 / p95, Ray (ms) | Ray adds p50 / p95 (ms) | "
             "jitter p50 / p95 / max, direct (ms) | jitter p50 / p95 / max, Ray (ms) | underruns direct / Ray |",
             "|---|---|---|---|---|---|---|"]
    for d, r in zip(direct, ray):
        dc, rc = d["ttfa_client_s"], r["ttfa_client_s"]
        lines.append(f"| {d['streams']} | {ms(dc, 'p50')} / {ms(dc, 'p95')} | {ms(rc, 'p50')} / {ms(rc, 'p95')} | "
                     f"{added(dc, rc, 'p50')} / {added(dc, rc, 'p95')} | {jitter(d)} | {jitter(r)} | "
                     f"{d['underruns']} / {r['underruns']} |")
    lines += ["", f"direct: one `realtime-tts serve` process; Ray: {replicas} replicas behind Serve's proxy"]
    return "\n".join(lines)


def run(a: argparse.Namespace, bench) -> int:
    """The comparison; ``bench`` is tools/bench/serve.py (its clients, levels and statistics)."""
    from realtime_tts.engine.indextts2 import synthetic_voice_wav
    from realtime_tts.server.voices import VoiceLibrary

    a.voice_id = bench.VOICE_ID
    print(f"proxy bench: {a.engine}; {a.client} client, streams {','.join(map(str, a.streams))}, {a.turns} turn(s) "
          f"per stream; one process directly, then {a.ray_replicas} Ray Serve replicas", flush=True)
    with tempfile.TemporaryDirectory(prefix="rtts-proxy-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        VoiceLibrary(data_dir).add(synthetic_voice_wav(a.ref_seconds), voice_id=bench.VOICE_ID, name="bench reference")
        try:
            print("direct: one process", flush=True)
            with direct_server(a, data_dir, Path(tmp) / "serve.log") as port:
                direct = asyncio.run(measure(bench, port, a))
            print(f"ray: {a.ray_replicas} replicas", flush=True)
            with ray_cluster(a, data_dir) as port:
                ray = asyncio.run(measure(bench, port, a))
        except RuntimeError as e:
            print(f"realtime-tts bench: error: {e}", file=sys.stderr)
            log = Path(tmp) / "serve.log"
            if log.is_file():
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            return 1
    results = {"bench": "proxy", "engine": a.engine, "client": a.client, "commit": bench._commit(),
               "replicas": a.ray_replicas, "config": {"streams": a.streams, "turns": a.turns, "langs": a.langs,
                                                      "lengths": sorted(a.lengths)},
               "direct": direct, "ray": ray}
    print(comparison_table(direct, ray, a.ray_replicas))
    print("JSON " + json.dumps(results, ensure_ascii=False, separators=(",", ":")))
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
        print(f"wrote {a.out}")
    return 0
