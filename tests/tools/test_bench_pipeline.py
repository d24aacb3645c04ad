"""``realtime-tts bench`` (tools/bench/pipeline.py): the whole pipeline of IndexTTS-2 or
IndexTTS-2.5 stage by stage, on tiny random models and on the tiny checkpoints (quick runs; no
timing is asserted). Lengths are seconds of speech, so both models make the same audio while
IndexTTS-2.5 runs half the GPT steps (25 codes per second against 50)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.bench.pipeline import bench_text_ids, forced_codes, parse_args, run_bench  # noqa: E402

CKPT = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints"
QUICK = ["--device", "cpu", "--segments", "2", "--cfm-steps", "2", "--ref-seconds", "1"]


def audio_seconds(mel_frames: int) -> float:
    return 256 * mel_frames / 22050


def check_report(out: str, segments: int, features: str, audio: float) -> None:
    header = re.search(r"^seg\s+cond\s+gpt\s+(\S+)\s+s2mel\s+vocoder\s+total\s+audio\s+RTF$", out, flags=re.M)
    assert header and header.group(1) == features  # the family's features stage is its own column
    row = r"^\s+(\d+)" + r"\s+([\d.]+)" * 8 + "$"  # seg, cond, 4 stages, total, audio, RTF
    rows = re.findall(row, out, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, segments + 1))
    for r in rows:
        assert float(r[7]) == pytest.approx(audio, abs=0.006)  # the forced code count's audio
    assert float(rows[0][1]) > 0  # the first segment pays for the new voice's conditioning
    assert re.search(r"^RTF [\d.]+ ", out, flags=re.M)
    assert re.search(r"^TTFA new voice [\d.]+ s \(conditioning [\d.]+ s\), cached voice [\d.]+ s", out, flags=re.M)
    assert re.search(r"^GPT: [\d.]+ ms/code, [\d.]+ codes per second of audio, [\d.]+ s of GPT per second of audio",
                     out, flags=re.M)


def run_json(argv: list[str], tmp_path: Path, capsys) -> tuple[str, dict]:
    out_file = tmp_path / "bench.json"
    assert run_bench(argv + ["--out", str(out_file)]) == 0
    return capsys.readouterr().out, json.loads(out_file.read_text())


def test_bench_tiny_random_model(capsys):
    assert run_bench(["--tiny", "--tokens", "6"] + QUICK) == 0
    out = capsys.readouterr().out
    assert "IndexTTS-2 pipeline bench: random weights, tiny configs" in out
    assert "6 codes/segment = 0.12 s of speech at 50 codes/s" in out
    check_report(out, 2, "gpt_latent", audio_seconds(int(6 * 1.72)))


def test_bench_indextts25_tiny_random_model(tmp_path, capsys):
    out, r = run_json(["--model", "indextts-2.5", "--tiny", "--seconds", "0.24"] + QUICK, tmp_path, capsys)
    assert "IndexTTS-2.5 pipeline bench: random weights, tiny configs" in out
    assert "6 codes/segment = 0.24 s of speech at 25 codes/s" in out
    # 25 Hz codes decoded to 50 Hz features: int(2 L 1.72) mel frames
    check_report(out, 2, "codec", audio_seconds(int(2 * 6 * 1.72)))
    assert (r["model"], r["codes"], r["code_rate"]) == ("indextts-2.5", 6, 25)
    assert set(r["stages_s"]) == {"gpt", "codec", "s2mel", "vocoder"}
    assert all("gpt_latent" not in s["stages_s"] for s in r["segments"])  # no second GPT pass
    assert r["gpt_codes_per_audio_s"] == pytest.approx(6 / audio_seconds(int(2 * 6 * 1.72)), abs=0.01)
    assert r["gpt_s_per_audio_s"] == pytest.approx(r["stages_s"]["gpt"] / r["audio_s"], rel=0.01, abs=1e-3)


def test_same_seconds_same_audio_half_the_gpt_steps(tmp_path, capsys):
    """The comparison is fair: equal --seconds give equal audio, IndexTTS-2.5 in half the codes."""
    args = ["--tiny", "--seconds", "0.4", "--segments", "1", "--cfm-steps", "1", "--ref-seconds", "1",
            "--device", "cpu"]
    _, v2 = run_json(args, tmp_path, capsys)
    _, v25 = run_json(["--model", "indextts-2.5"] + args, tmp_path, capsys)
    assert (v2["codes"], v25["codes"]) == (20, 10)
    assert v2["audio_s"] == v25["audio_s"] == pytest.approx(audio_seconds(int(20 * 1.72)), abs=1e-3)
    assert v2["gpt_codes_per_audio_s"] == pytest.approx(2 * v25["gpt_codes_per_audio_s"], abs=0.02)
    assert (v2["text_tokens"], v2["cfm_steps"], v2["ref_seconds"]) == (v25["text_tokens"], v25["cfm_steps"],
                                                                       v25["ref_seconds"])


def test_bench_with_checkpoint(capsys):
    assert run_bench(["--checkpoints", str(CKPT), "--device", "cpu", "--tokens", "7", "--segments", "1",
                      "--cfm-steps", "2", "--ref-seconds", "1", "--decode", "sample"]) == 0
    out = capsys.readouterr().out
    assert f"IndexTTS-2 pipeline bench: {CKPT}" in out and "decode sample" in out
    check_report(out, 1, "gpt_latent", audio_seconds(int(7 * 1.72)))


def test_bench_with_the_tiny_indextts25_checkpoint(tiny25_checkpoint, capsys):
    """The family is read from the directory (no --model)."""
    assert run_bench(["--checkpoints", str(tiny25_checkpoint), "--seconds", "0.2", "--segments", "1",
                      "--cfm-steps", "1", "--ref-seconds", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"IndexTTS-2.5 pipeline bench: {tiny25_checkpoint}" in out
    check_report(out, 1, "codec", audio_seconds(int(2 * 5 * 1.72)))


def test_model_and_checkpoint_disagree(tiny25_checkpoint, capsys):
    assert run_bench(["--model", "indextts-2", "--checkpoints", str(tiny25_checkpoint), "--device", "cpu"]) == 2
    assert "holds an IndexTTS-2.5 checkpoint" in capsys.readouterr().err


def test_indextts25_text_ids_start_with_the_language_tag():
    """The tag picks the GPT's language row; the other ids are plain vocabulary ranks."""
    from realtime_tts.engine.indextts25 import IndexTTS25Engine

    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import random_weights

    family = random_weights.random_family25(torch.device("cpu"), torch.float32, tiny=True)
    tok = family.front.tokenizer
    ids = bench_text_ids(IndexTTS25Engine(family), 40, seed=0)
    assert len(ids) == 40 and ids[0] == tok.special_id("<|en|>")
    assert all(2 <= i < tok.num_ranks for i in ids[1:])


