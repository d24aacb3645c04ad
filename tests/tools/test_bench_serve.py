"""``realtime-tts bench --streams ...`` (tools/bench/serve.py): the real server under N concurrent
simulated streams. Smoke runs only (eSpeak NG and the tiny IndexTTS2 checkpoint): the result has
its shape, every stream got audio, the plot is a PNG; no timing is asserted."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from realtime_tts.model.gpt.decode import DecodePool

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "tests" / "fixtures" / "pipeline" / "checkpoints"


def _load(name: str):
    key = f"realtime_tts_bench_{name}"
    if key not in sys.modules:  # tools/ is not a package; its dataclasses need the module registered
        spec = importlib.util.spec_from_file_location(key, ROOT / "tools" / "bench" / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


serve = _load("serve")

LEVEL_KEYS = {"phase", "streams", "turns", "turns_ok", "wall_s", "ttfa_server_s", "ttfa_client_s", "queue_wait_s", "segments",
              "segments_failed", "stages_ms", "gpt_ms_per_code_est", "encode_ms", "rtf", "audio_s",
              "throughput_x_realtime", "underruns", "stall_s", "jitter_s", "gpu_max_allocated_mb", "streams_detail"}
STATS_KEYS = {"n", "p50", "p95", "mean", "max"}


def json_line(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.startswith("JSON ")]
    assert len(lines) == 1, out
    return json.loads(lines[0][5:])


def check_levels(result: dict, streams: list[int], turns: int) -> None:
    assert [lv["streams"] for lv in result["levels"]] == streams
    for lv in result["levels"]:
        assert set(lv) == LEVEL_KEYS
        n = lv["streams"]
        assert lv["turns"] == lv["turns_ok"] == n * turns
        # one server-side and one client-side TTFA sample per turn
        assert set(lv["ttfa_server_s"]) == STATS_KEYS and lv["ttfa_server_s"]["n"] == n * turns
        assert lv["ttfa_client_s"]["n"] == n * turns
        assert lv["ttfa_server_s"]["p50"] <= lv["ttfa_server_s"]["p95"] <= lv["ttfa_server_s"]["max"]
        assert lv["segments"] >= n * turns and lv["segments_failed"] == 0
        assert lv["audio_s"] > 0 and lv["rtf"] > 0 and lv["encode_ms"] > 0
        assert lv["underruns"] >= 0 and lv["gpu_max_allocated_mb"] is None  # CPU only in CI
        detail = lv["streams_detail"]
        assert [d["stream"] for d in detail] == list(range(n))
        for d in detail:
            assert d["turns"] == turns and d["packets"] > 0 and d["audio_s"] > 0 and not d["errors"], d
            assert len(d["ttfa_client_s"]) == turns and all(t > 0 for t in d["ttfa_client_s"])


def test_standard_sentence_set():
    assert {(lang, n) for lang in serve.LANGS for n in serve.LENGTHS} == set(serve.SENTENCES)
    for (lang, n), text in serve.SENTENCES.items():
        assert len(text) == n, (lang, n, text)


def test_playback_gaps():
    # 60 ms packets: the first three back to back, then one 100 ms after the queue ran dry
    arrivals = [(0.0, 0.06), (0.0, 0.06), (0.05, 0.06), (0.28, 0.06), (0.30, 0.06)]
    underruns, stall = serve.playback_gaps(arrivals)
    assert underruns == 1 and stall == pytest.approx(0.28 - 0.18)
    assert serve.playback_gaps([(0.0, 0.06), (0.061, 0.06)]) == (0, 0.0)  # within the tolerance
    assert serve.playback_gaps([]) == (0, 0.0)


def test_packet_jitter_counts_the_paced_packets_only():
    # the pre-buffer (5 packets) at once, then one per 60 ms, one of them 10 ms late
    arrivals = [0.0] * 5 + [0.06, 0.12, 0.19, 0.24]
    assert serve.packet_jitter(arrivals) == pytest.approx([0.0, 0.0, 0.01, 0.01])
    assert serve.packet_jitter([0.0] * 5) == []


def test_proxy_comparison_table():
    proxy = _load("proxy")

    def level(n, p50, p95, jitter=None, underruns=0):
        return {"streams": n, "ttfa_client_s": {"p50": p50, "p95": p95}, "underruns": underruns,
                "jitter_s": jitter}

    direct = [level(1, 0.100, 0.120, {"p50": 0.0005, "p95": 0.002, "max": 0.004}), level(4, 0.2, 0.3)]
    ray = [level(1, 0.103, 0.127, {"p50": 0.001, "p95": 0.0035, "max": 0.009}), level(4, 0.25, 0.29, underruns=1)]
    rows = proxy.comparison_table(direct, ray, 3).splitlines()
    assert rows[2] == "| 1 | 100 / 120 | 103 / 127 | +3 / +7 | 0.5 / 2.0 / 4.0 | 1.0 / 3.5 / 9.0 | 0 / 0 |"
    assert rows[3] == "| 4 | 200 / 300 | 250 / 290 | +50 / -10 | - | - | 0 / 1 |"
    assert rows[-1].endswith("Ray: 3 replicas behind Serve's proxy")


def test_espeak_agent_streams_with_plot(tmp_path, capsys):
    out_json, png = tmp_path / "r.json", tmp_path / "latency.png"
    rc = serve.run_bench(["--engine", "espeak", "--streams", "1,3", "--turns", "2", "--lengths", "7,16",
                          "--ref-seconds", "2", "--out", str(out_json), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    result = json_line(out)
    assert result["bench"] == "serve" and result["client"] == "agent" and result["engine"] == "eSpeak NG"
    assert result["config"]["streams"] == [1, 3] and result["config"]["ref_seconds"] == 2.0
    check_levels(result, [1, 3], 2)
    assert json.loads(out_json.read_text()) == result
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "TTFA srv p50/p95 ms" in out and "encode ms" in out


def test_targets_search_doubles_then_narrows(monkeypatch):
    """The capacity search: levels double until one fails, then the gap halves; the answer is the
    most streams that passed."""
    tried = []

    async def fake_level(n, port, a, rec, engine):
        tried.append((n, a.turns))
        ok = n <= 5
        return {"streams": n, "turns": n * a.turns, "turns_ok": n * a.turns, "underruns": 0 if ok else 1,
                "ttfa_server_s": {"n": n, "p50": 0.05, "p95": 0.1 if ok else 0.5}, "rtf": 0.02, "wall_s": 1.0}

    monkeypatch.setattr(serve, "run_level", fake_level)
    a = serve.parse_args(["--targets", "--targets-turns", "3", "--turns", "2", "--engine", "espeak"])
    levels = []
    t = asyncio.run(serve._targets(a, None, 0, None, levels))
    assert tried == [(1, 3), (1, 2), (2, 2), (4, 2), (8, 2), (6, 2), (5, 2)]  # idle run, then the search
    assert t["real_time_streams"] == 5 and t["first_failing_streams"] == 6
    assert t["single_stream_rtf"] == 0.02 and t["idle_ttfa_s"] == {"p50": 0.05, "p95": 0.1, "n": 1}
    assert [lv["phase"] for lv in levels] == ["idle"] + ["capacity"] * 6
    # every level passes: the search stops at --targets-max and says so
    tried.clear()
    a.targets_max = 4
    monkeypatch.setattr(serve, "real_time", lambda level: True)
    t = asyncio.run(serve._targets(a, None, 0, None, []))
    assert [n for n, _ in tried] == [1, 1, 2, 4] and t["real_time_streams"] == 4 and t["first_failing_streams"] is None


def test_espeak_targets_table(capsys):
    assert serve.run_bench(["--engine", "espeak", "--targets", "--targets-turns", "2", "--targets-max", "2",
                            "--turns", "1", "--lengths", "7", "--ref-seconds", "1"]) == 0
    out = capsys.readouterr().out
    result = json_line(out)
    t = result["targets"]
    assert set(t) == {"single_stream_rtf", "idle_ttfa_s", "real_time_streams", "first_failing_streams", "max_tried"}
    assert result["levels"][0]["phase"] == "idle" and result["levels"][0]["turns_ok"] == 2
    assert t["single_stream_rtf"] > 0 and t["idle_ttfa_s"]["n"] == 2 and 0 <= t["real_time_streams"] <= 2
    assert result["commit"] and "| target | goal | measured | met |" in out
    assert "| concurrent real-time streams (no underrun, p95 TTFA <= 300 ms) | >= 64 |" in out


def test_espeak_xiaozhi_devices(capsys):
    assert serve.run_bench(["--engine", "espeak", "--client", "xiaozhi", "--streams", "2", "--turns", "1",
                            "--lengths", "7", "--langs", "en", "--ref-seconds", "1"]) == 0
    result = json_line(capsys.readouterr().out)
    assert result["client"] == "xiaozhi"
    check_levels(result, [2], 1)
    assert result["levels"][0]["jitter_s"]["n"] > 0  # paced packets: their spacing is measured


def test_tiny_indextts2_checkpoint(capsys):
    assert serve.run_bench(["--engine", "indextts2", "--checkpoints", str(CKPT), "--device", "cpu",
                            "--cfm-steps", "2", "--tokens", "12", "--streams", "2", "--turns", "1",
                            "--lengths", "7", "--ref-seconds", "1"]) == 0
    out = capsys.readouterr().out
    result = json_line(out)
    assert "12 codes per segment" in result["engine"]
    check_levels(result, [2], 1)
    lv = result["levels"][0]
    assert set(lv["stages_ms"]) == {"conditioning", "gpt_prefill", "gpt", "gpt_latent", "s2mel", "vocoder"}
    assert lv["gpt_ms_per_code_est"] > 0
    assert result["config"]["tokens"] == 12 and result["config"]["cfm_steps"] == 2


def test_tiny_indextts2_batching_executor(capsys, monkeypatch):
    admitted: list[tuple[int, tuple]] = []  # (budget, forbidden codes) of every piece entering the decode
    real = DecodePool.admit

    def spy(self, cond, texts, budgets, generators, tags=None, forbid=None):
        admitted.extend(zip(budgets, forbid))
        return real(self, cond, texts, budgets, generators, tags, forbid)

    monkeypatch.setattr(DecodePool, "admit", spy)
    assert serve.run_bench(["--engine", "indextts2", "--checkpoints", str(CKPT), "--device", "cpu", "--max-batch", "4",
                            "--cfm-steps", "2", "--tokens", "8", "--streams", "4", "--turns", "1",
                            "--lengths", "7", "--ref-seconds", "1"]) == 0
    result = json_line(capsys.readouterr().out)
    assert result["config"]["max_batch"] == 4
    check_levels(result, [4], 1)
    # after the engine's warm-up (20 codes), every segment went through the continuous batch (4
    # turns, plus the bench's own priming), its code count still forced
    assert admitted[0][0] == 20 and len(admitted) >= 5 and all(n == 8 and len(ban) == 2 for n, ban in admitted[1:])


def test_tiny_indextts2_compiled(capsys):
    assert serve.run_bench(["--engine", "indextts2", "--checkpoints", str(CKPT), "--device", "cpu", "--compile",
                            "--cfm-steps", "2", "--tokens", "8", "--streams", "1", "--turns", "1",
                            "--lengths", "7", "--ref-seconds", "1"]) == 0
    result = json_line(capsys.readouterr().out)
    assert result["engine_info"]["compiled"] is True
    check_levels(result, [1], 1)


def test_tiny_indextts25_random_weights(capsys):
    """``--model indextts-2.5`` without a checkpoint: random weights (tiny here; full size by
    default), the codec as its features stage, codes forced at 25 per second of speech."""
    assert serve.run_bench(["--model", "indextts-2.5", "--tiny", "--device", "cpu", "--cfm-steps", "1",
                            "--streams", "1", "--turns", "1", "--lengths", "7", "--langs", "en",
                            "--ref-seconds", "1"]) == 0
    result = json_line(capsys.readouterr().out)
    assert result["engine"] == "IndexTTS-2.5, random weights, tiny configs, codes forced in proportion to the text"
    check_levels(result, [1], 1)
    lv = result["levels"][0]
    assert set(lv["stages_ms"]) == {"conditioning", "gpt_prefill", "gpt", "codec", "s2mel", "vocoder"}
    codes = serve.forced_codes(serve.SENTENCES[("en", 7)], code_rate=25)
    assert lv["audio_s"] == pytest.approx(256 * int(2 * codes * 1.72) / 22050, abs=1e-3)
    assert lv["gpt_ms_per_code_est"] > 0


def test_tiny_indextts25_checkpoint_targets(tiny25_checkpoint, capsys):
    """``--targets`` on an IndexTTS-2.5 directory: the family is read from it."""
    assert serve.run_bench(["--targets", "--checkpoints", str(tiny25_checkpoint), "--device", "cpu",
                            "--cfm-steps", "1", "--tokens", "6", "--targets-turns", "1", "--targets-max", "1",
                            "--turns", "1", "--lengths", "7", "--langs", "en", "--ref-seconds", "1"]) == 0
    out = capsys.readouterr().out
    result = json_line(out)
    assert result["engine"] == f"IndexTTS-2.5 from {tiny25_checkpoint}, 6 codes per segment"
    assert result["targets"]["idle_ttfa_s"]["n"] == 1 and "| target | goal | measured | met |" in out
    assert "codec" in result["levels"][0]["stages_ms"]
    with pytest.raises(SystemExit):
        serve.parse_args(["--targets", "--engine", "indextts2", "--checkpoints", str(tiny25_checkpoint)])
    assert "--engine indextts2: " in capsys.readouterr().err


def test_code_rates():
    """Forced code counts and the GPT-per-code estimate follow the model's code rate."""
    for text in serve.SENTENCES.values():
        assert abs(serve.forced_codes(text, 50) - 2 * serve.forced_codes(text, 25)) <= 1
    assert serve.forced_codes("Hi", 50) == 10 and serve.forced_codes("Hi", 25) == 5  # at least 0.2 s

    class Engine:
        def __init__(self, rate):
            self.family = type("Family", (), {"code_rate": rate})()

    assert serve.seconds_per_code(Engine(50)) == pytest.approx(1.72 * 256 / 22050)
    assert serve.seconds_per_code(Engine(25)) == pytest.approx(2 * 1.72 * 256 / 22050)
    assert [serve.parse_args(["--streams", "1"] + x).engine for x in
            ([], ["--model", "indextts-2.5"], ["--engine", "indextts2.5"], ["--model", "indextts-2"])] == \
        ["indextts2", "indextts2.5", "indextts2.5", "indextts2"]


