"""Text-to-semantic GPTs (official UnifiedVoice v2), weight-compatible with ``gpt.pth``:
IndexTTS-2 (:class:`UnifiedVoice`) and IndexTTS-2.5 (:class:`UnifiedVoice25`)."""

from .base import CodeGPT
from .config import CodeGPTConfig, ConformerConfig, GPT25Config, GPTConfig
from .decode import CodeOverride, Generation, SamplingParams, codes_for_speed, generate, remove_long_silence
from .gpt2 import KVCache
from .unified_voice import UnifiedVoice, mel_position
from .unified_voice25 import LangText, UnifiedVoice25

__all__ = [
    "CodeGPT",
    "CodeGPTConfig",
    "CodeOverride",
    "ConformerConfig",
    "GPT25Config",
    "GPTConfig",
    "Generation",
    "KVCache",
    "LangText",
    "SamplingParams",
    "UnifiedVoice",
    "UnifiedVoice25",
    "codes_for_speed",
    "generate",
    "mel_position",
    "remove_long_silence",
]
