"""Where the official front end's two normaliser backends disagree: WeTextProcessing (pynini;
what the official ``TextNormalizer`` loads on Linux) and wetext (kaldifst; what it loads elsewhere,
and what our runtime is built on). Runs the official ``TextNormalizer`` both ways on the golden
normaliser cases (tools/golden/gpt.py: NORMALIZE_CASES without and with its glossary, the tokenizer
cases and the long text) and on PROBES (number and symbol patterns), prints every difference as a
Markdown table (the one in docs/text-normalization.md), plus the time per text of each backend,
and writes both outputs for every case to tests/fixtures/gpt/normalizers.json
(tests/text/test_normalizer_backends.py). Oracle venv:

    PYTHONHASHSEED=0 PYTHONPATH=/work/official/index-tts-1eafa93 \\
        /work/venvs/official/bin/python tools/golden/normalizers.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpt as golden  # noqa: E402  (the golden's own case lists)

ROOT = Path(__file__).resolve().parents[2]
PROBES = [
    "效果666", "点赞3000+", "评论1000+条", "M.2接口", "an M.2 drive", "我用C++", "I write C++",
    " 好 ", "好 ", "增长了50%", "打5折", "1/2的人", "3-5天", "第3名", "气温-5°C", "下午2:30见",
    "2024-03-05发布", "版本v1.2.3", "电话13800138000", "共1,000,000元", "约3.14", "x2倍速",
    "#1热门", "A&B公司", "The 1990s were great", "It is 25°C today", "call 555-1234", "v2.0 is out",
    "1st, 2nd and 3rd", "$1.5M raised", "50% off", "Room 101", "10:30 pm", "3/4 cup", "Route 66",
    "x86_64", "IPv6地址", "4K电视", "5G网络", "H2O是水", "iPhone 15 Pro", "GPT-4o",
]


def load(system: str, glossary: bool):
    from indextts.utils.front import TextNormalizer

    n = TextNormalizer(enable_glossary=True)
    real = platform.system
    platform.system = lambda: system  # "Linux": WeTextProcessing; anything else: wetext
    try:
        n.load()
    finally:
        platform.system = real
    if glossary:
        assert n.load_glossary_from_yaml(str(ROOT / "tests/fixtures/gpt/glossary.yaml"))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/gpt/normalizers.json")
    args = ap.parse_args()
    golden_cases = list(dict.fromkeys(golden.NORMALIZE_CASES + golden.TOKENIZE_CASES + [golden.LONG_TEXT]))
    sets = [("golden", False, golden_cases), ("golden+glossary", True, golden.NORMALIZE_CASES),
            ("probes", False, PROBES)]
    print("| set | input | WeTextProcessing (official on Linux) | wetext (official elsewhere; ours) |")
    print("|---|---|---|---|")
    counts, times, rows = [], {"Linux": 0.0, "Darwin": 0.0}, []
    for name, glossary, cases in sets:
        wetp, wet = load("Linux", glossary), load("Darwin", glossary)
        differ = 0
        for text in cases:
            t0 = time.perf_counter()
            a = wetp.normalize(text)
            t1 = time.perf_counter()
            b = wet.normalize(text)
            times["Linux"] += t1 - t0
            times["Darwin"] += time.perf_counter() - t1
            rows.append({"set": name, "glossary": glossary, "text": text, "wetextprocessing": a, "wetext": b})
            if a != b:
                differ += 1
                print(f"| {name} | `{text!r}` | `{a!r}` | `{b!r}` |")
        counts.append(f"{name}: {differ} of {len(cases)} differ")
    total = sum(len(c) for _, _, c in sets)
    from importlib.metadata import version

    meta = {"wetextprocessing": version("WeTextProcessing"), "pynini": version("pynini"),
            "wetext": version("wetext")}
    args.out.write_text(json.dumps({"versions": meta, "cases": rows}, indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    print()
    print("; ".join(counts))
    print(f"time per text: WeTextProcessing {1e3 * times['Linux'] / total:.1f} ms, "
          f"wetext {1e3 * times['Darwin'] / total:.1f} ms")


if __name__ == "__main__":
    main()
