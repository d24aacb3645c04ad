"""Conditional flow matching: Euler ODE solve with classifier-free guidance."""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol, TypeVar

import torch
from torch import nn

from .config import S2MelConfig
from .dit import DiT


T = TypeVar("T")


class CancelHook(Protocol):
    def raise_if_cancelled(self) -> None: ...


class CFM(nn.Module):
    """Holds the DiT estimator (checkpoint keys ``estimator.*``) and integrates the flow."""

    def __init__(self, cfg: S2MelConfig):
        super().__init__()
        self.n_mels = cfg.n_mels
        self.estimator = DiT(cfg)
        self.velocity = self.estimator.forward  # what solve() calls; compile_estimator() swaps it

    def compile_estimator(self) -> None:
        """Run the estimator through ``torch.compile`` (Inductor: fused kernels, far fewer launches).

        Compiled once with symbolic batch and length (``dynamic=True``), so segments of any length
        and any batch size reuse that compilation; the first call pays for it (seconds to a minute),
        which is why the engine's warm-up makes that call. Weights stay the module's own, so the
        state dict and ``load_state_dict`` are unchanged. A plain function attribute, not a module:
        the compiled wrapper must not appear in the state dict.
        """
        self.velocity = torch.compile(self.estimator.forward, dynamic=True)

    @torch.no_grad()
    def solve(self, *args, **kwargs) -> torch.Tensor:
        """``solve_steps`` run to the end: the final x [B, n_mels, T]."""
        return run_to_end(self.solve_steps(*args, **kwargs))

    @torch.no_grad()
    def solve_steps(
        self,
        noise: torch.Tensor,  # [B, n_mels, T] N(0,1) (temperature 1, as official)
        mu: torch.Tensor,  # [B, T, content_dim] content condition, prompt part first
        lengths: torch.Tensor,  # [B] valid frames per item (prompt + generated)
        prompt: torch.Tensor,  # [B, n_mels, Tp] reference mel, item i valid on its first prompt_lens[i] frames
        prompt_lens: torch.Tensor,  # [B]
        style: torch.Tensor,  # [B, style_dim]
        steps: int,
        cfg_rate: float,
        cancel: CancelHook | None = None,
    ) -> Generator[None, None, torch.Tensor]:  # returns [B, n_mels, T] final x; prompt and padding frames are 0
        """Euler steps over t_span = linspace(0, 1, steps + 1) (official ``solve_euler``), one per
        ``next()``: a caller can interleave other work between steps (the continuous batch runs
        GPT decode steps there). The generator's return value is the final x.

        The prompt frames of x are zeroed before the loop and after every step, the model
        sees the reference mel there through ``prompt_x``. With cfg_rate > 0 each step runs
        the estimator once on a doubled batch (conditioned, and with prompt/style/content
        zeroed) and uses v = (1 + r) * v_cond - r * v_uncond.
        """
        B, _, T = noise.shape
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        est_dtype = self.estimator.cond_projection.weight.dtype
        frames = torch.arange(T, device=noise.device)[None, None, :]
        keep = (frames >= prompt_lens[:, None, None]) & (frames < lengths[:, None, None])  # [B, 1, T]
        in_prompt = frames < prompt_lens[:, None, None]
        prompt_x = torch.zeros_like(noise)
        Tp = min(prompt.size(-1), T)
        prompt_x[..., :Tp] = torch.where(in_prompt[..., :Tp], prompt[..., :Tp], 0.0)
        x = torch.where(keep, noise, 0.0)

        if cfg_rate > 0:
            prompt_in = torch.cat([prompt_x, torch.zeros_like(prompt_x)])
            style_in = torch.cat([style, torch.zeros_like(style)])
            mu_in = torch.cat([mu, torch.zeros_like(mu)])
            lens_in = torch.cat([lengths, lengths])
        else:
            prompt_in, style_in, mu_in, lens_in = prompt_x, style, mu, lengths
        prompt_in, style_in, mu_in = (a.to(est_dtype) for a in (prompt_in, style_in, mu_in))

        padded = int(lengths.min()) < T  # once here, not a device sync in every step
        t_span = torch.linspace(0, 1, steps + 1, device=noise.device)
        t = t_span[0]
        for step in range(1, steps + 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            dt = t_span[step] - t_span[step - 1]
            if cfg_rate > 0:
                v = self.velocity(
                    torch.cat([x, x]).to(est_dtype), prompt_in, lens_in, t.expand(2 * B), style_in, mu_in, padded
                ).float()
                v_cond, v_uncond = v.chunk(2)
                v = (1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond
            else:
                v = self.velocity(x.to(est_dtype), prompt_in, lens_in, t.expand(B), style_in, mu_in, padded).float()
            x = x + dt * v
            t = t + dt  # accumulated like the official loop, not read from t_span
            x = torch.where(keep, x, 0.0)
            if step < steps:
                yield
        return x


def run_to_end(steps: Generator[None, None, T]) -> T:
    """Drive a step generator to its end and return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
