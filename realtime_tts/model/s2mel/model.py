"""S2Mel: GPT latents + semantic codes -> mel spectrogram (IndexTTS2 ``s2mel.pth``)."""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .cfm import CFM, CancelHook, run_to_end
from .checkpoint import CheckpointMismatch, fold_weight_norm, load_strict, strip_prefix
from .config import S2MelConfig
from .length_regulator import LengthRegulator

SUBMODELS = ("cfm", "length_regulator", "gpt_layer")  # IndexTTS-2; 2.5 has no gpt_layer


@dataclass
class PromptCondition:
    """Per-voice S2M conditioning (compute once per reference clip, reuse for every segment).

    A batch of voices is padded along time; ``lengths`` gives each item's mel frames.
    """

    cond: torch.Tensor  # [B, Tp, content_dim] regulator output on the reference semantics
    mel: torch.Tensor  # [B, n_mels, Tp] reference mel (22.05 kHz, hop 256)
    style: torch.Tensor  # [B, style_dim] CAMPPlus speaker style
    lengths: torch.Tensor  # [B] reference mel frames


def mel_frames_25(semantic_frames: int, duration_factor: float = 1.0) -> int:
    """IndexTTS-2.5: mel frames to generate for ``semantic_frames`` 50 Hz codec frames (2 per code).

    Official: ``int(S_infer.shape[1] * 1.72 * duration_factor)``, a Python double product truncated
    (not IndexTTS-2's float32 one: the two differ near whole numbers). ``duration_factor`` > 1
    slows speech down; the official code takes any value (its README suggests 0.5-2.0).
    """
    if not (math.isfinite(duration_factor) and duration_factor > 0):
        raise ValueError(f"duration_factor must be a positive finite number, got {duration_factor}")
    return max(1, int(semantic_frames * 1.72 * duration_factor))


def target_lengths(code_lens: torch.Tensor, frames_per_code: float = 1.72, speed: float = 1.0) -> torch.Tensor:
    """IndexTTS2's mel frames to generate for ``code_lens`` semantic codes (50 Hz).

    Official: ``(code_lens * 1.72).long()`` (float32 product, truncated). The v2 weights have
    no native speed control; ``speed`` (> 0, checked where requests enter) divides the length (the
    IndexTTS-2.5 duration-factor idea applied to v2 weights, an extrapolation). speed == 1.0 gives
    exactly the official length. The engine's model family calls this once per segment piece and
    hands the result to ``S2Mel.generate_steps``.
    """
    n = code_lens.to(torch.float32) * frames_per_code
    if speed != 1.0:
        n = n / speed
    return n.long().clamp(min=1)


