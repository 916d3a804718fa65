"""Semantic segmentation: Semantic FPN on a PVTv2 backbone, data, training, evaluation."""
from .metrics import IGNORE_INDEX, summarize, update_confusion
from .model import SemanticFPN, create_segmenter, load_segmenter, save_segmenter
from .evaluate import evaluate_checkpoint
from .predict import predict
from .recipe import SegTrainConfig
from .train import train

__all__ = [
    "IGNORE_INDEX",
    "SegTrainConfig",
    "SemanticFPN",
    "create_segmenter",
    "evaluate_checkpoint",
    "load_segmenter",
    "predict",
    "save_segmenter",
    "summarize",
    "train",
    "update_confusion",
]
