"""Semantic FPN (Kirillov et al., Panoptic FPN) on a PVTv2 backbone.

Backbone -> FPN neck (torchvision's, 256 channels, one output per stage) -> semantic head:
each level goes through ``conv3x3-BN-ReLU (+2x upsample)`` blocks until stride 4, the levels
are summed, then dropout 0.1, a 1x1 classifier, and bilinear upsampling to the input size.
Widths follow MMSegmentation's ``fpn_r50.py`` used by whai362/PVT (neck 256, head 128).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from ..checkpoint import TaskFile, load_task_file, save_task_file
from ..checkpoint.dense import backbone_from_keys, is_torch_file, load_strict, mmseg_fpn_to_pvtv2, read_dense_checkpoint
from ..errors import CheckpointError
from ..factory import create_model
from ..layers.onednn import channels_last_pays
from ..model import PyramidVisionTransformerV2


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """Merge FPN levels (strides 4, 8, 16, 32) at stride 4 and classify every pixel."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, *, num_levels: int = 4, dropout: float = 0.1):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            layers: list[nn.Module] = []
            for k in range(max(1, level)):
                layers.append(_conv_bn_relu(in_channels if k == 0 else channels, channels))
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, feat in zip(self.scale_heads[1:], features[1:]):
            # Odd input sizes make 2x upsampling overshoot stride 4 by a pixel: align to level 0.
            out = out + F.interpolate(head(feat), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(out))


class SemanticFPN(nn.Module):
    """``(B, 3, H, W)`` -> per-pixel logits ``(B, num_classes, H, W)``."""

    def __init__(self, backbone: PyramidVisionTransformerV2, num_classes: int, *, fpn_channels: int = 256,
                 head_channels: int = 128, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.neck = FeaturePyramidNetwork(list(backbone.embed_dims), fpn_channels)
        self.head = SemanticFPNHead(fpn_channels, head_channels, num_classes, dropout=dropout)
        self.num_classes = num_classes
        self.channels_last: bool | None = None  # the neck and head on channels-last maps: None where it pays

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(x)
        layout = torch.channels_last if channels_last_pays(x, self.channels_last, self.training) else torch.contiguous_format
        pyramid = self.neck(OrderedDict((str(i), f.contiguous(memory_format=layout)) for i, f in enumerate(feats)))
        logits = self.head(list(pyramid.values()))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_segmenter(backbone_name: str, num_classes: int, *, pretrained_backbone: Any = None,
                     drop_path_rate: float = 0.1, **overrides: Any) -> SemanticFPN:
    """Semantic FPN with the PVTv2 variant ``backbone_name``; ``pretrained_backbone`` takes
    anything :func:`pvtv2.create_model`'s ``pretrained`` takes (the classifier head is dropped)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    # features_only: the maps alone (a PVTv1 then has no class token or final norm).
    backbone = create_model(backbone_name, features_only=True, pretrained=pretrained_backbone,
                            drop_path_rate=drop_path_rate, **overrides)
    return SemanticFPN(backbone, num_classes)


def save_segmenter(model: SemanticFPN, path: str | os.PathLike, *, class_names: list[str] | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Safetensors weights with the backbone config, class names and ``extra`` (scale, crop...)
    in the metadata, so :func:`load_segmenter` rebuilds the model from the file alone."""
    names = class_names or getattr(model, "class_names", None) or [str(i) for i in range(model.num_classes)]
    return save_task_file(model, path, task="segment", backbone=model.backbone, class_names=names, extra=extra,
                          num_classes=str(model.num_classes))


def load_segmenter(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[SemanticFPN, dict[str, Any]]:
    """Rebuild a segmenter written by :func:`save_segmenter` (e.g. a run's ``best.safetensors``),
    or a published MMSegmentation Semantic FPN ``.pth`` (whai362/PVTv2-Seg; format auto-detected);
    returns ``(model in eval mode, metadata)`` with ``class_names`` and the training ``scale``/``crop``."""
    if Path(path).is_file() and is_torch_file(path):
        model, info = _load_mmseg_fpn(path)
        return model.eval().to(device), info

    def build(f: TaskFile) -> SemanticFPN:
        return SemanticFPN(f.backbone, int(f.json("num_classes")))

    model, f = load_task_file(path, task="segment", label="segmentation", build=build)
    model.class_names = f.class_names
    return model.eval().to(device), {"class_names": f.class_names, **f.extra}


def _load_mmseg_fpn(path: str | os.PathLike) -> tuple[SemanticFPN, dict[str, Any]]:
    """A published Semantic FPN: MMSegmentation's FPN neck and ``FPNHead`` compute what ours do
    (nearest top-down upsampling, bilinear 2x steps with ``align_corners=False``, dropout then a
    1x1 classifier), so the tensors load one to one; the class count is ``conv_seg``'s rows."""
    ckpt = read_dense_checkpoint(path)
    if ckpt.format != "mmseg-fpn":
        raise CheckpointError(f"{path}: a published {ckpt.format} checkpoint, not a Semantic FPN; "
                              f"`pvtv2 detect eval` takes it")
    classifier = ckpt.state_dict.get("decode_head.conv_seg.weight")
    if classifier is None or classifier.ndim != 4:
        raise CheckpointError(f"{path}: decode_head.conv_seg.weight is missing or not a 1x1 conv weight")
    num_classes = int(classifier.shape[0])
    model = SemanticFPN(backbone_from_keys(ckpt), num_classes)
    load_strict(model, mmseg_fpn_to_pvtv2(ckpt.state_dict), ckpt)
    model.class_names = ckpt.class_names(num_classes)
    info: dict[str, Any] = {"class_names": model.class_names, "format": ckpt.format}
    if num_classes == 150:
        # The ADE20K configs (configs/_base_/datasets/ade20k.py) train with reduce_zero_label=True.
        info["reduce_zero_label"] = True
    return model, info
