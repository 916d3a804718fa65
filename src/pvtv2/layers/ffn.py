"""Convolutional feed-forward network (paper Sec. 3.2)."""
from __future__ import annotations

import torch
from torch import nn


def tokens_to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``(B, N, C)`` tokens -> ``(B, C, H, W)`` map without copying.

    The result is a channels-last strided view, which the convolutions accept as is.
    """
    B, N, C = x.shape
    return x.view(B, H, W, C).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map -> ``(B, H * W, C)`` tokens (a view for channels-last maps)."""
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, C)


class DepthwiseConv(nn.Module):
    """3x3 depth-wise convolution applied to a token sequence laid out on an ``H x W`` grid.

    The conv sits one level down (``dwconv.dwconv``) because that is how the official
    checkpoints name it.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return map_to_tokens(self.dwconv(tokens_to_map(x, H, W)))


class ConvFFN(nn.Module):
    """``fc1 -> [ReLU] -> 3x3 DWConv -> GELU -> fc2`` on ``(B, N, C)`` tokens.

    The depth-wise conv gives the FFN the local position information that replaces
    PVTv1's fixed-size position embeddings. ``dwconv=False`` gives the plain
    transformer MLP (the ablation). ``extra_relu=True`` adds the ReLU after ``fc1``
    that the official linear-SRA variant (``pvt_v2_b2_li``) has.
    """

    def __init__(self, dim: int, hidden_dim: int, *, dwconv: bool = True, extra_relu: bool = False, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = DepthwiseConv(hidden_dim) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        if self.dwconv is not None:
            x = self.dwconv(x, H, W)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))
