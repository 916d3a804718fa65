"""Procedurally generated image datasets ("pvtv2 data synth").

Each image is one object drawn on a noisy background with random colours, scale,
position and rotation; the class is the object's shape or texture. Deterministic for a
given seed, written in the ImageFolder layout ``OUT/{train,val}/<class>/<n>.png``.

``OUT`` must be new or empty: a dataset written there before is replaced only with
``overwrite=True`` (old and new images never mix), and a folder that ``synth`` did not
write is never cleared. ``OUT/synth.json`` is written last and marks a complete set.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..errors import ConfigError, DataError

#: The first six are the default set; "checker" and "star" are harder (they resemble
#: "stripes" and "cross" at small sizes) and come in with ``classes=7`` or ``8``.
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring", "stripes", "checker", "star")


def _colour(rng: np.random.Generator, avoid: np.ndarray | None = None) -> tuple[int, int, int]:
    """A random RGB colour, kept visibly apart from ``avoid`` (the background mean)."""
    while True:
        c = rng.integers(0, 256, size=3)
        if avoid is None or np.abs(c - avoid).sum() > 180:
            return tuple(int(v) for v in c)


def _polygon(cx: float, cy: float, r: float, n: int, angle: float, inner: float | None = None) -> list[tuple[float, float]]:
    pts = []
    steps = 2 * n if inner else n
    for i in range(steps):
        radius = (inner if inner and i % 2 else 1.0) * r
        a = angle + 2 * math.pi * i / steps
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


#: What the three layouts write into ``OUT`` (and all that ``overwrite=True`` removes).
_SYNTH_ENTRIES = ("train", "val", "images", "annotations", "train2017", "val2017", "synth.json")
# Present while a set is being written: a folder holding it was left by an interrupted run.
_INCOMPLETE = ".synth-incomplete"


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if n < 1:
            raise ConfigError(f"{name} must be at least 1, got {n} (a split without images cannot train or evaluate)")


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")


def _start_dataset(out: str | Path, overwrite: bool) -> Path:
    """Make ``out`` ready for a new set: create it, or clear what an earlier synth wrote there
    (with ``overwrite``, or when that run was interrupted); refuse anything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give --out a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        interrupted = (out / _INCOMPLETE).exists()
        if not (interrupted or (out / "synth.json").is_file()):
            raise DataError(f"{out} is not empty and was not written by pvtv2 data synth (no synth.json): choose a "
                            f"new or empty folder (nothing is deleted that synth did not write)")
        if not (interrupted or overwrite):
            raise DataError(f"{out} already holds a synthetic dataset: choose another folder, or replace it with "
                            f"--overwrite (overwrite=True); new images are never mixed with old ones")
        for name in (*_SYNTH_ENTRIES, _INCOMPLETE):
            entry = out / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / _INCOMPLETE).touch()
    except OSError as e:
        raise DataError(f"cannot write the dataset to {out}: {e.strerror or e}") from None
    return out


def _finish_dataset(out: Path, meta: dict) -> Path:
    (out / "synth.json").write_text(json.dumps(meta, indent=2))
    (out / _INCOMPLETE).unlink()
    return out


def _check_size(size: int, minimum: int, why: str) -> None:
    if size < minimum:
        raise ConfigError(f"size must be at least {minimum} pixels ({why}), got {size}")


