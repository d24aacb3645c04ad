"""IndexTTS2 text-to-semantic GPT (UnifiedVoice v2), weight-compatible with ``gpt.pth``."""

from .config import ConformerConfig, GPTConfig
from .decode import CodeOverride, Generation, SamplingParams, codes_for_speed, generate, remove_long_silence
from .gpt2 import KVCache
from .unified_voice import UnifiedVoice, mel_position

__all__ = [
    "CodeOverride",
    "ConformerConfig",
    "GPTConfig",
    "Generation",
    "KVCache",
    "SamplingParams",
    "UnifiedVoice",
    "codes_for_speed",
    "generate",
    "mel_position",
    "remove_long_silence",
]
