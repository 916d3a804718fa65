"""Spatial-reduction attention (paper Sec. 3.3) and its linear variant."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import map_to_tokens, tokens_to_map
from .onednn import Linear, eager, exporting


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a spatially reduced map.

    Queries: all ``N = H * W`` tokens. Keys/values: the map reduced by a conv of
    kernel = stride = ``sr_ratio`` followed by LayerNorm, i.e. ``N / R^2`` tokens, so
    the cost is ``O(N^2 / R^2)``. ``sr_ratio=1`` is full (unreduced) attention.

    Input/output ``(B, N, C)``. Parameter names (``q``, ``kv``, ``proj``, ``sr``,
    ``norm``) follow the official checkpoints; ``kv`` stacks keys then values.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = sr_ratio
        # Fused scaled_dot_product_attention (in bf16 CPU inference: chunked_attention); False
        # selects the explicit softmax(QK^T)V reference path (same numbers to float rounding).
        self.fused = True

        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._build_reduction(norm_eps)

    def _build_reduction(self, norm_eps: float) -> None:
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(self.dim, self.dim, kernel_size=self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(self.dim, eps=norm_eps)

    def reduce(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Tokens ``(B, N, C)`` on an ``H x W`` grid -> key/value source tokens ``(B, N', C)``."""
        if self.sr_ratio == 1:
            return x
        return self.norm(map_to_tokens(self.sr(tokens_to_map(x, H, W))))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(self.reduce(x, H, W))
        k, v = kv.view(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused and chunked_bf16_pays(q, k, self.training):
            x = chunked_attention(q, k, v, self.scale)
        elif self.fused:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


#: Bytes of attention scores per chunk of :func:`chunked_attention`: each score block is used while in cache.
ATTENTION_CHUNK_BYTES = 4 * 2**20


def chunked_bf16_pays(q: torch.Tensor, k: torch.Tensor, training: bool) -> bool:
    """Whether :func:`chunked_attention` replaces ``scaled_dot_product_attention``: bfloat16 inference on the
    CPU (not training, no gradient wanted), outside tracing, scripting, compiling and export. PyTorch's CPU flash kernel runs PVTv2's small heads (32-64
    channels) in bf16 no faster than in float32; on two cores the chunked form ran 1.3-2.5x faster at every
    shape of the detectors' and segmenters' stages (60800 queries x 950 keys down to 950 x 950, 1-8 heads)
    and 1.2x at a 224x224 classifier's. GPUs, training and float32 keep the fused kernel."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and not training
            and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad)) and eager())


def chunk_rows(q: torch.Tensor, k: torch.Tensor) -> int:
    """Query rows per chunk: :data:`ATTENTION_CHUNK_BYTES` of scores over every batch entry and head (64 at least)."""
    per_row = q.shape[:-2].numel() * k.shape[-2] * q.element_size()
    return max(64, ATTENTION_CHUNK_BYTES // per_row)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale) v`` for ``(B, heads, N, d)`` queries, :func:`chunk_rows` query rows at a time:
    two matrix products and a softmax per chunk, each score block used while still in cache."""
    out = torch.empty_like(q)
    kt = k.transpose(-2, -1) * scale
    step = chunk_rows(q, k)
    for start in range(0, q.shape[-2], step):
        rows = slice(start, start + step)
        torch.matmul(torch.matmul(q[..., rows, :], kt).softmax(dim=-1), v, out=out[..., rows, :])
    return out


def adaptive_avg_pool_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """``(size_out, size_in)`` averaging matrix with exactly AdaptiveAvgPool's bins
    ``[floor(i * n / m), ceil((i + 1) * n / m))``. Built from tensor ops, so exporters keep
    ``size_in`` symbolic (the native op's decomposition bakes in the traced size)."""
    i = torch.arange(size_out, device=like.device)
    j = torch.arange(size_in, device=like.device)
    start = (i * size_in) // size_out
    end = ((i + 1) * size_in + size_out - 1) // size_out
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class LinearSRA(SpatialReductionAttention):
    """Linear spatial-reduction attention (the ``_li`` variants).

    Keys/values come from the map average-pooled to a fixed ``pool_size x pool_size``
    grid, then a 1x1 conv, LayerNorm and GELU: ``N' = 49`` whatever the input size, so
    the cost is linear in the number of pixels, like a convolution.
    """

    def __init__(self, dim: int, num_heads: int, *, pool_size: int = 7, **kwargs):
        self.pool_size = pool_size
        kwargs.pop("sr_ratio", None)  # the pooled grid replaces the reduction ratio
        super().__init__(dim, num_heads, sr_ratio=1, **kwargs)

    def _build_reduction(self, norm_eps: float) -> None:
        self.pool = nn.AdaptiveAvgPool2d(self.pool_size)
        self.sr = nn.Conv2d(self.dim, self.dim, kernel_size=1)
        self.norm = nn.LayerNorm(self.dim, eps=norm_eps)
        self.act = nn.GELU()

    def reduce(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        if exporting():
            # (B, H, W, C) -> (B, 7, 7, C) as two matmuls, valid for any exported H, W.
            B, _, C = x.shape
            grid = x.view(B, H, W, C)
            ph = adaptive_avg_pool_matrix(H, self.pool_size, x)
            pw = adaptive_avg_pool_matrix(W, self.pool_size, x)
            pooled = torch.einsum("ih,bhwc,jw->bijc", ph, grid, pw).permute(0, 3, 1, 2)
        else:
            pooled = self.pool(tokens_to_map(x, H, W))
        return self.act(self.norm(map_to_tokens(self.sr(pooled))))
