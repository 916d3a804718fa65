"""One-to-one (Hungarian) matching of set predictions to ground-truth boxes, with the costs
of Sparse R-CNN's official config (``HungarianAssigner`` with ``FocalLossCost`` weight 2,
``BBoxL1Cost`` weight 5 on xyxy boxes normalised by the image size, ``IoUCost`` in GIoU mode
weight 2; MMDetection v2 ``mmdet/core/bbox/match_costs/match_cost.py``).

The focal cost of predicting class ``c`` is the focal loss of calling it positive minus that of
calling it negative: ``alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p))``.
"""
from __future__ import annotations

import torch
from torchvision.ops import generalized_box_iou


def linear_sum_assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum-cost one-to-one matching of the rows and columns of ``cost`` ``(R, C)``
    (``min(R, C)`` pairs) -> ``(rows, cols)`` long tensors on ``cost``'s device."""
    try:
        from scipy.optimize import linear_sum_assignment as solve
    except ImportError:  # pragma: no cover - scipy comes with the test and demo extras
        raise ImportError("Sparse R-CNN's Hungarian matching needs scipy: pip install scipy") from None
    rows, cols = solve(cost.detach().cpu().double().numpy())
    return (torch.as_tensor(rows, dtype=torch.long, device=cost.device),
            torch.as_tensor(cols, dtype=torch.long, device=cost.device))


class HungarianMatcher:
    """Weighted focal + L1 + GIoU costs, then :func:`linear_sum_assignment`."""

    def __init__(self, *, cls_weight: float = 2.0, l1_weight: float = 5.0, giou_weight: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-12):
        self.cls_weight, self.l1_weight, self.giou_weight = cls_weight, l1_weight, giou_weight
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def cost(self, logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
             image_whwh: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(P, K)`` (sigmoid classes), ``boxes`` ``(P, 4)`` and ``gt_boxes``
        ``(G, 4)`` xyxy in pixels, ``gt_labels`` ``(G,)`` in ``0..K-1``, ``image_whwh`` ``(4,)``
        -> the cost matrix ``(P, G)``."""
        p = logits.float().sigmoid()[:, gt_labels]
        pos = self.alpha * (1 - p).pow(self.gamma) * -(p + self.eps).log()
        neg = (1 - self.alpha) * p.pow(self.gamma) * -(1 - p + self.eps).log()
        l1 = torch.cdist(boxes.float() / image_whwh, gt_boxes.float() / image_whwh, p=1)
        giou = generalized_box_iou(boxes.float(), gt_boxes.float())
        return self.cls_weight * (pos - neg) + self.l1_weight * l1 - self.giou_weight * giou

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor,
                 image_whwh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``(pred_idx, gt_idx)``: each ground-truth box matched to one prediction (when
        there are at least as many predictions); unmatched predictions are background."""
        if gt_boxes.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.long, device=logits.device)
            return empty, empty
        return linear_sum_assignment(self.cost(logits, boxes, gt_labels, gt_boxes, image_whwh))
