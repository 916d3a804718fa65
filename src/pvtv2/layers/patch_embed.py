"""Patch embedding: the stem of every PVTv2 stage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """Zero-padded strided convolution followed by LayerNorm.

    PVTv2 (paper Sec. 3.1) uses kernel ``2S - 1``, stride ``S`` and padding ``S - 1``
    (7/4/3 into stage 1, 3/2/1 between stages), so neighbouring patches overlap and
    odd sizes round *up*: ``H_out = ceil(H / S)``.

    With ``overlap=False`` it becomes PVTv1's non-overlapping embedding (kernel =
    stride = ``S``, no padding) for the paper's ablation; the input is zero-padded on
    the right/bottom to a multiple of ``S`` so sizes round up the same way.

    Input ``(B, C_in, H, W)``; output tokens ``(B, H_out * W_out, C)`` and ``(H_out, W_out)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: int, *, overlap: bool = True, norm_eps: float = 1e-5):
        super().__init__()
        self.stride = stride
        self.overlap = overlap
        kernel = 2 * stride - 1 if overlap else stride
        # Official checkpoints store this conv as ``proj`` and the norm as ``norm``.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=kernel // 2 if overlap else 0)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if not self.overlap:
            pad_h = (-x.shape[-2]) % self.stride
            pad_w = (-x.shape[-1]) % self.stride
            # Tracers and exporters keep H and W symbolic: testing the pads would specialise them.
            if torch.jit.is_tracing() or torch.compiler.is_compiling() or pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        H, W = x.shape[-2], x.shape[-1]
        # (B, C, H, W) -> (B, N, C); a view when the conv returns channels-last memory.
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x), H, W
