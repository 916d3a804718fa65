"""Mixed precision and the optimiser step, shared by every task's training loop."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn

from ..errors import ConfigError


def auto_amp(device_type: str, bf16_supported: bool) -> str:
    """What ``--amp auto`` means: bf16 on a GPU that has it (no loss scaling, the range of fp32),
    else fp16 on CUDA; none on the CPU (autocast there only pays on CPUs with AVX512-BF16)."""
    if device_type != "cuda":
        return "none"
    return "bf16" if bf16_supported else "fp16"


def resolve_amp(amp: str, device: torch.device) -> str:
    """``--amp`` for this device: ``auto`` -> :func:`auto_amp`; impossible choices raise a
    :class:`~pvtv2.errors.ConfigError` that says what to use instead."""
    if amp == "auto":
        return auto_amp(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 (or none)")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--amp bf16: this GPU does not support bfloat16; use --amp fp16")
    return amp


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 training needs (``None`` for bf16 and fp32, which do not underflow)."""
    return torch.amp.GradScaler(device.type) if amp == "fp16" else None


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a resolved ``amp`` (``none``, ``bf16``, ``fp16``)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[nn.Parameter], *,
                   scaler: torch.amp.GradScaler | None = None, clip_grad: float | None = 0.0) -> None:
    """Backward, optional gradient clipping (after unscaling under fp16) and the update."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, clip_grad)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad:
            nn.utils.clip_grad_norm_(parameters, clip_grad)
        optimizer.step()
