"""How torch's CUDA backends are set for a command: TF32 and determinism, decided once here.

:func:`backend_settings` is the decision (a pure function of the device and two flags, so it is
tested on the CPU); :func:`using_backends` applies it for the length of a ``with`` block and puts
the previous settings back afterwards, so that calling ``train()`` from Python leaves the
process as it found it.

* TF32 (``--tf32``, on by default): fp32 matrix products and convolutions on CUDA run on the
  tensor cores with a 10-bit mantissa (``torch.set_float32_matmul_precision('high')`` and
  cuDNN's ``allow_tf32``). timm and torchvision's reference scripts train this way; the CPU is
  never affected. ``--no-tf32`` keeps full fp32 products.
* ``--deterministic``: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN's
  autotuner off and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS reads it when it starts, so it
  is set before the model first touches the GPU). ``warn_only``: CUDA has no deterministic
  backward for bilinear upsampling or adaptive average pooling (the segmentation head, the
  ``_li`` variants); those ops warn instead of stopping the run and stay nondeterministic.
  torchvision's RoI Align switches to a deterministic implementation by itself.

:func:`adamw_options` picks the AdamW implementation per device: on the CPU torch's default is a
loop over the parameters (6-7x slower than the fused kernel: 90 against 13 ms a step for a
Mask R-CNN on PVTv2-b0, one thread); CUDA keeps torch's default (multi-tensor ``foreach``).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

#: cuBLAS' setting for reproducible results (documented by PyTorch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class BackendSettings:
    """What :func:`using_backends` sets: fp32 matmul precision (``highest`` or ``high``: TF32),
    cuDNN TF32, cuDNN's autotuner, deterministic algorithms (``None``: leave as they are)."""

    matmul_precision: str | None = None
    cudnn_tf32: bool | None = None
    cudnn_benchmark: bool | None = None
    deterministic: bool | None = None


def backend_settings(device: torch.device | str, *, tf32: bool = True, deterministic: bool = False) -> BackendSettings:
    """The settings for a command on ``device``: TF32 on CUDA unless ``tf32`` is off (the CPU's
    settings are left alone), and, with ``deterministic``, deterministic algorithms on any device."""
    on_cuda = torch.device(device).type == "cuda"
    precision = ("high" if tf32 else "highest") if on_cuda else None
    return BackendSettings(matmul_precision=precision, cudnn_tf32=tf32 if on_cuda else None,
                           cudnn_benchmark=False if deterministic else None,
                           deterministic=True if deterministic else None)


@contextlib.contextmanager
def using_backends(settings: BackendSettings) -> Iterator[BackendSettings]:
    """Apply ``settings`` inside the block and restore the previous ones after it."""
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if settings.matmul_precision is not None:
            torch.set_float32_matmul_precision(settings.matmul_precision)
        if settings.cudnn_tf32 is not None:
            torch.backends.cudnn.allow_tf32 = settings.cudnn_tf32
        if settings.cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        if settings.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield settings
    finally:
        precision, cudnn_tf32, benchmark, det, warn_only = before
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cudnn.benchmark = benchmark
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def adamw_options(device: torch.device | str) -> dict[str, bool]:
    """Keyword arguments for ``torch.optim.AdamW`` on ``device``: ``fused=True`` on the CPU (one
    kernel over all parameters, the same update up to rounding), nothing elsewhere (CUDA keeps
    torch's default, the one every GPU measurement of this package was taken with)."""
    return {"fused": True} if torch.device(device).type == "cpu" else {}
