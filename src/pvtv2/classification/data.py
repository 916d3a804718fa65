"""ImageFolder data for classification: checks, transforms, and skipping unreadable images."""
from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from timm.data import create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

from ..data.images import IMG_EXTENSIONS
from ..data.reading import IMAGE_ERRORS, open_rgb, walk_files
from ..errors import DataError


class SkippingImageFolder(datasets.ImageFolder):
    """ImageFolder whose unreadable or truncated files yield ``None`` instead of raising,
    so one bad file never stops an epoch; :func:`collate_skipping` drops and counts them.
    ``classes`` fixes the class -> index mapping (the training set's, for validation).

    Images are read by :func:`pvtv2.data.reading.open_rgb` (16-bit greyscale scaled to 8
    bits; more than ``max_image_pixels`` pixels, default PIL's limit: skipped as unreadable),
    and each class folder is walked by :func:`~pvtv2.data.reading.walk_files` (a directory
    link loop never repeats its images).
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, classes: list[str] | None = None, *,
                 max_image_pixels: int | None = None):
        self._fixed_classes = classes
        self.max_image_pixels = max_image_pixels
        super().__init__(str(root), transform=transform, loader=self._load, allow_empty=classes is not None)

    def _load(self, path: str) -> Image.Image:
        return open_rgb(path, max_pixels=self.max_image_pixels)

    @staticmethod
    def make_dataset(directory: str | Path, class_to_idx: dict[str, int], extensions=None, is_valid_file=None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """torchvision's ``make_dataset`` (same order, same empty-class error) over
        :func:`walk_files`, which follows directory links without looping."""
        extensions = extensions or IMG_EXTENSIONS
        valid = is_valid_file or (lambda path: path.lower().endswith(extensions))
        samples, empty = [], []
        for name in sorted(class_to_idx):
            folder = Path(directory) / name
            found = [str(p) for p in walk_files(folder) if valid(str(p))] if folder.is_dir() else []
            samples += [(path, class_to_idx[name]) for path in found]
            if not found:
                empty.append(name)
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                    f"Supported extensions are: {', '.join(extensions)}")
        return samples

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self._fixed_classes is None:
            return super().find_classes(directory)
        return list(self._fixed_classes), {c: i for i, c in enumerate(self._fixed_classes)}

    def __getitem__(self, index: int) -> Any:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
            if self.transform is not None:
                image = self.transform(image)
        except IMAGE_ERRORS as e:
            return None, target, f"{path}: {e}"
        return image, target, None


def collate_skipping(batch: list[tuple]) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """Stack the readable samples; return ``(images, targets, skipped_messages)``."""
    good = [(x, y) for x, y, err in batch if err is None]
    skipped = [err for _, _, err in batch if err is not None]
    if not good:
        return None, None, skipped
    xs, ys = zip(*good)
    return torch.stack(xs), torch.tensor(ys), skipped


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_image_folders(root: str | Path) -> list[str]:
    """Validate ``root/train`` and ``root/val`` and return the class names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; expected {root}/train/<class>/* and {root}/val/<class>/*")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split} is missing; expected {root}/train/<class>/* and {root}/val/<class>/* "
                            f"(generate an example with: pvtv2 data synth --out DIR)")
    train_classes = _class_dirs(root / "train")
    if not train_classes:
        raise DataError(f"{root / 'train'} has no class folders; expected {root}/train/<class>/<image>")
    val_classes = _class_dirs(root / "val")
    missing = [c for c in train_classes if c not in val_classes]
    if missing:
        raise DataError(f"{root / 'val'} has no folder for class(es) {missing} that train has; "
                        f"every training class needs a validation folder")
    extra = [c for c in val_classes if c not in train_classes]
    if extra:
        raise DataError(f"{root / 'val'} has class(es) {extra} that train does not have")
    for split in ("train", "val"):
        for c in train_classes:
            if not any(p.suffix.lower() in IMG_EXTENSIONS for p in (root / split / c).iterdir()):
                raise DataError(f"{root / split / c} contains no images ({', '.join(IMG_EXTENSIONS)})")
    return train_classes


def train_transform(cfg) -> Callable:
    """timm's ImageNet training pipeline with the recipe's RandAugment, jitter, erasing, flips."""
    return create_transform(
        input_size=cfg.img_size,
        is_training=True,
        scale=tuple(cfg.scale),
        hflip=0.5 if cfg.hflip else 0.0,
        color_jitter=cfg.color_jitter,
        auto_augment=None if cfg.aa in ("none", "", None) else cfg.aa,
        interpolation=cfg.train_interpolation,
        re_prob=cfg.reprob,
        re_mode="pixel",
        re_count=1,
    )


def eval_transform(img_size: int, crop_pct: float = 0.875) -> Callable:
    """The official evaluation transform: bicubic resize of the short side to
    ``img_size / crop_pct`` (256 for 224), centre crop, ImageNet normalisation."""
    return transforms.Compose([
        transforms.Resize(int(img_size / crop_pct), interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ])


def typical_side(paths: list[str], count: int = 16) -> int | None:
    """The median shorter side in pixels of up to ``count`` images spread over ``paths`` (only
    their headers are read); ``None`` when none of them can be read."""
    sides = []
    for path in paths[::max(1, len(paths) // count)][:count]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except IMAGE_ERRORS:
            continue
    return int(statistics.median(sides)) if sides else None


def warn_skipped(skipped: list[str], where: str) -> None:
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {where}; first: {skipped[0]}", stacklevel=2)
