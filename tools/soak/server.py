"""The server under test: ``realtime-tts serve`` as a subprocess, its resources read from /proc,
and its log (``--log-format json``) scanned for tracebacks, errors and 5xx answers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# uvicorn's access lines end with the status: '127.0.0.1:5 - "POST /x HTTP/1.1" 500'; its
# WebSocket lines read '... - "WebSocket /x" 500'.
_STATUS = re.compile(r'" (\d{3})$')


@dataclass(frozen=True)
class ProcStats:
    t: float  # wall clock
    rss_mb: float
    threads: int
    fds: int


class ServerProcess:
    """``serve --engine espeak`` on a loopback port, logging JSON lines to ``log_path``."""

    def __init__(self, root: Path, port: int, data_dir: Path, log_path: Path, extra_args: list[str]) -> None:
        self.root, self.port, self.data_dir, self.log_path = root, port, data_dir, log_path
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.exit_code: int | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "realtime_tts.cli", "serve", "--engine", "espeak", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), "--log-format", "json",
               *self.extra_args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")])}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s; see {self.log_path}")

    def stats(self) -> ProcStats:
        fields = {}
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
        fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        return ProcStats(time.time(), int(fields["VmRSS"][0]) / 1024, int(fields["Threads"][0]), fds)

    def log_offset(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.exit_code = None if self.proc is None else self.proc.returncode
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait(timeout)
        self._log.close()


@dataclass
class LogSummary:
    lines: int = 0
    tracebacks: int = 0
    errors: int = 0  # records at ERROR or above
    warnings: int = 0
    status_5xx: int = 0
    status_503: int = 0  # of those, busy or not-ready refusals (a bounded queue saying no)
    not_json: int = 0  # lines outside the JSON log format (a crash printed to stderr, a banner)
    traceback_heads: list[str] = field(default_factory=list)  # the first few, to show in the report
    top_warnings: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("lines", "tracebacks", "errors", "warnings", "status_5xx", "status_503",
                                              "not_json",
                                              "traceback_heads", "top_warnings")}


def scan_log(path: Path, start: int = 0, end: int | None = None) -> LogSummary:
    """Tracebacks, errors and 5xx answers in the bytes ``start:end`` of a JSON-lines log."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(None if end is None else max(0, end - start))
    out = LogSummary()
    warnings: Counter[str] = Counter()
    for raw in data.decode("utf-8", "replace").splitlines():
        if not raw.strip():
            continue
        out.lines += 1
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            out.not_json += 1
            if "Traceback (most recent call last)" in raw:
                _traceback(out, raw)
            continue
        level, msg = str(record.get("level", "")), str(record.get("msg", ""))
        # The server rate-limits repeated warnings; a line that passes counts those it stood for.
        times = 1 + (record["suppressed"] if isinstance(record.get("suppressed"), int) else 0)
        if record.get("exc") or "Traceback (most recent call last)" in msg:
            for _ in range(times):
                _traceback(out, f"{record.get('logger')}: {msg} | {str(record.get('exc', '')).splitlines()[-1:]}")
        if level in ("error", "critical"):
            out.errors += times
        elif level == "warning":
            warnings[f"{record.get('logger')}: {msg[:100]}"] += times
        m = _STATUS.search(msg)
        if m and record.get("logger", "").startswith("uvicorn") and m.group(1).startswith("5"):
            out.status_5xx += 1
            out.status_503 += m.group(1) == "503"
    out.warnings = sum(warnings.values())
    out.top_warnings = warnings.most_common(5)
    return out


def _traceback(out: LogSummary, head: str) -> None:
    out.tracebacks += 1
    if len(out.traceback_heads) < 5:
        out.traceback_heads.append(head[:300])
