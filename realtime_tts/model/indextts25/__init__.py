"""IndexTTS-2.5 checkpoints: family detection, directory layout and strict loading (model layer:
paths in, modules out; the engine wraps errors and adds download hints)."""

from .layout import (CODEC, FAMILY_V2, FAMILY_V25, TIKTOKEN, Paths25, detect, load_config, missing_files,
                     read_config, resolve)
from .load import (CODE_RATE, DEFAULT_SAMPLING, GPT_LAYER_KEYS, Models25, codec_config, gpt_config, load_campplus, load_codec,
                   load_emotion_matrix, load_gpt, load_models, load_s2mel, load_vocoder, s2mel_config)

__all__ = [
    "CODEC", "CODE_RATE", "DEFAULT_SAMPLING", "FAMILY_V2", "FAMILY_V25", "GPT_LAYER_KEYS", "TIKTOKEN", "Models25", "Paths25", "codec_config",
    "detect", "gpt_config", "load_campplus", "load_codec", "load_config", "load_emotion_matrix", "load_gpt",
    "load_models", "load_s2mel", "load_vocoder", "missing_files", "read_config", "resolve", "s2mel_config",
]