def draw_object(kind: str, size: int, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Draw one object of ``kind`` -> (RGB image, boolean object mask ``(size, size)``)."""
    bg_mean = rng.integers(0, 256, size=3)
    noise = rng.normal(0, rng.uniform(5, 30), size=(size, size, 3))
    background = np.clip(bg_mean + noise, 0, 255).astype(np.uint8)
    fg = _colour(rng, bg_mean)
    r = size * rng.uniform(0.22, 0.4)
    cx, cy = rng.uniform(r, size - r, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        d.ellipse(box, fill=255)
    elif kind == "square":
        d.polygon(_polygon(cx, cy, r * 1.2, 4, angle), fill=255)
    elif kind == "triangle":
        d.polygon(_polygon(cx, cy, r * 1.2, 3, angle), fill=255)
    elif kind == "star":
        d.polygon(_polygon(cx, cy, r * 1.25, 5, angle, inner=0.45), fill=255)
    elif kind == "cross":
        w = r * 0.35
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            px, py = -dy * w, dx * w
            d.polygon([(cx - dx * r + px, cy - dy * r + py), (cx + dx * r + px, cy + dy * r + py),
                       (cx + dx * r - px, cy + dy * r - py), (cx - dx * r - px, cy - dy * r - py)], fill=255)
    elif kind == "ring":
        d.ellipse(box, fill=255)
        k = r * 0.55
        d.ellipse((cx - k, cy - k, cx + k, cy + k), fill=0)
    elif kind in ("stripes", "checker"):
        d.rectangle(box, fill=255)
        yy, xx = np.mgrid[0:size, 0:size]
        period = max(3.0, r / rng.uniform(1.5, 2.5))
        u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
        v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
        on = (np.floor(u / period) % 2 == 0)
        if kind == "checker":
            on = on ^ (np.floor(v / period) % 2 == 0)
        mask = Image.fromarray((np.asarray(mask) > 0) & on).convert("L")
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {SHAPE_CLASSES}")
    m = np.asarray(mask) > 0
    img = background.copy()
    shade = np.clip(np.array(fg) + rng.normal(0, 8, size=(size, size, 3)), 0, 255)
    img[m] = shade[m].astype(np.uint8)
    return Image.fromarray(img), m


def make_classification_dataset(
    out: str | Path,
    *,
    classes: int = 6,
    train_per_class: int = 300,
    val_per_class: int = 60,
    size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write an ImageFolder dataset of ``classes`` shape/texture classes to ``out``
    (``size`` default 48 pixels). ``out`` must be new or empty, or hold an earlier synthetic
    set and ``overwrite=True`` (see the module docstring)."""
    if not 2 <= classes <= len(SHAPE_CLASSES):
        raise ConfigError(f"classes must be between 2 and {len(SHAPE_CLASSES)}, got {classes}")
    size = 48 if size is None else size
    _check_size(size, 32, "the model's minimum input")
    _check_counts(train_per_class=train_per_class, val_per_class=val_per_class)
    _check_seed(seed)
    out = _start_dataset(out, overwrite)
    names = SHAPE_CLASSES[:classes]
    jobs = [(split, name, i) for split, n in (("train", train_per_class), ("val", val_per_class))
            for name in names for i in range(n)]
    for split, name, i in tqdm(jobs, desc="synth", disable=not (progress and sys.stderr.isatty()), leave=False):
        # One generator per image: the dataset does not depend on the order of writing.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, names.index(name), i])
        folder = out / split / name
        folder.mkdir(parents=True, exist_ok=True)
        draw_object(name, size, rng)[0].save(folder / f"{i:05d}.png")
    return _finish_dataset(out, {"task": "classify", "classes": list(names), "train_per_class": train_per_class,
                                 "val_per_class": val_per_class, "size": size, "seed": seed})


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return 255 * (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1))