def test_cli_dispatch(capsys):
    """``realtime-tts bench --streams`` runs this benchmark; without it the pipeline bench's help stays."""
    from realtime_tts.cli import main

    assert main(["bench", "--streams", "1", "--engine", "espeak", "--turns", "1", "--lengths", "7",
                 "--langs", "zh", "--ref-seconds", "1"]) == 0
    check_levels(json_line(capsys.readouterr().out), [1], 1)
    with pytest.raises(SystemExit) as e:
        main(["bench", "serve", "--help"])
    assert e.value.code == 0
    assert "--streams" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert "--tokens" in help_text and "--streams" in help_text  # the pipeline bench, pointing here


@pytest.mark.parametrize("argv, message", [
    ([], "give either --streams levels or --targets"),
    (["--streams", "1", "--targets"], "give either --streams levels or --targets"),
    (["--targets", "--targets-max", "0"], "--targets-turns and --targets-max must be at least 1"),
    (["--streams", "0"], "--streams: every level must be at least 1"),
    (["--streams", "1,x"], "expected comma-separated integers"),
    (["--streams", "1", "--lengths", "9"], "--lengths: the standard set has"),
    (["--streams", "1", "--langs", "fr"], "--langs: choose from zh, en"),
    (["--streams", "1", "--tokens", "lots"], "--tokens: expected natural, auto or a number"),
    (["--streams", "1", "--ref-seconds", "30"], "--ref-seconds must be within"),
    (["--streams", "1", "--engine", "espeak", "--checkpoints", "x"], "apply to --engine indextts2 / indextts2.5 only"),
    (["--streams", "1", "--checkpoints", "/nonexistent/ckpt"], "--checkpoints: no such directory"),
    (["--targets", "--ray-replicas", "3"], "--ray-replicas takes N >= 1 replicas and --streams levels"),
    (["--streams", "1", "--ray-replicas", "-1"], "--ray-replicas takes N >= 1 replicas"),
    (["--streams", "1", "--ray-replicas", "3"], "--ray-replicas: the replicas load their engine from settings"),
    (["--streams", "1", "--engine", "indextts2", "--model", "indextts-2.5"], "name different engines"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        serve.run_bench(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
