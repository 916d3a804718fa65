"""Detection losses that torchvision lacks, and the averaging the official heads use.

Written from the formulas in the papers and MMDetection v2 (``mmdet/models/losses``):

* Quality Focal Loss (GFL, Li et al. 2020, eq. 5): for the labelled class of a positive
  location, ``-|y - s|^beta * (y log s + (1 - y) log(1 - s))`` with ``y`` the IoU of the
  predicted box with its ground truth and ``s = sigmoid(logit)``; every other (location, class)
  pair is a negative with ``y = 0``: ``-s^beta * log(1 - s)``.
* Distribution Focal Loss (eq. 6): a distance ``y`` between bins ``yl = floor(y)`` and
  ``yr = yl + 1`` is learned as ``-((yr - y) log P(yl) + (y - yl) log P(yr))`` over the
  softmax of ``reg_max + 1`` bins.
* The centerness target of FCOS/ATSS: ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

Focal loss and GIoU loss themselves are ``torchvision.ops.sigmoid_focal_loss`` and
``torchvision.ops.generalized_box_iou_loss``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor, *,
                       beta: float = 2.0) -> torch.Tensor:
    """QFL per location, summed over classes.

    ``logits``: ``(N, C)``; ``labels``: ``(N,)`` class index ``0..C-1`` for positives, ``-1``
    (or anything outside ``0..C-1``) for negatives; ``quality``: ``(N,)`` IoU targets in
    ``[0, 1]`` (read at positives only). Returns ``(N,)``.
    """
    logits = logits.float()
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * prob.pow(beta)
    pos = ((labels >= 0) & (labels < logits.shape[1])).nonzero().squeeze(1)
    if pos.numel():
        cls = labels[pos].long()
        target = quality[pos].float()
        # The modulating factor |y - s|^beta is a weight, not a path for gradients of y.
        factor = (target - prob[pos, cls]).abs().pow(beta)
        loss[pos, cls] = F.binary_cross_entropy_with_logits(logits[pos, cls], target, reduction="none") * factor
    return loss.sum(dim=1)


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL: ``logits`` ``(N, reg_max + 1)`` over the bins ``0..reg_max``, ``target`` ``(N,)``
    distances in ``[0, reg_max)`` (bin units). Returns ``(N,)``."""
    left = target.long()
    right = left + 1
    w_left = right.float() - target
    w_right = target - left.float()
    return (F.cross_entropy(logits.float(), left, reduction="none") * w_left
            + F.cross_entropy(logits.float(), right, reduction="none") * w_right)


def centerness_target(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of each point ``(N, 2)`` inside its box ``(N, 4)`` (xyxy) -> ``(N,)``;
    points must lie strictly inside (the ATSS assigner guarantees it for positives)."""
    lr = torch.stack([points[:, 0] - boxes[:, 0], boxes[:, 2] - points[:, 0]], 1)
    tb = torch.stack([points[:, 1] - boxes[:, 1], boxes[:, 3] - points[:, 1]], 1)
    return torch.sqrt(lr.min(1).values / lr.max(1).values * (tb.min(1).values / tb.max(1).values))


def aligned_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of each box of ``a`` ``(N, 4)`` with the box of ``b`` ``(N, 4)`` in the same row -> ``(N,)``."""
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a) + area(b) - inter).clamp(min=eps)


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the processes of a distributed run (itself otherwise): the
    official heads normalise by the positives of all GPUs, so every process scales alike."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value.div_(dist.get_world_size()))
    return value
