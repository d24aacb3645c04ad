"""Our normaliser (wetext) against both backends of the official front end, and the list of their
differences in docs/text-normalization.md kept true.

tests/fixtures/gpt/normalizers.json (tools/golden/normalizers.py, oracle venv) holds, for the golden
normaliser cases and number/symbol probes, the official ``TextNormalizer`` output with
WeTextProcessing (its Linux backend) and with wetext (its backend elsewhere, and ours)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from realtime_tts.text.normalize import TextNormalizer

ROOT = Path(__file__).resolve().parents[2]
DATA = json.loads((ROOT / "tests/fixtures/gpt/normalizers.json").read_text(encoding="utf-8"))
CASES = DATA["cases"]
DOC = ROOT / "docs" / "text-normalization.md"
ROW = re.compile(r"^\| (golden|golden\+glossary|probes) \| `(.+?)` \| `(.+?)` \| `(.+?)` \|$")


@pytest.fixture(scope="module")
def normalizers() -> dict[bool, TextNormalizer]:
    plain = TextNormalizer()
    plain.load()
    glossary = TextNormalizer()
    assert glossary.load_glossary(ROOT / "tests/fixtures/gpt/glossary.yaml")
    return {False: plain, True: glossary}


def test_we_equal_the_official_wetext_branch_on_every_case(normalizers):
    wrong = [(c["text"], normalizers[c["glossary"]].normalize(c["text"]), c["wetext"]) for c in CASES
             if normalizers[c["glossary"]].normalize(c["text"]) != c["wetext"]]
    assert not wrong


def documented() -> dict[tuple[str, str], tuple[str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            name, text, wetp, wet = m.group(1), *(ast.literal_eval(g) for g in m.groups()[1:])
            rows[(name, text)] = (wetp, wet)
    return rows


def test_every_difference_from_wetextprocessing_is_documented():
    measured = {(c["set"], c["text"]): (c["wetextprocessing"], c["wetext"]) for c in CASES
                if c["wetextprocessing"] != c["wetext"]}
    assert measured, "the fixture shows no difference: docs/text-normalization.md is out of date"
    assert documented() == measured


def test_fixture_names_the_backend_versions():
    from importlib.metadata import version

    assert DATA["versions"]["wetext"] == version("wetext")  # the runtime's pin
    assert DATA["versions"]["wetextprocessing"] == "1.0.4.1" and DATA["versions"]["pynini"] == "2.1.6"
    assert len(CASES) >= 100
