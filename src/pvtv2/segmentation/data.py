"""Segmentation data: ADE20K-style folders or image/mask pair folders, joint transforms,
and skipping (with a count) of pairs that cannot be used."""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision.transforms import ColorJitter

from ..data.images import IMG_EXTENSIONS
from ..data.reading import IMAGE_ERRORS, open_rgb
from ..errors import DataError
from .metrics import IGNORE_INDEX

SPLITS = {"train": "training", "val": "validation"}
#: How many following pairs a training draw tries in place of an unusable one.
MAX_STAND_IN_TRIES = 10


def find_pairs(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair ``images/<stem>.*`` with ``masks/<stem>.png``; returns (pairs, problems)."""
    if not images.is_dir():
        raise DataError(f"{images}: no such image folder")
    if not masks.is_dir():
        raise DataError(f"{masks}: no such mask folder")
    by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
    pairs, problems = [], []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in IMG_EXTENSIONS):
        if img.stem in by_stem:
            pairs.append((img, by_stem.pop(img.stem)))
        else:
            problems.append(f"{img}: no mask {masks / (img.stem + '.png')}")
    problems += [f"{m}: no image for this mask" for m in by_stem.values()]
    if not pairs:
        raise DataError(f"no image/mask pairs in {images} and {masks}" + (f" ({problems[0]})" if problems else ""))
    return pairs, problems


def ade_pairs(root: str | Path, split: str) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The pairs of one split (``train`` or ``val``) in either layout: ADE20K's
    ``images/{training,validation}`` + ``annotations/{training,validation}``, or the generic
    ``{train,val}/images`` + ``{train,val}/masks`` (masks are PNGs named like their images)."""
    root = Path(root)
    expected = (f"expected {root}/images/{{training,validation}} + {root}/annotations/{{training,validation}} "
                f"(ADE20K) or {root}/{{train,val}}/images + {root}/{{train,val}}/masks (image/mask pairs)")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; {expected} (generate an example: pvtv2 data synth --task segment)")
    if (root / "images").is_dir():
        return find_pairs(root / "images" / SPLITS[split], root / "annotations" / SPLITS[split])
    if (root / split).is_dir():
        return find_pairs(root / split / "images", root / split / "masks")
    raise DataError(f"{root}: no segmentation data; {expected}")


def _normalize(img: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    return (img - mean) / std


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """MMSegmentation's keep-ratio rescale: fit the long side in ``max(scale)`` and the short in ``min(scale)``."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


class TrainTransform:
    """Random resize (ratio 0.5-2.0 of ``scale``), random crop, flip, photometric distortion,
    normalise; pads to the crop with 0 (image) and 255 (ignored label)."""

    def __init__(self, scale: tuple[int, int], crop: int, ratio_range=(0.5, 2.0), cat_max_ratio: float = 1.0):
        self.scale, self.crop, self.ratio_range, self.cat_max_ratio = scale, crop, ratio_range, cat_max_ratio
        self.jitter = ColorJitter(brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18 / 360)

    def _crop_box(self, label: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
        """A random crop; as MMSegmentation's RandomCrop, re-drawn up to 10 times while one
        class covers more than ``cat_max_ratio`` of its labelled pixels."""
        for _ in range(10 if self.cat_max_ratio < 1 else 1):
            top, left = random.randint(0, max(0, h - self.crop)), random.randint(0, max(0, w - self.crop))
            box = (left, top, min(w, left + self.crop), min(h, top + self.crop))
            values, counts = np.unique(label[top:box[3], left:box[2]], return_counts=True)
            counts = counts[values != IGNORE_INDEX]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return box

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        r = random.uniform(*self.ratio_range)
        h, w = rescale_size(image.height, image.width, (int(self.scale[0] * r), int(self.scale[1] * r)))
        image = image.resize((w, h), Image.BILINEAR)
        target = Image.fromarray(mask).resize((w, h), Image.NEAREST)
        box = self._crop_box(np.asarray(target), h, w)
        image, target = image.crop(box), target.crop(box)
        if random.random() < 0.5:
            image, target = image.transpose(Image.FLIP_LEFT_RIGHT), target.transpose(Image.FLIP_LEFT_RIGHT)
        img = _normalize(torch.from_numpy(np.asarray(self.jitter(image), dtype=np.float32) / 255).permute(2, 0, 1))
        lab = torch.from_numpy(np.asarray(target, dtype=np.int64))
        ph, pw = self.crop - img.shape[1], self.crop - img.shape[2]
        if ph > 0 or pw > 0:
            img = F.pad(img, (0, max(pw, 0), 0, max(ph, 0)), value=0.0)
            lab = F.pad(lab, (0, max(pw, 0), 0, max(ph, 0)), value=IGNORE_INDEX)
        return img, lab


def align_size(h: int, w: int, scale: tuple[int, int], divisor: int = 32) -> tuple[int, int]:
    """The official test transform's output size (whai362/PVT and PVTv2-Seg ``align_resize.py``,
    ``AlignResize(keep_ratio=True, size_divisor=32)``): the keep-ratio rescale of
    :func:`rescale_size`, then each side rounded *up* to a multiple of ``divisor``
    (``int(np.ceil(h / size_divisor)) * size_divisor``), so the aspect ratio bends slightly."""
    h, w = rescale_size(h, w, scale)
    return math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor


class EvalTransform:
    """The official test transform, AlignResize: keep-ratio rescale to ``scale``, then a
    stretch to :func:`align_size` (multiples of 32); the label keeps its full size (scores are
    computed there)."""

    def __init__(self, scale: tuple[int, int]):
        self.scale = scale

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Two resizes, as align_resize.py does (mmcv.imrescale, then mmcv.imresize to the
        # aligned size), not one straight to the final size.
        h, w = rescale_size(image.height, image.width, self.scale)
        ah, aw = align_size(image.height, image.width, self.scale)
        img = np.asarray(image.resize((w, h), Image.BILINEAR).resize((aw, ah), Image.BILINEAR), dtype=np.float32) / 255
        return _normalize(torch.from_numpy(img).permute(2, 0, 1)), torch.from_numpy(mask.astype(np.int64))


class SegmentationDataset(Dataset):
    """Image/mask pairs; a pair that cannot be used (unreadable file, sizes that differ, a label
    outside ``0..num_classes-1`` and not the ignore index) yields an error string naming its
    file instead of a crash, and a warning (``warn=False``: only the string).

    In training (items ``(index, seed)`` from the sampler) the next usable pair stands in for
    a skipped one, as MMSegmentation refetches, so that batches keep their size: a batch left
    with one sample stops BatchNorm's training at small crops. The error is still returned,
    for the count. Images are read by :func:`pvtv2.data.reading.open_rgb` (16-bit greyscale
    scaled; more than ``max_image_pixels`` pixels, default PIL's limit, skipped).
    """

    def __init__(self, pairs: list[tuple[Path, Path]], transform: Callable, num_classes: int, *,
                 reduce_zero_label: bool = False, max_image_pixels: int | None = None, warn: bool = True):
        self.pairs, self.transform, self.num_classes, self.reduce_zero_label = pairs, transform, num_classes, reduce_zero_label
        self.max_image_pixels, self.warn = max_image_pixels, warn

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The pair's RGB image and ``(H, W)`` uint8 label map; ``ValueError``/``OSError``
        naming the file at fault otherwise."""
        img_path, mask_path = self.pairs[i]
        try:
            image = open_rgb(img_path, max_pixels=self.max_image_pixels)
        except IMAGE_ERRORS as e:
            raise ValueError(str(e) if str(e).startswith(str(img_path)) else f"{img_path}: {e}") from None
        try:
            with Image.open(mask_path) as m:
                if m.mode not in ("L", "P", "I", "I;16"):
                    raise ValueError(f"mask mode {m.mode}: expected a single-channel PNG of class indices")
                if m.size != image.size:  # before decoding: a mask cannot be a bigger bomb than its image
                    raise ValueError(f"mask is {m.width}x{m.height} but the image is {image.width}x{image.height}")
                mask = np.asarray(m).astype(np.int64)
        except IMAGE_ERRORS as e:
            raise ValueError(f"{mask_path}: {e}") from None
        if self.reduce_zero_label:  # ADE20K: 0 is "other" (ignored), 1..150 become 0..149
            mask = np.where(mask == 0, IGNORE_INDEX, mask - 1)
            mask[mask == IGNORE_INDEX - 1] = IGNORE_INDEX
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX) | (mask < 0)
        if bad.any():
            raise ValueError(f"{mask_path}: label values {sorted(set(np.unique(mask[bad]).tolist()))[:5]} are out of "
                             f"range: expected 0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)")
        return image, mask.astype(np.uint8)

    def _sample(self, i: int, seed: int | None) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None]:
        # The sample's augmentation follows from its seed alone, whichever worker draws it, so a
        # resumed run repeats the uninterrupted one.
        if seed is not None:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        try:
            image, mask = self.load(i)
            img, lab = self.transform(image, mask)
        except IMAGE_ERRORS as e:
            return None, None, str(e)
        return img, lab, None

    def __getitem__(self, item):
        # ``(index, seed)`` from the training sampler; a plain index in evaluation.
        i, seed = item if isinstance(item, tuple) else (item, None)
        img, lab, error = self._sample(i, seed)
        if error is None:
            return img, lab, None
        if self.warn:
            warnings.warn(f"skipped an unusable image/mask pair: {error}", stacklevel=2)
        if seed is not None:
            # Stand-ins are tried quietly (each is warned about when drawn itself); a few at most,
            # so that a set of mostly bad pairs is not read over and over.
            for k in range(1, min(len(self), MAX_STAND_IN_TRIES + 1)):
                img, lab, err = self._sample((i + k) % len(self), seed)
                if err is None:
                    return img, lab, error
        return None, None, error


def collate_pairs(batch):
    """Stack the samples; return ``(images, labels, errors)``. A training item may carry both
    a stand-in sample and the error of the pair it replaced (see :class:`SegmentationDataset`)."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    errors = [err for _, _, err in batch if err is not None]
    if not good:
        return None, None, errors
    xs, ys = zip(*good)
    if len({x.shape for x in xs}) == 1:
        return torch.stack(xs), torch.stack(ys), errors
    return list(xs), list(ys), errors  # evaluation keeps each image at its own size


def warn_problems(problems: list[str], where: str) -> None:
    if problems:
        warnings.warn(f"skipped {len(problems)} unusable image/mask pair(s) in {where}; first: {problems[0]}", stacklevel=2)


def sliding_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(top, left, bottom, right)`` covering an ``h x w`` image."""
    rows = max(math.ceil((h - crop) / stride), 0) + 1
    cols = max(math.ceil((w - crop) / stride), 0) + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            top, left = min(r * stride, max(h - crop, 0)), min(c * stride, max(w - crop, 0))
            out.append((top, left, min(top + crop, h), min(left + crop, w)))
    return out
