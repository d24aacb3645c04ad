"""Static checks of the Docker files (no Docker daemon or registry is needed to run them)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_matches_the_project():
    text = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    version = re.search(r"ARG TORCH_VERSION=(\S+)", text).group(1)
    lo, hi = re.match(r"torch>=([\d.]+),<([\d.]+)", torch_pin).groups()
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(lo) <= as_tuple(version) < as_tuple(hi), (version, torch_pin)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"FROM \$\{PYTHON_IMAGE\}", text) and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "/health" in text and "HEALTHCHECK" in text
    assert 'CMD ["realtime-tts", "serve"]' in text
    assert "realtime-tts = \"realtime_tts.cli:main\"" in (ROOT / "pyproject.toml").read_text()
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in copied.split():
            assert (ROOT / path).exists() or path == "README.md", f"COPY {path}: missing"


def test_dockerignore_keeps_what_the_build_copies():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & {"realtime_tts", "pyproject.toml", "README.md"}
    assert {".git", ".venv", "checkpoints", "data", "tests"} <= ignored


def test_compose_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    cpu, gpu = compose["services"]["tts-cpu"], compose["services"]["tts-gpu"]
    for svc in (cpu, gpu):
        assert "/health" in " ".join(svc["healthcheck"]["test"])
        assert "./data:/data" in svc["volumes"] and "./checkpoints:/checkpoints:ro" in svc["volumes"]
        assert svc["build"]["context"] == "."
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu") and "profiles" not in cpu
    assert gpu["profiles"] == ["gpu"] and gpu["runtime"] == "nvidia"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["REALTIME_TTS_DEVICE"] == "cuda"
    assert cpu["ports"] != gpu["ports"]
