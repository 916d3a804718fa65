"""Top-k prediction on image files or folders with a trained classifier."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..engine import progress
from ..factory import create_model
from .data import IMG_EXTENSIONS, eval_transform


def image_paths(sources: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image paths."""
    paths: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return paths


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB")), i, ""
        except (OSError, ValueError, SyntaxError) as e:
            return torch.zeros(0), i, str(e) or type(e).__name__


def _collate(batch):
    good = [(x, i) for x, i, err in batch if not err]
    bad = [(i, err) for _, i, err in batch if err]
    xs = torch.stack([x for x, _ in good]) if good else None
    return xs, [i for _, i in good], bad


def load_classifier(checkpoint: str | Path, model: str | None = None, *, device: str = "cpu"):
    """Build a classifier from a checkpoint (file, folder or hub id) -> (model, class names,
    input size, crop pct)."""
    net = create_model(model, pretrained=checkpoint)
    net.eval().to(device)
    meta = getattr(net, "checkpoint_extra", {})
    names = getattr(net, "class_names", None)
    if not names or len(names) != net.num_classes:
        names = [str(i) for i in range(net.num_classes)]
    return net, names, int(meta.get("input_size", 224)), float(meta.get("crop_pct", 0.875))


class _OnnxClassifier:
    """An exported ``.onnx`` classifier run by onnxruntime, called like the PyTorch model."""

    def __init__(self, path: str | Path):
        from ..export import onnx_session

        self.session = onnx_session(path)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in meta:
            raise ValueError(f"{path}: not a pvtv2 classifier export (no class_names metadata); "
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
) -> Iterator[dict[str, Any]]:
    """Yield one record per image: ``{"path", "top": [{"class", "index", "prob"}...]}``
    (or ``{"path", "error"}`` for unreadable files). ``checkpoint`` may be an exported
    ``.onnx`` file, run with onnxruntime."""
    if str(checkpoint).endswith(".onnx"):
        net = _OnnxClassifier(checkpoint)
        names, size, crop, device = net.class_names, net.input_size, net.crop_pct, "cpu"
    else:
        net, names, size, crop = load_classifier(checkpoint, model, device=device)
    paths = image_paths(sources)
    loader = DataLoader(_Images(paths, eval_transform(img_size or size, crop)), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    k = min(topk, net.num_classes)
    with torch.no_grad():
        for xs, idx, bad in progress(loader, desc="predict", enabled=show_progress):
            for i, err in bad:
                yield {"path": str(paths[i]), "error": err}
            if xs is None:
                continue
            probs = net(xs.to(device)).float().softmax(dim=1)
            p, c = probs.topk(k, dim=1)
            for row, i in enumerate(idx):
                yield {"path": str(paths[i]), "top": [
                    {"class": names[int(j)], "index": int(j), "prob": round(float(q), 6)} for q, j in zip(p[row], c[row])]}


def format_jsonl(records) -> Iterator[str]:
    for r in records:
        yield json.dumps(r)
