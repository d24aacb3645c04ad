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