def make_segmentation_dataset(
    out: str | Path,
    *,
    classes: int = 4,
    train_images: int = 200,
    val_images: int = 40,
    size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write an ADE20K-style dataset: ``images/{training,validation}/*.png`` and
    ``annotations/{training,validation}/*.png`` with per-pixel class indices.

    Class 0 is the background (greyish, noisy); classes ``1..classes-1`` are the first shapes
    of :data:`SHAPE_CLASSES`, each painted in its own band of hues (random within the band,
    random saturation and brightness), so that, as in real scenes, both colour and outline
    carry the class and a small model learns it in minutes on a CPU. Each image holds 1 to 3
    objects of random size, position and rotation; later ones are drawn on top. ``size``
    default 64 pixels; ``out`` as for :func:`make_classification_dataset`.
    """
    if not 2 <= classes <= len(SHAPE_CLASSES) + 1:
        raise ConfigError(f"classes must be between 2 and {len(SHAPE_CLASSES) + 1} (background + shapes), got {classes}")
    size = 64 if size is None else size
    _check_size(size, 32, "the model's minimum input")
    _check_counts(train_images=train_images, val_images=val_images)
    _check_seed(seed)
    out = _start_dataset(out, overwrite)
    shapes = SHAPE_CLASSES[: classes - 1]
    band = 1.0 / len(shapes)
    jobs = [(split, i) for split, n in (("training", train_images), ("validation", val_images)) for i in range(n)]
    for split, i in tqdm(jobs, desc="synth", disable=not (progress and sys.stderr.isatty()), leave=False):
        rng = np.random.default_rng([seed, 2 if split == "training" else 3, i])
        grey = _hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.2), rng.uniform(0.2, 0.9))
        canvas = np.clip(grey + rng.normal(0, rng.uniform(5, 20), size=(size, size, 3)), 0, 255)
        label = np.zeros((size, size), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(shapes)))
            _, mask = draw_object(shapes[k], size, rng)
            colour = _hsv_to_rgb((k + rng.uniform(0.15, 0.85)) * band, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
            canvas[mask] = np.clip(colour + rng.normal(0, 8, size=(int(mask.sum()), 3)), 0, 255)
            label[mask] = k + 1
        for kind, data in (("images", canvas.astype(np.uint8)), ("annotations", label)):
            folder = out / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data).save(folder / f"{i:05d}.png")
    return _finish_dataset(out, {"task": "segment", "classes": ["background", *shapes], "train_images": train_images,
                                 "val_images": val_images, "size": size, "seed": seed})


def make_detection_dataset(
    out: str | Path,
    *,
    classes: int = 3,
    train_images: int = 200,
    val_images: int = 40,
    size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a COCO-format instance dataset: ``train2017/``, ``val2017/`` and
    ``annotations/instances_{train,val}2017.json`` with boxes and RLE masks.

    Each image holds 1 to 4 shapes (the first ``classes`` of :data:`SHAPE_CLASSES`, each in its
    own band of hues) of random size, position and rotation over a noisy greyish background;
    later shapes are drawn on top, boxes and masks are of the visible part, and shapes left
    with fewer than 40 visible pixels are dropped. ``size`` default 128 pixels; ``out`` as for
    :func:`make_classification_dataset`.
    """
    from pycocotools import mask as mask_utils

    if not 1 <= classes <= len(SHAPE_CLASSES):
        raise ConfigError(f"classes must be between 1 and {len(SHAPE_CLASSES)}, got {classes}")
    size = 128 if size is None else size
    _check_size(size, 64, "room for objects of 15-40% of the side")
    _check_counts(train_images=train_images, val_images=val_images)
    _check_seed(seed)
    out = _start_dataset(out, overwrite)
    shapes = SHAPE_CLASSES[:classes]
    band = 1.0 / len(shapes)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(shapes)]
    for split, n, stream in (("train", train_images, 4), ("val", val_images, 5)):
        folder = out / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in tqdm(range(n), desc=f"synth {split}", disable=not (progress and sys.stderr.isatty()), leave=False):
            rng = np.random.default_rng([seed, stream, i])
            grey = _hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.2), rng.uniform(0.2, 0.9))
            canvas = np.clip(grey + rng.normal(0, rng.uniform(5, 20), size=(size, size, 3)), 0, 255)
            objects: list[tuple[int, np.ndarray]] = []
            for _ in range(int(rng.integers(1, 5))):
                k = int(rng.integers(len(shapes)))
                _, mask = draw_object(shapes[k], size, rng)
                scale = rng.uniform(0.45, 0.8)  # objects of ~15-40% of the image side
                small = np.asarray(Image.fromarray(mask).resize((max(1, int(size * scale)),) * 2, Image.NEAREST))
                top, left = rng.integers(0, size - small.shape[0] + 1, size=2)
                mask = np.zeros((size, size), dtype=bool)
                mask[top:top + small.shape[0], left:left + small.shape[1]] = small
                colour = _hsv_to_rgb((k + rng.uniform(0.15, 0.85)) * band, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
                canvas[mask] = np.clip(colour + rng.normal(0, 8, size=(int(mask.sum()), 3)), 0, 255)
                objects = [(c, m & ~mask) for c, m in objects] + [(k, mask)]
            name = f"{i:05d}.png"
            Image.fromarray(canvas.astype(np.uint8)).save(folder / name)
            image_id = i + 1
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            for k, mask in objects:
                if mask.sum() < 40:
                    continue
                ys, xs = np.nonzero(mask)
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1, "iscrowd": 0,
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    "area": int(mask.sum()), "segmentation": rle,
                })
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"info": {"description": "pvtv2 synthetic shapes", "seed": seed}, "images": images,
             "annotations": annotations, "categories": categories}))
    return _finish_dataset(out, {"task": "detect", "classes": list(shapes), "train_images": train_images,
                                 "val_images": val_images, "size": size, "seed": seed})