def test_full_size_indextts25_is_the_official_size():
    """The random full-size build has the official dimensions (built on the meta device: shapes
    only): the GPT's 812,289,460 parameters of the released gpt.pth, no S2M latent projection."""
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import random_weights

    from realtime_tts.model.enhanced_codec import EnhancedCodecConfig
    from realtime_tts.model.gpt import GPT25Config

    models = random_weights.random_models25(torch.device("meta"), tiny=False)
    assert models.gpt.cfg == GPT25Config.full() and models.codec.cfg == EnhancedCodecConfig()
    assert sum(p.numel() for p in models.gpt.parameters()) == 812_289_460
    assert models.s2mel.cfg.gpt_layer_dims is None and not hasattr(models.s2mel, "gpt_layer")
    assert models.w2v.model.config.hidden_size == 1024 and models.qwen is None


def test_bench_front_end_without_the_japanese_packages(monkeypatch, caplog):
    """A bare GPU image lacks fugashi / unidic-lite: the random-weight IndexTTS-2.5 benches still
    run (zh/en), warning once; Japanese text gets the usual error."""
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import random_weights

    monkeypatch.setitem(sys.modules, "fugashi", None)  # import fails as if not installed
    front = random_weights.BenchFrontEnd(random_weights.TINY_VOCAB_25, text_normalization=False)
    with caplog.at_level("WARNING", logger="realtime_tts.bench"):
        assert front.segments("Hello there.", "en")[0][0] == front.tokenizer.special_id("<|en|>")
        assert front.segments("Good bye.", "en")
    assert [r.getMessage() for r in caplog.records if r.name == "realtime_tts.bench"] == [
        "benchmark front end without Japanese word splitting: Japanese text needs fugashi and unidic-lite "
        "(import of fugashi halted; None in sys.modules); install them with `pip install fugashi unidic-lite`"]
    with pytest.raises(RuntimeError, match="Japanese text needs fugashi"):
        front.segments("こんにちは", "ja")


def test_bench_flags():
    a = parse_args(["--quick"])
    assert (a.seconds, a.tokens, a.segments, a.ref_seconds) == (1.0, None, 2, 3.0)
    a = parse_args([])
    assert (a.seconds, a.tokens, a.segments, a.cfm_steps, a.decode, a.model) == (5.0, None, 3, 25, "beam_sample", None)
    # seconds at each model's code rate; --tokens is the model's own codes; the model's limit caps both
    assert [forced_codes(parse_args(["--seconds", "1"]), rate, 1815) for rate in (50, 25)] == [50, 25]
    assert forced_codes(parse_args(["--tokens", "30"]), 25, 1815) == 30
    assert forced_codes(parse_args(["--seconds", "100"]), 50, 1815) == 1815
    for bad in (["--tokens", "0"], ["--seconds", "0"], ["--tokens", "5", "--seconds", "1"], ["--model", "v3"],
                ["--tiny", "--checkpoints", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