class S2Mel(nn.Module):
    """Semantic-to-mel model. State-dict layout = ``s2mel.pth["net"]``: sub-modules ``cfm``,
    ``length_regulator`` and, for IndexTTS-2 (``cfg.gpt_layer_dims`` set), ``gpt_layer``
    (weight-norm pairs folded at load). IndexTTS-2.5 builds no ``gpt_layer``.

    Use: ``prompt_condition`` once per reference voice (cacheable), then per text segment
    ``semantic(code_emb, latent)`` and ``generate(...)`` -> mel for the vocoder. How many mel
    frames a segment gets is the caller's decision (``target_lens``; IndexTTS2: ``target_lengths``). Runs in float32
    like the official code (S2M autocast is off there); the estimator alone may be cast.
    """

    def __init__(self, cfg: S2MelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or S2MelConfig()
        self.cfm = CFM(cfg)
        self.length_regulator = LengthRegulator(cfg)
        self.submodels = SUBMODELS if cfg.gpt_layer_dims is not None else SUBMODELS[:2]
        if cfg.gpt_layer_dims is not None:
            d1, d2 = cfg.gpt_layer_dims
            self.gpt_layer = nn.Sequential(nn.Linear(cfg.gpt_dim, d1), nn.Linear(d1, d2), nn.Linear(d2, cfg.semantic_dim))

    # ----- loading ---------------------------------------------------------------
    def load_official(self, net: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Load the ``net`` dict of s2mel.pth strictly (each sub-dict must match exactly).

        Only this model's sub-modules are read; a caller that accepts other entries (2.5 files
        carry an unused ``gpt_layer``) checks them itself."""
        absent = [k for k in self.submodels if k not in net]
        if absent:
            raise CheckpointMismatch(f"s2mel checkpoint: 'net' lacks {absent} (has {sorted(net)})")
        for name in self.submodels:
            state = fold_weight_norm(strip_prefix(net[name]))
            load_strict(getattr(self, name), state, f"s2mel net.{name}")

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, cfg: S2MelConfig | None = None, device: str | torch.device = "cpu"
    ) -> "S2Mel":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, Mapping) or "net" not in ckpt:
            raise CheckpointMismatch(f"{path}: expected a dict with a 'net' entry (IndexTTS2 s2mel.pth)")
        model = cls(cfg)
        model.load_official(ckpt["net"])
        return model.to(device).eval()

    # ----- inference -------------------------------------------------------------
    @torch.no_grad()
    def semantic(self, code_emb: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """S_infer = codec embedding of the codes + gpt_layer(GPT latent): [B, L, semantic_dim]
        (IndexTTS-2 only)."""
        return code_emb + self.gpt_layer(latent)

    @torch.no_grad()
    def prompt_condition(
        self,
        s_ref: torch.Tensor,  # [B, Ls, semantic_dim] codec embedding of the reference (50 Hz)
        ref_mel: torch.Tensor,  # [B, n_mels, Tp]
        style: torch.Tensor,  # [B, style_dim]
        ref_lens: torch.Tensor | None = None,  # [B] mel frames (default: all Tp)
        s_ref_lens: torch.Tensor | None = None,  # [B] valid s_ref frames (default: all Ls)
    ) -> PromptCondition:
        B, _, Tp = ref_mel.shape
        if ref_lens is None:
            ref_lens = torch.full((B,), Tp, dtype=torch.long, device=ref_mel.device)
        cond = self.length_regulator(s_ref, ref_lens, s_ref_lens)
        return PromptCondition(cond=cond, mel=ref_mel, style=style, lengths=ref_lens)

    @torch.no_grad()
    def generate(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """``generate_steps`` run to the end."""
        return run_to_end(self.generate_steps(*args, **kwargs))

    @torch.no_grad()
    def generate_steps(
        self,
        s_infer: torch.Tensor,  # [B, L, semantic_dim] from ``semantic`` (50 Hz)
        code_lens: torch.Tensor,  # [B] valid frames of s_infer per item
        prompt: PromptCondition,
        *,
        target_lens: torch.Tensor,  # [B] mel frames to generate per item
        steps: int | None = None,
        cfg_rate: float | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        cancel: CancelHook | None = None,
    ) -> Generator[None, None, tuple[torch.Tensor, torch.Tensor]]:
        """Mel for each item's generated part: ([B, n_mels, max(gen_lens)], gen_lens [B]), as the
        return value of a generator that pauses after every CFM step but the last.

        Item i is laid out as [its prompt frames ; its generated frames] from frame 0, then
        padded to the batch's longest. ``noise`` ([B, n_mels, >= max total]) is read in that
        layout; without it each item draws randn([1, n_mels, total_i]) in turn from
        ``generator`` (one item seeded like the official torch.randn call).

        ``code_lens`` counts the valid ``s_infer`` frames; ``target_lens`` the mel frames to
        generate (IndexTTS-2: ``target_lengths``, IndexTTS-2.5: ``mel_frames_25``).
        """
        cfg = self.cfg
        B = s_infer.size(0)
        if prompt.cond.size(0) != B or code_lens.shape != (B,) or target_lens.shape != (B,):
            raise ValueError(f"batch mismatch: {B} segments, {prompt.cond.size(0)} prompts, code_lens "
                             f"{tuple(code_lens.shape)}, target_lens {tuple(target_lens.shape)}")
        p_lens = prompt.lengths
        p_list = p_lens.tolist()
        if max(p_list) > min(prompt.cond.size(1), prompt.mel.size(-1)) or min(p_list) < 1:
            raise ValueError(
                f"prompt lengths {p_list} do not fit cond {tuple(prompt.cond.shape)} / mel {tuple(prompt.mel.shape)}"
            )
        if int(target_lens.min()) < 1:
            raise ValueError(f"target_lens must be positive frame counts, got {target_lens.tolist()}")
        gen_lens = target_lens.to(device=s_infer.device, dtype=torch.long)
        cond = self.length_regulator(s_infer, gen_lens, code_lens)  # [B, Tg, C]
        g_list = gen_lens.tolist()
        totals = p_lens + gen_lens
        T = max(p + g for p, g in zip(p_list, g_list))
        if T > cfg.max_positions:
            raise ValueError(f"prompt + segment = {T} mel frames, over the model's {cfg.max_positions}")

        # [prompt_i ; cond_i] per item, starting at frame 0 (positions 0.. as official)
        mu = cond.new_zeros(B, T, cond.size(-1))
        for i, (p, g) in enumerate(zip(p_list, g_list)):
            mu[i, :p] = prompt.cond[i, :p]
            mu[i, p : p + g] = cond[i, :g]

        if noise is None:
            noise = torch.zeros(B, cfg.n_mels, T, device=s_infer.device)
            draw_on = generator.device if generator is not None else s_infer.device
            for i, (p, g) in enumerate(zip(p_list, g_list)):
                z = torch.randn(1, cfg.n_mels, p + g, generator=generator, device=draw_on)
                noise[i, :, : p + g] = z[0].to(s_infer.device)
        elif noise.size(0) != B or noise.size(1) != cfg.n_mels or noise.size(2) < T:
            raise ValueError(f"noise must be [{B}, {cfg.n_mels}, >={T}], got {tuple(noise.shape)}")
        x = yield from self.cfm.solve_steps(
            noise[:, :, :T].float(), mu, totals, prompt.mel, p_lens, prompt.style,
            cfg.steps if steps is None else steps, cfg.cfg_rate if cfg_rate is None else cfg_rate, cancel,
        )
        mel = x.new_zeros(B, cfg.n_mels, max(g_list))
        for i, (p, g) in enumerate(zip(p_list, g_list)):
            mel[i, :, :g] = x[i, :, p : p + g]
        return mel, gen_lens
