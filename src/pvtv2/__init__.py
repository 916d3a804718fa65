"""pvtv2: the Pyramid Vision Transformer v2 family in plain PyTorch."""
from .model import MIN_INPUT_SIZE, PVTv2Config, PyramidVisionTransformerV2, list_models, variant_config
from .factory import create_model

__version__ = "0.1.0"

__all__ = [
    "MIN_INPUT_SIZE",
    "PVTv2Config",
    "PyramidVisionTransformerV2",
    "create_model",
    "list_models",
    "variant_config",
]

from .checkpoint import CheckpointError, LoadReport, convert, load_checkpoint, save_pretrained  # noqa: E402

__all__ += ["CheckpointError", "LoadReport", "convert", "load_checkpoint", "save_pretrained"]
