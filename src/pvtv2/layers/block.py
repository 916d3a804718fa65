"""The PVTv2 transformer block."""
from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from .attention import LinearSRA, SpatialReductionAttention
from .ffn import ConvFFN

ATTENTION_KINDS = ("sra", "linear", "full")


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``.

    ``attention``: ``"sra"`` (conv reduction by ``sr_ratio``), ``"linear"`` (pool to
    7x7; also adds the official ReLU after ``fc1``) or ``"full"`` (no reduction).
    ``conv_ffn=False`` replaces the convolutional FFN with a plain MLP.
    Input/output ``(B, N, C)`` on an ``H x W`` grid.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        attention: str = "sra",
        conv_ffn: bool = True,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        attn_norm_eps: float = 1e-5,
        linear_pool_size: int = 7,
    ):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
        common = dict(qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop, norm_eps=attn_norm_eps)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if attention == "linear":
            self.attn = LinearSRA(dim, num_heads, pool_size=linear_pool_size, **common)
        else:
            ratio = 1 if attention == "full" else sr_ratio
            self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio=ratio, **common)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), dwconv=conv_ffn, extra_relu=attention == "linear", drop=drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))
