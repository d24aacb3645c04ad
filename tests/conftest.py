"""Suite-wide settings. Per-area fixtures live in each tests/<area>/conftest.py."""

import os

from hypothesis import HealthCheck, settings

# CI machines are small and shared: no per-example deadlines, and a fixed seed so a
# red run can be reproduced (set HYPOTHESIS_PROFILE=dev locally for random search).
settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny25_checkpoint(tmp_path_factory) -> Path:
    """The tiny official-layout IndexTTS-2.5 checkpoint directory, drawn once per session from its
    seed (tools/golden/tiny25.py; ~2 s, ~300 MB in the session's temporary directory). Shared by
    the model, engine and server tests of IndexTTS-2.5."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "golden"))
    import tiny25

    out = tmp_path_factory.mktemp("tiny25") / "checkpoints"
    tiny25.materialise(out)
    return out
