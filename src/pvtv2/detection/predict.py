"""``pvtv2 detect predict``: detections of a trained detector, as records and pictures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..data.images import ImageFiles, image_paths, output_stems, palette, require_images
from ..engine import autocast, backend_settings, progress, resolve_amp, using_backends
from ..fileio import atomic_write, prepare_output_folder
from ..model import MIN_INPUT_SIZE
from .data import encode_mask
from .model import load_detector


def pad_for_detector(image: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """``(3, H, W)`` image padded (zeros, bottom or right) so that the detector's keep-ratio
    resize leaves its short side at least 32 pixels (the backbone's total stride). A very
    elongated image (3000x20 at ``max_size`` 1333) would otherwise shrink to 0 pixels; the
    padding adds no offset, so boxes stay in the original image's coordinates."""
    h, w = image.shape[-2:]
    max_size = float(model.transform.max_size)
    short = math.ceil((MIN_INPUT_SIZE + 1) * max(h, w) / max_size)  # +1: torchvision floors the resized size
    if min(h, w) >= short:
        return image
    pad = (0, 0, 0, short - h) if h < w else (0, short - w, 0, 0)
    return torch.nn.functional.pad(image, pad)


def predict(inputs: list[str | Path], checkpoint: str | Path, out_dir: str | Path, *, score_thresh: float = 0.5,
            device: str = "cpu", progress_bar: bool = True, max_image_pixels: int | None = None, workers: int = 2,
            tf32: bool = True, amp: str = "none") -> Iterator[dict[str, Any]]:
    """Detections per image as JSON-ready records (boxes ``[x0, y0, x1, y1]`` in pixels, class
    names, scores, RLE masks for Mask R-CNN), and ``<stem>_det.png`` with them drawn (inputs
    that share a stem are told apart, see :func:`~pvtv2.data.images.output_stems`).

    A file that cannot be read (broken, or more pixels than ``max_image_pixels``, default
    PIL's limit) gives ``{"path", "error"}`` and the next image goes on, as does an image whose
    detections are not finite (damaged weights); a very elongated image is padded (see
    :func:`pad_for_detector`). Images load in ``workers`` processes (pinned memory on CUDA);
    ``tf32``: TF32 products on CUDA; ``amp``: ``none``, ``auto``, ``bf16`` (the fast path on a CPU with
    AVX512-BF16 or AMX: the same detections as float32 to the eval tests' tolerance) or ``fp16`` (CUDA).
    Raises :class:`DataError` when the inputs hold no image or ``out_dir`` cannot be written.
    """
    amp = resolve_amp(amp, torch.device(device))  # checked before anything is loaded
    paths = require_images(image_paths(inputs), inputs)
    model, info = load_detector(checkpoint, device=device)
    out = prepare_output_folder(out_dir)
    names = info["class_names"]
    colours = [tuple(int(v) for v in c) for c in palette(len(names) + 1)]
    loader = DataLoader(ImageFiles(paths, pil_to_tensor, max_image_pixels), batch_size=None, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    with using_backends(backend_settings(device, tf32=tf32)):
        items = zip(paths, output_stems(paths), progress(loader, desc="detect", enabled=progress_bar, total=len(paths)))
        for path, stem, (_, image, error) in items:
            if error is not None:
                yield {"path": str(path), "error": error}
                continue
            yield _detect(model, image, path, out / f"{stem}_det.png", names, colours, score_thresh, device, amp)


def _detect(model, image: torch.Tensor, path: Path, target: Path, names: list[str], colours, score_thresh: float,
            device, amp: str) -> dict[str, Any]:
    """One image's record (and picture), or ``{"path", "error"}`` when its outputs are not finite."""
    h, w = image.shape[-2:]
    padded = pad_for_detector(image, model)
    with torch.no_grad(), autocast(torch.device(device), amp):
        det = model([padded.float().div(255).to(device, non_blocking=True)])[0]
    keep = det["scores"] >= score_thresh
    det = {k: v[keep].cpu().float() if v.is_floating_point() else v[keep].cpu() for k, v in det.items()}
    if not (det["boxes"].isfinite().all() and det["scores"].isfinite().all()):
        return {"path": str(path), "error": "the detector's outputs for this image are not finite (NaN or inf): "
                                            "its weights are probably damaged"}
    if padded.shape != image.shape:  # cut boxes and masks back to the image; drop boxes left empty
        det["boxes"][:, 0::2] = det["boxes"][:, 0::2].clamp(0, w)
        det["boxes"][:, 1::2] = det["boxes"][:, 1::2].clamp(0, h)
        inside = (det["boxes"][:, 2] > det["boxes"][:, 0]) & (det["boxes"][:, 3] > det["boxes"][:, 1])
        det = {k: v[inside] for k, v in det.items()}
        if "masks" in det:
            det["masks"] = det["masks"][..., :h, :w]
    labels = [names[int(l) - 1] for l in det["labels"]]
    drawn = image
    if "masks" in det and len(labels):
        drawn = draw_segmentation_masks(drawn, det["masks"][:, 0] > 0.5, alpha=0.4,
                                        colors=[colours[int(l)] for l in det["labels"]])
    if len(labels):
        drawn = draw_bounding_boxes(drawn, det["boxes"], labels=[f"{n} {s:.2f}" for n, s in zip(labels, det["scores"])],
                                    colors=[colours[int(l)] for l in det["labels"]], width=2)
    atomic_write(target, lambda tmp: to_pil_image(drawn).save(tmp, format="PNG"))
    record = {"path": str(path), "image": str(target), "detections": [
        {"box": [round(v, 2) for v in box], "class": name, "score": round(float(score), 4)}
        for box, name, score in zip(det["boxes"].tolist(), labels, det["scores"])]}
    if "masks" in det:
        for d, m in zip(record["detections"], det["masks"][:, 0] > 0.5):
            d["mask"] = encode_mask(m.numpy())
    return record
