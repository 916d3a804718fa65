"""Inference (whole image or sliding window) and the evaluation pass."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import DistEnv, autocast, progress
from .data import sliding_windows
from .metrics import update_confusion


@torch.no_grad()
def infer_logits(model: nn.Module, image: torch.Tensor, *, mode: str = "whole", crop: int = 512,
                 stride: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Logits ``(B, C, H, W)`` for a normalised batch ``(B, 3, H, W)``.

    ``slide`` runs ``crop x crop`` windows every ``stride`` pixels (default two thirds of the
    crop, as MMSegmentation's ADE20K configs: 512/341) and averages the overlaps.
    """
    if mode == "whole":
        return model(image).float()
    if mode != "slide":
        raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")
    b, _, h, w = image.shape
    stride = stride or max(1, crop * 2 // 3)
    logits = count = None
    for top, left, bottom, right in sliding_windows(h, w, crop, stride):
        out = model(image[:, :, top:bottom, left:right]).float()
        if logits is None:
            logits = image.new_zeros((b, out.shape[1], h, w), dtype=torch.float32)
            count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
        logits[:, :, top:bottom, left:right] += out
        count[:, :, top:bottom, left:right] += 1
    return logits / count


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, *, env: DistEnv, amp: str = "none", mode: str = "whole",
             crop: int = 512, show_progress: bool = True) -> dict[str, Any]:
    """Confusion matrix over ``dataset`` (one image at a time, each at its own size). Each
    process takes every ``world_size``-th image; the matrices are summed over processes."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    skipped: list[str] = []
    indices = range(env.rank, len(dataset), env.world_size)
    for i in progress(indices, desc="eval", enabled=show_progress and env.is_main):
        image, label, err = dataset[i]
        if err is not None:
            skipped.append(err)
            continue
        with autocast(env.device, amp):
            logits = infer_logits(model, image[None].to(env.device), mode=mode, crop=crop)
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        update_confusion(confusion, logits.argmax(1)[0].cpu(), label)
    if env.distributed:
        flat = env.all_reduce_sum(confusion.flatten().tolist() + [float(len(skipped))])
        confusion = torch.tensor(flat[:-1], dtype=torch.float64).reshape(num_classes, num_classes)
        n_skipped = int(flat[-1])
    else:
        n_skipped = len(skipped)
    model.train(was_training)
    return {"confusion": confusion, "skipped": skipped, "skipped_count": n_skipped}
