"""Hyper-parameters of the text-to-semantic GPTs (official class ``UnifiedVoice`` v2, as used by
IndexTTS-2 and, in its ``campplus`` speaker mode, by IndexTTS-2.5).

Values come from the ``gpt`` section of the official ``config.yaml`` plus the constructor
defaults of the official class that the config does not override.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConformerConfig:
    """One conditioning conformer (WeNet style, conv2d2 subsampling, rel-pos attention)."""

    output_size: int = 512
    linear_units: int = 2048
    attention_heads: int = 8
    num_blocks: int = 6
    perceiver_mult: float = 2.0  # feed-forward multiplier of the perceiver that follows
    input_size: int = 1024  # w2v-BERT feature width, hard-coded upstream
    kernel_size: int = 15  # depthwise conv of the conv module
    pe_len: int = 5000  # rows of the stored sinusoid table ``embed.pos_enc.pe``

    def __post_init__(self) -> None:
        if self.output_size % self.attention_heads:
            raise ValueError("conformer output_size must be a multiple of attention_heads")
        if self.kernel_size % 2 != 1:
            raise ValueError("conformer kernel_size must be odd")


@dataclass(frozen=True)
class CodeGPTConfig:
    """What every UnifiedVoice v2 variant shares: the GPT-2 body, the text/mel tables and heads,
    and the emotion path (conformer + 1-latent perceiver)."""

    model_dim: int = 1280
    layers: int = 24
    heads: int = 20
    max_mel_tokens: int = 1815
    max_text_tokens: int = 600
    number_text_tokens: int = 12000
    number_mel_codes: int = 8194
    start_mel_token: int = 8192
    stop_mel_token: int = 8193
    start_text_token: int = 0
    stop_text_token: int = 1
    emo_condition_module: ConformerConfig = field(
        default_factory=lambda: ConformerConfig(512, 1024, 4, 4, 2.0)
    )
    emo_dim: int = 1024  # width of the emotion perceiver, hard-coded upstream
    perceiver_dim_head: int = 64
    perceiver_depth: int = 2
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.model_dim % self.heads:
            raise ValueError("model_dim must be a multiple of heads")
        if not (0 <= self.start_mel_token < self.number_mel_codes
                and 0 <= self.stop_mel_token < self.number_mel_codes):
            raise ValueError("start/stop mel tokens must lie inside number_mel_codes")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.heads

    @property
    def mel_positions(self) -> int:
        # rows of mel_pos_embedding: codes + start + stop + one conditioning input
        return self.max_mel_tokens + 3

    @property
    def text_positions(self) -> int:
        # rows of text_pos_embedding: text + start + stop
        return self.max_text_tokens + 2

    @property
    def text_vocab(self) -> int:
        return self.number_text_tokens + 1


@dataclass(frozen=True)
class GPTConfig(CodeGPTConfig):
    """IndexTTS-2: speaker conformer + 32-latent perceiver, two speed slots."""

    condition_num_latent: int = 32
    condition_module: ConformerConfig = field(
        default_factory=lambda: ConformerConfig(512, 2048, 8, 6, 2.0)
    )

    @property
    def cond_len(self) -> int:
        # speaker latents + two speed embeddings
        return self.condition_num_latent + 2

    @classmethod
    def full(cls) -> "GPTConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "GPTConfig":
        """A few-MB model with every sub-module of the real one (used by golden tests).

        Conformer inputs stay 1024 wide and the emotion perceiver stays 1024 wide because the
        official code hard-codes both; the small ``perceiver_mult`` keeps its FFN small.
        """
        return cls(
            model_dim=64,
            layers=2,
            heads=4,
            max_mel_tokens=120,
            max_text_tokens=60,
            number_text_tokens=400,
            number_mel_codes=130,
            start_mel_token=128,
            stop_mel_token=129,
            condition_num_latent=32,
            condition_module=ConformerConfig(16, 32, 2, 2, 2.0),
            emo_condition_module=ConformerConfig(16, 24, 1, 2, 0.1),
        )


# Rows of lang_embedding: the 106 language names of the official tokenizer plus one spare row.
LANGUAGE_ROWS = 107


@dataclass(frozen=True)
class GPT25Config(CodeGPTConfig):
    """IndexTTS-2.5 (``spk_cond_mode="campplus"``): a projected CAMPPlus style replaces the speaker
    conformer/perceiver, a learned language embedding joins every text position, and the
    conditioning is [style + emotion, 0, 0]."""

    number_text_tokens: int = 60509  # 58836 tiktoken ranks + 1673 special tokens
    style_dim: int = 192  # CAMPPlus embedding, hard-coded upstream (Linear(192, model_dim))
    languages: int = LANGUAGE_ROWS

    @property
    def cond_len(self) -> int:
        # projected style (+ emotion) and two zero vectors
        return 3

    @classmethod
    def full(cls) -> "GPT25Config":
        return cls()
