"""PyramidVisionTransformerV2: four stages of (patch embedding -> blocks -> norm).

Reads top-down: configuration, model, variant table (from :mod:`pvtv2.registry`). The module/parameter
layout is the official one (``patch_embed{i}``, ``block{i}``, ``norm{i}``, ``head``), so
official checkpoints load without renaming; other formats are mapped in
:mod:`pvtv2.checkpoint`.
"""
from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from timm.models._features import FeatureInfo, feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import ConfigError
from .layers import ATTENTION_KINDS, Block, ConvFFN, OverlapPatchEmbed, SpatialReductionAttention
from .registry import REGISTRY, get_variant, variant_names

#: Smallest input side: the four stages divide by 32 in all.
MIN_INPUT_SIZE = 32
PATCH_EMBED_KINDS = ("overlap", "plain")


@dataclass(frozen=True)
class PVTv2Config:
    """Everything that defines a PVTv2 network. Defaults are the official PVTv2-B2.

    The three PVTv2 designs are switchable for the paper's ablation:
    ``patch_embed`` (``"overlap"`` or PVTv1's ``"plain"``), ``conv_ffn`` (conv FFN or
    plain MLP), ``attention`` (``"sra"``, ``"linear"`` or ``"full"``).
    """

    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    attention: str = "sra"
    patch_embed: str = "overlap"
    conv_ffn: bool = True
    qkv_bias: bool = True
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # The official code uses LayerNorm(eps=1e-6) in blocks and after each stage but the
    # PyTorch default 1e-5 in the patch embeddings and the SRA reduction; transformers
    # uses one eps everywhere, so both are configurable.
    norm_eps: float = 1e-6
    embed_norm_eps: float = 1e-5
    linear_pool_size: int = 7
    # PVTv1 (and the paper's first ablation rows): learned position embeddings per stage,
    # stored on the token grid of an ``img_size`` input and resized bilinearly to other
    # grids; a class token in stage 4 that the classifier reads after one final LayerNorm
    # ``norm`` (instead of PVTv2's per-stage ``norm1..4`` and mean pooling).
    pos_embed: bool = False
    cls_token: bool = False
    stage_norms: bool = True
    img_size: int = 224
    # Backbone use (mmdet's and timm's conventions): which stages forward_features returns
    # (0-3), how many leading stages are frozen (no gradients, kept in eval mode), and
    # whether forward itself returns those maps (timm's ``features_only``; no head, and for
    # PVTv1 no class token or final norm: the dense-prediction backbones use this).
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    frozen_stages: int = 0
    features_only: bool = False
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        lists = {f: getattr(self, f) for f in ("embed_dims", "depths", "num_heads", "mlp_ratios", "sr_ratios")}
        for key, value in lists.items():
            object.__setattr__(self, key, tuple(value))
            if len(value) != 4:
                raise ValueError(f"{key} must have 4 entries (one per stage), got {len(value)}: {tuple(value)}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.patch_embed not in PATCH_EMBED_KINDS:
            raise ValueError(f"patch_embed must be one of {PATCH_EMBED_KINDS}, got {self.patch_embed!r}")
        for dim, heads in zip(self.embed_dims, self.num_heads):
            if dim % heads:
                raise ValueError(f"embed dim {dim} is not divisible by its {heads} heads")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        for key in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            rate = getattr(self, key)
            if not 0 <= rate < 1:  # also refuses NaN; at 1 every block (or feature) would be dropped
                raise ConfigError(f"{key} must be in [0, 1) (a probability; 0 disables), got {rate}")
        indices = tuple(int(i) % 4 if -4 <= int(i) < 4 else int(i) for i in self.out_indices)
        object.__setattr__(self, "out_indices", indices)
        if not indices or any(not 0 <= i < 4 for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"out_indices must be increasing stage indices in 0..3 (or -4..-1), got {tuple(self.out_indices)}")
        if self.features_only:
            object.__setattr__(self, "num_classes", 0)  # timm's features_only: no head
        if not 0 <= self.frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in 0..4 (stages 1..k frozen), got {self.frozen_stages}")
        if self.cls_token and (self.conv_ffn or self.attention == "linear" or self.sr_ratios[3] != 1):
            # The class token has no place on the stage-4 grid that a depth-wise conv or a
            # spatial reduction would need (PVTv1's stage 4: plain MLP, full attention).
            raise ValueError("cls_token needs conv_ffn=False, attention 'sra' or 'full' and sr_ratios[3] == 1 (as PVTv1)")
        if self.pos_embed and self.img_size < MIN_INPUT_SIZE:
            raise ValueError(f"img_size (the position embeddings' grid) must be >= {MIN_INPUT_SIZE}, got {self.img_size}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PVTv2Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PVTv2 config keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02) -> torch.Tensor:
    """The official ``trunc_normal_(w, std=.02)``: timm's truncates at +-2 *absolute*, i.e.
    100 standard deviations, where no sample ever lands, so a normal draw clamped there has
    the same distribution at a quarter of the cost (model construction time matters in tests
    and notebooks: the four-op inverse-CDF method took most of b2's 3 s build)."""
    with torch.no_grad():
        return tensor.normal_(0.0, std).clamp_(-2.0, 2.0)


def _init_weights(m: nn.Module) -> None:
    """The official initialisation: truncated normal (std 0.02) for Linear, unit
    LayerNorm, and He-normal over fan-out (per group) for convolutions."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class PyramidVisionTransformerV2(nn.Module):
    """PVTv2 with a linear classification head on the mean of the last stage's tokens.

    ``forward_features(x)`` -> list of 4 maps ``(B, C_i, ceil(H / s_i), ceil(W / s_i))``
    with strides ``s = 4, 8, 16, 32``; ``forward_head(features)`` -> ``(B, num_classes)``
    (or pooled ``(B, C_4)`` features when ``num_classes == 0``).
    """

    def __init__(self, config: PVTv2Config | None = None, **overrides: Any):
        super().__init__()
        config = replace(config or PVTv2Config(), **overrides)
        self.config = config
        self.embed_dims = list(config.embed_dims)
        self.num_classes = config.num_classes
        self.num_features = config.embed_dims[-1]

        # Stochastic depth grows linearly over all blocks, 0 -> drop_path_rate.
        total = sum(config.depths)
        # On the CPU even when building on the meta device (for FLOPs counting): .tolist() needs data.
        rates = torch.linspace(0, config.drop_path_rate, total, device="cpu").tolist() if total else []
        start = 0
        for i, (dim, depth) in enumerate(zip(config.embed_dims, config.depths)):
            patch_embed = OverlapPatchEmbed(
                config.in_chans if i == 0 else config.embed_dims[i - 1],
                dim,
                stride=4 if i == 0 else 2,
                overlap=config.patch_embed == "overlap",
                norm_eps=config.embed_norm_eps,
            )
            blocks = nn.ModuleList(
                Block(
                    dim,
                    config.num_heads[i],
                    mlp_ratio=config.mlp_ratios[i],
                    sr_ratio=config.sr_ratios[i],
                    attention=config.attention,
                    conv_ffn=config.conv_ffn,
                    qkv_bias=config.qkv_bias,
                    drop=config.drop_rate,
                    attn_drop=config.attn_drop_rate,
                    drop_path=rates[start + j],
                    norm_eps=config.norm_eps,
                    attn_norm_eps=config.embed_norm_eps,
                    linear_pool_size=config.linear_pool_size,
                )
                for j in range(depth)
            )
            start += depth
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            if config.pos_embed:
                side = -(-config.img_size // (4 * 2**i))
                tokens = side * side + (1 if config.cls_token and i == 3 else 0)
                setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, tokens, dim)))
            setattr(self, f"block{i + 1}", blocks)
            if config.stage_norms:
                setattr(self, f"norm{i + 1}", nn.LayerNorm(dim, eps=config.norm_eps))
        if config.pos_embed:
            self.pos_drop = nn.Dropout(config.drop_rate)
        if config.cls_token and not config.features_only:
            # A features-only PVTv1 is the official detection backbone (detection/pvt.py): no
            # class token or final norm, which its maps never use (DDP would find them without
            # gradients); stage 4's position embedding keeps the class token's row, so the
            # classification weights still fit it.
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.num_features))
            self.norm = nn.LayerNorm(self.num_features, eps=config.norm_eps)
        self.head = nn.Linear(self.num_features, config.num_classes) if config.num_classes > 0 else nn.Identity()
        for name, p in self.named_parameters():
            if name.startswith("pos_embed") or name == "cls_token":
                trunc_normal_(p, std=0.02)
        self.apply(_init_weights)
        #: timm's description of the maps forward_features returns (``.channels()``, ``.reduction()``).
        self.feature_info = FeatureInfo(
            [dict(num_chs=dim, reduction=4 * 2**i, module=f"block{i + 1}") for i, dim in enumerate(config.embed_dims)],
            config.out_indices,
        )
        self.grad_checkpointing = False
        self._freeze_stages()

    # -- structure -----------------------------------------------------------------
    def stages(self) -> list[tuple[OverlapPatchEmbed, nn.ModuleList, nn.LayerNorm | None]]:
        """The four ``(patch_embed, blocks, norm)`` triples, in order (``norm`` is ``None``
        without stage norms, as in PVTv1)."""
        return [(getattr(self, f"patch_embed{i}"), getattr(self, f"block{i}"), getattr(self, f"norm{i}", None))
                for i in range(1, 5)]

    def _frozen_modules(self) -> list[nn.Module]:
        names = [f"{part}{i}" for i in range(1, self.config.frozen_stages + 1)
                 for part in ("patch_embed", "block", "norm")]
        return [getattr(self, n) for n in names if hasattr(self, n)]

    def _freeze_stages(self) -> None:
        """mmdet's ``frozen_stages``: stages 1..k get no gradients and stay in eval mode."""
        for m in self._frozen_modules():
            m.eval()
            m.requires_grad_(False)
        for i in range(1, self.config.frozen_stages + 1):
            if hasattr(self, f"pos_embed{i}"):
                getattr(self, f"pos_embed{i}").requires_grad_(False)

    def train(self, mode: bool = True) -> "PyramidVisionTransformerV2":
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()
        return self

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward (``torch.utils.checkpoint``): the same gradients
        with the blocks' activations not kept, for much less training memory."""
        self.grad_checkpointing = enable

    def set_fused_attention(self, enabled: bool) -> None:
        """Switch every attention between fused SDPA and the explicit reference path.

        The explicit path is the one to use for double backward (gradient penalties) on
        the CPU: PyTorch's fused CPU attention has no second derivative.
        """
        for m in self.modules():
            if isinstance(m, SpatialReductionAttention):
                m.fused = enabled

    _UNSET: Any = object()

    def set_ffn_paths(self, *, banded: bool | None = _UNSET, chunked: bool | None = _UNSET,
                      band_bytes: int | None = None, chunk_min_bytes: int | None = None,
                      chunk_bytes: int | None = None) -> None:
        """Settings of every :class:`~pvtv2.layers.ConvFFN`'s memory paths (same numbers, less
        memory traffic). ``banded`` / ``chunked``: ``None`` takes them where they pay (the
        CPU), ``True`` on any device (``chunked=True`` on a GPU trades speed for activation
        memory, like gradient checkpointing), ``False`` never. The byte thresholds tune them;
        arguments left out keep their current values.
        """
        for m in self.modules():
            if isinstance(m, ConvFFN):
                if banded is not self._UNSET:
                    m.banded = banded
                if chunked is not self._UNSET:
                    m.chunked = chunked
                for key, value in (("band_bytes", band_bytes), ("chunk_min_bytes", chunk_min_bytes),
                                   ("chunk_bytes", chunk_bytes)):
                    if value is not None:
                        if value < 0:
                            raise ValueError(f"{key} must be >= 0 (0 disables), got {value}")
                        setattr(m, key, value)

    def set_onednn(self, enabled: bool | None = None) -> None:
        """Where float32 CPU inference may use oneDNN's linear layers and fused depth-wise conv +
        GELU (:mod:`pvtv2.layers.onednn`: same numbers to float rounding, about 1.5x faster on
        AMD CPUs, where PyTorch's MKL matrix products run slowly): ``None`` (the default) on x86
        CPUs, ``True`` on any CPU, ``False`` never. Training, GPUs and other precisions never use them."""
        if enabled not in (None, True, False):
            raise ValueError(f"enabled must be None, True or False, got {enabled!r}")
        for m in self.modules():
            if hasattr(m, "onednn"):
                m.onednn = enabled

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one of ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.config = replace(self.config, num_classes=num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (``create_optimizer_v2(..., layer_decay=...)``): the stem
        (stage 1's patch embedding), then one group per stage, then the rest (head, PVTv1's
        final norm), as timm's ``pvt_v2`` groups its own layout, where stage i's patch embedding
        is ``stages.{i-1}.downsample``. PVTv1's position embedding i goes with patch embedding i,
        its class token with stage 4, where it joins the tokens. Per stage at either ``coarse``, as timm's."""
        return dict(stem=r"^(?:patch_embed1|pos_embed1)(?:\.|$)",
                    blocks=[(r"^(?:patch_embed|pos_embed|block|norm)(\d+)(?:\.|$)", None), (r"^cls_token$", (4,))])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: PVTv1's class token, as in the official
        ``pvt.py`` (which keeps the position embeddings decayed); PVTv2 has neither."""
        return {"cls_token"} if self.config.cls_token else set()

    def save_pretrained(self, directory: str | os.PathLike, *, class_names: list[str] | None = None) -> Path:
        """Write ``directory/model.safetensors`` + ``config.json``; ``create_model(pretrained=directory)``
        rebuilds this model. ``class_names`` default to ``self.class_names`` when a checkpoint set them."""
        from .checkpoint.io import save_pretrained  # the checkpoint package imports this module

        return save_pretrained(self, directory, class_names=class_names)

    # -- forward -------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` for inputs the network cannot take, before any conv sees them."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor of shape (B, {self.config.in_chans}, H, W), got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"expected a 4-D tensor (B, {self.config.in_chans}, H, W), got {x.dim()}-D shape {tuple(x.shape)}"
                + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
            )
        if not x.is_floating_point():
            raise ValueError(
                f"expected a floating-point tensor, got dtype {x.dtype}; convert images with x.float() / 255 and normalise"
            )
        if x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected {self.config.in_chans} input channels (B, {self.config.in_chans}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[2] < MIN_INPUT_SIZE or x.shape[3] < MIN_INPUT_SIZE:
            raise ValueError(
                f"input must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels (total stride 32), "
                f"got {x.shape[2]}x{x.shape[3]}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"empty batch: got shape {tuple(x.shape)}; expected at least one image (B >= 1)")
        weight = self.patch_embed1.proj.weight
        # Under autocast the convolutions cast float32/16/bf16 inputs themselves (AMP training, a
        # float32 batch into a bf16 model); outside it the input must match the weights, as in
        # timm and torchvision, which do not cast either. (The meta device, on which FLOPs are
        # counted from shapes alone, has no autocast to ask about.)
        autocast_casts = (x.dtype != torch.float64 and x.device.type != "meta"
                          and torch.is_autocast_enabled(x.device.type))
        if x.dtype != weight.dtype and not autocast_casts:
            raise ValueError(
                f"input dtype {x.dtype} does not match the model's {weight.dtype}: convert the input with "
                f"x.to({weight.dtype}) (or the model with model.to({x.dtype}))"
                + ("" if x.dtype == torch.float64 else ", or run under torch.autocast")
            )

    def position_embedding(self, stage: int, H: int, W: int) -> torch.Tensor:
        """Stage ``stage``'s (0-3) learned position embedding for an ``H x W`` token grid,
        ``(1, H * W, C)``: the stored grid (that of an ``img_size`` input) resized bilinearly,
        as the official ``_get_pos_embed`` does (which skips the resize only when the token
        count equals stage 1's; here when the grid is the stored one). The class token's
        entry of stage 4 is not included."""
        pos = getattr(self, f"pos_embed{stage + 1}")
        if self.config.cls_token and stage == 3:
            pos = pos[:, 1:]
        side = -(-self.config.img_size // (4 * 2**stage))
        # Tracers and exporters keep H and W symbolic: comparing them would specialise the graph.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and (H, W) == (side, side):
            return pos
        grid = pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=(H, W), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

    def _forward(self, x: torch.Tensor, *, with_cls: bool, last: int = 3) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The maps of stages ``0..last`` and, with ``with_cls`` (PVTv1 classifiers), the
        normalised class token ``(B, C_4)`` that attended with stage 4's tokens."""
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
        checkpointing = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        features, cls = [], None
        for i, (patch_embed, blocks, norm) in enumerate(self.stages()[:last + 1]):
            x, H, W = patch_embed(x)
            if self.config.pos_embed:
                x = x + self.position_embedding(i, H, W)
                if with_cls and i == 3:
                    first = (self.cls_token + self.pos_embed4[:, :1]).expand(x.shape[0], -1, -1)
                    x = torch.cat([first, x], dim=1)
                x = self.pos_drop(x)
            for blk in blocks:
                x = checkpoint(blk, x, H, W, use_reentrant=False) if checkpointing else blk(x, H, W)
            if with_cls and i == 3:
                cls, x = self.norm(x[:, 0]), x[:, 1:]
            if norm is not None:
                x = norm(x)
            # Channels-last view: no copy here; the next stage's conv reads it directly.
            x = x.reshape(x.shape[0], H, W, -1).permute(0, 3, 1, 2)
            features.append(x)
        return features, cls

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C_in, H, W)`` -> the stage maps ``(B, C_i, H_i, W_i)`` (strides 4, 8, 16, 32)
        of the stages in ``config.out_indices`` (all four by default; later stages are not run).

        PVTv1 models return them as the official detection backbone does: without the
        class token (stage 4 attends over the patch tokens alone) and without norms.
        """
        indices = self.config.out_indices
        maps = self._forward(x, with_cls=False, last=indices[-1])[0]
        return maps if len(indices) == len(maps) else [maps[i] for i in indices]

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, *, stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's API: the stage maps ``indices`` selects (``None``: all, an int ``n``: the last
        ``n``, a sequence: those stages, negative counting from the end), and the last stage's
        map ``(final, intermediates)`` unless ``intermediates_only`` (with ``stop_early``,
        stages after the last one asked for are not run)."""
        take, last = feature_take_indices(4, indices)
        maps = self._forward(x, with_cls=False, last=last if stop_early or intermediates_only else 3)[0]
        intermediates = [maps[i] for i in take]
        return intermediates if intermediates_only else (maps[-1], intermediates)

    def forward_head(self, features: Sequence[torch.Tensor] | torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from ``forward_features``' list (or the last map alone)."""
        if self.config.cls_token:
            raise ValueError(
                f"{self.config.name or 'this model'} classifies from its class token, which the stage maps do not "
                "carry: call model(x) for logits"
            )
        last = features[-1] if isinstance(features, (list, tuple)) else features
        pooled = last.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, num_classes)``; with ``features_only``, ``forward_features(x)``."""
        if self.config.features_only:
            return self.forward_features(x)
        if self.config.cls_token:
            return self.head(self._forward(x, with_cls=True)[1])
        return self.forward_head(self._forward(x, with_cls=False)[0])


# -- variant table ------------------------------------------------------------------
# Derived from pvtv2.registry, the one place a variant's facts are written.
#: ``name -> PVTv2Config`` keyword arguments of every published variant.
VARIANTS: dict[str, dict[str, Any]] = {name: v.architecture() for name, v in REGISTRY.items()}
#: Official ImageNet-1K stochastic-depth rates (the recipe's default ``--drop-path``).
DEFAULT_DROP_PATH: dict[str, float] = {name: v.drop_path for name, v in REGISTRY.items()}


def list_models(pattern: str | None = None, *, family: str | None = None) -> list[str]:
    """Names of registered variants, in registry order (smallest first within a family).

    With no arguments: the PVTv2 variants (``pvt_v2_b0`` ... ``pvt_v2_b5``), as always.
    ``family``: ``"pvt_v1"``/``"v1"`` (``pvt_tiny`` ... ``pvt_large``), ``"pvt_v2"``/``"v2"``,
    or ``"all"``. ``pattern``: a shell-style filter over every family unless ``family`` is
    given (``list_models("pvt_v2_b2*")``, ``list_models("pvt_*")`` lists all).
    """
    if family is None:
        family = "pvt_v2" if pattern is None else "all"
    names = variant_names(None if family == "all" else family)
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def variant_config(name: str, **overrides: Any) -> PVTv2Config:
    """The :class:`PVTv2Config` of a named variant, with ``overrides`` applied."""
    return PVTv2Config(name=name, **{**get_variant(name).architecture(), **overrides})
