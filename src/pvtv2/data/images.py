"""Image utilities every task uses: which files count as images, expanding the files and
folders given on a command line, and the fixed colour palette of masks and drawings (reading
the files themselves is :mod:`pvtv2.data.reading`'s).

Neutral ground: classification, detection and segmentation import it, never each other.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import DataError
from .reading import IMAGE_ERRORS, open_rgb, walk_files

__all__ = ["IMG_EXTENSIONS", "ImageFiles", "image_paths", "output_stems", "palette", "require_images"]


def image_paths(sources: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, each file once even through looping links) into
    a sorted list of image paths."""
    paths: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            paths += sorted(q for q in walk_files(p) if q.suffix.lower() in IMG_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder")
    return paths


class ImageFiles(Dataset):
    """The images a predict command reads, in DataLoader workers: item ``i`` is ``(i,
    prepare(photo), None)``, or ``(i, None, "unreadable image: ...")`` for a file that cannot be
    read (broken, or more pixels than ``max_image_pixels``), so one bad file never stops the rest."""

    def __init__(self, paths: list[Path], prepare: Callable[[Image.Image], Any], max_image_pixels: int | None = None):
        self.paths, self.prepare, self.max_image_pixels = paths, prepare, max_image_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            image = open_rgb(self.paths[i], max_pixels=self.max_image_pixels)
        except IMAGE_ERRORS as e:
            return i, None, f"unreadable image: {e}"
        return i, self.prepare(image), None


def require_images(paths: list[Path], sources: list[str | Path]) -> list[Path]:
    """``paths``, or a :class:`DataError` when the sources held no image at all."""
    if not paths:
        raise DataError(f"no images found in {', '.join(str(s) for s in sources)} (searched recursively for "
                        f"{', '.join(IMG_EXTENSIONS)})")
    return paths


def output_stems(paths: list[Path]) -> list[str]:
    """One distinct file-name stem per input, for the files a predict command writes beside each
    other: the image's own stem where no other input shares it; otherwise its folders below the
    inputs' common folder joined to it with ``_`` (``a/img.png`` and ``b/img.png`` give ``a_img``
    and ``b_img``), then its suffix (``img.png``, ``img.jpg``: ``img_png``, ``img_jpg``), then a
    counter for what still repeats (the same file given twice)."""
    if not paths:
        return []
    resolved = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    shared = Counter(p.stem for p in paths)
    longer = ["_".join([*r.parent.relative_to(common).parts, r.stem]) if shared[r.stem] > 1 else r.stem
              for r in resolved]
    suffixes: dict[str, set[str]] = {}
    for s, r in zip(longer, resolved):
        suffixes.setdefault(s, set()).add(r.suffix)
    longer = [f"{s}_{r.suffix.lstrip('.')}" if len(suffixes[s]) > 1 and r.suffix else s for s, r in zip(longer, resolved)]
    seen: Counter = Counter()
    stems = []
    for s in longer:
        seen[s] += 1
        stems.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return stems


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
