"""Anchors and box coding in float32 under fp16/bf16 autocast, for torchvision's detectors.

torchvision makes its anchors in the dtype of the feature maps and decodes in the dtype of the
regression outputs (``BoxCoder.decode_single`` casts the anchors to the deltas' dtype), so under
autocast both are bf16 or fp16: bf16 keeps 8 bits of mantissa, which rounds coordinates near
1333 pixels to steps of 4 to 8, and the scores of ``--amp`` runs then depend on it. The parts
below do the same arithmetic in float32 (the regression convs still run in low precision; only
the few element-wise operations of the box coding are promoted). Our own heads (ATSS, GFL,
Sparse R-CNN) lay out their anchors in float32 and decode float32 deltas already.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder, BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList


class Float32AnchorGenerator(AnchorGenerator):
    """torchvision's anchors, always in float32 whatever the dtype of the feature maps."""

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        # Only the maps' shapes and device are read: stand-ins of the same shape that take no memory.
        stand_ins = [torch.zeros((), dtype=torch.float32, device=f.device).expand(f.shape) for f in feature_maps]
        return super().forward(image_list, stand_ins)


class Float32BoxCoder(BoxCoder):
    """torchvision's ``BoxCoder`` (the delta-xywh coding) that decodes in float32."""

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return super().decode_single(rel_codes.float(), boxes.float())


class Float32BoxLinearCoder(BoxLinearCoder):
    """torchvision's ``BoxLinearCoder`` (FCOS' distances to the sides) that decodes in float32."""

    def decode(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return super().decode(rel_codes.float(), boxes.float())


def use_float32_boxes(model: nn.Module) -> nn.Module:
    """Swap, in place, every torchvision anchor generator and box coder of ``model`` (the
    detector, its RPN, RoI heads, regression heads) for its float32 twin; returns ``model``.
    None of them holds weights, so checkpoints are unchanged."""
    for module in model.modules():
        gen = getattr(module, "anchor_generator", None)
        if type(gen) is AnchorGenerator:
            module.anchor_generator = Float32AnchorGenerator(gen.sizes, gen.aspect_ratios)
        coder = getattr(module, "box_coder", None)
        if type(coder) is BoxCoder:
            module.box_coder = Float32BoxCoder(coder.weights, coder.bbox_xform_clip)
        elif type(coder) is BoxLinearCoder:
            module.box_coder = Float32BoxLinearCoder(coder.normalize_by_size)
    return model
