"""COCO-format detection data (pycocotools): checked annotations, targets for torchvision's
detectors, the training augmentation (:mod:`pvtv2.detection.augment`), and the counts of
everything skipped."""
from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from ..data.reading import IMAGE_ERRORS, open_rgb
from ..errors import DataError
from .augment import Flip

REQUIRED_KEYS = ("images", "annotations", "categories")


def coco_paths(root: str | Path, split: str, *, images: str | None = None, ann: str | None = None) -> tuple[Path, Path]:
    """``ROOT/{split}2017`` and ``ROOT/annotations/instances_{split}2017.json`` (the COCO
    layout) unless given."""
    root = Path(root)
    img_dir = Path(images) if images else root / f"{split}2017"
    ann_file = Path(ann) if ann else root / "annotations" / f"instances_{split}2017.json"
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: no such annotation file; expected the COCO layout ROOT/annotations/"
                        f"instances_{{train,val}}2017.json + ROOT/{{train,val}}2017/ (or pass the paths; an "
                        f"example: pvtv2 data synth --task detect)")
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: no such image folder")
    return img_dir, ann_file


def load_coco(ann_file: str | Path):
    """Read and check an instances JSON, then index it with pycocotools."""
    from pycocotools.coco import COCO

    ann_file = Path(ann_file)
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{ann_file}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: expected a COCO instances object, got a JSON {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"{ann_file}: missing top-level key(s) {missing}; a COCO instances file has {list(REQUIRED_KEYS)}")
    for i, img in enumerate(data["images"]):
        lacking = [k for k in ("id", "file_name", "width", "height") if k not in img]
        if lacking:
            raise DataError(f"{ann_file}: images[{i}] lacks {lacking}")
    for i, cat in enumerate(data["categories"]):
        if "id" not in cat or "name" not in cat:
            raise DataError(f"{ann_file}: categories[{i}] lacks 'id' or 'name'")
    if not data["categories"]:
        raise DataError(f"{ann_file}: no categories")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    return coco


