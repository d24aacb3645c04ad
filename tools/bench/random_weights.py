"""Random-weight models for the benchmarks: every network of IndexTTS-2 or IndexTTS-2.5 at full
size (the official configs) or at a tiny size, built directly on the device, no checkpoint.

Speed does not depend on the weight values, so the full-size builds measure what the real
checkpoints would cost. Shared by ``realtime-tts bench`` (pipeline.py) and the serving benchmark
(serve.py); tools/ is not a package, so they load this file by path.

IndexTTS-2.5 also needs its text vocabulary (the family maps each segment's language tag to the
GPT's language row, the serving benchmark tokenises real sentences): the full size uses the
released vocabulary kept as a test fixture (58,836 ranks, so every id is the real one), the tiny
size the byte-level vocabulary of the tiny checkpoint recipe (256 ranks). Its Japanese word
splitting loads only where fugashi and unidic-lite are installed (``BenchFrontEnd``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from realtime_tts.text.multilingual import MultilingualFrontEnd

log = logging.getLogger("realtime_tts.bench")

ROOT = Path(__file__).resolve().parents[2]
VOCAB_25 = ROOT / "tests" / "fixtures" / "indextts25" / "multilingual_zh_ja_yue_char_del.tiktoken"
TINY_VOCAB_25 = ROOT / "tests" / "fixtures" / "indextts25" / "tiny" / "static" / VOCAB_25.name
TINY_WIDTH = 32  # w2v-BERT width of the tiny builds (the full one is 1024)


def _w2v_config(tiny: bool):
    from transformers import Wav2Vec2BertConfig

    if not tiny:
        return Wav2Vec2BertConfig()
    # 18 layers: the pipeline reads layer 17
    return Wav2Vec2BertConfig(hidden_size=TINY_WIDTH, num_hidden_layers=18, num_attention_heads=2,
                              intermediate_size=32, output_hidden_size=TINY_WIDTH, conv_depthwise_kernel_size=5,
                              left_max_position_embeddings=8, right_max_position_embeddings=2)


def _semantic_encoder(w2v_cfg):
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

    from realtime_tts.model.w2vbert import SemanticEncoder

    return SemanticEncoder(Wav2Vec2BertModel(w2v_cfg), SeamlessM4TFeatureExtractor(),
                           torch.zeros(w2v_cfg.hidden_size), torch.ones(w2v_cfg.hidden_size))


def _tiny_campplus_kw(style_dim: int) -> dict:
    return dict(embedding_size=style_dim, growth_rate=4, bn_size=2, init_channels=8)


def random_models(device: torch.device, tiny: bool):
    """IndexTTS-2: every network at full (or tiny) size with random weights, on ``device``."""
    from realtime_tts.engine.indextts2_load import MelParams, Models
    from realtime_tts.model.bigvgan import BigVGAN, BigVGANConfig
    from realtime_tts.model.campplus import CAMPPlus
    from realtime_tts.model.codec import CodecConfig, SemanticCodec
    from realtime_tts.model.emotion import EmotionMatrix
    from realtime_tts.model.gpt import ConformerConfig, GPTConfig, UnifiedVoice
    from realtime_tts.model.s2mel import S2Mel, S2MelConfig

    w2v_cfg = _w2v_config(tiny)
    if tiny:
        width = TINY_WIDTH
        g = GPTConfig.tiny()
        gcfg = GPTConfig(**{**g.__dict__,
                            "condition_module": ConformerConfig(16, 32, 2, 2, 2.0, input_size=width),
                            "emo_condition_module": ConformerConfig(16, 24, 1, 2, 0.1, input_size=width)})
        scfg = S2MelConfig(**{**S2MelConfig.tiny().__dict__, "n_mels": 80, "gpt_dim": gcfg.model_dim,
                              "semantic_dim": width})
        ccfg = CodecConfig(codebook_size=gcfg.start_mel_token, hidden_size=width, codebook_dim=8, vocos_dim=16,
                           vocos_intermediate_dim=32, vocos_num_layers=2)
        vcfg = BigVGANConfig.tiny()
        campplus_kw = _tiny_campplus_kw(scfg.style_dim)
    else:
        gcfg, scfg, ccfg, vcfg, campplus_kw = GPTConfig(), S2MelConfig(), CodecConfig(), BigVGANConfig(), {}
    with torch.device(device):
        return Models(
            gpt=UnifiedVoice(gcfg), s2mel=S2Mel(scfg), codec=SemanticCodec(ccfg), w2v=_semantic_encoder(w2v_cfg),
            campplus=CAMPPlus(**campplus_kw), vocoder=BigVGAN(vcfg),
            emotion=EmotionMatrix(torch.randn(73, scfg.style_dim), torch.randn(73, gcfg.model_dim)),
            tokenizer=None, mel=MelParams(n_mels=scfg.n_mels),
        )


def _configs25(tiny: bool):
    """(GPT, codec, S2M, BigVGAN configs, CAMPPlus kwargs) of IndexTTS-2.5: the official
    dimensions (``config_v2_5.yaml``: the IndexTTS-2 ones, 60,509 text tokens, no S2M
    ``gpt_layer``) or tiny ones with every sub-module."""
    from realtime_tts.model.bigvgan import BigVGANConfig
    from realtime_tts.model.enhanced_codec import EnhancedCodecConfig
    from realtime_tts.model.gpt import ConformerConfig, GPT25Config
    from realtime_tts.model.s2mel import S2MelConfig

    if not tiny:
        return GPT25Config.full(), EnhancedCodecConfig(), S2MelConfig(gpt_layer_dims=None), BigVGANConfig(), {}
    width = TINY_WIDTH
    scfg = S2MelConfig(**{**S2MelConfig.tiny().__dict__, "n_mels": 80, "gpt_layer_dims": None, "semantic_dim": width})
    gcfg = GPT25Config(model_dim=64, layers=2, heads=4, max_mel_tokens=120, max_text_tokens=60,
                       number_text_tokens=256 + 1673,  # the tiny vocabulary: 256 byte ranks + the specials
                       number_mel_codes=130, start_mel_token=128, stop_mel_token=129, style_dim=scfg.style_dim,
                       emo_condition_module=ConformerConfig(16, 24, 1, 2, 0.1, input_size=width))
    ccfg = EnhancedCodecConfig(codebook_size=gcfg.start_mel_token, hidden_size=width, codebook_dim=8, vocos_dim=16,
                               vocos_intermediate_dim=32, vocos_num_layers=2)
    return gcfg, ccfg, scfg, BigVGANConfig.tiny(), _tiny_campplus_kw(scfg.style_dim)


def random_models25(device: torch.device, tiny: bool):
    """IndexTTS-2.5: every network at full (or tiny) size with random weights, on ``device``
    (no Qwen emotion model: text emotion is not benchmarked)."""
    from realtime_tts.model.bigvgan import BigVGAN
    from realtime_tts.model.campplus import CAMPPlus
    from realtime_tts.model.emotion import EmotionMatrix
    from realtime_tts.model.enhanced_codec import EnhancedCodec
    from realtime_tts.model.gpt import UnifiedVoice25
    from realtime_tts.model.indextts25 import Models25
    from realtime_tts.model.s2mel import S2Mel

    gcfg, ccfg, scfg, vcfg, campplus_kw = _configs25(tiny)
    with torch.device(device):
        return Models25(
            gpt=UnifiedVoice25(gcfg), codec=EnhancedCodec(ccfg), s2mel=S2Mel(scfg),
            w2v=_semantic_encoder(_w2v_config(tiny)), campplus=CAMPPlus(**campplus_kw), vocoder=BigVGAN(vcfg),
            emotion=EmotionMatrix(torch.randn(73, scfg.style_dim), torch.randn(73, gcfg.model_dim)), qwen=None,
        )


class BenchFrontEnd(MultilingualFrontEnd):
    """The IndexTTS-2.5 front end of the random-weight benchmarks, which speak zh/en sentences and
    pre-tokenised ids only: where the Japanese packages are missing (a bare GPU image: the 48 MB
    unidic-lite wheel does not fit next to the other wheels a device call carries,
    tools/gpu/fetch_wheels.sh) it warns once and runs without them; Japanese text then raises
    the usual error. Everything else is the serving front end unchanged."""

    _japanese_error: str | None = None

    def load(self) -> None:
        if self._japanese_error is not None:
            return
        try:
            super().load()  # normalisers first, then MeCab
        except RuntimeError as e:
            self._japanese_error = str(e)
            log.warning("benchmark front end without Japanese word splitting: %s", e)

    def process(self, text: str, language: str) -> str:
        if language == "ja" and self._japanese is None:
            self.load()
            if self._japanese is None:
                raise RuntimeError(self._japanese_error)
        return super().process(text, language)


def random_family25(device: torch.device, dtype: torch.dtype, tiny: bool):
    """The IndexTTS-2.5 family on random weights, with its text front end on the vocabulary of
    that size (see the module doc); text normalisation loads on first use."""
    from realtime_tts.engine.indextts25 import IndexTTS25Family
    from realtime_tts.engine.indextts2_load import MelParams
    from realtime_tts.text.normalize import TextNormalizer

    models = random_models25(device, tiny)
    gcfg = models.gpt.cfg
    front = BenchFrontEnd(TINY_VOCAB_25 if tiny else VOCAB_25, TextNormalizer(),
                                 max_text_tokens=gcfg.max_text_tokens)
    if front.tokenizer.vocab_size > gcfg.text_vocab:  # a wrong pairing of vocabulary and config
        raise ValueError(f"{front.tokenizer.path}: {front.tokenizer.vocab_size} tokens for a GPT with "
                         f"{gcfg.text_vocab} text embeddings")
    return IndexTTS25Family(models, front, MelParams(n_mels=models.s2mel.cfg.n_mels), device=device, dtype=dtype)
