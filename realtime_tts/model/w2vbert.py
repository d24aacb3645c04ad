"""w2v-BERT 2.0 semantic features for IndexTTS2 (speaker and emotion conditioning).

Runs transformers' own SeamlessM4TFeatureExtractor + Wav2Vec2BertModel from a LOCAL Hugging Face
directory (config.json, model.safetensors, preprocessor_config.json; never downloads), takes the
output of conformer layer `layer` (hidden_states[17] for IndexTTS2) and normalises it with the
checkpoint's `wav2vec2bert_stats.pt` ({"mean", "var"}; std = sqrt(var)).

Layers after `layer` never influence the result, so they are dropped at load time (7 of 24 layers
for the real model: ~30% less compute and ~170 M fewer parameters in memory).
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch
import torch.nn as nn

IDX_LAYER = 17  # IndexTTS2 uses hidden_states[17]: the output of the 17th conformer layer


def load_w2v_stats(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], std [C]) from a wav2vec2bert_stats.pt file."""
    stats = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(stats, dict) or "mean" not in stats or "var" not in stats:
        raise ValueError(f"{path}: expected a dict with 'mean' and 'var'")
    return stats["mean"].float(), torch.sqrt(stats["var"].float())


def weights_file(model_dir: str) -> str:
    """The weights file transformers reads from a local model directory (for error messages)."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json"):
        if os.path.isfile(os.path.join(model_dir, name)):
            return os.path.join(model_dir, name)
    return os.path.join(model_dir, "model.safetensors")


_LAYER_KEY = re.compile(r"^(?:wav2vec2_bert\.)?encoder\.layers\.(\d+)\.")


def _kept(key: str, layer: int) -> bool:
    """Whether a state-dict key belongs to the part of the model we run (layers >= ``layer`` are dropped)."""
    m = _LAYER_KEY.match(key)
    return m is None or int(m.group(1)) < layer


def check_loaded(info: dict, path: str, layer: int) -> None:
    """Strict loading for the layers we keep: every missing, unexpected or mis-shaped key is an
    error naming the file and the key (``info``: transformers' ``output_loading_info``)."""
    problems = [f"missing key {k!r}" for k in sorted(info.get("missing_keys", ())) if _kept(k, layer)]
    problems += [f"unexpected key {k!r}" for k in sorted(info.get("unexpected_keys", ())) if _kept(k, layer)]
    problems += [f"key {k!r} has shape {tuple(got)}, the model expects {tuple(want)}"
                 for k, got, want in sorted(info.get("mismatched_keys", ()), key=lambda x: x[0]) if _kept(k, layer)]
    problems += list(info.get("error_msgs", ()))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{path}: {'; '.join(problems[:5])}{more}")


class SemanticEncoder(nn.Module):
    def __init__(self, model, feature_extractor, mean: torch.Tensor, std: torch.Tensor, layer: int = IDX_LAYER):
        super().__init__()
        n_layers = len(model.encoder.layers)
        if not 1 <= layer <= n_layers:
            raise ValueError(f"layer {layer} outside 1..{n_layers}")
        model.encoder.layers = model.encoder.layers[:layer]
        model.config.num_hidden_layers = layer
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.layer = layer
        if mean.shape != (model.config.hidden_size,) or std.shape != mean.shape:
            raise ValueError(f"stats shape {tuple(mean.shape)} does not match hidden size {model.config.hidden_size}")
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, stats_path: str | os.PathLike,
                        layer: int = IDX_LAYER) -> "SemanticEncoder":
        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

        model_dir = os.fspath(model_dir)
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(f"{model_dir}: not a local w2v-BERT directory (config.json missing)")
        fe = SeamlessM4TFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        # transformers only warns about missing or unexpected keys (and re-initialises them): load
        # with its report and refuse any problem in the part of the model that we run
        model, info = Wav2Vec2BertModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32,
                                                        output_loading_info=True, ignore_mismatched_sizes=True)
        check_loaded(info, weights_file(model_dir), layer)
        mean, std = load_w2v_stats(stats_path)
        return cls(model, fe, mean, std, layer)

    def features(self, wav_16k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [1, N] or [N] at 16 kHz -> (input_features [1, T, 160], attention_mask [1, T])."""
        wav = wav_16k.detach().reshape(-1).cpu().numpy().astype(np.float32, copy=False)
        if wav.shape[0] < 400:
            raise ValueError(f"w2v-BERT needs at least 400 samples (25 ms) at 16 kHz, got {wav.shape[0]}")
        out = self.feature_extractor(wav, sampling_rate=16000, return_tensors="pt")
        dev = self.mean.device
        return out["input_features"].to(dev), out["attention_mask"].to(dev)

    @torch.no_grad()
    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # input_features [B, T, 160], attention_mask [B, T] -> normalised features [B, T, hidden]
        out = self.model(input_features=input_features.to(self.model.dtype), attention_mask=attention_mask,
                         output_hidden_states=True)
        feat = out.hidden_states[self.layer].float()
        return (feat - self.mean) / self.std

    @torch.no_grad()
    def encode(self, wav_16k: torch.Tensor) -> torch.Tensor:
        """One 16 kHz clip -> [1, T, hidden] (T ~ 50 per second; 15 s -> 749)."""
        return self(*self.features(wav_16k))
