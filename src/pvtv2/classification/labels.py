"""The class names of a classifier's outputs: the checkpoint's own, else ImageNet-1K's for a
1000-class model (the published weights, official, timm and transformers files carry none),
else the indices."""
from __future__ import annotations

import functools

#: A model with this many outputs and no class names is taken for an ImageNet-1K classifier.
IMAGENET_CLASSES = 1000


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names in index order ("tench, Tinca tinca", ...), as timm's
    ``ImageNetInfo`` gives them (its descriptions)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_descriptions())


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The WordNet ids that name ImageNet's own class folders ("n01440764", ...), in index order."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def class_names(names: list[str] | None, num_classes: int) -> list[str]:
    """``names`` when they fit ``num_classes`` (transformers' placeholders ``LABEL_i`` do not
    count), else the ImageNet-1K names for 1000 classes, else ``"0"``, ``"1"``, ..."""
    indices = [str(i) for i in range(num_classes)]
    if names and len(names) == num_classes and list(names) != [f"LABEL_{i}" for i in indices]:
        return list(names)
    return list(imagenet_names()) if num_classes == IMAGENET_CLASSES else indices


def folder_namings(names: list[str]) -> list[list[str]]:
    """The ways an evaluation set's class folders may be named for a model with class
    ``names``: the names themselves; for the ImageNet-1K names also ImageNet's WordNet ids
    (its own folder layout) and the indices."""
    if names == list(imagenet_names()):
        return [names, list(imagenet_synsets()), [str(i) for i in range(len(names))]]
    return [names]
