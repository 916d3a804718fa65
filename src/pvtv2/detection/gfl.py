"""Generalized Focal Loss (Li et al., NeurIPS 2020) on a PVTv2 + FPN backbone, as whai362/PVT's
``gfl_pvt_v2_b2_fpn_3x_mstrain_fp16.py`` configures MMDetection v2's ``GFLHead``:

* the ATSS neck, towers, anchors (side 8 x stride, only their centres and the assignment use
  them) and assigner (top 9 per level);
* a joint classification-quality output (sigmoid per class) trained with Quality Focal Loss
  (beta 2): the target of a positive's class is the IoU of its predicted box with its ground
  truth; averaged over the positives of all GPUs;
* a box branch predicting, per side, a distribution over the distances ``0..reg_max`` (16) in
  stride units (times a learnable per-level scale before the softmax); its expectation (the
  integral) is the distance. Distribution Focal Loss (weight 0.25) and GIoU loss (weight 2),
  both weighted by the positive's best class score and averaged over the sum of those weights;
* at test: per level the 1000 best locations by max class score, pairs scoring > 0.05,
  class-wise NMS at IoU 0.6, 100 detections.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import clip_boxes_to_image, generalized_box_iou_loss

from .kinds import KIND_RECIPES
from .losses import aligned_box_iou, distribution_focal_loss, quality_focal_loss, reduce_mean
from .one_stage import OneStageDetector, TowerHead, flatten_levels, init_dense_head, multiclass_nms

_TEST = KIND_RECIPES["gfl"].test


def integral(logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution logits ``(..., 4 * (reg_max + 1))`` -> the expected distance per side
    ``(..., 4)``: ``sum_i softmax(logits)_i * i`` over the bins ``0..reg_max``."""
    prob = logits.float().reshape(*logits.shape[:-1], 4, reg_max + 1).softmax(-1)
    return prob @ torch.arange(reg_max + 1, dtype=prob.dtype, device=prob.device)


