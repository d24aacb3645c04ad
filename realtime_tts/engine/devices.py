"""Where and in what precision an engine runs: device and dtype choice, and what to expect on CPU."""

from __future__ import annotations

import logging

import torch

from .base import EngineError

log = logging.getLogger(__name__)

CPU_RTF_2_CORES = 20.0  # measured whole-pipeline RTF on 2 cores, fp32 (reference notes, anchors 4.5)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available")
    return dev


def pick_dtype(device: torch.device, dtype: str | torch.dtype = "auto") -> torch.dtype:
    """bf16 on GPUs with native bf16 (sm80+), fp32 otherwise; explicit choices are honoured."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise EngineError(f"unknown dtype {dtype!r}; use auto, fp32, bf16 or fp16")
        chosen = names[dtype]
        if device.type == "cpu" and chosen != torch.float32:
            log.warning("%s on CPU is far slower than fp32 (no native kernels); consider --dtype fp32", dtype)
        return chosen
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float32


def expected_cpu_rtf(threads: int | None = None) -> float:
    """Rough whole-pipeline real-time factor on CPU, scaled from the 2-core measurement."""
    n = threads or torch.get_num_threads()
    return max(3.0, CPU_RTF_2_CORES * 2 / max(1, n))
