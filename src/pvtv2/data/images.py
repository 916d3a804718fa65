"""Image utilities every task uses: which files count as images, expanding the files and
folders given on a command line, and the fixed colour palette of masks and drawings (reading
the files themselves is :mod:`pvtv2.data.reading`'s).

Neutral ground: classification, detection and segmentation import it, never each other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import DataError
from .reading import walk_files

__all__ = ["IMG_EXTENSIONS", "image_paths", "palette", "require_images"]


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


def require_images(paths: list[Path], sources: list[str | Path]) -> list[Path]:
    """``paths``, or a :class:`DataError` when the sources held no image at all."""
    if not paths:
        raise DataError(f"no images found in {', '.join(str(s) for s in sources)} (searched recursively for "
                        f"{', '.join(IMG_EXTENSIONS)})")
    return paths


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
