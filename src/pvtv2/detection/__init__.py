"""Object detection and instance segmentation: PVTv2 + FPN backbones for torchvision's
RetinaNet, Faster R-CNN, Mask R-CNN and FCOS, and our ATSS, GFL, Sparse R-CNN and Cascade Mask R-CNN on
torchvision's parts; COCO data, training, COCO evaluation, prediction."""
from .atss import ATSS
from .cascade_rcnn import CascadeMaskRCNN
from .data import CocoDetection
from .evaluate import coco_evaluate, evaluate_checkpoint
from .gfl import GFL
from .kinds import KIND_RECIPES, KindRecipe
from .model import KINDS, PVTv2FPN, create_backbone, create_detector, load_detector, save_detector
from .predict import predict
from .recipe import DetTrainConfig
from .sparse_rcnn import SparseRCNN
from .train import train

__all__ = ["ATSS", "CascadeMaskRCNN", "GFL", "KINDS", "KIND_RECIPES", "CocoDetection", "DetTrainConfig", "KindRecipe", "PVTv2FPN",
           "SparseRCNN", "coco_evaluate", "create_backbone", "create_detector", "evaluate_checkpoint", "load_detector",
           "predict", "save_detector", "train"]
