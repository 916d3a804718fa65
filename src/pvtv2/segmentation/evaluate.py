"""``pvtv2 segment eval``: the evaluation pass (a confusion matrix over a dataset) and the
scores of a trained segmenter."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..engine import DistEnv, autocast, backend_settings, resolve_amp, init_distributed, progress, using_backends
from ..errors import DataError
from .data import EvalTransform, SegmentationDataset, ade_pairs, collate_pairs, find_pairs, warn_problems
from .metrics import summarize, update_confusion
from .model import load_segmenter
from .predict import infer_logits


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, *, env: DistEnv, amp: str = "none", mode: str = "whole",
             crop: int = 512, show_progress: bool = True, workers: int = 0) -> dict[str, Any]:
    """Confusion matrix over ``dataset`` (one image at a time, each at its own size, loaded by
    ``workers`` processes). Each process takes every ``world_size``-th image; the matrices are
    summed over processes."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    skipped: list[str] = []
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(shard, batch_size=1, num_workers=workers, collate_fn=collate_pairs,
                        pin_memory=env.device.type == "cuda")
    for image, label, errors in progress(loader, desc="eval", enabled=show_progress and env.is_main):
        skipped += errors
        if image is None:
            continue
        with autocast(env.device, amp):
            logits = infer_logits(model, image.to(env.device, non_blocking=True), mode=mode, crop=crop)
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
        update_confusion(confusion, logits.argmax(1)[0].cpu(), label[0])
    if env.distributed:
        flat = env.all_reduce_sum(confusion.flatten().tolist() + [float(len(skipped))])
        confusion = torch.tensor(flat[:-1], dtype=torch.float64).reshape(num_classes, num_classes)
        n_skipped = int(flat[-1])
    else:
        n_skipped = len(skipped)
    model.train(was_training)
    return {"confusion": confusion, "skipped": skipped, "skipped_count": n_skipped}


def _dataset(data: str | Path, split: str, n_cls: int, scale, reduce_zero_label: bool,
             max_image_pixels: int | None = None) -> SegmentationDataset:
    root = Path(data)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        pairs, problems = find_pairs(root / "images", root / "masks")  # one folder of image/mask pairs
    else:
        pairs, problems = ade_pairs(root, split)  # ADE20K layout or {train,val}/{images,masks}
    warn_problems(problems, str(root))
    # warn=False: evaluate_checkpoint warns once with the count of the pairs skipped.
    return SegmentationDataset(pairs, EvalTransform(tuple(scale)), n_cls, reduce_zero_label=reduce_zero_label,
                               max_image_pixels=max_image_pixels, warn=False)


def evaluate_checkpoint(data: str | Path, checkpoint: str | Path, *, split: str = "val", mode: str = "whole",
                        scale: tuple[int, int] | None = None, crop: int | None = None,
                        reduce_zero_label: bool | None = None, device: str = "auto", amp: str = "none",
                        progress_bar: bool = True, max_image_pixels: int | None = None, workers: int = 2,
                        tf32: bool = True) -> dict[str, Any]:
    """mIoU, mAcc, aAcc (percent) and per-class IoU of a segmentation checkpoint. Pairs that
    cannot be used (see :class:`SegmentationDataset`) are skipped, counted and warned about.
    ``workers``: image-loading processes; ``tf32``: TF32 products on CUDA."""
    env = DistEnv(device=init_distributed(device).device)
    amp = resolve_amp(amp, env.device)  # checked before the model is loaded
    with using_backends(backend_settings(env.device, tf32=tf32)):
        return _evaluate_checkpoint(data, checkpoint, env, split=split, mode=mode, scale=scale, crop=crop,
                                    reduce_zero_label=reduce_zero_label, amp=amp, progress_bar=progress_bar,
                                    max_image_pixels=max_image_pixels, workers=workers)


def _evaluate_checkpoint(data, checkpoint, env: DistEnv, *, split, mode, scale, crop, reduce_zero_label, amp,
                         progress_bar, max_image_pixels, workers) -> dict[str, Any]:
    model, info = load_segmenter(checkpoint, device=env.device)
    names = info["class_names"]
    scale = tuple(scale or info.get("scale") or (2048, 512))
    crop = crop or info.get("crop") or 512
    rzl = info.get("reduce_zero_label", False) if reduce_zero_label is None else reduce_zero_label
    dataset = _dataset(data, split, len(names), scale, rzl, max_image_pixels)
    res = evaluate(model, dataset, len(names), env=env, amp=amp, mode=mode, crop=crop, show_progress=progress_bar,
                   workers=workers)
    if res["skipped"]:
        warn_problems(res["skipped"], str(data))
    if res["confusion"].sum() == 0:
        raise DataError(f"{data}: no usable labelled pixels to evaluate ({res['skipped_count']} pair(s) skipped)")
    scores = summarize(res["confusion"], names)
    return {"mIoU": round(scores["mIoU"], 4), "mAcc": round(scores["mAcc"], 4), "aAcc": round(scores["aAcc"], 4),
            "per_class": {k: (round(v, 4) if v is not None else None) for k, v in scores["per_class"].items()},
            "images": len(dataset) - res["skipped_count"], "skipped": res["skipped_count"], "mode": mode}


def format_table(result: dict[str, Any]) -> str:
    rows = [f"{'class':20s} {'IoU':>8s}"]
    rows += [f"{name[:20]:20s} {('%.2f' % v) if v is not None else '-':>8s}" for name, v in result["per_class"].items()]
    rows.append(f"{'mIoU':20s} {result['mIoU']:8.2f}\n{'mAcc':20s} {result['mAcc']:8.2f}\n{'aAcc':20s} {result['aAcc']:8.2f}")
    return "\n".join(rows)
