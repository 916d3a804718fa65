"""Object detection and instance segmentation: PVTv2 + FPN backbones for torchvision's
RetinaNet, Faster R-CNN and Mask R-CNN, COCO data, training, COCO evaluation, prediction."""
from .data import CocoDetection
from .evaluate import coco_evaluate, evaluate_checkpoint
from .model import KINDS, PVTv2FPN, create_backbone, create_detector, load_detector, save_detector
from .predict import predict
from .recipe import DetTrainConfig
from .train import train

__all__ = ["KINDS", "CocoDetection", "DetTrainConfig", "PVTv2FPN", "coco_evaluate", "create_backbone",
           "create_detector", "evaluate_checkpoint", "load_detector", "predict", "save_detector", "train"]
