"""Image classification with PVTv2: the official ImageNet-1K recipe, training, evaluation, prediction."""
from ..errors import TrainingError
from .evaluate import evaluate_checkpoint
from .predict import load_classifier, predict
from .recipe import TrainConfig
from .train import train

__all__ = ["TrainConfig", "TrainingError", "evaluate_checkpoint", "load_classifier", "predict", "train"]
