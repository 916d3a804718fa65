"""``pvtv2 segment predict``: whole-image or sliding-window inference, colour masks and overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..data.images import ImageFiles, image_paths, output_stems, palette, require_images
from ..engine import autocast, backend_settings, progress, resolve_amp, using_backends
from ..fileio import atomic_write, prepare_output_folder
from .data import EvalTransform, sliding_windows
from .model import load_segmenter


@torch.no_grad()
def infer_logits(model: nn.Module, image: torch.Tensor, *, mode: str = "whole", crop: int = 512,
                 stride: int | None = None) -> torch.Tensor:
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


def _prepare(transform):
    """A photo -> (network input (3, H', W'), the photo (H, W, 3) uint8)."""
    def prepare(image):
        x, _ = transform(image, np.zeros((image.height, image.width), dtype=np.uint8))
        return x, np.asarray(image)
    return prepare


def predict(inputs: list[str | Path], checkpoint: str | Path, out_dir: str | Path, *, mode: str = "whole",
            scale: tuple[int, int] | None = None, crop: int | None = None, alpha: float = 0.5,
            device: str = "cpu", progress_bar: bool = True, max_image_pixels: int | None = None,
            workers: int = 2, tf32: bool = True, amp: str = "none") -> Iterator[dict[str, Any]]:
    """For each image: ``<stem>_mask.png`` (palette PNG: pixel values are the class indices,
    shown in colour) and ``<stem>_overlay.png`` (the colours blended over the photo; inputs that
    share a stem are told apart, see :func:`~pvtv2.data.images.output_stems`). Yields one
    record per image with the files and the share of pixels per class, or ``{"path", "error"}``
    for a file that cannot be read (broken, or more pixels than ``max_image_pixels``, default
    PIL's limit). Images load in ``workers`` processes (pinned memory on CUDA); ``tf32``: TF32
    products on CUDA; ``amp``: ``none``, ``auto``, ``bf16`` (the CPU's fast path) or ``fp16`` (CUDA), as
    ``segment eval --amp``. Raises :class:`DataError` when the inputs hold no image or ``out_dir``
    cannot be written."""
    device_t = torch.device(device)
    amp = resolve_amp(amp, device_t)  # checked before anything is loaded
    paths = require_images(image_paths(inputs), inputs)
    model, info = load_segmenter(checkpoint, device=device_t)
    names = info["class_names"]
    transform = EvalTransform(tuple(scale or info.get("scale") or (2048, 512)))
    crop = crop or info.get("crop") or 512
    colours = palette(len(names))
    out = prepare_output_folder(out_dir)
    loader = DataLoader(ImageFiles(paths, _prepare(transform), max_image_pixels), batch_size=None, num_workers=workers,
                        pin_memory=device_t.type == "cuda")
    with using_backends(backend_settings(device_t, tf32=tf32)):
        items = zip(paths, output_stems(paths), progress(loader, desc="predict", enabled=progress_bar, total=len(paths)))
        for path, stem, (_, prepared, error) in items:
            if error is not None:
                yield {"path": str(path), "error": error}
                continue
            x, photo = prepared
            image = Image.fromarray(np.asarray(photo))  # the loader made the array a tensor
            with autocast(device_t, amp):
                logits = infer_logits(model, x[None].to(device_t, non_blocking=True), mode=mode, crop=crop)
            logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
            labels = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
            mask = Image.fromarray(labels, mode="P")
            mask.putpalette(colours.flatten().tolist())
            overlay = Image.blend(image, Image.fromarray(colours[labels]), alpha)
            mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
            atomic_write(mask_path, lambda tmp: mask.save(tmp, format="PNG"))
            atomic_write(overlay_path, lambda tmp: overlay.save(tmp, format="PNG"))
            counts = np.bincount(labels.ravel(), minlength=len(names)) / labels.size
            yield {"path": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
                   "classes": {names[i]: round(float(c), 4) for i, c in enumerate(counts) if c > 0}}
