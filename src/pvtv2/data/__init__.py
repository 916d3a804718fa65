"""Embedded default data: procedurally generated datasets for the demos and tests."""
from .synth import SHAPE_CLASSES, make_classification_dataset, make_detection_dataset, make_segmentation_dataset

__all__ = ["SHAPE_CLASSES", "make_classification_dataset", "make_detection_dataset", "make_segmentation_dataset"]
