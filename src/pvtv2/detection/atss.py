"""ATSS (Zhang et al., CVPR 2020) on a PVTv2 + FPN backbone, as whai362/PVT's
``atss_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` configures MMDetection v2's ``ATSSHead``:

* FPN on stages 2-4, 256 channels, P6/P7 by stride-2 convs on P5's output (levels P3-P7,
  strides 8-128);
* two towers of four 3x3 conv + GroupNorm(32) + ReLU (classification; box + centerness), a
  3x3 output conv each for the classes (sigmoid), the 4 box deltas (times a learnable per-level
  scale) and the centerness logit;
* one square anchor of side 8 x stride per location, deltas coded with stds (0.1, 0.1, 0.2, 0.2);
* the ATSS assigner (top 9 per level), focal loss (alpha 0.25, gamma 2) averaged over the
  positives of all GPUs, GIoU loss (weight 2) on decoded boxes weighted by the centerness
  target and averaged over its sum, centerness BCE averaged over the positives;
* at test: per level the 1000 best locations by max class score x centerness, pairs scoring
  > 0.05, scores times centerness, class-wise NMS at IoU 0.6, 100 detections.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import clip_boxes_to_image, generalized_box_iou_loss, sigmoid_focal_loss

from .kinds import KIND_RECIPES
from .losses import centerness_target, reduce_mean
from .one_stage import OneStageDetector, TowerHead, flatten_levels, init_dense_head, multiclass_nms

_TEST = KIND_RECIPES["atss"].test


class ATSSHead(TowerHead):
    """The ATSS head. ``forward`` maps per-level ``(N, in_channels, H, W)`` features to per-level
    ``(cls (N, C, H, W), deltas (N, 4, H, W), centerness (N, 1, H, W))``; ``num_classes`` ``C``
    counts object classes only (sigmoid, no background channel)."""

    def __init__(self, num_classes: int, in_channels: int = 256, *, strides: tuple[int, ...] = (8, 16, 32, 64, 128),
                 feat_channels: int = 256, stacked_convs: int = 4, topk: int = 9, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, cls_weight: float = 1.0, bbox_weight: float = 2.0,
                 centerness_weight: float = 1.0, score_thresh: float = _TEST["score_thresh"],
                 nms_thresh: float = _TEST["nms_thresh"], detections_per_img: int = _TEST["detections_per_img"],
                 topk_candidates: int = _TEST["topk_candidates"]):
        super().__init__(num_classes, in_channels, strides, feat_channels, stacked_convs, topk)
        self.atss_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        init_dense_head(self, self.atss_cls)
        # DeltaXYWHBBoxCoder with stds (0.1, 0.1, 0.2, 0.2) is torchvision's coder with weights 1/std.
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.cls_weight, self.bbox_weight, self.centerness_weight = cls_weight, bbox_weight, centerness_weight
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates

    def forward(self, feats: list[torch.Tensor]):
        cls_out, reg_out, ctr_out = [], [], []
        for c, r, scale in self.towers(feats):
            cls_out.append(self.atss_cls(c))
            reg_out.append(scale(self.atss_reg(r)).float())
            ctr_out.append(self.atss_centerness(r))
        return cls_out, reg_out, ctr_out

    def loss(self, outputs, anchors: list[torch.Tensor], valid: torch.Tensor,
             targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``anchors``: per level ``(A_l, 4)``; ``valid``: ``(N, A)`` grid points on each image;
        ``targets``: per image ``{"boxes" (G, 4) xyxy in the resized image, "labels" (G,) 1..C}``."""
        pos_img, pos_idx, pos_gt, pos_cls, num_pos = self.assign(anchors, valid, targets)
        cls = flatten_levels(outputs[0]).float()
        reg = flatten_levels(outputs[1]).float()
        ctr = flatten_levels(outputs[2]).float()[..., 0]
        cls_target = torch.zeros_like(cls)
        cls_target[pos_img, pos_idx, pos_cls] = 1.0
        avg = reduce_mean(cls.new_tensor(float(num_pos))).clamp(min=1.0)
        loss_cls = sigmoid_focal_loss(cls[valid], cls_target[valid], alpha=self.focal_alpha, gamma=self.focal_gamma,
                                      reduction="sum") / avg

        pos_anchors = torch.cat(anchors)[pos_idx]
        boxes = self.box_coder.decode_single(reg[pos_img, pos_idx], pos_anchors)
        ctr_target = centerness_target((pos_anchors[:, :2] + pos_anchors[:, 2:]) / 2, pos_gt)
        # GIoU against the ground truth itself: the official code decodes the encoded
        # targets, which gives the same boxes back.
        giou = generalized_box_iou_loss(boxes, pos_gt, reduction="none", eps=1e-6)
        weight_sum = reduce_mean(ctr_target.sum()).clamp(min=1.0)
        loss_bbox = (giou * ctr_target).sum() / weight_sum
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos_img, pos_idx], ctr_target, reduction="sum") / avg
        if not len(pos_idx):  # keep every output in the graph (DDP wants gradients for all)
            loss_bbox, loss_ctr = reg.sum() * 0, ctr.sum() * 0
        return {"loss_cls": self.cls_weight * loss_cls, "loss_bbox": self.bbox_weight * loss_bbox,
                "loss_centerness": self.centerness_weight * loss_ctr}

    @torch.no_grad()
    def detect(self, outputs, anchors: list[torch.Tensor], image_sizes: list[tuple[int, int]]
               ) -> list[dict[str, torch.Tensor]]:
        cls_maps, reg_maps, ctr_maps = outputs
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores, factors = [], [], []
            for c, r, z, a in zip(cls_maps, reg_maps, ctr_maps, anchors):
                s = c[i].permute(1, 2, 0).reshape(-1, self.num_classes).float().sigmoid()
                ctr = z[i].reshape(-1).float().sigmoid()
                d = r[i].permute(1, 2, 0).reshape(-1, 4).float()
                if s.shape[0] > self.topk_candidates:
                    keep = (s * ctr[:, None]).max(1).values.topk(self.topk_candidates).indices
                    s, ctr, d, a = s[keep], ctr[keep], d[keep], a[keep]
                boxes.append(clip_boxes_to_image(self.box_coder.decode_single(d, a), size))
                scores.append(s)
                factors.append(ctr)
            results.append(multiclass_nms(torch.cat(boxes), torch.cat(scores), score_thresh=self.score_thresh,
                                          nms_thresh=self.nms_thresh, max_detections=self.detections_per_img,
                                          score_factors=torch.cat(factors)))
        return results


class ATSS(OneStageDetector):
    """ATSS with torchvision's detector interface (see :class:`OneStageDetector`).

    ``backbone``: a :class:`~pvtv2.detection.PVTv2FPN` with 5 levels (strides 8-128);
    ``num_classes`` counts the background as torchvision does (``K + 1`` for ``K`` object
    classes; labels ``1..K``). Other keywords go to :class:`ATSSHead` (test thresholds, loss
    weights).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, min_size: int | tuple[int, ...] = 800,
                 max_size: int = 1333, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, **head_kwargs: Any):
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background: at least 2, got {num_classes}")
        head = ATSSHead(num_classes - 1, backbone.out_channels, strides=tuple(backbone.strides), **head_kwargs)
        super().__init__(backbone, head, min_size=min_size, max_size=max_size, image_mean=image_mean,
                         image_std=image_std)
