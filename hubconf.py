"""torch.hub entry points.

    torch.hub.load("<owner>/<repo>", "pvt_v2_b2", pretrained=True)         # from GitHub
    torch.hub.load("/path/to/checkout", "pvt_v2_b0", source="local")       # from a checkout
    torch.hub.load(repo, "detector", kind="maskrcnn", backbone="pvt_v2_b2", num_classes=80)

One entry per variant (``pretrained``: ``True`` for the published ImageNet-1K weights, or a
file / folder / hub id; other keywords go to :func:`pvtv2.create_model`), plus ``detector``
and ``segmenter``.
"""
import os
import sys

dependencies = ["torch", "torchvision", "timm", "safetensors", "huggingface_hub"]

# A checkout keeps the package under src/; an installed pvtv2 works too.
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(_SRC) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)

import pvtv2 as _pvtv2  # noqa: E402


def _variant_entry(name):
    def entry(pretrained=False, **kwargs):
        return _pvtv2.create_model(name, pretrained=pretrained or None, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}: pvtv2.create_model({name!r}, pretrained=..., **kwargs); "
                     "pretrained=True loads the published ImageNet-1K weights.")
    return entry


for _name in _pvtv2.list_models(family="all"):  # PVTv2 and PVTv1
    globals()[_name] = _variant_entry(_name)


def detector(kind="retinanet", backbone="pvt_v2_b2", num_classes=80, **kwargs):
    """A torchvision detector on a PVTv2 + FPN backbone: pvtv2.detection.create_detector
    (``pretrained_backbone=True`` starts from the ImageNet weights)."""
    from pvtv2.detection import create_detector

    return create_detector(kind, backbone, num_classes, **kwargs)


def segmenter(backbone="pvt_v2_b2", num_classes=150, **kwargs):
    """Semantic FPN on a PVTv2 backbone: pvtv2.segmentation.create_segmenter."""
    from pvtv2.segmentation import create_segmenter

    return create_segmenter(backbone, num_classes, **kwargs)
