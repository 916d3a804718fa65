"""Convolutional feed-forward network (paper Sec. 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .onednn import Linear, depthwise_conv_gelu, eager


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


def conv_ffn(
    x: torch.Tensor,
    H: int,
    W: int,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor | None,
    dw_weight: torch.Tensor | None,
    dw_bias: torch.Tensor | None,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor | None,
    relu: bool = False,
) -> torch.Tensor:
    """:class:`ConvFFN` without dropout as a function of its weights (``dw_weight=None``:
    no depth-wise conv). ``(B, N, C)`` tokens on an ``H x W`` grid -> ``(B, N, C_out)``."""
    x = F.linear(x, fc1_weight, fc1_bias)
    if relu:
        x = F.relu(x)
    if dw_weight is not None:
        x = map_to_tokens(F.conv2d(tokens_to_map(x, H, W), dw_weight, dw_bias, padding=1, groups=x.shape[-1]))
    return F.linear(F.gelu(x), fc2_weight, fc2_bias)


class _ChunkedConvFFN(torch.autograd.Function):
    """:func:`conv_ffn` over a batch a few samples at a time, saving only its input.

    Backward recomputes each chunk's hidden activations and back-propagates through them
    at once, while they are small and fresh. The whole-batch path instead allocates
    ``B x N x hidden`` tensors (51 MB each for b0 at batch 16), which glibc's allocator
    maps and unmaps on every call, paying a page fault per 4 KiB page, and keeps three
    of them per block alive until backward. Same numbers to float rounding (the weight
    gradients are summed chunk by chunk).

    Under ``create_graph=True`` (gradient penalties, double backward) autograd runs this
    backward with grad mode on; it then builds the recomputation into the graph, so the
    gradients it returns can be differentiated again, exactly as the plain path's.
    """

    @staticmethod
    def forward(ctx, x, H, W, chunk, relu, *weights):
        device = x.device.type
        ctx.autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.layout = (H, W, chunk, relu)
        ctx.save_for_backward(x, *weights)
        out = None
        for start in range(0, x.shape[0], chunk):
            part = conv_ffn(x[start:start + chunk], H, W, *weights, relu=relu)
            if out is None:
                out = part.new_empty((x.shape[0],) + part.shape[1:])
            out[start:start + chunk] = part
        return out

    @staticmethod
    def backward(ctx, grad):
        x, *weights = ctx.saved_tensors
        H, W, chunk, relu = ctx.layout
        enabled, dtype = ctx.autocast
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[5:]
        wanted = [w for w, need in zip(weights, need_w) if need]
        # Grad mode on here means create_graph=True: keep x (and grad) in the graph instead
        # of detaching, and return gradients that carry their own graph.
        create_graph = torch.is_grad_enabled()
        grad_w = None
        grad_x = [] if create_graph else torch.empty_like(x) if need_x else None
        for start in range(0, x.shape[0], chunk):
            part = x[start:start + chunk]
            if not create_graph:
                part = part.detach().requires_grad_(need_x)
            with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                out = conv_ffn(part, H, W, *weights, relu=relu)
            grads = torch.autograd.grad(out, ([part] if need_x else []) + wanted, grad[start:start + chunk],
                                        create_graph=create_graph)
            if need_x:
                if create_graph:
                    grad_x.append(grads[0])
                else:
                    grad_x[start:start + chunk] = grads[0]
                grads = grads[1:]
            if grad_w is None:
                grad_w = list(grads)
            elif create_graph:
                grad_w = [total + g for total, g in zip(grad_w, grads)]
            else:
                grad_w = [total.add_(g) for total, g in zip(grad_w, grads)]
        found = iter(grad_w or [])
        if create_graph and need_x:
            grad_x = torch.cat(grad_x)
        return (grad_x, None, None, None, None,
                *(next(found) if need else None for need in need_w))


def fast_paths_pay(device: torch.device) -> bool:
    """Whether :class:`ConvFFN`'s banded and chunked paths are worth taking on ``device``
    by default: the one place this is decided.

    Both exist to dodge glibc's page faults on large allocations and to keep work in the
    CPU's cache. On a GPU they turn one large kernel into hundreds of small ones: the first
    H200 run measured them 2-10x slower than the plain path (which is at par with timm).
    """
    return device.type == "cpu"


class ConvFFN(nn.Module):
    """``fc1 -> [ReLU] -> 3x3 DWConv -> GELU -> fc2`` on ``(B, N, C)`` tokens.

    The depth-wise conv gives the FFN the local position information that replaces
    PVTv1's fixed-size position embeddings. ``dwconv=False`` gives the plain
    transformer MLP (the ablation). ``extra_relu=True`` adds the ReLU after ``fc1``
    that the official linear-SRA variant (``pvt_v2_b2_li``) has.

    Two memory paths compute the same numbers with less memory traffic (see
    :meth:`path`); each module carries its own settings (set them on a whole model with
    :meth:`pvtv2.PyramidVisionTransformerV2.set_ffn_paths`):

    - ``banded``: no-grad inference on large maps runs in bands of rows (``None``: where
      :func:`fast_paths_pay`, i.e. on the CPU; ``True``/``False``: on any device / never).
    - ``chunked``: training on large batches runs a few samples at a time and recomputes
      them in backward (``None``: on the CPU; ``True``: on any device, an activation-memory
      saver on GPUs at a cost in speed; ``False``: never).
    """

    #: Defaults of the per-module settings below.
    #: Bands of rows whose hidden activations take about this many bytes stay in cache
    #: instead of streaming ``N x hidden`` tensors through memory several times.
    BAND_BYTES = 4 * 2**20
    #: ... taken when the whole hidden activation would take more than this many bands.
    BAND_MIN_FACTOR = 4
    #: glibc maps allocations above 32 MiB straight from the kernel, so each costs page
    #: faults: chunk training batches whose hidden activations would exceed this ...
    CHUNK_MIN_BYTES = 32 * 2**20
    #: ... into chunks of samples whose hidden activations take about this many bytes.
    CHUNK_BYTES = 4 * 2**20

    def __init__(self, dim: int, hidden_dim: int, *, dwconv: bool = True, extra_relu: bool = False, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = DepthwiseConv(hidden_dim) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)
        self.banded: bool | None = None
        self.chunked: bool | None = None
        self.onednn: bool | None = None  # the fused depth-wise conv + GELU (pvtv2.layers.onednn)
        self.band_bytes = self.BAND_BYTES
        self.band_min_factor = self.BAND_MIN_FACTOR
        self.chunk_min_bytes = self.CHUNK_MIN_BYTES
        self.chunk_bytes = self.CHUNK_BYTES

    def _hidden_bytes(self, x: torch.Tensor) -> int:
        return x.numel() // x.shape[-1] * self.fc1.out_features * x.element_size()

    @staticmethod
    def _eager(x: torch.Tensor) -> bool:
        """A real tensor in eager mode: not FX proxies, tracing, scripting, compiling or
        exporting (checked first, so compilers never see the size tests below)."""
        return isinstance(x, torch.Tensor) and eager()

    @staticmethod
    def _allowed(setting: bool | None, device: torch.device) -> bool:
        return fast_paths_pay(device) if setting is None else setting

    def path(self, x: torch.Tensor) -> str:
        """Which computation :meth:`forward` takes for ``x``: ``"chunked"``, ``"banded"`` or ``"plain"``."""
        if not self._eager(x):
            return "plain"
        if (
            self._allowed(self.chunked, x.device) and self.chunk_min_bytes and torch.is_grad_enabled()
            and x.dim() == 3 and x.shape[0] > 1
            and (self.drop.p == 0 or not self.training)
            and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
            and self._hidden_bytes(x) > self.chunk_min_bytes
            and not torch._C._are_functorch_transforms_active()  # torch.func: plain autograd ops only
        ):
            return "chunked"
        if (
            self._allowed(self.banded, x.device) and self.band_bytes and self.dwconv is not None
            and not self.training and not torch.is_grad_enabled()
            and self._hidden_bytes(x) > self.band_min_factor * self.band_bytes
        ):
            return "banded"
        return "plain"

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        path = self.path(x)
        if path == "chunked":
            chunk = max(1, self.chunk_bytes * x.shape[0] // self._hidden_bytes(x))
            dw = self.dwconv.dwconv if self.dwconv is not None else None
            return _ChunkedConvFFN.apply(
                x, H, W, chunk, isinstance(self.relu, nn.ReLU), self.fc1.weight, self.fc1.bias,
                dw.weight if dw is not None else None, dw.bias if dw is not None else None,
                self.fc2.weight, self.fc2.bias,
            )
        if path == "banded":
            return self._forward_banded(x, H, W)
        x = self.relu(self.fc1(x))
        if self.dwconv is not None:  # GELU(dwconv(x)), fused where oneDNN pays
            x = map_to_tokens(depthwise_conv_gelu(tokens_to_map(x, H, W), self.dwconv.dwconv, self.onednn))
        else:
            x = self.act(x)
        return self.drop(self.fc2(self.drop(x)))

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
            h = depthwise_conv_gelu(band.permute(0, 3, 1, 2), self.dwconv.dwconv, self.onednn)  # channels-last in and out
            first = 0 if above is None else 1
            h = h[:, :, first:first + bottom - top].permute(0, 2, 3, 1)
            out[:, top:bottom] = self.fc2(h)
            above, current = current[:, -1:], following
        return out.view(B, N, -1)
