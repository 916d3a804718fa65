"""``pvtv2 detect eval``: detections in COCO's result format, their evaluation with pycocotools'
COCOeval, and the scores of a trained detector."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..engine import DistEnv, autocast, backend_settings, resolve_amp, init_distributed, progress, require_samples, using_backends
from ..errors import DataError
from ..fileio import atomic_write
from .data import CocoDetection, coco_paths, collate_detection, encode_mask
from .model import MASK_KINDS, load_detector

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def to_coco_results(output: dict[str, torch.Tensor], image_id: int, cat_ids: list[int]) -> list[dict[str, Any]]:
    """One image's torchvision output (boxes in original pixels) -> COCO result dicts."""
    boxes = output["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    scores, labels = output["scores"].float().cpu().tolist(), output["labels"].cpu().tolist()
    masks = (output["masks"][:, 0] > 0.5).cpu().numpy() if "masks" in output else None
    out = []
    for k, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        if not 1 <= label <= len(cat_ids):
            continue
        r = {"image_id": int(image_id), "category_id": cat_ids[label - 1], "bbox": [round(v, 3) for v in box],
             "score": round(float(score), 5)}
        if masks is not None:
            r["segmentation"] = encode_mask(masks[k])
        out.append(r)
    return out


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset: CocoDetection, *, env: DistEnv, amp: str = "none", batch_size: int = 2,
                    show_progress: bool = True, workers: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """COCO results for every image of ``dataset`` (loaded by ``workers`` processes); each
    process takes a shard, rank 0 gets them all."""
    was_training = model.training
    model.eval()
    results, skipped = [], []
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate_detection,
                        pin_memory=env.device.type == "cuda")
    for images, targets, errors in progress(loader, desc="eval", enabled=show_progress and env.is_main):
        skipped += errors
        if not images:
            continue
        with autocast(env.device, amp):
            outputs = model([x.to(env.device, non_blocking=True) for x in images])
        for out, t in zip(outputs, targets):
            results += to_coco_results(out, t["image_id"], dataset.cat_ids)
    model.train(was_training)
    if env.distributed:
        gathered: list[Any] = [None] * env.world_size
        dist.all_gather_object(gathered, (results, skipped))
        results = [r for part, _ in gathered for r in part]
        skipped = [s for _, part in gathered for s in part]
    return results, skipped


def coco_evaluate(coco_gt, results: list[dict[str, Any]], iou_types=("bbox",), *, image_ids: list[int] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """COCOeval per IoU type -> ``{"bbox": {"stats": {AP: ...}, "summary": text}, ...}``; the
    stats are pycocotools' own 12 numbers (AP in [0, 1]; -1 where a size range has no objects)."""
    from pycocotools.cocoeval import COCOeval

    report = {}
    for iou_type in iou_types:
        if not results:
            report[iou_type] = {"stats": {k: 0.0 for k in STAT_NAMES}, "summary": "no detections: every AP and AR is 0"}
            continue
        res = [dict(r) for r in results] if iou_type == "segm" else [{k: v for k, v in r.items() if k != "segmentation"}
                                                                      for r in results]
        if iou_type == "segm" and any("segmentation" not in r for r in res):
            raise ValueError("segm evaluation needs masks in every result (a Mask R-CNN)")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            dt = coco_gt.loadRes(copy.deepcopy(res))
            ev = COCOeval(coco_gt, dt, iou_type)
            if image_ids is not None:
                ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        summary = "\n".join(line for line in buf.getvalue().splitlines() if line.startswith(" Average"))
        report[iou_type] = {"stats": {k: float(v) for k, v in zip(STAT_NAMES, np.asarray(ev.stats))}, "summary": summary}
    return report


def evaluate_checkpoint(data: str | Path, checkpoint: str | Path, *, split: str = "val", images: str | None = None,
                        ann: str | None = None, device: str = "auto", batch_size: int = 2, amp: str = "none",
                        results_file: str | Path | None = None, progress_bar: bool = True, workers: int = 2,
                        tf32: bool = True) -> dict[str, Any]:
    """COCO box AP (and mask AP for Mask R-CNN) of a checkpoint; ``results_file`` keeps the
    detections in COCO's result format. ``workers``: image-loading processes; ``tf32``: TF32
    products on CUDA."""
    env = DistEnv(device=init_distributed(device).device)
    amp = resolve_amp(amp, env.device)  # checked before the model is loaded
    with using_backends(backend_settings(env.device, tf32=tf32)):
        return _evaluate_checkpoint(data, checkpoint, env, split=split, images=images, ann=ann, batch_size=batch_size,
                                    amp=amp, results_file=results_file, progress_bar=progress_bar, workers=workers)


def _evaluate_checkpoint(data, checkpoint, env: DistEnv, *, split, images, ann, batch_size, amp, results_file,
                         progress_bar, workers) -> dict[str, Any]:
    model, info = load_detector(checkpoint, device=env.device)
    img_dir, ann_file = coco_paths(data, split, images=images, ann=ann)
    dataset = CocoDetection(img_dir, ann_file, masks=False)
    dataset.warn()
    if dataset.class_names != info["class_names"]:
        raise DataError(f"{ann_file} has categories {dataset.class_names[:10]} but the checkpoint was trained on "
                        f"{info['class_names'][:10]}")
    results, skipped = predict_dataset(model, dataset, env=env, amp=amp, batch_size=batch_size, show_progress=progress_bar,
                                       workers=workers)
    require_samples(len(dataset) - len(skipped), skipped, f"evaluating on {img_dir}")
    if results_file:
        atomic_write(results_file, lambda tmp: Path(tmp).write_text(json.dumps(results)))
    iou_types = ("bbox", "segm") if info["kind"] in MASK_KINDS else ("bbox",)
    report = coco_evaluate(dataset.coco, results, iou_types, image_ids=[r[0]["id"] for r in dataset.records])
    return {**report, "images": len(dataset) - len(skipped), "skipped": len(skipped), "detections": len(results)}
