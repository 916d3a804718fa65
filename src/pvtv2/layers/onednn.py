"""oneDNN kernels for float32 inference on x86 CPUs (decided here, in one place).

PyTorch runs a float32 ``nn.Linear`` on the CPU through MKL's sgemm. On AMD CPUs MKL takes a
generic code path: on the 2-core AMD EPYC (AVX-512) these benchmarks run on, a
``(6272 x 128) @ (128 x 1024)`` product ran at 109 GFLOP/s through ``F.linear`` and 252 through
oneDNN's ``mkldnn::_linear_pointwise``, with the same error against a float64 product. That gap was most of what ONNX Runtime's own kernels
(MLAS) had over our eager model. oneDNN also fuses the GELU into the depth-wise convolution
before it (``mkldnn::_convolution_pointwise``), which saves one pass over the largest
activation of every block.

The kernels are taken only where they are known to pay and cannot change behaviour: eager
float32 inference on an x86 CPU (no gradients wanted, no autocast, no tracing, scripting,
compiling or exporting: those see the plain ops). Training, GPUs, other precisions and other
CPUs keep PyTorch's own kernels. ``model.set_onednn(False)`` switches them off (``True``: also
where this module would not choose them, on any CPU).
"""
from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import nn

#: Whether this build and machine have the kernels at all (x86 CPUs, PyTorch built with oneDNN).
AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


#: float32, and bfloat16 for a model cast with ``model.to(torch.bfloat16)`` (weights held in bf16).
_DTYPES = (torch.float32, torch.bfloat16)


def exporting() -> bool:
    """Whether an ONNX or ``torch.export`` export is tracing the code (``torch.compiler.is_exporting``
    where this torch has it)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.onnx.is_in_onnx_export() or (is_exporting is not None and is_exporting())


def eager() -> bool:
    """Whether the code runs eagerly: not traced, scripted, compiled or exported (every CPU fast path of this
    package is taken in eager mode only; tracers and compilers see the plain ops)."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() or exporting())


def onednn_pays(x: torch.Tensor, weight: torch.Tensor, setting: bool | None = None) -> bool:
    """Whether the op on input ``x`` with ``weight`` runs through oneDNN: ``setting`` (a module's
    ``onednn``) ``False`` never, else only in eager CPU inference in float32 or in bfloat16 with bf16
    weights (no autocast); ``None`` (the default) on x86 CPUs only."""
    if setting is False or not AVAILABLE or type(x) is not torch.Tensor or x.device.type != "cpu":
        return False  # GPUs leave here, before any other test; tracers pass tensor subclasses (FakeTensor...)
    if not eager():
        return False
    return (
        x.dtype in _DTYPES and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and (setting is True or _X86)
    )


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) that computes float32 CPU inference
    with oneDNN where :func:`onednn_pays`; ``onednn`` is the per-module setting."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.onednn: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_pays(x, self.weight, self.onednn):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def channels_last_pays(x: torch.Tensor, setting: bool | None = None, training: bool = False) -> bool:
    """Whether the convolutional necks and heads on the backbone's maps (the detectors' FPN and heads,
    Semantic FPN) take channels-last maps; ``setting`` (the neck's ``channels_last``) ``False`` never,
    else in CPU inference (not ``training``), in eager mode, where oneDNN's convolutions and
    PyTorch's bilinear upsampling are faster in that layout (Semantic FPN b2 at 512x512 on 2 cores: 1.2x
    in float32, 1.4x in bf16, the upsampling alone up to 100x on small maps; RetinaNet, FCOS, Mask R-CNN
    b0: 1.08x in float32, the same in bf16). Same numbers to float rounding; GPUs, training, tracing,
    compiling and exporting keep the default layout."""
    return setting is not False and not training and x.device.type == "cpu" and eager()


def depthwise_conv_gelu(x: torch.Tensor, conv: nn.Conv2d, setting: bool | None = None) -> torch.Tensor:
    """``GELU(conv(x))`` for the feed-forward's 3x3 depth-wise ``conv`` on a ``(B, C, H, W)`` map,
    fused by oneDNN where :func:`onednn_pays` and ``conv`` has no hooks (which must see it run)."""
    if onednn_pays(x, conv.weight, setting) and not (conv._forward_hooks or conv._forward_pre_hooks):
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                                                       list(conv.dilation), conv.groups, "gelu", [], "none")
    return F.gelu(conv(x))
