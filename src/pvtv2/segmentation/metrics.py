"""Segmentation metrics from a confusion matrix: mIoU, mAcc, aAcc, per-class IoU."""
from __future__ import annotations

import torch

IGNORE_INDEX = 255


def update_confusion(confusion: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Add ``(pred, target)`` pixel pairs (any shape, integer) to ``confusion[target, pred]``."""
    n = confusion.shape[0]
    keep = target != ignore_index
    idx = target[keep].long() * n + pred[keep].long()
    confusion += torch.bincount(idx, minlength=n * n).reshape(n, n).to(confusion.dtype)
    return confusion


def summarize(confusion: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """mIoU / mAcc over the classes present in the ground truth (as MMSegmentation: NaN classes
    are skipped), aAcc over all pixels; percentages."""
    c = confusion.double()
    tp = c.diag()
    gt = c.sum(1)
    predicted = c.sum(0)
    union = gt + predicted - tp
    iou = tp / union
    acc = tp / gt
    present = gt > 0
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "mIoU": 100 * iou[present].mean().item() if present.any() else float("nan"),
        "mAcc": 100 * acc[present].mean().item() if present.any() else float("nan"),
        "aAcc": 100 * (tp.sum() / c.sum()).item() if c.sum() > 0 else float("nan"),
        "per_class": {n: (100 * iou[i].item() if present[i] else None) for i, n in enumerate(names)},
    }