def unsafe_file_name(file_name: Any) -> str | None:
    """Why an image's ``file_name`` must not be read (absolute, or climbing out of the image
    folder with ``..``), or None when it is a plain relative path."""
    if not isinstance(file_name, str) or not file_name:
        return f"file_name {file_name!r} is not a file name"
    path = PurePosixPath(file_name.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(file_name).drive:
        return f"file_name {file_name!r} is absolute; expected a path relative to the image folder"
    if ".." in path.parts:
        return f"file_name {file_name!r} climbs out of the image folder ('..')"
    return None


def check_annotation(ann: dict[str, Any], img: dict[str, Any], known_cats: set[int]) -> tuple[list[float] | None, str | None]:
    """The annotation's box clipped to the image as ``[x0, y0, x1, y1]``, or a reason to skip it."""
    if "bbox" not in ann or "category_id" not in ann:
        return None, "missing 'bbox' or 'category_id'"
    if ann["category_id"] not in known_cats:
        return None, f"unknown category id {ann['category_id']}"
    bbox = ann["bbox"]
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        return None, f"bbox {bbox!r} is not [x, y, width, height]"
    if not all(math.isfinite(v) for v in bbox):
        return None, f"bbox {bbox} has a non-finite value"  # NaN would clip to the whole image below
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None, f"zero-area box {bbox}"
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(img["width"]), x + w), min(float(img["height"]), y + h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None, f"box {bbox} lies outside the {img['width']}x{img['height']} image"
    return [x0, y0, x1, y1], None


class CocoDetection(Dataset):
    """Images + instances JSON -> ``(image tensor [0, 1], target)`` for torchvision's detectors.

    Labels are ``1..K`` in the order of the sorted category ids (0 is the background);
    ``cat_ids[label - 1]`` maps back. Crowd regions are left out of the training targets (as
    MMDetection); broken annotations (including NaN/inf boxes) are skipped and counted in
    ``problems``; images whose files are missing, or whose ``file_name`` is absolute or climbs
    out of ``img_dir`` with ``..``, are dropped and counted; ``train=True`` also drops images
    left without annotations. Images are read by :func:`pvtv2.data.reading.open_rgb` (16-bit
    greyscale scaled; more than ``max_image_pixels`` pixels, default PIL's limit, skipped).
    ``train=True`` applies ``augment(image, target)`` (default: a horizontal flip with
    ``flip_prob``; :class:`~pvtv2.detection.augment.MultiScaleCrop` for the 3x recipes).
    """

    def __init__(self, img_dir: str | Path, ann_file: str | Path, *, train: bool = False, masks: bool = False,
                 flip_prob: float = 0.5, augment: Callable | None = None, max_image_pixels: int | None = None):
        self.img_dir, self.ann_file = Path(img_dir), Path(ann_file)
        self.coco = load_coco(ann_file)
        self.cat_ids = sorted(c["id"] for c in self.coco.dataset["categories"])
        self.class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.train, self.masks = train, masks
        self.augment = augment if augment is not None else Flip(flip_prob=flip_prob)
        self.max_image_pixels = max_image_pixels
        self.problems: dict[str, list[str]] = {"annotations": [], "missing_images": [], "no_annotations": [],
                                               "unsafe_file_names": []}
        known = set(self.cat_ids)
        self.records = []
        for img_id in sorted(self.coco.imgs):
            img = self.coco.imgs[img_id]
            why = unsafe_file_name(img["file_name"])
            if why:
                self.problems["unsafe_file_names"].append(f"image {img_id}: {why}")
                continue
            if not (self.img_dir / img["file_name"]).is_file():
                self.problems["missing_images"].append(str(self.img_dir / img["file_name"]))
                continue
            anns = []
            for ann in self.coco.imgToAnns.get(img_id, []):
                box, why = check_annotation(ann, img, known)
                if why:
                    self.problems["annotations"].append(f"annotation {ann.get('id')} of {img['file_name']}: {why}")
                elif not ann.get("iscrowd", 0):
                    anns.append((ann, box))
            if train and not anns:
                self.problems["no_annotations"].append(img["file_name"])
                continue
            self.records.append((img, anns))
        if not self.records:
            raise DataError(f"{ann_file}: no usable images in {img_dir} ({self.summary() or 'no images listed'})")

    def summary(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in self.problems.items() if v]
        firsts = [v[0] for v in self.problems.values() if v]
        return ", ".join(parts) + (f" (first: {firsts[0]})" if firsts else "")

    def warn(self) -> None:
        if any(self.problems.values()):
            warnings.warn(f"{self.ann_file}: skipped {self.summary()}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        img_info, anns = self.records[i]
        path = self.img_dir / img_info["file_name"]
        try:
            image = pil_to_tensor(open_rgb(path, max_pixels=self.max_image_pixels)).float() / 255
        except IMAGE_ERRORS as e:
            return None, None, f"{path}: {e}"
        h, w = image.shape[-2:]
        if (h, w) != (img_info["height"], img_info["width"]):
            return None, None, f"{path}: the image is {w}x{h} but the annotations say {img_info['width']}x{img_info['height']}"
        boxes = torch.tensor([box for _, box in anns], dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.tensor([self.label_of[a["category_id"]] for a, _ in anns], dtype=torch.int64),
                  "image_id": img_info["id"]}
        if self.masks:
            target["masks"] = torch.from_numpy(np.stack([self.coco.annToMask(a) for a, _ in anns]) if anns
                                               else np.zeros((0, h, w), dtype=np.uint8))
        if self.train:
            image, target = self.augment(image, target)
        return image, target, None


def collate_detection(batch):
    good = [(x, t) for x, t, err in batch if err is None]
    errors = [err for _, _, err in batch if err is not None]
    return [x for x, _ in good], [t for _, t in good], errors


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary ``(H, W)`` mask as COCO's compressed RLE with a JSON-ready ``counts`` string."""
    from pycocotools import mask as mask_utils  # imported where used: the models need no pycocotools

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
