"""Mixed precision: the autocast context and, for fp16, the gradient scaler. Weights, optimizer and loss stay float32."""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Callable, ContextManager

import torch


def autocast_and_scaler(device: torch.device, amp: str) -> tuple[Callable[[], ContextManager], torch.amp.GradScaler | None]:
    """(autocast context factory, GradScaler or None) for TrainConfig.amp on `device`."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext, None
    if device.type == "cpu":
        if amp == "fp16":
            raise ValueError("--amp fp16 needs a CUDA GPU; on the CPU use --amp bf16 (or off).")
        return _cpu_bf16, None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return partial(torch.autocast, "cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return partial(torch.autocast, "cuda", dtype=torch.bfloat16), None


@contextlib.contextmanager
def _cpu_bf16():
    """bf16 autocast on the CPU, attention on SDPA's math path: its bf16 matmuls run on AMX, while the
    fused CPU flash-attention kernel's bf16 backward is slower than the whole float32 step it saves."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
        yield
