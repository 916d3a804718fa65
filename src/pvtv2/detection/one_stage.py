"""What the ATSS and GFL detectors share (and Sparse R-CNN's input checks): the GroupNorm conv
towers, the learnable per-level scales and the ATSS assignment (:class:`TowerHead`), the anchors
(one square anchor per location, MMDetection's ``AnchorGenerator`` with ``ratios=[1.0],
octave_base_scale=8, scales_per_octave=1``), and the detector shell around a dense head with
torchvision's detector interface.

Anchors are laid out on the feature grids with the strides the FPN has by construction, not
inferred from the padded image size (torchvision's ``AnchorGenerator`` infers
``image_size // grid_size``, which is not the stride when the padded side is no multiple of 128).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms

from .assigners import atss_assign

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_labels(targets: list[dict[str, Any]], num_classes: int) -> None:
    """Sigmoid heads index their classes by ``label - 1``: anything outside ``1..num_classes``
    would silently train the wrong channel or fail deep inside an index."""
    for t in targets:
        labels = t["labels"]
        if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
            raise ValueError(f"target labels must be in 1..{num_classes} (0 is the background), got "
                             f"{sorted(set(labels.tolist()))}")


class Scale(nn.Module):
    """A learnable scalar multiplier (mmcv's ``Scale``): one per pyramid level, so the shared
    regression convs can predict at each level's range."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ConvGN(nn.Module):
    """3x3 conv (no bias: the norm has one) -> GroupNorm(32) -> ReLU, named as mmcv's
    ``ConvModule`` (``conv``, ``gn``) so the state-dict keys read like the official ones."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(groups, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.gn(self.conv(x)))


def conv_tower(in_channels: int, channels: int, depth: int) -> nn.ModuleList:
    return nn.ModuleList(ConvGN(in_channels if i == 0 else channels, channels) for i in range(depth))


class TowerHead(nn.Module):
    """What the ATSS and GFL heads share: a classification and a box tower of ``stacked_convs``
    :class:`ConvGN` layers run on every level, a learnable :class:`Scale` per level, and the
    ATSS assignment of the ground truth to the anchors (:meth:`assign`). Subclasses add their
    output convs and losses."""

    def __init__(self, num_classes: int, in_channels: int, strides: tuple[int, ...], feat_channels: int,
                 stacked_convs: int, topk: int):
        super().__init__()
        self.num_classes, self.strides, self.topk = num_classes, tuple(strides), topk
        #: The shape-defining settings, saved with the weights (see ``save_detector``).
        self.arch = {"feat_channels": feat_channels, "stacked_convs": stacked_convs}
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)

    def towers(self, feats: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor, Scale]]:
        """Per level: the classification tower's output, the box tower's and the level's scale."""
        for x, scale in zip(feats, self.scales):
            c, r = x, x
            for layer in self.cls_convs:
                c = layer(c)
            for layer in self.reg_convs:
                r = layer(r)
            yield c, r, scale

    def assign(self, anchors: list[torch.Tensor], valid: torch.Tensor, targets: list[dict[str, torch.Tensor]]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The ATSS assigner (top ``topk`` per level) on each image's valid anchors. Returns the
        positives as ``(image index, anchor index, ground-truth box (P, 4), class 0..C-1)`` and
        the positive count with at least one per image (as MMDetection counts it)."""
        check_labels(targets, self.num_classes)
        all_anchors = torch.cat(anchors)
        per_level = [len(a) for a in anchors]
        pos_img, pos_idx, pos_gt, pos_cls, num_pos = [], [], [], [], 0
        for i, t in enumerate(targets):
            kept = valid[i].nonzero().squeeze(1)
            counts = [int(v.sum()) for v in valid[i].split(per_level)]
            matched = atss_assign(all_anchors[kept], counts, t["boxes"].float(), topk=self.topk)
            pos = matched >= 0
            idx, gt = kept[pos], matched[pos]
            pos_img.append(torch.full_like(idx, i))
            pos_idx.append(idx)
            pos_gt.append(t["boxes"].float()[gt])
            pos_cls.append(t["labels"][gt] - 1)
            num_pos += max(len(idx), 1)
        return torch.cat(pos_img), torch.cat(pos_idx), torch.cat(pos_gt), torch.cat(pos_cls), num_pos


def init_dense_head(head: nn.Module, cls_conv: nn.Conv2d, prior_prob: float = 0.01) -> None:
    """The official init: every conv ``N(0, 0.01)`` with zero bias, and the classifier's bias at
    ``-log((1 - p) / p)`` so each location starts predicting ``p`` for every class."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.constant_(cls_conv.bias, -math.log((1 - prior_prob) / prior_prob))


def grid_anchors(sizes: list[tuple[int, int]], strides: list[int], *, octave_scale: float = 8.0,
                 device: torch.device | None = None) -> list[torch.Tensor]:
    """One square anchor of side ``octave_scale * stride`` centred on each grid point
    ``(x * stride, y * stride)`` -> per level ``(H * W, 4)`` xyxy, row-major as the maps flatten."""
    out = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) * s,
                                torch.arange(w, device=device, dtype=torch.float32) * s, indexing="ij")
        ctr = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
        half = octave_scale * s / 2
        out.append(torch.cat([ctr - half, ctr + half], 1))
    return out


