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

    #: Inference on large maps runs in bands of rows whose hidden activations take about this
    #: many bytes, so they stay in cache instead of streaming ``N x hidden`` tensors through
    #: memory several times (same numbers; see :meth:`_forward_banded`). 0 disables.
    band_bytes: int = 4 * 2**20
    #: ... when the whole hidden activation would take more than this many bands' worth.
    band_min_factor: int = 4

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        if (self.band_bytes and self.dwconv is not None and not self.training and not torch.is_grad_enabled()
                and x.numel() // x.shape[-1] * self.fc1.out_features * x.element_size() > self.band_min_factor * self.band_bytes
                and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())):
            return self._forward_banded(x, H, W)
        x = self.relu(self.fc1(x))
        if self.dwconv is not None:
            x = self.dwconv(x, H, W)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))

    def _forward_banded(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The same computation, a band of rows at a time. The 3x3 depth-wise conv of a band
        needs one row of ``fc1`` output above and below it: the row above is kept from the
        previous band, the row below comes from the next band's ``fc1``, computed one step
        ahead, so no row goes through ``fc1`` twice. The conv's output rows for those halo rows
        (zero-padded at the band's edge, so wrong) are dropped."""
        B, N, C = x.shape
        hidden = self.fc1.out_features
        rows = max(2, self.band_bytes // (B * W * hidden * x.element_size()))
        grid = x.view(B, H, W, C)
        out = x.new_empty(B, H, W, self.fc2.out_features)
        starts = list(range(0, H, rows))
        current = self.relu(self.fc1(grid[:, :rows]))                      # (B, rows, W, hidden)
        above = None
        for i, top in enumerate(starts):
            bottom = min(H, top + rows)
            following = self.relu(self.fc1(grid[:, bottom:bottom + rows])) if i + 1 < len(starts) else None
            parts = ([above] if above is not None else []) + [current] + ([following[:, :1]] if following is not None else [])
            band = torch.cat(parts, dim=1) if len(parts) > 1 else current
            h = self.dwconv.dwconv(band.permute(0, 3, 1, 2))                # channels-last view in, same out
            first = 0 if above is None else 1
            h = h[:, :, first:first + bottom - top].permute(0, 2, 3, 1)
            out[:, top:bottom] = self.fc2(self.act(h))
            above, current = current[:, -1:], following
        return out.view(B, N, -1)
