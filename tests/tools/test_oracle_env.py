"""tools/golden/oracle_env.sh (builds the official-code oracle; never run in CI): its argument
checks, and a lock file that pins every package."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "golden" / "oracle_env.sh"
LOCK = ROOT / "tools" / "golden" / "oracle_requirements.txt"


def run(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if k != "OFFICIAL_REPO"}
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=60)


def test_needs_the_official_repository():
    out = run()
    assert out.returncode == 1 and "give the official repository" in out.stderr


def test_refuses_a_repository_without_the_pinned_commits(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    out = run(str(repo), env={"ORACLE_SRC": str(tmp_path / "src"), "ORACLE_VENV": str(tmp_path / "venv")})
    assert out.returncode == 1 and "lacks commit 1eafa935e8887f9ba877f82cf7319fceddfc86cb" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_lock_pins_every_package_once():
    names = []
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)", line)
        assert m, f"not an exact pin: {line!r}"
        names.append(m.group(1).lower().replace("_", "-"))
    assert len(names) == len(set(names)) >= 100
    # the versions the fixtures record (tests/fixtures/encoders/configs.json) and the 2.5 front end
    for pin in ("transformers==4.52.1", "librosa==0.11.0", "WeTextProcessing==1.0.4.1", "pynini==2.1.6"):
        assert pin in LOCK.read_text()
    assert "torch==2.13.0" in SCRIPT.read_text() and "torchaudio==2.11.0" in SCRIPT.read_text()
