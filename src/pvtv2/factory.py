"""``create_model``: the one entry point that builds (and optionally loads) a PVTv2."""
from __future__ import annotations

import os
from typing import Any

from .model import VARIANTS, PyramidVisionTransformerV2, variant_config


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    pretrained: Any = None,
    drop_path_rate: float = 0.0,
    **overrides: Any,
) -> PyramidVisionTransformerV2:
    """Build the PVTv2 variant ``name`` (see :func:`pvtv2.list_models`).

    ``num_classes``: 1000 by default (or, with ``pretrained``, the checkpoint's own);
    ``0`` gives pooled ``(B, C_4)`` features instead of logits; another number than the
    checkpoint's leaves a new head (with a warning) for fine-tuning.
    ``pretrained``: ``None``/``False`` (random init), ``True`` (the variant's published
    ImageNet-1K weights, downloaded from the Hugging Face Hub), a hub id, a local file or
    folder (a run's ``best.safetensors`` or ``last.pt`` too), a state dict, or a
    :class:`pvtv2.checkpoint.Checkpoint` already read; see :func:`pvtv2.load_checkpoint`. ``name`` may be omitted
    (or be a path) when the checkpoint carries its config (our format, transformers folders).
    ``overrides`` are :class:`pvtv2.PVTv2Config` fields (``attention="full"``,
    ``patch_embed="plain"``, ``conv_ffn=False``, ``drop_rate``...).
    """
    if name is not None and name not in VARIANTS and os.path.exists(str(name)) and pretrained in (None, False):
        name, pretrained = None, name
    if pretrained is not None and pretrained is not False:
        from .checkpoint import build_pretrained

        return build_pretrained(name, pretrained, num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
    if name is None:
        raise ValueError("create_model needs a model name (see pvtv2.list_models()) or pretrained=<checkpoint>")
    config = variant_config(name, num_classes=1000 if num_classes is None else num_classes,
                            drop_path_rate=drop_path_rate, **overrides)
    return PyramidVisionTransformerV2(config)
