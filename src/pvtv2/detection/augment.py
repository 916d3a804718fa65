"""Training augmentation of the detection recipes, on ``(image, target)`` pairs: ``image`` a
``(3, H, W)`` float tensor, ``target`` a dict with ``boxes`` ``(N, 4)`` as ``[x0, y0, x1, y1]``
pixels, ``labels`` ``(N,)`` and, for instance segmentation, ``masks`` ``(N, H, W)`` uint8.

``resize`` (the 1x recipe, ``_base_/datasets/coco_instance.py``): horizontal flip only; the
detector's own transform then resizes the short side to 800 (long side <= 1333).

``multiscale_crop`` (the 3x recipes, e.g. whai362/PVT ``detection/configs/mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py``
lines 24-61): ``RandomFlip(0.5)``, then mmdet's ``AutoAugment`` picks one of two equally likely
policies: (a) resize the short side to one of 480..800 step 32, long side <= 1333; (b) resize the
short side to one of 400/500/600 (long side <= 1333), ``RandomCrop(crop_type='absolute_range',
crop_size=(384, 600), allow_negative_crop=True)``, then resize as (a). The final resize of both
policies is the same operation, so it is left to the detector's transform: torchvision's
``GeneralizedRCNNTransform`` built with ``min_size`` = the tuple 480..800 draws one short side per
training image and caps the long side at ``max_size`` (mmdet's ``Resize(multiscale_mode='value',
keep_ratio=True)``). :class:`MultiScaleCrop` is the rest: the flip and policy (b)'s resize and crop.
"""
from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

Target = dict[str, Any]


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror the image, its boxes (``x -> W - x``) and masks."""
    w = image.shape[-1]
    boxes = target["boxes"]
    target = {**target, "boxes": torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)}
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def keep_ratio_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """mmcv's ``rescale_size``: scale by ``min(short / min(h, w), max_size / max(h, w))``,
    rounding each side to the nearest pixel -> ``(new_h, new_w)``."""
    scale = min(short / min(h, w), max_size / max(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def resize(image: torch.Tensor, target: Target, size: tuple[int, int]) -> tuple[torch.Tensor, Target]:
    """Resize to ``size`` ``(h, w)``: the image bilinearly (as OpenCV's ``INTER_LINEAR``, no
    antialiasing), masks by nearest neighbour, boxes by the two scale factors."""
    h, w = image.shape[-2:]
    nh, nw = size
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    target = {**target, "boxes": target["boxes"] * torch.tensor([nw / w, nh / h, nw / w, nh / h])}
    if "masks" in target:
        masks = target["masks"]
        target["masks"] = (F.interpolate(masks[None].float(), size=size, mode="nearest")[0].to(masks.dtype)
                           if len(masks) else masks.new_zeros((0, nh, nw)))
    return image, target


def crop(image: torch.Tensor, target: Target, top: int, left: int, height: int, width: int) -> tuple[torch.Tensor, Target]:
    """The ``height x width`` window at ``(top, left)`` (inside the image). Boxes are shifted and
    clipped to it; instances whose box is left empty are dropped, with their labels and masks
    (mmdet's ``RandomCrop._crop_data`` with ``bbox_clip_border=True``)."""
    image = image[:, top:top + height, left:left + width]
    h, w = image.shape[-2:]
    boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=target["boxes"].dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    target = {**target, "boxes": boxes[keep], "labels": target["labels"][keep]}
    if "masks" in target:
        target["masks"] = target["masks"][keep][:, top:top + height, left:left + width]
    return image, target


def random_crop(image: torch.Tensor, target: Target, size_range: tuple[int, int]) -> tuple[torch.Tensor, Target]:
    """mmdet's ``RandomCrop(crop_type='absolute_range', crop_size=size_range)``: height and width
    drawn uniformly (integers, ends included) from ``[min(side, lo), min(side, hi)]``, then the
    window's place uniformly. An image may lose all its instances (``allow_negative_crop=True``)."""
    lo, hi = size_range
    h, w = image.shape[-2:]
    ch, cw = random.randint(min(h, lo), min(h, hi)), random.randint(min(w, lo), min(w, hi))
    top, left = random.randint(0, h - ch), random.randint(0, w - cw)
    return crop(image, target, top, left, ch, cw)


class MultiScaleCrop:
    """The data side of the 3x recipes' augmentation (see the module docstring): flip with
    ``flip_prob``; then, with probability 1/2 (policy b), resize the short side to one of
    ``short_sides`` (long side <= ``max_size``) and crop with :func:`random_crop`. Draws from
    Python's ``random`` (seeded per sample by the training loader)."""

    def __init__(self, *, flip_prob: float = 0.5, short_sides: tuple[int, ...] = (400, 500, 600),
                 crop_range: tuple[int, int] = (384, 600), max_size: int = 1333):
        self.flip_prob, self.max_size = flip_prob, max_size
        self.short_sides, self.crop_range = tuple(short_sides), tuple(crop_range)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if random.random() < self.flip_prob:
            image, target = hflip(image, target)
        if random.random() < 0.5:
            h, w = image.shape[-2:]
            image, target = resize(image, target, keep_ratio_size(h, w, random.choice(self.short_sides), self.max_size))
            image, target = random_crop(image, target, self.crop_range)
        return image, target


class Flip:
    """The 1x recipe's augmentation: horizontal flip with ``flip_prob``."""

    def __init__(self, *, flip_prob: float = 0.5):
        self.flip_prob = flip_prob

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return hflip(image, target) if random.random() < self.flip_prob else (image, target)
