"""IndexTTS2 semantic-to-mel model: length regulator + DiT flow matching (s2mel.pth)."""

from .cfm import CFM, CancelHook
from .checkpoint import CheckpointMismatch, fold_weight_norm, load_strict
from .config import S2MelConfig
from .dit import DiT
from .length_regulator import LengthRegulator
from .model import PromptCondition, S2Mel, mel_frames_25, target_lengths

__all__ = [
    "CFM",
    "CancelHook",
    "CheckpointMismatch",
    "DiT",
    "LengthRegulator",
    "PromptCondition",
    "S2Mel",
    "S2MelConfig",
    "fold_weight_norm",
    "load_strict",
    "mel_frames_25",
    "target_lengths",
]
