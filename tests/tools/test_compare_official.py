"""Smoke test of tools/bench/compare_official.py: our side at tiny size, official side skipped.

CI has no oracle venv, so the official side is switched off with a python path that does not exist;
the run must say why it skipped it and still time our engine with the forced code count.
"""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "bench" / "compare_official.py"
STAGES = ("gpt", "gpt_latent", "s2mel", "vocoder", "total")


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_official", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not (mod.TINY_CHECKPOINTS / "config.yaml").exists():
        pytest.skip("tiny pipeline fixture checkpoint missing")
    return mod


def test_our_side_only_when_oracle_venv_absent(compare, tmp_path, capsys):
    out = tmp_path / "result.json"
    res = compare.run(["--size", "tiny", "--tokens", "6", "--cfm-steps", "2", "--beams", "2", "--reps", "2",
                       "--threads", "1", "--ref-seconds", "1", "--official-python", str(tmp_path / "no-python"),
                       "--out", str(out)])
    printed = capsys.readouterr().out
    assert "official side skipped" in printed and "not found" in printed
    assert res["official"] is None and res["ratio"] is None
    assert "not found" in res["official_skipped"]
    ours = res["ours"]
    assert len(ours["reps"]) == 2
    for row in [ours["warmup"], *ours["reps"]]:
        assert row["codes"] == 6  # the stop code is suppressed: exactly the forced count
        assert not row["stop_emitted"]
        assert all(row[s] > 0 for s in STAGES)
        assert row["total"] >= row["gpt"] + row["s2mel"] + row["vocoder"]
        assert 0 < row["gpt_generate"] <= row["gpt"] and row["gpt_cond"] == 0.0  # conditioning cached per voice
        assert row["audio_s"] > 0
    assert set(ours["mean"]) == set(STAGES) | {"gpt_cond", "gpt_generate"}
    assert ours["threads"] == 1 and ours["text_tokens"] > 0
    assert res["config"]["tokens"] == 6 and res["config"]["cfm_steps"] == 2
    # the JSON line and the file carry the same result
    line = next(ln for ln in printed.splitlines() if ln.startswith("JSON "))
    assert json.loads(line[5:]) == json.loads(out.read_text())


def test_bad_arguments_are_rejected(compare):
    with pytest.raises(SystemExit):
        compare.parse_args(["--tokens", "0"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--dtype", "fp16"])  # fp16 needs CUDA on the official side


def test_building_a_random_checkpoint_needs_the_oracle_venv(compare, tmp_path):
    with pytest.raises(SystemExit, match="needs the oracle venv"):
        compare.run(["--size", "small", "--workdir", str(tmp_path / "ckpt"), "--skip-official"])
