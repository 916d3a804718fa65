"""Image classification with PVTv2: the official ImageNet-1K recipe, training, evaluation, prediction."""
from .predict import load_classifier, predict
from .recipe import TrainConfig
from .train import TrainingError, evaluate_checkpoint, train

__all__ = ["TrainConfig", "TrainingError", "evaluate_checkpoint", "load_classifier", "predict", "train"]
