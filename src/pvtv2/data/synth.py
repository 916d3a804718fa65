"""Procedurally generated image datasets ("pvtv2 data synth").

Each image is one object drawn on a noisy background with random colours, scale,
position and rotation; the class is the object's shape or texture. Deterministic for a
given seed, written in the ImageFolder layout ``OUT/{train,val}/<class>/<n>.png``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

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
    size: int = 48,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write an ImageFolder dataset of ``classes`` shape/texture classes to ``out``."""
    if not 2 <= classes <= len(SHAPE_CLASSES):
        raise ValueError(f"classes must be between 2 and {len(SHAPE_CLASSES)}, got {classes}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels (the model's minimum input), got {size}")
    out = Path(out)
    names = SHAPE_CLASSES[:classes]
    jobs = [(split, name, i) for split, n in (("train", train_per_class), ("val", val_per_class))
            for name in names for i in range(n)]
    for split, name, i in tqdm(jobs, desc="synth", disable=not (progress and sys.stderr.isatty()), leave=False):
        # One generator per image: the dataset does not depend on the order of writing.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, names.index(name), i])
        folder = out / split / name
        folder.mkdir(parents=True, exist_ok=True)
        draw_object(name, size, rng)[0].save(folder / f"{i:05d}.png")
    (out / "synth.json").write_text(json.dumps(
        {"task": "classify", "classes": list(names), "train_per_class": train_per_class,
         "val_per_class": val_per_class, "size": size, "seed": seed}, indent=2))
    return out