def valid_anchors(sizes: list[tuple[int, int]], strides: list[int], image_size: tuple[int, int], *,
                  size_divisible: int = 32, device: torch.device | None = None) -> torch.Tensor:
    """Which grid points of a batch fall on one image rather than on the padding added for the
    larger images of its batch: MMDetection's valid flags (the image padded to a multiple of 32,
    ``ceil(side / stride)`` points per side) -> ``(sum H * W,)`` bool."""
    pad_h = -(-image_size[0] // size_divisible) * size_divisible
    pad_w = -(-image_size[1] // size_divisible) * size_divisible
    out = []
    for (h, w), s in zip(sizes, strides):
        vy = torch.arange(h, device=device) < min(h, -(-pad_h // s))
        vx = torch.arange(w, device=device) < min(w, -(-pad_w // s))
        out.append((vy[:, None] & vx[None, :]).reshape(-1))
    return torch.cat(out)


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-level ``(N, C, H, W)`` maps -> ``(N, sum H * W, C)``."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], 1)


class OneStageDetector(nn.Module):
    """Resize/normalise (torchvision's ``GeneralizedRCNNTransform``) -> PVTv2 + FPN -> a dense
    head. ``head`` provides ``forward(features)``, ``loss(outputs, anchors, valid, targets)`` and
    ``detect(outputs, anchors, image_sizes)``.

    Training: ``model(images, targets)`` -> dict of losses. Evaluation: ``model(images)`` ->
    per image ``{"boxes" (K, 4) xyxy in input pixels, "scores" (K,), "labels" (K,) in 1..C}``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, *, min_size: int | tuple[int, ...] = 800,
                 max_size: int = 1333, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, size_divisible: int = 32, octave_scale: float = 8.0):
        super().__init__()
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        self.transform = GeneralizedRCNNTransform(min_size, max_size, image_mean or IMAGENET_MEAN,
                                                  image_std or IMAGENET_STD, size_divisible=size_divisible)
        self.backbone = backbone
        self.head = head
        self.arch = dict(getattr(head, "arch", {}))
        self.strides = list(backbone.strides)
        self.size_divisible, self.octave_scale = size_divisible, octave_scale

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the detector needs targets (a list of {'boxes', 'labels'} dicts)")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        feats = list(self.backbone(batch.tensors).values())
        if len(feats) != len(self.strides):
            raise ValueError(f"the backbone gives {len(feats)} levels but the head expects {len(self.strides)}")
        outputs = self.head(feats)
        sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = grid_anchors(sizes, self.strides, octave_scale=self.octave_scale, device=feats[0].device)
        if self.training:
            valid = torch.stack([valid_anchors(sizes, self.strides, s, size_divisible=self.size_divisible,
                                               device=feats[0].device) for s in batch.image_sizes])
            return self.head.loss(outputs, anchors, valid, targets)
        detections = self.head.detect(outputs, anchors, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, *, score_thresh: float, nms_thresh: float,
                   max_detections: int, score_factors: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """MMDetection v2's ``multiclass_nms`` for sigmoid heads: every (box, class) pair whose score
    passes ``score_thresh``, its score then multiplied by ``score_factors`` (ATSS centerness:
    after the threshold, as the official code), class-wise NMS, the best ``max_detections``.

    ``boxes`` ``(M, 4)``, ``scores`` ``(M, C)``, ``score_factors`` ``(M,)`` -> ``{"boxes" (K, 4),
    "scores" (K,), "labels" (K,) in 1..C}`` sorted by score.
    """
    idx, cls = (scores > score_thresh).nonzero(as_tuple=True)
    s = scores[idx, cls]
    if score_factors is not None:
        s = s * score_factors[idx]
    b = boxes[idx]
    keep = batched_nms(b, s, cls, nms_thresh)[:max_detections]
    return {"boxes": b[keep], "scores": s[keep], "labels": cls[keep] + 1}
