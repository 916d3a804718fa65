"""``pvtv2 eval``: the evaluation pass (top-1/top-5 accuracy) and the scores of a trained classifier."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..engine import (DistEnv, autocast, backend_settings, init_distributed, progress, require_samples, resolve_amp,
                      using_backends)
from ..errors import DataError
from .data import SkippingImageFolder, collate_skipping, eval_transform, warn_skipped
from .labels import folder_namings
from .predict import load_classifier


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, env: DistEnv, amp: str = "none", show_progress: bool = True,
             desc: str = "eval") -> dict[str, Any]:
    """Top-1/top-5 accuracy (percent) and cross-entropy over ``loader`` (batches of
    ``(images (B, 3, H, W), targets (B,), skipped files)``), summed over processes."""
    model.eval()
    device = env.device
    loss_sum = correct1 = correct5 = count = 0.0
    skipped: list[str] = []
    for images, targets, bad in progress(loader, desc=desc, enabled=show_progress and env.is_main):
        skipped += bad
        if images is None:
            continue
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
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


def evaluate_checkpoint(data: str | Path, checkpoint: str | Path, *, model: str | None = None, img_size: int | None = None,
                        batch_size: int = 64, workers: int = 2, device: str = "auto", amp: str = "none",
                        tf32: bool = True) -> dict[str, Any]:
    """``pvtv2 eval``: accuracy of a checkpoint on ``data/val`` (or ``data`` itself if it holds class folders);
    ``tf32``: TF32 products on CUDA (see :mod:`pvtv2.engine.backends`); ``amp``: autocast as in ``--amp``."""
    env = DistEnv(device=init_distributed(device).device)
    amp = resolve_amp(amp, env.device)  # checked before the model is loaded
    with using_backends(backend_settings(env.device, tf32=tf32)):
        return _evaluate_checkpoint(data, checkpoint, env, model=model, img_size=img_size, batch_size=batch_size,
                                    workers=workers, amp=amp)


def _evaluate_checkpoint(data, checkpoint, env: DistEnv, *, model, img_size, batch_size, workers, amp) -> dict[str, Any]:
    net, names, size, crop = load_classifier(checkpoint, model, device=str(env.device))
    root = Path(data)
    folder = root / "val" if (root / "val").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    # ImageNet-1K names: folders may also carry ImageNet's WordNet ids or the indices.
    names = next((n for n in folder_namings(names) if set(present) <= set(n)), names)
    unknown = [c for c in present if c not in names]
    if unknown:
        raise DataError(f"{folder} has class folder(s) {unknown[:5]} that the checkpoint does not know "
                        f"(its classes: {names[:10]}{'...' if len(names) > 10 else ''})")
    dataset = SkippingImageFolder(folder, eval_transform(img_size or size, crop), classes=names)
    if len(dataset) == 0:
        raise DataError(f"{folder}: no images found")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skipping,
                        pin_memory=env.device.type == "cuda")
    res = evaluate(net, loader, env=env, amp=amp)
    require_samples(res["images"], res["skipped"], f"evaluating on {folder}")
    warn_skipped(res["skipped"], str(folder))
    return {"top1": round(res["top1"], 4), "top5": round(res["top5"], 4), "loss": round(res["loss"], 6),
            "images": res["images"], "skipped": len(res["skipped"])}
