"""Reading image files the same way in every task: 8-bit RGB from any PIL mode (16-bit
greyscale scaled, not clipped), a pixel limit against decompression bombs, and folder walks
that follow directory links but never loop.

Neutral ground: classification, detection and segmentation import it, never each other.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import DataError

#: What reading a broken image file raises (PIL: OSError, ValueError, SyntaxError; ours:
#: :class:`DataError`, a ValueError): catch these to skip a file and count it.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError)

# PIL modes of 16-bit (and 32-bit integer) greyscale: PNG and TIFF give "I;16*"; "I" comes
# from older Pillow versions and integer TIFFs and is read as 16-bit too.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

_LIMIT_LOCK = threading.Lock()


def pil_pixel_limit() -> int | None:
    """The size PIL refuses to open (twice ``PIL.Image.MAX_IMAGE_PIXELS``; it only warns
    below), or None when PIL's check is switched off."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


@contextlib.contextmanager
def _pil_check_lifted(needed: bool) -> Iterator[None]:
    """PIL reads its bomb limit from a module global only; a caller who allows more than PIL
    does needs it off while this one file's header is read (under a lock, then restored)."""
    if not needed:
        yield
        return
    with _LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL image. 16-bit greyscale keeps its top 8 bits (``v >> 8``, the
    scaling of torchvision's ``to_dtype(..., scale=True)``); PIL's own ``convert`` clips it
    at 255, which turns most 16-bit photos solid white."""
    if im.mode in _WIDE_GREY_MODES:
        values = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        return Image.fromarray((values >> 8).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "RGB":
        im.load()
        return im
    return im.convert("RGB")


def open_rgb(path: str | os.PathLike, *, max_pixels: int | None = None) -> Image.Image:
    """The image at ``path`` as a loaded 8-bit RGB ``PIL.Image`` (see :func:`to_rgb`).

    ``max_pixels``: refuse images of more pixels than this (a tiny PNG can declare a huge
    size and take all memory when decoded); None keeps PIL's limit (:func:`pil_pixel_limit`).
    Raises :class:`DataError` for a refused size and PIL's errors for broken files: all are
    in :data:`IMAGE_ERRORS`.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels or None (PIL's limit), got {max_pixels}")
    pil_limit = pil_pixel_limit()
    limit = pil_limit if max_pixels is None else max_pixels
    # PIL warns above half its limit and raises above it: with a limit of our own, its check
    # is off for this file whenever ours allows more.
    lift = max_pixels is not None and pil_limit is not None and max_pixels > pil_limit // 2
    try:
        with open(path, "rb") as fh:  # closed here, while the returned image (loaded) lives on
            with _pil_check_lifted(lift):
                im = Image.open(fh)
            width, height = im.size
            if limit is not None and width * height > limit:
                raise DataError(f"{path}: the image declares {width}x{height} = {width * height:,} pixels, more than "
                                f"the limit of {limit:,} (a decompression bomb? if the image is genuine, raise the "
                                f"limit with max_image_pixels)")
            return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e} (if the image is genuine, raise the limit with max_image_pixels)") from None


def walk_files(top: str | os.PathLike) -> Iterator[Path]:
    """Every file under ``top``, each directory listed once: directory links are followed (as
    torchvision's ImageFolder does) unless they lead to a folder already walked, so a link
    loop (``a/loop -> a``) or two links to one folder never repeat files. Sorted by folder
    path, then by name within a folder."""
    seen: set[str] = set()
    found: list[tuple[str, list[str]]] = []
    for root, dirs, files in os.walk(top, followlinks=True):
        seen.add(os.path.realpath(root))
        dirs.sort()
        keep = []
        for d in dirs:
            real = os.path.realpath(os.path.join(root, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        found.append((root, sorted(files)))
    for root, files in sorted(found):
        for name in files:
            yield Path(root) / name