def distance_to_box(points: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Points ``(N, 2)`` and distances ``(N, 4)`` (left, top, right, bottom) -> boxes ``(N, 4)``."""
    return torch.cat([points - dist[:, :2], points + dist[:, 2:]], 1)


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor, max_dist: float, eps: float = 0.1) -> torch.Tensor:
    """The inverse of :func:`distance_to_box`, clamped to ``[0, max_dist - eps]`` so the DFL's
    right bin stays in range (MMDetection's ``bbox2distance``)."""
    d = torch.cat([points - boxes[:, :2], boxes[:, 2:] - points], 1)
    return d.clamp(min=0, max=max_dist - eps)


class GFLHead(TowerHead):
    """The GFL head. ``forward`` maps per-level ``(N, in_channels, H, W)`` features to per-level
    ``(cls (N, C, H, W), distribution logits (N, 4 * (reg_max + 1), H, W))``."""

    def __init__(self, num_classes: int, in_channels: int = 256, *, strides: tuple[int, ...] = (8, 16, 32, 64, 128),
                 feat_channels: int = 256, stacked_convs: int = 4, reg_max: int = 16, topk: int = 9,
                 qfl_beta: float = 2.0, cls_weight: float = 1.0, dfl_weight: float = 0.25, bbox_weight: float = 2.0,
                 score_thresh: float = _TEST["score_thresh"], nms_thresh: float = _TEST["nms_thresh"],
                 detections_per_img: int = _TEST["detections_per_img"],
                 topk_candidates: int = _TEST["topk_candidates"]):
        super().__init__(num_classes, in_channels, strides, feat_channels, stacked_convs, topk)
        self.reg_max = reg_max
        self.arch["reg_max"] = reg_max
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        init_dense_head(self, self.gfl_cls)
        self.qfl_beta = qfl_beta
        self.cls_weight, self.dfl_weight, self.bbox_weight = cls_weight, dfl_weight, bbox_weight
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates

    def forward(self, feats: list[torch.Tensor]):
        cls_out, reg_out = [], []
        for c, r, scale in self.towers(feats):
            cls_out.append(self.gfl_cls(c))
            reg_out.append(scale(self.gfl_reg(r)).float())
        return cls_out, reg_out

    def loss(self, outputs, anchors: list[torch.Tensor], valid: torch.Tensor,
             targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """As :meth:`ATSSHead.loss`."""
        pos_img, pos_idx, pos_gt, pos_cls, num_pos = self.assign(anchors, valid, targets)
        cls = flatten_levels(outputs[0]).float()
        reg = flatten_levels(outputs[1]).float()
        all_anchors = torch.cat(anchors)
        stride = torch.cat([all_anchors.new_full((len(a),), float(s)) for a, s in zip(anchors, self.strides)])
        labels = torch.full(cls.shape[:2], -1, dtype=torch.long, device=cls.device)
        labels[pos_img, pos_idx] = pos_cls
        avg = reduce_mean(cls.new_tensor(float(num_pos))).clamp(min=1.0)

        # Everything in stride units, as the official head (IoU and GIoU do not care).
        s = stride[pos_idx][:, None]
        centres = (all_anchors[pos_idx, :2] + all_anchors[pos_idx, 2:]) / 2 / s
        logits = reg[pos_img, pos_idx]
        boxes = distance_to_box(centres, integral(logits, self.reg_max))
        gt = pos_gt / s
        quality = torch.zeros(cls.shape[:2], device=cls.device)
        quality[pos_img, pos_idx] = aligned_box_iou(boxes.detach(), gt)
        loss_cls = quality_focal_loss(cls[valid], labels[valid], quality[valid], beta=self.qfl_beta).sum() / avg

        weight = cls.detach().sigmoid()[pos_img, pos_idx].max(1).values if len(pos_idx) else cls.new_zeros(0)
        weight_sum = reduce_mean(weight.sum()).clamp(min=1.0)
        loss_bbox = (generalized_box_iou_loss(boxes, gt, reduction="none", eps=1e-6) * weight).sum() / weight_sum
        target_dist = box_to_distance(centres, gt, self.reg_max)
        dfl = distribution_focal_loss(logits.reshape(-1, self.reg_max + 1), target_dist.reshape(-1))
        loss_dfl = (dfl * weight.repeat_interleave(4)).sum() / 4.0 / weight_sum
        if not len(pos_idx):
            loss_bbox, loss_dfl = reg.sum() * 0, reg.sum() * 0
        return {"loss_cls": self.cls_weight * loss_cls, "loss_bbox": self.bbox_weight * loss_bbox,
                "loss_dfl": self.dfl_weight * loss_dfl}

    @torch.no_grad()
    def detect(self, outputs, anchors: list[torch.Tensor], image_sizes: list[tuple[int, int]]
               ) -> list[dict[str, torch.Tensor]]:
        cls_maps, reg_maps = outputs
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores = [], []
            for c, r, a, stride in zip(cls_maps, reg_maps, anchors, self.strides):
                sc = c[i].permute(1, 2, 0).reshape(-1, self.num_classes).float().sigmoid()
                d = r[i].permute(1, 2, 0).reshape(sc.shape[0], -1)
                if sc.shape[0] > self.topk_candidates:
                    keep = sc.max(1).values.topk(self.topk_candidates).indices
                    sc, d, a = sc[keep], d[keep], a[keep]
                centres = (a[:, :2] + a[:, 2:]) / 2
                boxes.append(clip_boxes_to_image(distance_to_box(centres, integral(d, self.reg_max) * stride), size))
                scores.append(sc)
            results.append(multiclass_nms(torch.cat(boxes), torch.cat(scores), score_thresh=self.score_thresh,
                                          nms_thresh=self.nms_thresh, max_detections=self.detections_per_img))
        return results


class GFL(OneStageDetector):
    """GFL with torchvision's detector interface (see :class:`OneStageDetector`); arguments as
    :class:`~pvtv2.detection.atss.ATSS`, other keywords go to :class:`GFLHead`."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, min_size: int | tuple[int, ...] = 800,
                 max_size: int = 1333, image_mean: tuple[float, ...] | None = None,
                 image_std: tuple[float, ...] | None = None, **head_kwargs: Any):
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background: at least 2, got {num_classes}")
        head = GFLHead(num_classes - 1, backbone.out_channels, strides=tuple(backbone.strides), **head_kwargs)
        super().__init__(backbone, head, min_size=min_size, max_size=max_size, image_mean=image_mean,
                         image_std=image_std)
