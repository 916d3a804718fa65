"""One training epoch and one evaluation pass: plain loops, no framework."""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import DistEnv, autocast, optimizer_step, progress


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    criterion: Callable,
    *,
    env: DistEnv,
    epoch: int,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float = 0.0,
    mixup_fn: Callable | None = None,
    ema: Any = None,
    on_step: Callable[[int], None] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train for one pass over ``loader``; returns mean loss, image count, seconds, skipped files."""
    model.train()
    device = env.device
    loss_sum, seen, skipped = 0.0, 0, []
    start = time.perf_counter()
    bar = progress(loader, desc=f"train {epoch}", enabled=show_progress and env.is_main)
    for step, (images, targets, bad) in enumerate(bar):
        if on_step is not None:
            on_step(step)  # per-step learning-rate schedule
        skipped += bad
        if images is None:
            continue
        if mixup_fn is not None and len(images) % 2:  # Mixup pairs images up: needs an even batch
            images, targets = images[:-1], targets[:-1]
            if len(images) == 0:
                continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        with autocast(device, amp):
            loss = criterion(model(images), targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss is {loss_value} at epoch {epoch}, step {step}")
        optimizer_step(loss, optimizer, model.parameters(), scaler=scaler, clip_grad=clip_grad)
        if ema is not None:
            ema.update(model)
        loss_sum += loss_value * len(images)
        seen += len(images)
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                        img_s=f"{seen * env.world_size / max(elapsed, 1e-9):.0f}")
    seconds = time.perf_counter() - start
    loss_sum, seen = env.all_reduce_sum([loss_sum, float(seen)])
    return {"loss": loss_sum / max(seen, 1), "images": int(seen), "seconds": seconds, "skipped": skipped}


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, env: DistEnv, amp: str = "none", show_progress: bool = True,
             desc: str = "eval") -> dict[str, Any]:
    """Top-1/top-5 accuracy (percent) and cross-entropy over ``loader``, summed over processes."""
    model.eval()
    device = env.device
    loss_sum = correct1 = correct5 = count = 0.0
    skipped: list[str] = []
    for images, targets, bad in progress(loader, desc=desc, enabled=show_progress and env.is_main):
        skipped += bad
        if images is None:
            continue
        images, targets = images.to(device), targets.to(device)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += len(targets)
    loss_sum, correct1, correct5, count = env.all_reduce_sum([loss_sum, correct1, correct5, count])
    n = max(count, 1.0)
    return {"loss": loss_sum / n, "top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n,
            "images": int(count), "skipped": skipped}
