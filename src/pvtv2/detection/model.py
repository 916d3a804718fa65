"""PVTv2 + FPN backbones for torchvision's detectors (RetinaNet, Faster R-CNN, Mask R-CNN).

Only the glue is ours: the FPN, anchor generators, heads, RoI ops, losses and box coding
are torchvision's. The necks follow whai362/PVT ``detection/configs``:

* RetinaNet (``retinanet_pvt_v2_*_fpn_1x_coco.py``): FPN over stages 2-4 (``start_level=1``),
  256 channels, P6/P7 from stage 4's map (``add_extra_convs='on_input'``), 5 levels P3-P7.
* Faster/Mask R-CNN (``mask_rcnn_pvt_v2_*_fpn_1x_coco.py``): FPN over all 4 stages, 256
  channels, P6 by max-pooling P5 (``num_outs=5``), 5 levels P2-P6.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..checkpoint import TaskFile, load_task_file, save_task_file
from ..errors import CheckpointError
from ..factory import create_model
from ..model import PyramidVisionTransformerV2

DETECTORS = {"retinanet": RetinaNet, "fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN}
KINDS = tuple(DETECTORS)


class PVTv2FPN(nn.Module):
    """PVTv2 stages ``first_stage..4`` -> FPN -> ``OrderedDict`` of maps with ``out_channels``
    channels each, keyed ``"0", "1", ...`` then the extra levels (``"pool"`` or ``"p6", "p7"``)."""

    def __init__(self, body: PyramidVisionTransformerV2, *, first_stage: int = 1, out_channels: int = 256,
                 extra: str = "maxpool"):
        super().__init__()
        self.body = body
        self.first_stage = first_stage
        in_channels = list(body.embed_dims)[first_stage - 1:]
        if extra == "maxpool":
            extra_blocks = LastLevelMaxPool()
        elif extra == "p6p7":
            extra_blocks = LastLevelP6P7(in_channels[-1], out_channels)  # from C5: mmdet's 'on_input'
        else:
            raise ValueError(f"extra levels must be 'maxpool' or 'p6p7', got {extra!r}")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels
        self.strides = [2 ** (s + 1) for s in range(first_stage, 5)] + (
            [64] if extra == "maxpool" else [64, 128])

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body.forward_features(x)[self.first_stage - 1:]
        return self.fpn(OrderedDict((str(i), f.contiguous()) for i, f in enumerate(feats)))


def create_backbone(backbone_name: str, kind: str, *, pretrained_backbone: Any = None, drop_path_rate: float = 0.1,
                    **overrides: Any) -> PVTv2FPN:
    # features_only: the maps alone (a PVTv1 then has no class token or final norm, as the
    # official detection backbone).
    body = create_model(backbone_name, features_only=True, pretrained=pretrained_backbone,
                        drop_path_rate=drop_path_rate, **overrides)
    return _with_fpn(body, kind)


def _with_fpn(body: PyramidVisionTransformerV2, kind: str) -> PVTv2FPN:
    """The neck of the official configs for ``kind`` (see the module docstring)."""
    if kind == "retinanet":
        return PVTv2FPN(body, first_stage=2, extra="p6p7")
    return PVTv2FPN(body, first_stage=1, extra="maxpool")


def create_detector(kind: str, backbone_name: str, num_classes: int, *, pretrained_backbone: Any = None,
                    drop_path_rate: float = 0.1, min_size: int | tuple[int, ...] = 800, max_size: int = 1333,
                    **kwargs: Any) -> nn.Module:
    """A torchvision detector on a PVTv2 + FPN backbone.

    ``kind``: ``retinanet``, ``fasterrcnn`` or ``maskrcnn``. ``num_classes`` counts the object
    categories; targets use labels ``1..num_classes`` (0 is the background, as torchvision).
    ``min_size``/``max_size``: the 1333x800-style test resize of the official configs.
    Other keyword arguments go to the torchvision model (score thresholds, NMS...).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {', '.join(KINDS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1 (object categories, without background), got {num_classes}")
    backbone = create_backbone(backbone_name, kind, pretrained_backbone=pretrained_backbone, drop_path_rate=drop_path_rate)
    model = DETECTORS[kind](backbone, num_classes=num_classes + 1, min_size=min_size, max_size=max_size, **kwargs)
    model.kind, model.backbone_name, model.num_object_classes = kind, backbone_name, num_classes
    return model


def save_detector(model: nn.Module, path: str | os.PathLike, *, class_names: list[str],
                  extra: dict[str, Any] | None = None) -> Path:
    """Safetensors weights with the detector kind, backbone config, class names, resize and
    ``extra`` (e.g. the COCO category ids) in the metadata: :func:`load_detector` needs nothing else."""
    t = model.transform
    return save_task_file(model, path, task="detect", backbone=model.backbone.body, class_names=class_names,
                          extra=extra, kind=model.kind, min_size=json.dumps(list(t.min_size)), max_size=str(t.max_size))


def load_detector(path: str | os.PathLike, *, device: str | torch.device = "cpu", **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a detector written by :func:`save_detector` -> ``(model in eval mode, metadata)``;
    keyword arguments (``box_score_thresh``...) go to the torchvision model."""
    def build(f: TaskFile) -> nn.Module:
        kind = f.metadata.get("kind")
        if kind not in DETECTORS:
            raise CheckpointError(f"{f.path}: unknown detector kind {kind!r} in its metadata; expected one of {', '.join(KINDS)}")
        model = DETECTORS[kind](_with_fpn(f.backbone, kind), num_classes=len(f.class_names) + 1,
                                min_size=tuple(f.json("min_size")), max_size=int(f.json("max_size")), **kwargs)
        model.kind, model.num_object_classes = kind, len(f.class_names)
        return model

    model, f = load_task_file(path, task="detect", label="detection", build=build)
    info = {"kind": model.kind, "class_names": f.class_names, **f.extra}
    return model.eval().to(device), info
