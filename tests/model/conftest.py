"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from realtime_tts.model.gpt import GPTConfig, UnifiedVoice

GPT_FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpt"


@pytest.fixture(scope="module")
def tiny_gpt() -> UnifiedVoice:
    """The tiny random-weight UnifiedVoice of the golden fixtures, fp32, eval mode."""
    m = UnifiedVoice(GPTConfig.tiny())
    m.load_state_dict({k: v.float() for k, v in load_file(str(GPT_FIX / "tiny_gpt.safetensors")).items()})
    return m.eval()
