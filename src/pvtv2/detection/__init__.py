"""Object detection and instance segmentation: PVTv2 + FPN backbones for torchvision's
RetinaNet, Faster R-CNN and Mask R-CNN."""
from .model import KINDS, PVTv2FPN, create_backbone, create_detector

__all__ = ["KINDS", "PVTv2FPN", "create_backbone", "create_detector"]
