"""The ATSS assigner (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection", Algorithm 1), as MMDetection
v2 implements it (``mmdet/core/bbox/assigners/atss_assigner.py``):

1. per pyramid level, the ``topk`` anchors whose centres are closest to each box's centre
   are its candidates (``k * levels`` in all);
2. the IoU threshold of a box is the mean plus the (unbiased) standard deviation of its
   candidates' IoUs;
3. a candidate is positive when its IoU reaches the threshold and its centre lies inside the
   box (by more than 0.01 pixel on every side);
4. an anchor positive for several boxes goes to the one it overlaps most.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import box_iou


@torch.no_grad()
def atss_assign(anchors: torch.Tensor, num_per_level: Sequence[int], gt_boxes: torch.Tensor, *,
                topk: int = 9) -> torch.Tensor:
    """Assign each anchor a ground-truth box or the background.

    ``anchors``: ``(A, 4)`` xyxy, the levels concatenated in order with ``num_per_level[l]``
    anchors each; ``gt_boxes``: ``(G, 4)`` xyxy. Returns ``(A,)`` long: the index of the
    assigned box, ``-1`` for background.
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    assigned = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return assigned
    if sum(num_per_level) != num_anchors:
        raise ValueError(f"num_per_level sums to {sum(num_per_level)} but there are {num_anchors} anchors")
    ious = box_iou(anchors, gt_boxes)  # (A, G)
    anchor_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    dist = torch.cdist(anchor_ctr, gt_ctr)  # (A, G)

    candidates, start = [], 0
    for n in num_per_level:
        if n:
            k = min(topk, n)
            candidates.append(dist[start:start + n].topk(k, dim=0, largest=False).indices + start)
        start += n
    cand = torch.cat(candidates, 0)  # (K, G): candidate anchor indices per box
    cols = torch.arange(num_gt, device=anchors.device)
    cand_iou = ious[cand, cols]  # (K, G)
    # One candidate in all (a single one-anchor level) has no spread: std would be NaN.
    std = cand_iou.std(0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])
    is_pos = cand_iou >= (cand_iou.mean(0) + std)[None]

    cx, cy = anchor_ctr[cand, 0], anchor_ctr[cand, 1]  # (K, G)
    inside = torch.stack([cx - gt_boxes[:, 0], cy - gt_boxes[:, 1], gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy],
                         0).min(0).values > 0.01
    is_pos &= inside

    # An anchor can be a candidate of several boxes: keep the box it overlaps most.
    best = torch.full((num_anchors, num_gt), -1.0, device=anchors.device)
    rows, gts = cand[is_pos], cols.expand_as(cand)[is_pos]
    best[rows, gts] = ious[rows, gts]
    best_iou, best_gt = best.max(1)
    assigned[best_iou >= 0] = best_gt[best_iou >= 0]
    return assigned
