"""``realtime-tts bench`` for the IndexTTS2 pipeline (tools/bench/pipeline.py): it runs end to end
on a tiny random model and on the tiny checkpoint, and reports every stage, RTF and TTFA."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.bench.pipeline import parse_args, run_bench  # noqa: E402

CKPT = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints"


def check_report(out: str, segments: int, codes: int) -> None:
    row = r"^\s+(\d+)" + r"\s+([\d.]+)" * 8 + "$"  # seg, cond, 4 stages, total, audio, RTF
    rows = re.findall(row, out, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, segments + 1))
    for r in rows:
        # forced code count: codes * 1.72 mel frames * 256 samples at 22.05 kHz
        assert float(r[7]) == pytest.approx(256 * int(codes * 1.72) / 22050, abs=0.006)
    assert float(rows[0][1]) > 0  # the first segment pays for the new voice's conditioning
    assert re.search(r"^RTF [\d.]+ ", out, flags=re.M)
    assert re.search(r"^TTFA new voice [\d.]+ s \(conditioning [\d.]+ s\), cached voice [\d.]+ s", out, flags=re.M)
    assert re.search(r"GPT: [\d.]+ ms/code", out)


def test_bench_tiny_random_model(capsys):
    assert run_bench(["--tiny", "--device", "cpu", "--tokens", "6", "--segments", "2", "--cfm-steps", "2",
                      "--ref-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "random weights, tiny configs" in out
    check_report(out, 2, 6)


def test_bench_with_checkpoint(capsys):
    assert run_bench(["--checkpoints", str(CKPT), "--device", "cpu", "--tokens", "7", "--segments", "1",
                      "--cfm-steps", "2", "--ref-seconds", "1", "--decode", "sample"]) == 0
    out = capsys.readouterr().out
    assert str(CKPT) in out and "decode sample" in out
    check_report(out, 1, 7)


def test_bench_flags():
    a = parse_args(["--quick"])
    assert (a.tokens, a.segments, a.ref_seconds) == (50, 2, 3.0)
    a = parse_args([])
    assert (a.tokens, a.segments, a.cfm_steps, a.decode) == (250, 3, 25, "beam_sample")
    with pytest.raises(SystemExit):
        parse_args(["--tokens", "0"])
