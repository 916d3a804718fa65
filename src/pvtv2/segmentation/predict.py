"""``pvtv2 segment eval`` and ``pvtv2 segment predict`` on a trained segmenter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoint import atomic_write
from ..classification.predict import image_paths, require_images
from ..data.reading import IMAGE_ERRORS, open_rgb
from ..engine import DistEnv, autocast, init_distributed, progress
from ..errors import DataError
from ..fileio import prepare_output_folder
from .data import EvalTransform, SegmentationDataset, ade_pairs, find_pairs, warn_problems
from .engine import evaluate, infer_logits
from .metrics import summarize
from .model import load_segmenter


def palette(n: int) -> np.ndarray:
    """``(n, 3)`` uint8 colours: black background, then well-separated hues (fixed, so masks of
    different runs are comparable)."""
    golden = 0.618033988749895
    colours = [(0, 0, 0)]
    for i in range(1, n):
        h, s, v = (i * golden) % 1.0, 0.65 + 0.35 * ((i // 7) % 2), 0.95 - 0.25 * ((i // 3) % 2)
        k = int(h * 6)
        f = h * 6 - k
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][k % 6]
        colours.append(tuple(int(255 * c) for c in rgb))
    return np.array(colours, dtype=np.uint8)


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
                        progress_bar: bool = True, max_image_pixels: int | None = None) -> dict[str, Any]:
    """mIoU, mAcc, aAcc (percent) and per-class IoU of a segmentation checkpoint. Pairs that
    cannot be used (see :class:`SegmentationDataset`) are skipped, counted and warned about."""
    env = DistEnv(device=init_distributed(device).device)
    model, info = load_segmenter(checkpoint, device=env.device)
    names = info["class_names"]
    scale = tuple(scale or info.get("scale") or (2048, 512))
    crop = crop or info.get("crop") or 512
    rzl = info.get("reduce_zero_label", False) if reduce_zero_label is None else reduce_zero_label
    dataset = _dataset(data, split, len(names), scale, rzl, max_image_pixels)
    res = evaluate(model, dataset, len(names), env=env, amp=amp, mode=mode, crop=crop, show_progress=progress_bar)
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


def predict(inputs: list[str | Path], checkpoint: str | Path, out_dir: str | Path, *, mode: str = "whole",
            scale: tuple[int, int] | None = None, crop: int | None = None, alpha: float = 0.5,
            device: str = "cpu", progress_bar: bool = True, max_image_pixels: int | None = None
            ) -> Iterator[dict[str, Any]]:
    """For each image: ``<stem>_mask.png`` (palette PNG: pixel values are the class indices,
    shown in colour) and ``<stem>_overlay.png`` (the colours blended over the photo). Yields one
    record per image with the files and the share of pixels per class, or ``{"path", "error"}``
    for a file that cannot be read (broken, or more pixels than ``max_image_pixels``, default
    PIL's limit). Raises :class:`DataError` when the inputs hold no image or ``out_dir``
    cannot be written."""
    paths = require_images(image_paths(inputs), inputs)
    device_t = torch.device(device)
    model, info = load_segmenter(checkpoint, device=device_t)
    names = info["class_names"]
    transform = EvalTransform(tuple(scale or info.get("scale") or (2048, 512)))
    crop = crop or info.get("crop") or 512
    colours = palette(len(names))
    out = prepare_output_folder(out_dir)
    for path in progress(paths, desc="predict", enabled=progress_bar):
        try:
            image = open_rgb(path, max_pixels=max_image_pixels)
        except IMAGE_ERRORS as e:
            yield {"path": str(path), "error": f"unreadable image: {e}"}
            continue
        x, _ = transform(image, np.zeros((image.height, image.width), dtype=np.uint8))
        with autocast(device_t, "none"):
            logits = infer_logits(model, x[None].to(device_t), mode=mode, crop=crop)
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
        labels = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(colours.flatten().tolist())
        overlay = Image.blend(image, Image.fromarray(colours[labels]), alpha)
        mask_path, overlay_path = out / f"{path.stem}_mask.png", out / f"{path.stem}_overlay.png"
        atomic_write(mask_path, lambda tmp: mask.save(tmp, format="PNG"))
        atomic_write(overlay_path, lambda tmp: overlay.save(tmp, format="PNG"))
        counts = np.bincount(labels.ravel(), minlength=len(names)) / labels.size
        yield {"path": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
               "classes": {names[i]: round(float(c), 4) for i, c in enumerate(counts) if c > 0}}
