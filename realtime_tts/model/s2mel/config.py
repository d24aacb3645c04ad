"""Hyper-parameters of the IndexTTS2 semantic-to-mel model (the ``s2mel`` section)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _round_up(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


@dataclass(frozen=True)
class S2MelConfig:
    # mel spectrogram
    n_mels: int = 80
    # gpt_layer: GPT latent -> semantic-embedding space (three Linears, no activation);
    # None: no gpt_layer (IndexTTS-2.5)
    gpt_dim: int = 1280
    gpt_layer_dims: tuple[int, int] | None = (256, 128)
    # length regulator
    semantic_dim: int = 1024  # regulator input width (= semantic codec embedding width)
    content_dim: int = 512  # regulator width = DiT content width
    regulator_convs: int = 4  # len(sampling_ratios)
    regulator_codebook_size: int = 2048  # stored but unused embedding table
    # DiT estimator
    hidden_dim: int = 512
    num_heads: int = 8
    depth: int = 13
    style_dim: int = 192
    dit_codebook_size: int = 1024  # stored but unused cond_embedder table
    max_positions: int = 16384  # hard-coded in the official DiT (input_pos, RoPE table)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    # WaveNet head
    wavenet_hidden: int = 512
    wavenet_layers: int = 8
    wavenet_kernel: int = 5
    wavenet_dilation_rate: int = 1
    # inference defaults of infer_v2
    steps: int = 25
    cfg_rate: float = 0.7
    frames_per_code: float = 1.72  # 22050/256 mel fps over 50 code fps, truncated product

    def __post_init__(self) -> None:
        # the official final layer feeds the DiT time embedding into a wavenet-width Linear
        if self.wavenet_hidden != self.hidden_dim:
            raise ValueError("wavenet_hidden must equal hidden_dim (official FinalLayer wiring)")
        if self.hidden_dim % self.num_heads:
            raise ValueError("hidden_dim must be a multiple of num_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        # gpt-fast rule: 2/3 of 4*dim, rounded up to a multiple of 256
        return _round_up(int(2 * 4 * self.hidden_dim / 3), 256)

    @classmethod
    def from_section(cls, s2mel: Mapping[str, Any], gpt_dim: int = 1280,
                     gpt_layer_dims: tuple[int, int] | None = None) -> "S2MelConfig":
        """From the ``s2mel`` section of an official config.yaml; ValueError naming the key."""

        def get(*path: str) -> Any:
            node: Any = s2mel
            for part in path:
                if not isinstance(node, Mapping) or part not in node:
                    raise ValueError(f"s2mel: missing key {'.'.join(path)!r}")
                node = node[part]
            return node

        def num(*path: str) -> int:
            value = get(*path)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"s2mel: key {'.'.join(path)!r} = {value!r} is not an integer")
            return value

        ratios = get("length_regulator", "sampling_ratios")
        if not isinstance(ratios, list) or not ratios:
            raise ValueError("s2mel: key 'length_regulator.sampling_ratios' must be a non-empty list")
        content = num("length_regulator", "channels")
        if num("DiT", "content_dim") != content:
            raise ValueError(f"s2mel: DiT.content_dim must equal length_regulator.channels ({content})")
        n_mels = num("DiT", "in_channels")
        if num("preprocess_params", "spect_params", "n_mels") != n_mels:
            raise ValueError("s2mel: DiT.in_channels must equal preprocess_params.spect_params.n_mels")
        return cls(
            n_mels=n_mels, gpt_dim=gpt_dim, gpt_layer_dims=gpt_layer_dims,
            semantic_dim=num("length_regulator", "in_channels"), content_dim=content,
            regulator_convs=len(ratios),
            regulator_codebook_size=num("length_regulator", "content_codebook_size"),
            hidden_dim=num("DiT", "hidden_dim"), num_heads=num("DiT", "num_heads"), depth=num("DiT", "depth"),
            style_dim=num("style_encoder", "dim"), dit_codebook_size=num("DiT", "content_codebook_size"),
            wavenet_hidden=num("wavenet", "hidden_dim"), wavenet_layers=num("wavenet", "num_layers"),
            wavenet_kernel=num("wavenet", "kernel_size"), wavenet_dilation_rate=num("wavenet", "dilation_rate"),
        )

    @classmethod
    def tiny(cls) -> "S2MelConfig":
        """Small random-weight model for golden tests (same structure, odd depth for the U-ViT skips)."""
        return cls(
            n_mels=12,
            gpt_dim=40,
            gpt_layer_dims=(16, 8),
            semantic_dim=24,
            content_dim=32,
            regulator_convs=2,
            regulator_codebook_size=4,
            hidden_dim=32,
            num_heads=2,
            depth=5,
            style_dim=8,
            dit_codebook_size=4,
            wavenet_hidden=32,
            wavenet_layers=3,
        )
