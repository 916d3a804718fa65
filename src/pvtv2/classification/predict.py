"""Top-k prediction on image files or folders with a trained classifier."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from ..data.images import ImageFiles, image_paths, require_images
from ..engine import autocast, backend_settings, progress, resolve_amp, using_backends
from ..errors import CheckpointError, ConfigError
from ..factory import create_model
from .data import eval_transform
from .labels import class_names


def _collate(batch):
    """``ImageFiles`` items -> (stacked images or None, their indices, [(index, error)])."""
    good = [(i, x) for i, x, err in batch if err is None]
    xs = torch.stack([x for _, x in good]) if good else None
    return xs, [i for i, _ in good], [(i, err) for i, _, err in batch if err is not None]


def load_classifier(checkpoint: str | Path, model: str | None = None, *, device: str = "cpu"):
    """Build a classifier from a checkpoint (file, folder or hub id) -> (model, class names,
    input size, crop pct). A checkpoint without class names gets the ImageNet-1K names when it
    has 1000 classes, else the indices (:func:`~pvtv2.classification.labels.class_names`)."""
    net = create_model(model, pretrained=checkpoint)
    net.eval().to(device)
    meta = getattr(net, "checkpoint_extra", {})
    names = class_names(getattr(net, "class_names", None), net.num_classes)
    return net, names, int(meta.get("input_size", 224)), float(meta.get("crop_pct", 0.875))


class _OnnxClassifier:
    """An exported ``.onnx`` classifier run by onnxruntime, called like the PyTorch model."""

    def __init__(self, path: str | Path):
        from ..export import onnx_session

        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        try:
            self.session = onnx_session(path)
        except Exception as e:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointError(f"{path}: not a readable ONNX model ({first}); re-export it with: "
                                  f"pvtv2 export CHECKPOINT --format onnx") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in meta:
            raise CheckpointError(f"{path}: not a pvtv2 classifier export (no class_names metadata); "
                                  f"export with: pvtv2 export CHECKPOINT --format onnx")
        self.class_names = json.loads(meta["class_names"])
        self.num_classes = len(self.class_names)
        self.input_size = int(meta.get("input_size", 224))
        self.crop_pct = float(meta.get("crop_pct", 0.875))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": x.numpy()})[0])


def predict(
    sources: list[str | Path],
    checkpoint: str | Path,
    *,
    model: str | None = None,
    topk: int = 5,
    img_size: int | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "cpu",
    show_progress: bool = True,
    max_image_pixels: int | None = None,
    tf32: bool = True,
    amp: str = "none",
) -> Iterator[dict[str, Any]]:
    """Yield one record per image: ``{"path", "top": [{"class", "index", "prob"}...]}``, or
    ``{"path", "error"}`` for a file that cannot be read (broken, or more pixels than
    ``max_image_pixels``, default PIL's limit) and for an image whose outputs are not finite
    (NaN/inf: damaged weights), so that every record is valid JSON. ``checkpoint`` may be an
    exported ``.onnx`` file, run with onnxruntime. Images load in ``workers`` processes (pinned
    memory on CUDA); ``tf32``: TF32 products on CUDA; ``amp``: ``none``, ``auto``, ``bf16`` or ``fp16``
    autocast (not for ``.onnx`` files). Raises :class:`DataError` when ``sources`` hold no image."""
    onnx = str(checkpoint).endswith(".onnx")
    if onnx and amp not in ("none", "auto"):
        raise ConfigError(f"--amp {amp}: an .onnx file runs in the precision it was exported in")
    amp = "none" if onnx else resolve_amp(amp, torch.device(device))
    if onnx:
        net = _OnnxClassifier(checkpoint)
        names, size, crop, device = net.class_names, net.input_size, net.crop_pct, "cpu"
    else:
        net, names, size, crop = load_classifier(checkpoint, model, device=device)
    paths = require_images(image_paths(sources), sources)
    on_cuda = torch.device(device).type == "cuda"
    loader = DataLoader(ImageFiles(paths, eval_transform(img_size or size, crop), max_image_pixels),
                        batch_size=batch_size, num_workers=workers, collate_fn=_collate, pin_memory=on_cuda)
    k = min(topk, net.num_classes)
    with torch.no_grad(), using_backends(backend_settings(device, tf32=tf32)):
        for xs, idx, bad in progress(loader, desc="predict", enabled=show_progress):
            for i, err in bad:
                yield {"path": str(paths[i]), "error": err}
            if xs is None:
                continue
            with autocast(torch.device(device), amp):
                logits = net(xs.to(device, non_blocking=True)).float()
            finite = logits.isfinite().all(dim=1).tolist()
            p, c = logits.softmax(dim=1).topk(k, dim=1)
            for row, i in enumerate(idx):
                if not finite[row]:
                    yield {"path": str(paths[i]), "error": "the model's outputs for this image are not finite (NaN or "
                                                           "inf): its weights are probably damaged"}
                    continue
                yield {"path": str(paths[i]), "top": [
                    {"class": names[int(j)], "index": int(j), "prob": round(float(q), 6)} for q, j in zip(p[row], c[row])]}

