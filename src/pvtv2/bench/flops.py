"""Parameters and FLOPs in the paper's convention.

The paper's numbers come from ``classification/get_flops.py`` of whai362/PVT: mmcv's
counter, which counts *multiply-adds* for convolutions (plus one per output for the bias)
and linear layers (no bias), one op per element for ReLU and pooling and two per element for
affine LayerNorm, nothing for GELU; plus the attention matmuls that hooks cannot see,
``2 * N * N' * C`` per attention (``QK^T`` and ``AV``), with ``N' = (H/R)(W/R)`` for SRA
and 49 for linear SRA. We count the same way with forward hooks on a real forward pass.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..layers import LinearSRA, SpatialReductionAttention
from ..registry import REGISTRY

#: The paper's GFLOPs at 224x224, per variant (from :mod:`pvtv2.registry`).
PAPER_GFLOPS = {name: v.paper_gflops for name, v in REGISTRY.items()}


def _attention_macs(module: SpatialReductionAttention, x: torch.Tensor, H: int, W: int) -> int:
    N, C = x.shape[1], x.shape[2]
    if isinstance(module, LinearSRA):
        kv = module.pool_size ** 2
    elif module.sr_ratio > 1:
        kv = (H // module.sr_ratio) * (W // module.sr_ratio)
    else:
        kv = N
    return 2 * N * kv * C


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> dict:
    """Count one image's forward pass. Returns ``{"params", "flops", "by_kind"}`` (flops = multiply-adds)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    totals: dict[str, int] = defaultdict(int)

    def hook(m: nn.Module, inputs, output) -> None:
        x = inputs[0]
        if isinstance(m, nn.Conv2d):
            per_out = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            n_out = output.numel()
            totals["conv"] += n_out * per_out + (n_out if m.bias is not None else 0)
        elif isinstance(m, nn.Linear):
            totals["linear"] += x.numel() * m.out_features
        elif isinstance(m, nn.LayerNorm):
            totals["norm"] += x.numel() * (2 if m.elementwise_affine else 1)
        elif isinstance(m, (nn.ReLU, nn.AdaptiveAvgPool2d)):
            totals["act_pool"] += x.numel()
        elif isinstance(m, SpatialReductionAttention):
            totals["attention"] += _attention_macs(m, x, int(inputs[1]), int(inputs[2]))

    kinds = (nn.Conv2d, nn.Linear, nn.LayerNorm, nn.ReLU, nn.AdaptiveAvgPool2d, SpatialReductionAttention)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, h, w))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()), "flops": int(sum(totals.values())),
            "by_kind": dict(totals)}
