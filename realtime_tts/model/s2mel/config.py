"""Hyper-parameters of the IndexTTS2 semantic-to-mel model (the ``s2mel`` section)."""

from __future__ import annotations

from dataclasses import dataclass


def _round_up(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


@dataclass(frozen=True)
class S2MelConfig:
    # mel spectrogram
    n_mels: int = 80
    # gpt_layer: GPT latent -> semantic-embedding space (three Linears, no activation)
    gpt_dim: int = 1280
    gpt_layer_dims: tuple[int, int] = (256, 128)
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
